"""Run one perfsuite function in a fresh Python process and get its JSON result back.

Cold figures (CUDA context creation, nvJPEG handle creation, a compilation with empty in-memory
caches) exist only in a process that has not done that work yet, and the pytest process has. The
child imports the function by its dotted path, calls it with JSON keyword arguments plus
``process_started`` (its ``perf_counter`` reading before any import), and prints one marked JSON
line. The child inherits ``torch.backends.cudnn.benchmark`` from the parent. A
:class:`BackendUnavailable` in the child becomes the same exception here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfsuite.errors import BackendUnavailable, PerfsuiteError

if TYPE_CHECKING:
    from perfsuite.models import LoadedModel

RESULT_MARKER = "PERFSUITE_FRESH_PROCESS_RESULT "
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_BOOTSTRAP = (
    "import time; _started = time.perf_counter()\n"
    "from perfsuite.fresh_process import child_main; child_main(_started)\n"
)


def run_in_fresh_process(function: str, kwargs: dict[str, Any], *, timeout_s: float = 600.0,
                         env: dict[str, str] | None = None) -> dict[str, Any]:
    """Call ``function`` ("package.module.name") in a new interpreter; its result plus ``process_wall_s``."""
    import torch

    from perfsuite.gate.record import tie_to_parent

    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, child_env.get("PYTHONPATH")]))
    request = json.dumps({"function": function, "kwargs": kwargs,
                          "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)})
    started = time.perf_counter()
    try:
        finished = subprocess.run([sys.executable, "-c", _BOOTSTRAP, request], capture_output=True, text=True,
                                  timeout=timeout_s, env=child_env, check=False,
                                  preexec_fn=tie_to_parent(os.getpid(), own_group=False))  # dies with us
    except subprocess.TimeoutExpired as exc:
        raise PerfsuiteError(f"{function} in a fresh process did not finish within {timeout_s:.0f} s") from exc
    wall = time.perf_counter() - started
    lines = [line for line in finished.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if finished.returncode != 0 or not lines:
        tail = "\n".join((finished.stderr or finished.stdout).strip().splitlines()[-15:])
        raise PerfsuiteError(f"{function} in a fresh process failed (exit {finished.returncode}):\n{tail}")
    result = json.loads(lines[-1][len(RESULT_MARKER):])
    if "unavailable" in result:
        raise BackendUnavailable(result["unavailable"])
    result["process_wall_s"] = wall
    return result


def skip_the_final_collection_at_exit() -> None:
    """At interpreter exit, leave the objects alive then to the operating system instead of collecting them.

    With torch, torchvision and torch.export loaded, the interpreter's final garbage collection took 1.2-1.6 s
    of every process's exit on the 2-core CI machine (0.1-0.4 s without it), and the suite's commands, child
    pytest runs and fresh processes all pay it. Registered with atexit, so it happens only when the process
    really ends (a program that calls perfsuite and goes on keeps its collector), after the handlers
    registered later; every file perfsuite writes is closed and renamed into place before then."""
    import atexit
    import gc

    global _FINAL_COLLECTION_SKIPPED
    if not _FINAL_COLLECTION_SKIPPED:
        atexit.register(gc.freeze)
        _FINAL_COLLECTION_SKIPPED = True


_FINAL_COLLECTION_SKIPPED = False


def weights_argument(model: LoadedModel) -> str:
    """What a fresh process passes to ``load_model`` to get ``model``'s weights again."""
    return model.weights_source if model.weights == "file" else model.weights


def child_main(process_started: float) -> None:
    """The child's side: import, call, print the marked result line."""
    import importlib

    skip_the_final_collection_at_exit()

    request = json.loads(sys.argv[1])
    if request.get("cudnn_benchmark"):
        import torch

        torch.backends.cudnn.benchmark = True
    module_name, _, name = request["function"].rpartition(".")
    function = getattr(importlib.import_module(module_name), name)
    try:
        result = function(process_started=process_started, **request["kwargs"])
    except BackendUnavailable as exc:
        result = {"unavailable": str(exc)}
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
