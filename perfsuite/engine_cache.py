"""The engine cache: every converted artifact (ONNX export, TensorRT engine, torch2trt state, ...) is made once.

Layout under ``cache_root(...) / "engines"`` (``$PERFSUITE_CACHE_DIR`` overrides the root)::

    <name>.onnx          an ONNX export (perfsuite.onnx_export), a plain file any ONNX tool opens
    <name>.engine        an engine or other converted artifact
    <name>.json          its metadata: the full key, size, sha256, how long making it took, facts
    <name>.lock          the build lock of that entry (filelock)
    builds.jsonl         one line per real build, appended under a lock (what tests count)
    timing/              TensorRT timing caches (a build-speed aid, not artifacts)

``<name>`` is readable (backend, model, precision) plus the first 16 hex digits of the key's
sha256. An entry is complete once its metadata exists: the artifact is written first, both by
temporary file + rename, so a reader never sees half a file; a kill leaves at most an orphaned
``.*.tmp`` file, which ``perfsuite cache list`` shows. Reading validates the metadata against
:data:`METADATA_SCHEMA` and checks the stored key, the size and the sha256; anything else
(corrupt, truncated, incompatible, badly typed metadata) is rebuilt with an
:class:`EngineCacheWarning` naming the file and the field, never a crash. Nothing is unpickled.

Parallel workers (``pytest -n``) asking for the same entry take its lock: the first builds, the
others wait and then load what it wrote.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from perfsuite.errors import InputError, PerfsuiteError
from perfsuite.output import OutputError, check_output_folder_writable, require_regular_or_missing
from perfsuite.results import write_bytes_atomic, write_json_atomic
from perfsuite.validation import validate

FORMAT_VERSION = 2
KINDS = ("engine", "onnx")  # also the file suffixes
BUILD_LOG = "builds.jsonl"
TIMING_FOLDER = "timing"
#: How long a worker waits for another one's build of the same entry before giving up.
LOCK_TIMEOUT_S = 3600.0

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_TEXT = {"type": "string", "minLength": 1}
KEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["backend", "flavor", "library_version", "model", "model_fingerprint", "target", "precision",
                 "shapes", "options", "kind"],
    "properties": {"backend": _TEXT, "flavor": _TEXT, "library_version": _TEXT, "model": _TEXT,
                   "model_fingerprint": _TEXT, "target": {"type": "object"}, "precision": _TEXT,
                   "shapes": {"type": "object"}, "options": {"type": "object"}, "kind": {"enum": list(KINDS)}},
}
#: What ``<name>.json`` holds; checked on every read.
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "key", "digest", "size", "sha256", "build_s", "created", "host", "notes"],
    "properties": {
        "format": {"const": FORMAT_VERSION},
        "key": KEY_SCHEMA,
        "digest": _SHA256,
        "size": {"type": "integer", "minimum": 1},
        "sha256": _SHA256,
        "build_s": {"type": "number", "minimum": 0},
        "created": {"type": "string"},
        "host": {"type": "string"},
        "notes": {"type": "object"},
    },
}


class EngineCacheWarning(UserWarning):
    """A cache entry was unusable (corrupt, truncated, incompatible) and is being rebuilt."""


class _Unusable(InputError):
    """Why a stored entry cannot be used (internal: becomes a warning and a rebuild)."""


def default_cache_dir() -> Path:
    """``cache_root`` of the suite configuration, ``/engines``."""
    from perfsuite.config import cache_root, load_suite_config

    return cache_root(load_suite_config()) / "engines"


def gpu_target(device: str) -> dict[str, str]:
    """GPU name and compute capability of ``device``: the build target of engines built on the GPU."""
    import torch

    from perfsuite.environment import cuda_index

    props = torch.cuda.get_device_properties(cuda_index(device))
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def _canonical(value: Any) -> Any:
    """JSON round trip: tuples become lists, so a key compares equal to its stored copy."""
    return json.loads(json.dumps(value, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class ArtifactKey:
    """Everything an artifact depends on. Two keys are the same entry iff all fields are equal."""

    backend: str  # who makes it: "onnx-export", "tensorrt", "tensorrt-rtx", "torch2trt", ...
    flavor: str  # the library family that makes it: "onnx", "tensorrt" or "tensorrt-rtx"
    library_version: str  # e.g. "10.13.0.35", or several joined ("torch2trt 0.5.0 / tensorrt 10.3")
    model: str
    model_fingerprint: str  # sha256 of the weights (LoadedModel.fingerprint)
    target: Mapping[str, Any]  # GPU name + compute capability, an RTX build's targets, or {} (ONNX)
    precision: str
    shapes: Mapping[str, Any]  # input name -> static shape, or {"min", "opt", "max"} of a profile
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # settings that change the artifact
    kind: str = "engine"  # one of KINDS: what the file is (and its suffix)

    def as_dict(self) -> dict[str, Any]:
        return _canonical(dataclasses.asdict(self))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def entry_name(self) -> str:
        readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.backend}-{self.model}-{self.precision}")
        return f"{readable}-{self.digest[:16]}"

    def differences(self, stored: Mapping[str, Any]) -> list[str]:
        """Fields whose stored value differs from this key's (for the 'incompatible' warning)."""
        mine = self.as_dict()
        return sorted(k for k in set(mine) | set(stored) if mine.get(k) != stored.get(k))


