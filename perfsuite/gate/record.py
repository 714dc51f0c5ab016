"""Record whole runs: each run is a fresh ``python -m pytest`` process writing its JSON.

A fresh process per run is the point: a run's samples share its process and machine state, and
only separate runs show the run-to-run variation the gate's test needs.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from perfsuite.errors import InputError
from perfsuite.results import load_benchmark_json

DEFAULT_TARGET = "benchmarks"


@dataclasses.dataclass(frozen=True)
class RecordedRun:
    path: Path
    exit_code: int  # pytest's: 0 all passed, 1 some failed


def pytest_arguments(extra: Sequence[str]) -> list[str]:
    """``extra`` with the benchmarks folder prepended unless it already names a path to test."""
    extra = [a for a in extra if a != "--"] if extra[:1] == ["--"] else list(extra)
    names_a_path = any(not a.startswith("-") and Path(a.split("::")[0]).exists() for a in extra)
    return extra if names_a_path else [DEFAULT_TARGET, *extra]


def record_runs(count: int, output: Path, extra: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
                prefix: str = "run", first_index: int = 1) -> list[RecordedRun]:
    """Run the suite ``count`` times into ``output/<prefix>-NN.json``; each file is checked, then renamed
    into place (a reader never sees a partial run)."""
    if count < 1:
        raise InputError(f"--runs {count}: must be at least 1")
    output.mkdir(parents=True, exist_ok=True)
    arguments = pytest_arguments(extra)
    recorded = []
    for index in range(first_index, first_index + count):
        final = output / f"{prefix}-{index:02d}.json"
        partial = output / f".{final.name}.partial"
        partial.unlink(missing_ok=True)
        command = [sys.executable, "-m", "pytest", *arguments, "--benchmark-json", str(partial)]
        print(f"perfsuite: run {index - first_index + 1} of {count}: {' '.join(command[1:])}", flush=True)
        completed = subprocess.run(command, env={**os.environ, **(env or {})}, check=False)
        # Some pytest-benchmark versions open the file even when no benchmark ran: empty is the same case.
        if not partial.exists() or partial.stat().st_size == 0:
            raise InputError(f"run {index - first_index + 1}: pytest exited {completed.returncode} without writing "
                             f"{partial.name} (every benchmark skipped or a crash; see its output above)")
        load_benchmark_json(partial)
        os.replace(partial, final)
        recorded.append(RecordedRun(final, completed.returncode))
    return recorded
