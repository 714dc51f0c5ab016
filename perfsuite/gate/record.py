"""Record whole runs: each run is a fresh ``python -m pytest`` process writing its JSON.

A fresh process per run is the point: a run's samples share its process and machine state, and
only separate runs show the run-to-run variation the gate's test needs.

The pytest child never outlives the recorder. It runs in its own process group; SIGTERM and SIGINT
(Ctrl-C) sent to the recorder are forwarded to that group, the recorder waits for it to exit,
deletes the partial file and stops with 128 + the signal number (a second signal kills the group).
On Linux the child also asks the kernel to SIGKILL it when the recorder dies (``PR_SET_PDEATHSIG``),
which covers a SIGKILL of the recorder. What a killed recorder could not delete (a partial
``.run-NN.json.partial``, which pytest-benchmark may have opened or half written; the store's
``.record-*`` folder) is deleted by the next use: ``baseline record`` into the same ``--output``
folder, or any read, list or save of the store.

A recorder holds its output folder while it runs (an exclusive ``flock`` on the folder itself, which the
kernel drops when the process dies however it dies). A second recorder into the same folder is refused,
and only a recorder that holds the folder deletes partial files there: never those of a live one.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from perfsuite.errors import InputError, PerfsuiteError
from perfsuite.output import replace_with_file
from perfsuite.results import load_benchmark_json

DEFAULT_TARGET = "benchmarks"
FORWARDED = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclasses.dataclass(frozen=True)
class RecordedRun:
    path: Path
    exit_code: int  # pytest's: 0 all passed, 1 some failed


class RecordInterrupted(PerfsuiteError):
    """The recorder got SIGTERM or SIGINT; the child was stopped and its partial output deleted."""

    def __init__(self, signum: int, run: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} during run {run}; the pytest child was stopped "
                         "and nothing partial was kept")
        self.signum = signum


def pytest_arguments(extra: Sequence[str]) -> list[str]:
    """``extra`` with the benchmarks folder prepended unless it already names a path to test."""
    extra = [a for a in extra if a != "--"] if extra[:1] == ["--"] else list(extra)
    names_a_path = any(not a.startswith("-") and Path(a.split("::")[0]).exists() for a in extra)
    return extra if names_a_path else [DEFAULT_TARGET, *extra]


def record_runs(count: int, output: Path, extra: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
                prefix: str = "run", first_index: int = 1) -> list[RecordedRun]:
    """Run the suite ``count`` times into ``output/<prefix>-NN.json``; each file is checked, then renamed
    into place (a reader never sees a partial run, and none is left behind)."""
    if count < 1:
        raise InputError(f"--runs {count}: must be at least 1")
    output.mkdir(parents=True, exist_ok=True)
    with holding(output) as held:
        own_partial = re.compile(rf"\.{re.escape(prefix)}-\d{{2,}}\.json\.partial")
        for stale in output.iterdir() if held else ():  # left by a killed recorder: no other holds the folder
            if own_partial.fullmatch(stale.name) and stale.is_file() and not stale.is_symlink():
                stale.unlink(missing_ok=True)
        return _record(count, output, pytest_arguments(extra), env, prefix, first_index)


@contextlib.contextmanager
def holding(output: Path) -> Iterator[bool]:
    """Hold ``output`` for one recorder (see the module docstring), or refuse: another recorder holds it.
    A lock on the folder itself rather than filelock's lock file, which would be left in the user's folder.
    Yields whether it is held: not where there is no ``flock`` (Windows) or the file system has none."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    handle = os.open(output, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))  # not inherited by the pytest child
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{output}: another perfsuite baseline record is recording into this folder; wait "
                             "for it to finish or record into another one") from None
        except OSError:  # a file system without flock (some network ones)
            yield False
            return
        yield True
    finally:
        os.close(handle)  # releases the lock


def _record(count: int, output: Path, arguments: list[str], env: Mapping[str, str] | None, prefix: str,
            first_index: int) -> list[RecordedRun]:
    recorded = []
    started = time.perf_counter()
    for index in range(first_index, first_index + count):
        number = index - first_index + 1
        final = output / f"{prefix}-{index:02d}.json"
        partial = output / f".{final.name}.partial"
        command = [sys.executable, "-m", "pytest", *arguments, "--benchmark-json", str(partial)]
        print(f"perfsuite: run {number} of {count}: {' '.join(command[1:])}", flush=True)
        try:
            # An inherited PYTEST_XDIST_WORKER (recording from inside an xdist worker) would make
            # pytest-benchmark disable itself in the child, and the run would store nothing.
            inherited = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
            exit_code = run_child(command, {**inherited, **(env or {})}, number)
            # Some pytest-benchmark versions open the file even when no benchmark ran: empty is the same case.
            if not partial.exists() or partial.stat().st_size == 0:
                raise InputError(f"run {number}: pytest exited {exit_code} without writing {partial.name} (every "
                                 "benchmark skipped or a crash; see its output above)")
            load_benchmark_json(partial)
            replace_with_file(partial, final, f"run {number}: {final}")  # never over a device, FIFO or link
        finally:
            partial.unlink(missing_ok=True)
        recorded.append(RecordedRun(final, exit_code))
        elapsed = time.perf_counter() - started
        left = f"; about {elapsed / number * (count - number):.0f} s left" if number < count else ""
        print(f"perfsuite: run {number} of {count} done (exit {exit_code}), {final.name}; {elapsed:.0f} s so far{left}",
              flush=True)
    return recorded


def run_child(command: Sequence[str], env: Mapping[str, str], run: int) -> int:
    """Run ``command`` to its end, tied to this process (see the module docstring); its exit code."""
    received: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if child is not None:
            _signal_group(child.pid, signum if len(received) == 1 else signal.SIGKILL)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        child = subprocess.Popen(command, env=dict(env), preexec_fn=tie_to_parent(os.getpid()))
        if received:  # arrived before the child existed
            _signal_group(child.pid, received[0])
        exit_code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise RecordInterrupted(received[0], run)
    return exit_code


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has exited already
        os.killpg(pid, signum)


def tie_to_parent(parent: int, own_group: bool = True) -> Any:
    """A child's first act after fork: (Linux) death with ``parent``, and its own process group (so that
    signals forwarded to the group reach the child's own children too)."""
    prctl = _prctl()

    def tie() -> None:
        if own_group:
            os.setpgid(0, 0)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the request took effect
                os.kill(os.getpid(), signal.SIGKILL)

    return tie


def _prctl() -> Any:
    """libc's prctl on Linux (looked up before fork: the child must not load libraries), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