@dataclasses.dataclass(frozen=True)
class Built:
    """What a build callable may return instead of bare bytes: the bytes and facts to keep with them."""

    data: bytes | bytearray | memoryview
    notes: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # JSON-serializable
    #: the build's own time, where the callable did more than build (started a process for it, say)
    seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class CachedArtifact:
    """An artifact from the cache: its bytes and where they came from."""

    data: bytes
    key: ArtifactKey
    hit: bool  # False: made by this call
    build_s: float  # how long making it took, measured when it was made (also for a hit)
    read_s: float  # reading + sha256 check (0 for a fresh build)
    path: Path
    sha256: str
    size: int
    notes: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the build's facts (Built.notes)

    def without_data(self) -> CachedArtifact:
        """The same facts, the bytes dropped (once they are on the device or built into something else)."""
        return dataclasses.replace(self, data=b"")


def conversion_facts(*artifacts: CachedArtifact) -> dict[str, Any]:
    """What a result row reports about producing what it runs (e.g. the ONNX export and the engine built
    from it): ``conversion_s``, the cost of making them as measured when each was made, so it is the same
    whatever ran before; ``artifact_cache``, "hit" when all came from the cache; ``artifact_read_s``."""
    return {"conversion_s": sum(a.build_s for a in artifacts),
            "artifact_cache": "hit" if all(a.hit for a in artifacts) else "miss",
            "artifact_read_s": sum(a.read_s for a in artifacts)}


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One file as ``perfsuite cache list`` shows it."""

    path: Path
    kind: str  # "engine", "onnx", "temporary" (a write in progress or orphaned) or "metadata" (no artifact)
    size: int
    metadata: dict[str, Any] | None  # None: absent or unusable
    problem: str | None = None  # None: the artifact verifies (metadata schema, size, sha256)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class EngineCache:
    """get-or-build of artifacts keyed by :class:`ArtifactKey`; safe across threads, processes and workers."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    # -- paths --------------------------------------------------------------------------------
    def artifact_path(self, key: ArtifactKey) -> Path:
        return self.root / f"{key.entry_name}.{key.kind}"

    def metadata_path(self, key: ArtifactKey) -> Path:
        return self.root / f"{key.entry_name}.json"

    def _lock(self, name: str, timeout: float = LOCK_TIMEOUT_S) -> FileLock:
        self.check_writable()
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{name}.lock"), timeout=timeout)

    # -- what the folder itself may be --------------------------------------------------------
    def root_problem(self) -> str | None:
        """Why this cache folder cannot be used at all (it, or a folder above it, is a file); None if it can."""
        path = self.root.absolute()
        while not path.exists() and path != path.parent:
            path = path.parent
        if path.exists() and not path.is_dir():
            return f"{path} is a file, not a folder (remove it, or set $PERFSUITE_CACHE_DIR)"
        return None

    def check_writable(self) -> None:
        """Before anything is built or removed: the folder is usable and may be written (:class:`OutputError`
        naming it otherwise: a file in its place, a read-only file system, no permission, a full disk)."""
        problem = self.root_problem()
        if problem:
            raise OutputError(f"engine cache {self.root}: {problem}")
        try:
            check_output_folder_writable(self.root, f"engine cache {self.root}")
        except OutputError as exc:
            raise OutputError(f"{exc}; set $PERFSUITE_CACHE_DIR (or [tool.perfsuite] cache_dir) to a writable "
                              "folder") from None

    def _check_entry_files(self, key: ArtifactKey) -> None:
        """An entry's files are regular files or absent: a FIFO would hang the read, a folder the write."""
        problem = self.root_problem()
        if problem:
            raise OutputError(f"engine cache {self.root}: {problem}")
        for path in (self.metadata_path(key), self.artifact_path(key)):
            require_regular_or_missing(path, "engine cache")

    def timing_cache_path(self, name: str) -> Path:
        return self.root / TIMING_FOLDER / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.cache"

    # -- the one public operation -------------------------------------------------------------
    def get_or_build(self, key: ArtifactKey, build: Callable[[], Built | bytes | bytearray | memoryview]
                     ) -> CachedArtifact:
        """The cached artifact for ``key``, or ``build()``'s result, stored for next time.

        ``build`` runs at most once per key across all processes sharing this folder at a time.
        """
        self._check_entry_files(key)
        found, _ = self._read(key)  # lock-free fast path: a complete, valid entry
        if found is not None:
            return found
        lock = self._lock(key.entry_name)
        try:
            with lock:
                found, problem = self._read(key)  # another worker may have built it meanwhile
                if found is not None:
                    return found
                if problem is not None:
                    warnings.warn(f"engine cache: {self.artifact_path(key).name}: {problem}; rebuilding",
                                  EngineCacheWarning, stacklevel=2)
                    self._remove_entry(key)
                started = time.perf_counter()
                result = build()
                build_s = time.perf_counter() - started
                built = result if isinstance(result, Built) else Built(result)
                return self._store(key, bytes(built.data), built.seconds if built.seconds is not None else build_s,
                                   dict(built.notes))
        except Timeout as exc:
            raise PerfsuiteError(
                f"engine cache: waited {LOCK_TIMEOUT_S:.0f} s for another process to build {key.entry_name} "
                f"(lock {lock.lock_file}); if no build is running, delete the lock file"
            ) from exc

    # -- reading and writing ------------------------------------------------------------------
    @staticmethod
    def _metadata(path: Path) -> dict[str, Any]:
        """The metadata at ``path``, validated against :data:`METADATA_SCHEMA` (:class:`_Unusable` if not)."""
        try:
            metadata = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Unusable(f"metadata {path} unreadable ({exc})") from None
        validate(metadata, METADATA_SCHEMA, f"metadata {path}", error=_Unusable)
        return metadata

    @staticmethod
    def _verify(metadata: Mapping[str, Any], size: int, sha256: Callable[[], str]) -> str:
        """The artifact's sha256 if its size and digest are the stored ones (:class:`_Unusable` if not)."""
        if size != metadata["size"]:
            raise _Unusable(f"truncated or overwritten: {size} bytes where {metadata['size']} were stored")
        digest = sha256()
        if digest != metadata["sha256"]:
            raise _Unusable(f"corrupt: sha256 {digest[:12]}… differs from the stored {metadata['sha256'][:12]}…")
        return digest

    def _read(self, key: ArtifactKey) -> tuple[CachedArtifact | None, str | None]:
        """(entry, None) when valid; (None, None) when absent; (None, problem) when unusable."""
        metadata_path, path = self.metadata_path(key), self.artifact_path(key)
        if not metadata_path.exists():
            return None, None
        started = time.perf_counter()
        try:
            metadata = self._metadata(metadata_path)
            if metadata["key"] != key.as_dict():
                fields = ", ".join(key.differences(metadata["key"]))
                raise _Unusable(f"incompatible entry (stored key differs in {fields})")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise _Unusable(f"artifact file unreadable ({exc})") from None
            digest = self._verify(metadata, len(data), lambda: hashlib.sha256(data).hexdigest())
        except _Unusable as exc:
            return None, str(exc)
        return CachedArtifact(data=data, key=key, hit=True, build_s=float(metadata["build_s"]),
                              read_s=time.perf_counter() - started, path=path, sha256=digest, size=len(data),
                              notes=metadata["notes"]), None

    def _store(self, key: ArtifactKey, data: bytes, build_s: float, notes: dict[str, Any]) -> CachedArtifact:
        if not data:
            raise PerfsuiteError(f"engine cache: the build of {key.entry_name} returned no bytes")
        digest = hashlib.sha256(data).hexdigest()
        path = self.artifact_path(key)
        write_bytes_atomic(path, data)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        metadata = {"format": FORMAT_VERSION, "key": key.as_dict(), "digest": key.digest, "size": len(data),
                    "sha256": digest, "build_s": build_s, "created": created, "host": socket.gethostname(),
                    "notes": notes}
        write_json_atomic(self.metadata_path(key), metadata)  # last: it marks the entry complete
        self._append_build_log({"entry": key.entry_name, "backend": key.backend, "model": key.model,
                                "precision": key.precision, "kind": key.kind, "size": len(data), "build_s": build_s,
                                "created": created, "pid": os.getpid()})
        return CachedArtifact(data=data, key=key, hit=False, build_s=build_s, read_s=0.0, path=path,
                              sha256=digest, size=len(data), notes=notes)

    def _remove_entry(self, key: ArtifactKey) -> None:
        self.metadata_path(key).unlink(missing_ok=True)  # first: the entry stops being complete at once
        self.artifact_path(key).unlink(missing_ok=True)

    def _append_build_log(self, record: dict[str, Any]) -> None:
        from perfsuite.output import describe_os_error

        path = self.root / BUILD_LOG
        require_regular_or_missing(path, "engine cache build log")
        try:
            with self._lock(BUILD_LOG), open(path, "a") as stream:
                stream.write(json.dumps(record, sort_keys=True) + "\n")
        except OutputError:
            raise  # already names the folder and what is wrong
        except OSError as exc:
            raise OutputError(f"engine cache build log {path}: cannot append ({describe_os_error(exc)})") from exc

    # -- inspection and cleaning --------------------------------------------------------------
    def build_log(self) -> list[dict[str, Any]]:
        """Every real build recorded in this folder, oldest first."""
        path = self.root / BUILD_LOG
        if not path.exists():
            return []
        records = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"engine cache build log {path}, line {number}: not JSON ({exc})") from exc
        return records

    def entries(self) -> Iterator[CacheEntry]:
        """Every artifact, verified (metadata schema, size, sha256), every temporary file and every
        metadata file without its artifact; sorted by path."""
        if not self.root.is_dir():
            return
        for path in sorted(p for p in self.root.rglob("*") if not (p.is_dir() and p.name == TIMING_FOLDER)):
            kind = path.suffix.lstrip(".")
            if path.is_dir() and path.parent != self.root:
                continue  # inside a folder that is itself reported below
            if path.is_dir() or not path.is_file():  # a folder or FIFO in an entry's place: a build would hang or fail
                what = "a folder" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
                yield CacheEntry(path, "unusable", 0, None, f"{what}: a build or read of this entry would fail or "
                                                          "hang; remove it (perfsuite cache clear)")
            elif path.name.endswith(".tmp"):
                yield CacheEntry(path, "temporary", path.stat().st_size, None, self._temporary_problem(path))
            elif kind in KINDS:
                yield self._checked_entry(path, kind)
            elif kind == "json" and path.parent == self.root and not any(
                    path.with_suffix(f".{k}").exists() for k in KINDS):
                yield CacheEntry(path, "metadata", path.stat().st_size, None,
                                 "metadata without its artifact (an interrupted removal)")

    def _checked_entry(self, path: Path, kind: str) -> CacheEntry:
        size = path.stat().st_size
        try:
            metadata = self._metadata(path.with_suffix(".json"))
            if metadata["key"]["kind"] != kind:
                raise _Unusable(f"metadata describes a {metadata['key']['kind']} file")
            self._verify(metadata, size, lambda: _file_sha256(path))
        except _Unusable as exc:
            problem = ("no metadata (an interrupted build)" if not path.with_suffix(".json").exists() else str(exc))
            return CacheEntry(path, kind, size, None, problem)
        return CacheEntry(path, kind, size, metadata)

    def _temporary_problem(self, path: Path) -> str:
        """A ``.<file>.<random>.tmp`` from write_bytes_atomic: being written (its entry's lock is held) or orphaned."""
        entry = path.name[1:].rsplit(".", 3)[0] if path.name.startswith(".") else ""
        lock = self.root / f"{entry}.lock"
        if not (entry and lock.exists()):  # e.g. a timing cache's: no lock tells whether a build writes it
            return "temporary file of an interrupted write, unless a build is writing it now"
        try:
            with FileLock(str(lock), timeout=0):
                pass
        except Timeout:
            return "being written now (its build holds the lock)"
        return "orphaned temporary file (an interrupted write); perfsuite cache clear removes it"

    def clear(self) -> tuple[int, int]:
        """Delete every entry, temporary file, lock, timing cache and the build log.

        Returns (artifacts removed, bytes freed)."""
        if not self.root.exists():
            return 0, 0
        self.check_writable()
        count = freed = 0
        for path in self.root.iterdir():
            if path.is_dir():
                freed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                shutil.rmtree(path)
                continue
            count += path.suffix.lstrip(".") in KINDS
            freed += path.lstat().st_size
            path.unlink(missing_ok=True)
        return count, freed
