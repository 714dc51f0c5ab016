"""Baselines on disk: one folder per hardware fingerprint, so runs of different GPUs never mix.

    .perfsuite-baselines/
      gpu-nvidia-h100-80gb-hbm3-1a2b3c4d5e/
        baseline.json      manifest: fingerprint, and each run's file name and sha256
        run-01.json ...    the runs, pytest-benchmark JSON as recorded

A baseline is replaced as a whole: the new folder is written beside the old one and renamed into
place, so a reader sees the old baseline or the new one, never a mix. Reading checks the manifest
(every run present with its recorded sha256, no stray files), so a baseline edited or truncated
after it was recorded is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfsuite.errors import InputError
from perfsuite.gate.hardware import mismatches
from perfsuite.gate.runs import MANIFEST_NAME, SavedRun
from perfsuite.results import write_json_atomic

MANIFEST_FORMAT = "perfsuite-baseline"
MANIFEST_VERSION = 1


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_same_hardware(runs: Sequence[SavedRun], what: str = "runs") -> None:
    """All ``runs`` share one fingerprint, or an error listing the first difference field by field."""
    first = runs[0]
    for run in runs[1:]:
        diff = mismatches(first.fingerprint, run.fingerprint)
        if diff:
            rows = "\n".join(f"  {field}: {a} ({first.path.name}) vs {b} ({run.path.name})" for field, a, b in diff)
            raise InputError(f"{what}: {first.path} and {run.path} were measured on different hardware:\n{rows}")


def save_baseline(root: str | Path, runs: Sequence[SavedRun]) -> Path:
    """Store ``runs`` as the baseline of their hardware, replacing the previous one atomically."""
    if not runs:
        raise InputError("baseline: no runs to store")
    check_same_hardware(runs, "baseline")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fingerprint = runs[0].fingerprint
    folder = root / fingerprint.id
    staging = root / f".{fingerprint.id}.new-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    entries = []
    for index, run in enumerate(runs, start=1):
        name = f"run-{index:02d}.json"
        write_json_atomic(staging / name, run.data)
        entries.append({"file": name, "sha256": _sha256(staging / name), "source": str(run.path),
                        "datetime": run.datetime, "commit": run.commit_info.get("id")})
    write_json_atomic(staging / MANIFEST_NAME, {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "fingerprint_id": fingerprint.id,
        "hardware": {"kind": fingerprint.kind, **fingerprint.as_dict()}, "label": fingerprint.label,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "runs": entries,
    })
    retired = root / f".{fingerprint.id}.old-{os.getpid()}"
    if folder.exists():
        os.replace(folder, retired)
    os.replace(staging, folder)
    shutil.rmtree(retired, ignore_errors=True)
    return folder


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, checked for shape; None for a plain folder of runs."""
    path = folder / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"baseline {folder}: manifest {MANIFEST_NAME} is unreadable or corrupt ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(manifest.get("runs"), list):
        raise InputError(f"baseline {folder}: {MANIFEST_NAME} is not a perfsuite baseline manifest")
    if manifest.get("version", 0) > MANIFEST_VERSION:
        raise InputError(f"baseline {folder}: manifest version {manifest.get('version')} is newer than this "
                         f"perfsuite understands ({MANIFEST_VERSION}); upgrade perfsuite")
    return manifest


def verify_folder(folder: Path) -> None:
    """A baseline folder's runs are exactly those its manifest lists, unchanged since recording."""
    manifest = read_manifest(folder)
    if manifest is None:
        return
    listed = {}
    for entry in manifest["runs"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"]:
            raise InputError(f"baseline {folder}: malformed run entry {entry!r} in {MANIFEST_NAME}")
        listed[entry["file"]] = entry.get("sha256")
    present = {p.name for p in folder.glob("*.json")} - {MANIFEST_NAME}
    for name in sorted(set(listed) - present):
        raise InputError(f"baseline {folder}: {name} is listed in {MANIFEST_NAME} but missing")
    for name in sorted(present - set(listed)):
        raise InputError(f"baseline {folder}: {name} is not part of the recorded baseline (not in {MANIFEST_NAME})")
    for name, digest in sorted(listed.items()):
        if _sha256(folder / name) != digest:
            raise InputError(f"baseline {folder}: {name} changed after it was recorded (sha256 mismatch)")


def list_baselines(root: str | Path) -> list[dict[str, Any]]:
    """Manifests of every baseline under ``root`` (with ``folder`` added), by fingerprint id."""
    root = Path(root)
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if root.is_dir() else []:
        manifest = read_manifest(folder)
        if manifest is not None:
            found.append({**manifest, "folder": str(folder)})
    return found
