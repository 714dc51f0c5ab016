"""The engine cache: every converted artifact (TensorRT engine, torch2trt state, ...) is built once.

Layout under ``cache_root(...) / "engines"`` (``$PERFSUITE_CACHE_DIR`` overrides the root)::

    <name>.engine        the artifact's bytes
    <name>.json          metadata: the full key, size, sha256, build time
    <name>.lock          the build lock of that entry (filelock)
    builds.jsonl         one line per real build, appended under a lock (what tests count)
    timing/              TensorRT timing caches (a build-speed aid, not engines)

``<name>`` is readable (backend, model, precision) plus the first 16 hex digits of the key's
sha256. An entry is complete once its metadata exists: the engine is written first, both by
temporary file + rename, so a reader never sees half a file. Loading checks that the stored key
equals the asked key and that size and sha256 match; anything else (corrupt, truncated,
incompatible, unreadable metadata) is rebuilt with an :class:`EngineCacheWarning`, never a crash.

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
from perfsuite.results import write_bytes_atomic, write_json_atomic

FORMAT_VERSION = 1
BUILD_LOG = "builds.jsonl"
TIMING_FOLDER = "timing"
#: How long a worker waits for another one's build of the same entry before giving up.
LOCK_TIMEOUT_S = 3600.0


class EngineCacheWarning(UserWarning):
    """A cache entry was unusable (corrupt, truncated, incompatible) and is being rebuilt."""


def default_cache_dir() -> Path:
    """``cache_root`` of the suite configuration, ``/engines``."""
    from perfsuite.config import cache_root, load_suite_config

    return cache_root(load_suite_config()) / "engines"


def _canonical(value: Any) -> Any:
    """JSON round trip: tuples become lists, so a key compares equal to its stored copy."""
    return json.loads(json.dumps(value, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything a built engine depends on. Two keys are the same entry iff all fields are equal."""

    backend: str  # the runner: "tensorrt", "tensorrt-rtx", "torch2trt", ...
    flavor: str  # the library family that builds it: "tensorrt" or "tensorrt-rtx"
    library_version: str  # e.g. "10.13.0.35", or several joined ("torch2trt 0.5.0 / tensorrt 10.3")
    model: str
    model_fingerprint: str  # sha256 of the weights (LoadedModel.fingerprint)
    target: Mapping[str, Any]  # GPU name + compute capability, or an RTX build's target capabilities
    precision: str
    shapes: Mapping[str, Any]  # input name -> static shape, or {"min", "opt", "max"} of a profile
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # builder settings that change the engine

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


