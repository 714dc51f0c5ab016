"""Baselines on disk: one folder per hardware fingerprint, so runs of different GPUs never mix.

    .perfsuite-baselines/
      gpu-nvidia-h100-80gb-hbm3-1a2b3c4d5e/
        baseline.json      manifest (MANIFEST_SCHEMA): fingerprint, each run's file name and sha256
        run-01.json ...    the runs as recorded, plus a "perfsuite_baseline" mark naming their baseline
      .perfsuite-store     marks the folder as a baseline store
      .lock                held while a baseline is replaced or leftovers are settled

**Reading is always verified.** However runs in a baseline are named (its folder, a file in it, a
glob), the folder's manifest is read first and each run is checked against its recorded sha256,
hashing the very bytes that are then parsed; missing and stray files are refused. A run that is
part of a stored baseline (it carries the mark, or its folder lies in a store) but has no manifest
beside it is refused too, never read as a plain run.

**Replacing survives a kill at any instant.** Under the store's lock the new baseline is written to
``.ID.new-TOKEN`` (runs first, manifest last, each fsynced); the old folder is renamed to
``.ID.old-TOKEN``, which is the commit point; the new folder is renamed to ``ID``; the old one is
deleted. Killed before the commit point, the old baseline is still in place and the next read, list
or save deletes the half-written ``.new`` folder; killed after it, the new baseline is complete and
the next read, list or save moves it into place (and deletes the old). ``baseline record`` records
into ``.record-TOKEN`` in the store, which a later read, list or save deletes once its recorder is
gone (it holds a lock on the folder while it lives).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock

from perfsuite.errors import InputError
from perfsuite.gate.hardware import mismatches
from perfsuite.gate.runs import MANIFEST_NAME, SavedRun
from perfsuite.results import parse_benchmark_json, write_bytes_atomic, write_json_atomic
from perfsuite.validation import validate

MANIFEST_FORMAT = "perfsuite-baseline"
MANIFEST_VERSION = 1
BASELINE_MARK = "perfsuite_baseline"  # top-level key of a stored run: {"fingerprint_id", "file"}
STORE_MARKER = ".perfsuite-store"
LOCK_NAME = ".lock"
LOCK_TIMEOUT_S = 120.0
_REPLACEMENT = re.compile(r"\.(?P<name>.+)\.(?P<state>new|old)-[0-9a-f]{16}")
_RECORDING = re.compile(r"\.record-[0-9a-f]{16}")
_RECORDER_LOCK = ".recorder.lock"

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "perfsuite baseline manifest (baseline.json)",
    "type": "object",
    "required": ["format", "version", "fingerprint_id", "runs"],
    "properties": {
        "format": {"const": MANIFEST_FORMAT},
        "version": {"type": "integer", "minimum": 1, "maximum": MANIFEST_VERSION},
        "fingerprint_id": {"type": "string", "minLength": 1},
        "hardware": {"type": "object"},
        "label": {"type": ["string", "null"]},
        "created": {"type": ["string", "null"]},
        "runs": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["file", "sha256"],
            "properties": {
                "file": {"type": "string", "pattern": r"^[^/\\]+\.json$", "not": {"const": MANIFEST_NAME}},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "source": {"type": ["string", "null"]},
                "datetime": {"type": ["string", "null"]},
                "commit": {"type": ["string", "null"]},
            },
        }},
    },
}


@dataclasses.dataclass(frozen=True)
class StoredBaseline:
    """One entry of a store: a verified baseline (``manifest``), or why it is not one (``problem``)."""

    folder: Path
    manifest: Mapping[str, Any] | None
    problem: str | None = None


def check_same_hardware(runs: Sequence[SavedRun], what: str = "runs") -> None:
    """All ``runs`` share one fingerprint, or an error listing the first difference field by field."""
    first = runs[0]
    for run in runs[1:]:
        diff = mismatches(first.fingerprint, run.fingerprint)
        if diff:
            rows = "\n".join(f"  {field}: {a} ({first.path.name}) vs {b} ({run.path.name})" for field, a, b in diff)
            raise InputError(f"{what}: {first.path} and {run.path} were measured on different hardware:\n{rows}")


# -- writing ----------------------------------------------------------------------------------------


def save_baseline(root: str | Path, runs: Sequence[SavedRun]) -> Path:
    """Store ``runs`` as the baseline of their hardware, replacing the previous one (kill-safe, see above)."""
    if not runs:
        raise InputError("baseline: no runs to store")
    check_same_hardware(runs, "baseline")
    root = _store_root(root)
    fingerprint_id = runs[0].fingerprint.id
    folder, token = root / fingerprint_id, secrets.token_hex(8)
    staging, retired = root / f".{fingerprint_id}.new-{token}", root / f".{fingerprint_id}.old-{token}"
    try:
        with _locked(root):
            _settle(root)
            _write_baseline(staging, runs)
            if folder.exists():
                os.replace(folder, retired)  # the commit point: from here on, recovery completes the replacement
            os.replace(staging, folder)
            _fsync_folder(root)
            shutil.rmtree(retired, ignore_errors=True)
    except OSError as exc:
        raise InputError(f"baseline store {root}: cannot store the baseline ({exc.strerror or exc}: "
                         f"{exc.filename or root})") from exc
    return folder


def _write_baseline(folder: Path, runs: Sequence[SavedRun]) -> None:
    """The runs, marked, then the manifest: a folder with a manifest is complete."""
    fingerprint = runs[0].fingerprint
    folder.mkdir()
    entries = []
    for index, run in enumerate(runs, start=1):
        name = f"run-{index:02d}.json"
        content = json.dumps({**run.data, BASELINE_MARK: {"fingerprint_id": fingerprint.id, "file": name}},
                             indent=2, sort_keys=True).encode()
        write_bytes_atomic(folder / name, content)
        entries.append({"file": name, "sha256": hashlib.sha256(content).hexdigest(), "source": str(run.path),
                        "datetime": run.datetime, "commit": run.commit_info.get("id")})
    write_json_atomic(folder / MANIFEST_NAME, {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "fingerprint_id": fingerprint.id,
        "hardware": {"kind": fingerprint.kind, **fingerprint.as_dict()}, "label": fingerprint.label,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "runs": entries,
    })
    _fsync_folder(folder)


@contextlib.contextmanager
def recording_folder(root: str | Path) -> Iterator[Path]:
    """A private folder in the store for ``baseline record``, deleted afterwards (or, after a kill,
    by the store's next read, list or save: the recorder's lock on it is gone with the process)."""
    root = _store_root(root)
    folder = root / f".record-{secrets.token_hex(8)}"
    owner = filelock.FileLock(folder / _RECORDER_LOCK)
    try:
        with _locked(root):
            _settle(root)
            folder.mkdir()
            owner.acquire()
    except OSError as exc:
        raise InputError(f"baseline store {root}: cannot record into it ({exc.strerror or exc})") from exc
    try:
        yield folder
    finally:
        owner.release()
        shutil.rmtree(folder, ignore_errors=True)


def _store_root(root: str | Path) -> Path:
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"baseline store {root}: is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / STORE_MARKER).exists():
            write_bytes_atomic(root / STORE_MARKER, b"A perfsuite baseline store: one folder per hardware fingerprint, "
                                                    b"each verified by its baseline.json (perfsuite baseline list).\n")
    except OSError as exc:
        raise InputError(f"baseline store {root}: cannot be written ({exc.strerror or exc})") from exc
    return root


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        with filelock.FileLock(root / LOCK_NAME, timeout=LOCK_TIMEOUT_S):
            yield
    except filelock.Timeout as exc:
        raise InputError(f"baseline store {root}: another perfsuite has held {root / LOCK_NAME} for "
                         f"{LOCK_TIMEOUT_S:.0f} s; try again when it is done") from exc


def _fsync_folder(folder: Path) -> None:
    """Make renames and new entries in ``folder`` durable (a kill needs no fsync; a power cut does)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


