"""Child processes the tests start: the environment they get, several command lines run in one child, and
what a child wrote, read so that a failure shows what the child printed.

A child gets the environment a user's shell would give it, without pytest-xdist's variables: started from
an xdist worker it would inherit ``PYTEST_XDIST_WORKER``, and pytest-benchmark reads that as "xdist is
active" and disables itself in the child, which then writes no benchmark JSON (5.3) or an empty file (5.2,
which opens the ``--benchmark-json`` file when it parses its options): the JSONDecodeError seen on the GPU
machine under ``pytest -n 8``.

Starting Python with torch costs 2-10 s a process; tests of argument and configuration errors, which stop
before any work, run their command lines in one child (:func:`run_modules_in_one_child`), each as
``python -m MODULE ARGS`` runs it (``runpy``, ``__main__``, its exit status), with its own stdout and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_RESULT_MARKER = "PERFSUITE_TEST_CHILD_RESULTS "


def child_env(**overrides: str | None) -> dict[str, str]:
    """This process's environment without pytest-xdist's and pytest's own variables, with this checkout
    first on ``PYTHONPATH``; ``overrides`` set variables (``None`` removes one)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PYTEST_XDIST") and key != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def what_it_printed(completed: subprocess.CompletedProcess, lines: int = 30) -> str:
    """The child's exit status and the ends of its stdout and stderr, for an assertion message."""
    def tail(text: str | bytes | None) -> str:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        return "\n".join((text or "").rstrip().splitlines()[-lines:]) or "(nothing)"

    return (f"the child ({' '.join(map(str, completed.args))[:300]}) exited {completed.returncode}\n"
            f"--- its stdout, last {lines} lines:\n{tail(completed.stdout)}\n"
            f"--- its stderr, last {lines} lines:\n{tail(completed.stderr)}")


def read_child_json(path: Path, completed: subprocess.CompletedProcess) -> Any:
    """The JSON the child wrote at ``path``; if it wrote none, an empty file or not JSON, an assertion
    error saying so with what the child printed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AssertionError(f"{path} was not written\n{what_it_printed(completed)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        shown = repr(text[:200]) if text else "an empty file"
        raise AssertionError(f"{path} is not JSON ({exc}): {shown}\n{what_it_printed(completed)}") from None


@dataclass(frozen=True)
class CommandResult:
    """What one command line run by :func:`run_modules_in_one_child` did."""

    cwd: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


_CHILD = textwrap.dedent('''
    import contextlib, io, json, os, runpy, sys, traceback

    results = []
    for cwd, module, argv in json.loads(sys.argv[1]):
        os.chdir(cwd)
        sys.argv, before = [module, *argv], set(sys.modules)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exc:  # what the interpreter makes of it at exit
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except BaseException:
                traceback.print_exc()
                code = 1
        # pytest imports test files by their base name (rootdir-relative "prepend" mode): another folder's
        # test_one.py must not be found in sys.modules by the next run
        for name in set(sys.modules) - before:
            if name.startswith("test_") or name == "conftest":
                del sys.modules[name]
        results.append({"cwd": cwd, "argv": argv, "returncode": code, "stdout": out.getvalue(),
                        "stderr": err.getvalue()})
    sys.stdout.write(MARKER + json.dumps(results) + "\\n")
''').replace("MARKER", repr(_RESULT_MARKER))


def run_modules_in_one_child(calls: Sequence[tuple[Path | str, str, Sequence[str]]], *, env: dict[str, str],
                             timeout: float = 600) -> list[CommandResult]:
    """Run each ``(cwd, module, args)`` as ``python -m module args`` would, one after the other in one new
    interpreter; for command lines that stop before doing any work (help, argument and config errors)."""
    request = [[str(Path(cwd).resolve()), module, list(args)] for cwd, module, args in calls]
    completed = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(request)], capture_output=True, text=True,
                               env=env, timeout=timeout, check=False, cwd=ROOT)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(_RESULT_MARKER)]
    assert completed.returncode == 0 and lines, what_it_printed(completed)
    return [CommandResult(**result) for result in json.loads(lines[-1][len(_RESULT_MARKER):])]