@dataclasses.dataclass(frozen=True)
class CachedEngine:
    """An artifact from the cache: its bytes and where they came from."""

    data: bytes
    key: EngineKey
    hit: bool  # False: built by this call
    build_s: float  # how long the (original) build callable took
    read_s: float  # reading + sha256 check (0 for a fresh build)
    path: Path
    sha256: str
    size: int
    notes: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the build's facts (Built.notes)

    def describe(self) -> dict[str, Any]:
        """What every cached backend reports in its metrics."""
        return {"engine_cache": "hit" if self.hit else "miss", "engine_cache_read_s": self.read_s,
                "conversion_s": self.build_s, "artifact_bytes": self.size, "engine_target": dict(self.key.target),
                "library_version": self.key.library_version}

    def without_data(self) -> CachedEngine:
        """The same facts, the bytes dropped (once the engine is on the GPU)."""
        return dataclasses.replace(self, data=b"")


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One entry as ``perfsuite cache list`` shows it."""

    name: str
    path: Path
    size: int
    metadata: dict[str, Any] | None  # None: unreadable
    problem: str | None = None


class EngineCache:
    """get-or-build of artifacts keyed by :class:`EngineKey`; safe across threads, processes and workers."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    # -- paths --------------------------------------------------------------------------------
    def engine_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.entry_name}.engine"

    def metadata_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.entry_name}.json"

    def _lock(self, name: str) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{name}.lock"), timeout=LOCK_TIMEOUT_S)

    def timing_cache_path(self, name: str) -> Path:
        return self.root / TIMING_FOLDER / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.cache"

    # -- the one public operation -------------------------------------------------------------
    def get_or_build(self, key: EngineKey, build: Callable[[], Built | bytes | bytearray | memoryview]) -> CachedEngine:
        """The cached artifact for ``key``, or ``build()``'s result, stored for next time.

        ``build`` runs at most once per key across all processes sharing this folder at a time.
        """
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
                    warnings.warn(f"engine cache: {self.engine_path(key).name}: {problem}; rebuilding",
                                  EngineCacheWarning, stacklevel=2)
                    self._remove_entry(key.entry_name)
                started = time.perf_counter()
                result = build()
                build_s = time.perf_counter() - started
                built = result if isinstance(result, Built) else Built(result)
                return self._store(key, bytes(built.data), build_s, dict(built.notes))
        except Timeout as exc:
            raise PerfsuiteError(
                f"engine cache: waited {LOCK_TIMEOUT_S:.0f} s for another process to build {key.entry_name} "
                f"(lock {lock.lock_file}); if no build is running, delete the lock file"
            ) from exc

    def invalidate(self, key: EngineKey, reason: str) -> None:
        """Drop an entry that loaded but proved unusable (e.g. the runtime rejected the engine)."""
        warnings.warn(f"engine cache: {self.engine_path(key).name}: {reason}; removing it", EngineCacheWarning,
                      stacklevel=2)
        with self._lock(key.entry_name):
            self._remove_entry(key.entry_name)

    # -- reading and writing ------------------------------------------------------------------
    def _read(self, key: EngineKey) -> tuple[CachedEngine | None, str | None]:
        """(entry, None) when valid; (None, None) when absent; (None, problem) when unusable."""
        metadata_path, engine_path = self.metadata_path(key), self.engine_path(key)
        if not metadata_path.exists():
            return None, None
        started = time.perf_counter()
        try:
            metadata = json.loads(metadata_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, f"metadata {metadata_path.name} unreadable ({exc})"
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_VERSION:
            return None, f"metadata {metadata_path.name} is not format {FORMAT_VERSION}"
        stored_key = metadata.get("key")
        if not isinstance(stored_key, dict) or stored_key != key.as_dict():
            fields = key.differences(stored_key if isinstance(stored_key, dict) else {})
            return None, f"incompatible entry (stored key differs in {', '.join(fields) or 'format'})"
        try:
            data = engine_path.read_bytes()
        except OSError as exc:
            return None, f"engine file unreadable ({exc})"
        expected_size = metadata.get("size")
        if len(data) != expected_size:
            return None, f"truncated or overwritten: {len(data)} bytes where {expected_size} were stored"
        digest = hashlib.sha256(data).hexdigest()
        if digest != metadata.get("sha256"):
            return None, f"corrupt: sha256 {digest[:12]}… differs from the stored {str(metadata.get('sha256'))[:12]}…"
        cached = CachedEngine(data=data, key=key, hit=True, build_s=float(metadata.get("build_s", 0.0)),
                              read_s=time.perf_counter() - started, path=engine_path, sha256=digest,
                              size=len(data), notes=metadata.get("notes") or {})
        return cached, None

    def _store(self, key: EngineKey, data: bytes, build_s: float, notes: dict[str, Any]) -> CachedEngine:
        if not data:
            raise PerfsuiteError(f"engine cache: the build of {key.entry_name} returned no bytes")
        digest = hashlib.sha256(data).hexdigest()
        engine_path = self.engine_path(key)
        write_bytes_atomic(engine_path, data)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        metadata = {"format": FORMAT_VERSION, "key": key.as_dict(), "digest": key.digest, "size": len(data),
                    "sha256": digest, "build_s": build_s, "created": created, "host": socket.gethostname(),
                    "notes": notes}
        write_json_atomic(self.metadata_path(key), metadata)  # last: it marks the entry complete
        self._append_build_log({"entry": key.entry_name, "backend": key.backend, "model": key.model,
                                "precision": key.precision, "size": len(data), "build_s": build_s,
                                "created": created, "pid": os.getpid()})
        return CachedEngine(data=data, key=key, hit=False, build_s=build_s, read_s=0.0, path=engine_path,
                            sha256=digest, size=len(data), notes=notes)

    def _remove_entry(self, name: str) -> None:
        for suffix in (".json", ".engine"):  # metadata first: the entry stops being complete at once
            (self.root / f"{name}{suffix}").unlink(missing_ok=True)

    def _append_build_log(self, record: dict[str, Any]) -> None:
        with self._lock(BUILD_LOG), open(self.root / BUILD_LOG, "a") as stream:
            stream.write(json.dumps(record, sort_keys=True) + "\n")

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
        """Every entry with its metadata (None and a problem where the metadata is unreadable)."""
        if not self.root.is_dir():
            return
        for engine_path in sorted(self.root.glob("*.engine")):
            name = engine_path.stem
            metadata_path = self.root / f"{name}.json"
            try:
                metadata = json.loads(metadata_path.read_text())
                problem = None if isinstance(metadata, dict) else "metadata is not an object"
            except FileNotFoundError:
                metadata, problem = None, "no metadata (incomplete build)"
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                metadata, problem = None, f"metadata unreadable ({exc})"
            yield CacheEntry(name=name, path=engine_path, size=engine_path.stat().st_size,
                             metadata=metadata if problem is None else None, problem=problem)

    def clear(self) -> tuple[int, int]:
        """Delete every entry, lock, timing cache and the build log; (entries removed, bytes freed)."""
        if not self.root.is_dir():
            return 0, 0
        count = freed = 0
        for path in self.root.iterdir():
            if path.is_dir():
                freed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                shutil.rmtree(path)
                continue
            count += path.suffix == ".engine"
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
        return count, freed