# -- recovery ----------------------------------------------------------------------------------------


def recover(folder: Path) -> None:
    """Settle what an interrupted save or record left in ``folder`` (a store), if anything; waits for a
    save in progress. Touches nothing when there is nothing to settle."""
    try:
        leftovers = [p for p in folder.iterdir() if _REPLACEMENT.fullmatch(p.name) or _RECORDING.fullmatch(p.name)]
    except OSError:
        return
    if not leftovers:
        return
    try:
        with _locked(folder):
            _settle(folder)
    except OSError as exc:
        if all(_RECORDING.fullmatch(p.name) for p in leftovers):
            return  # a recorder's folder does not change what is read; one who may write deletes it
        raise InputError(f"baseline store {folder}: an interrupted baseline replacement "
                         f"({', '.join(sorted(p.name for p in leftovers))}) cannot be settled: "
                         f"{exc.strerror or exc}") from exc


def _settle(root: Path) -> None:
    """Finish or undo every interrupted replacement in ``root`` and delete dead recorders' folders
    (the caller holds the store's lock, so no save is running)."""
    for entry in sorted(root.iterdir()):
        if _RECORDING.fullmatch(entry.name) and entry.is_dir():
            owner = filelock.FileLock(entry / _RECORDER_LOCK)
            try:
                owner.acquire(timeout=0)
            except filelock.Timeout:
                continue  # its recorder is still running
            owner.release()
            shutil.rmtree(entry, ignore_errors=True)
    for entry in sorted(root.iterdir()):
        match = _REPLACEMENT.fullmatch(entry.name)
        if not match or not entry.exists():
            continue
        target, token = root / match["name"], entry.name.rsplit("-", 1)[1]
        staging, retired = root / f".{match['name']}.new-{token}", root / f".{match['name']}.old-{token}"
        if retired.exists() and not target.exists():  # killed after the commit point
            if (staging / MANIFEST_NAME).exists():
                os.replace(staging, target)
            else:  # cannot happen (the manifest is written before the commit point): keep the old one
                os.replace(retired, target)
            _fsync_folder(root)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


