"""Every TensorRT name the backend uses exists on the real TensorRT-RTX bindings.

The runtime path (deserialize, bind by name, execute_async_v3, inspect) runs only on a GPU the RTX
runtime supports, which CI does not have; this test catches a renamed or removed call anyway.
``TRT_API`` in perfsuite/backends/tensorrt.py is the list; a scan of that module's source checks
the list is exactly what the code touches, so the test covers what the code really uses.
"""

from __future__ import annotations

import ast
import inspect

import pytest

from perfsuite.backends import tensorrt as backend
from perfsuite.backends.tensorrt import TENSORRT_RTX, TRT_API

# How the module names TensorRT objects: variable or attribute name -> the TensorRT class.
NAMED_AS = {
    "trt": "", "builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
    "error": "ParserError", "builder_config": "IBuilderConfig", "profile": "IOptimizationProfile",
    "timing_cache": "ITimingCache", "runtime": "Runtime", "engine": "ICudaEngine", "_engine": "ICudaEngine",
    "context": "IExecutionContext", "_context": "IExecutionContext", "inspector": "EngineInspector",
    "itensor": "ITensor", "layer": "ILayer", "constant": "ILayer", "product": "ILayer",
}
# The code that runs only where a GPU executes engines.
RUNTIME_UNITS = (backend.flavor_logger, backend.deserialize_engine, backend.EngineSession, backend.engine_facts,
                 backend.supported_compute_capabilities, backend.TensorRTRunner)


def _owner(node: ast.AST) -> str | None:
    """The TensorRT class an expression stands for: a known name, or ``trt.Class``."""
    if isinstance(node, ast.Name):
        return NAMED_AS.get(node.id)
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "trt":
            return node.attr
        return NAMED_AS.get(node.attr)
    return None


def used_names(source: str) -> set[tuple[str, str]]:
    """(owner, name) of every TensorRT attribute the source reads, calls, or probes with hasattr/getattr."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner = _owner(node.value)
            if owner is not None:
                found.add((owner, node.attr))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
            owner = _owner(node.args[0])
            if owner is not None:
                found.add((owner, node.args[1].value))
    return found


def declared(*groups: str) -> set[tuple[str, str]]:
    return {(owner, name) for group in groups for owner, names in TRT_API[group].items() for name in names}


def test_the_list_is_exactly_what_the_module_uses():
    used = used_names(inspect.getsource(backend))
    listed = declared("runtime", "build")
    assert used - listed == set(), "used but not in TRT_API"
    assert listed - used == set(), "in TRT_API but not used"


def test_the_runtime_list_covers_the_runtime_path():
    used = set().union(*(used_names(inspect.getsource(unit)) for unit in RUNTIME_UNITS))
    assert used, "the scan found nothing: the naming in NAMED_AS no longer matches the code"
    assert used - declared("runtime") == set()
    assert ("IExecutionContext", "execute_async_v3") in used and ("Runtime", "deserialize_cuda_engine") in used


@pytest.mark.parametrize("group", ["runtime", "build"])
def test_every_name_exists_on_the_real_tensorrt_rtx_bindings(group):
    trt = pytest.importorskip(TENSORRT_RTX.module_name,
                              reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")
    missing = []
    for owner, names in TRT_API[group].items():
        target = trt if owner == "" else getattr(trt, owner, None)
        if target is None:
            missing.append(owner)
            continue
        missing += [f"{owner}.{name}".lstrip(".") for name in names if not hasattr(target, name)]
    assert missing == [], f"{trt.__name__} {trt.__version__} lacks {', '.join(missing)}"


def test_the_runtime_entry_point_really_runs_here():
    """Runtime + deserialize_cuda_engine execute for real on this machine; without a usable GPU the
    attempt fails with TensorRT's own logged reason, which is what the skip reasons carry."""
    pytest.importorskip(TENSORRT_RTX.module_name, reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: tests/test_tensorrt_gpu.py covers the runtime there")
    engine = backend.build_probe_engine(TENSORRT_RTX)
    relay = backend.flavor_logger(TENSORRT_RTX).relay
    failure = r"deserialize_cuda_engine returned no engine .*\[ERROR\]"
    # nested captures, as in run_probe: both see TensorRT's errors
    with relay.capture() as outer, pytest.raises(backend.EngineLoadError, match=failure):
        backend.deserialize_engine(TENSORRT_RTX, engine.data)
    assert any(line.startswith("[ERROR]") for line in outer)
    assert relay._captures == []


def test_the_probe_reason_comes_from_the_failed_deserialization():
    """The reason an unsupported GPU gets, built here from a real failed deserialize_cuda_engine."""
    pytest.importorskip(TENSORRT_RTX.module_name, reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: tests/test_tensorrt_gpu.py probes it for real")
    probe = backend.run_probe(TENSORRT_RTX, {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, "cpu")
    assert not probe.ok and probe.step == "deserialize_cuda_engine"
    assert probe.reason.startswith(f"tensorrt-rtx: the TensorRT-RTX {probe.version} runtime cannot run on "
                                   "NVIDIA H100 80GB HBM3 (compute capability 9.0): deserialize_cuda_engine failed; ")
    assert "TensorRT logged: [ERROR] IRuntime::deserializeCudaEngine" in probe.reason
    assert probe.reason.endswith(f"builds engines for compute capabilities {', '.join(probe.supported)}")
    assert "8.6" in probe.supported and "9.0" not in probe.supported
