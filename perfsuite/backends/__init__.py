"""The backend registry: name -> runner class, imported only when asked for.

Adding a backend is one module defining a :class:`~perfsuite.backends.base.Runner` subclass and
one line here.
"""

from __future__ import annotations

import importlib

from perfsuite.backends.base import BackendConfig, Runner, RunSpec
from perfsuite.errors import InputError

# name -> "module:RunnerClass"; modules are imported lazily so a missing optional dependency
# only affects the backend that needs it.
_REGISTRY: dict[str, str] = {
    "eager": "perfsuite.backends.eager:EagerRunner",
    "onnxruntime": "perfsuite.backends.onnxruntime:OnnxRuntimeRunner",
    "eager-channels-last": "perfsuite.backends.eager:EagerChannelsLastRunner",
    "cudagraph": "perfsuite.backends.cudagraph:CudaGraphRunner",
    "cudagraph-channels-last": "perfsuite.backends.cudagraph:CudaGraphChannelsLastRunner",
    "compile": "perfsuite.backends.compile:CompileRunner",
    "compile-reduce-overhead": "perfsuite.backends.compile:ReduceOverheadRunner",
    "compile-max-autotune": "perfsuite.backends.compile:MaxAutotuneRunner",
    "compile-max-autotune-channels-last": "perfsuite.backends.compile:MaxAutotuneChannelsLastRunner",
    "compile-max-autotune-cudagraph": "perfsuite.backends.compile:MaxAutotuneCapturedRunner",
    "onnxruntime-cuda": "perfsuite.backends.onnxruntime:OnnxRuntimeCudaRunner",
    "onnxruntime-trt": "perfsuite.backends.onnxruntime:OnnxRuntimeTensorRTRunner",
    "tensorrt": "perfsuite.backends.tensorrt:TensorRTRunner",
    "tensorrt-rtx": "perfsuite.backends.tensorrt:TensorRTRtxRunner",
    "torch2trt": "perfsuite.backends.torch2trt:Torch2TrtRunner",
    "torch_tensorrt": "perfsuite.backends.torch_tensorrt:TorchTensorRTRunner",
}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_runner_class(name: str) -> type[Runner]:
    if name not in _REGISTRY:
        raise InputError(f"backend {name!r}: unknown; choose from {', '.join(_REGISTRY)}")
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def unavailable_reason(name: str, spec: RunSpec) -> str | None:
    """Why ``name`` cannot run ``spec`` here (None: it can, as far as static checks tell)."""
    return get_runner_class(name).unavailable_reason(spec)


__all__ = ["BackendConfig", "RunSpec", "Runner", "backend_names", "get_runner_class", "unavailable_reason"]