# -- reading -----------------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, checked against :data:`MANIFEST_SCHEMA`; None when it has none."""
    path = folder / MANIFEST_NAME
    where = f"baseline {folder}: manifest {MANIFEST_NAME}"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where} is unreadable or corrupt ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{where} is not a perfsuite baseline manifest")
    version = manifest.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
        raise InputError(f"{where}: format version {version} is newer than this perfsuite reads "
                         f"({MANIFEST_VERSION}); upgrade perfsuite")
    validate(manifest, MANIFEST_SCHEMA, where)
    return manifest


def load_baseline(folder: Path) -> dict[str, SavedRun]:
    """Every run of the baseline in ``folder``, by file name, each verified against the manifest."""
    identity = _identity(folder)
    try:
        return _load_verified(folder)
    except InputError:
        recover(folder.parent)  # a save may be running or have been killed: wait for it, settle it
        if _identity(folder) == identity:
            raise
        return _load_verified(folder)  # replaced while it was read: read the new one


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        stat = folder.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _load_verified(folder: Path) -> dict[str, SavedRun]:
    manifest = read_manifest(folder)
    if manifest is None:
        raise InputError(f"baseline {folder}: {MANIFEST_NAME} is missing (deleted, or the folder was not written "
                         "by perfsuite): its runs cannot be verified; store them again with 'perfsuite baseline "
                         "save' or remove the folder")
    listed = {entry["file"]: entry["sha256"] for entry in manifest["runs"]}
    present = {p.name for p in folder.glob("*.json")} - {MANIFEST_NAME}
    for name in sorted(set(listed) - present):
        raise InputError(f"baseline {folder}: {name} is listed in {MANIFEST_NAME} but missing")
    for name in sorted(present - set(listed)):
        raise InputError(f"baseline {folder}: {name} is not part of the recorded baseline (not in {MANIFEST_NAME})")
    runs = {}
    for name, digest in sorted(listed.items()):
        try:
            content = (folder / name).read_bytes()
        except OSError as exc:
            raise InputError(f"baseline {folder}: {name} cannot be read ({exc.strerror or exc})") from exc
        if hashlib.sha256(content).hexdigest() != digest:
            raise InputError(f"baseline {folder}: {name} changed after it was recorded (sha256 mismatch)")
        runs[name] = SavedRun(folder / name, parse_benchmark_json(content, f"results file {folder / name}"))
        runs[name].benchmarks  # noqa: B018 - duplicate keys are an input error, raised here rather than later
    return runs


def refuse_unverified(run: SavedRun) -> None:
    """Refuse a run that belongs to a stored baseline but has no manifest beside it to verify it."""
    folder = run.path.parent
    mark = run.data.get(BASELINE_MARK)
    if isinstance(mark, Mapping):
        raise InputError(f"{run.path}: stored as {mark.get('file')} of baseline {mark.get('fingerprint_id')}, but "
                         f"{folder / MANIFEST_NAME} is missing (deleted, or the file was copied out of its "
                         "baseline folder): it cannot be verified; read it through its baseline folder")
    if (folder.parent / STORE_MARKER).exists():
        raise InputError(f"baseline {folder}: a folder in the baseline store {folder.parent} without "
                         f"{MANIFEST_NAME} (deleted, or not written by perfsuite): its runs cannot be verified; "
                         "store them again with 'perfsuite baseline save' or remove the folder")


def list_baselines(root: str | Path) -> list[StoredBaseline]:
    """Every folder of the store, each verified: its manifest, or why it is not a usable baseline."""
    root = Path(root)
    if not root.is_dir():
        return []
    recover(root)
    found = []
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not folder.is_dir():
            continue
        try:
            load_baseline(folder)
            found.append(StoredBaseline(folder, read_manifest(folder)))
        except InputError as exc:
            found.append(StoredBaseline(folder, None, str(exc)))
    return found
