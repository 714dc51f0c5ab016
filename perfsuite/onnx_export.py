"""torch -> ONNX, once per (model weights, precision, batch), shared by every ONNX-based backend.

The exporter is pinned: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter,
the default since torch 2.9; the TorchScript one is deprecated). Precision is carried by the ONNX
dtypes: an fp16 or bf16 export is of the model cast to that dtype, which is what a strongly typed
TensorRT network needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
import time

import torch

from perfsuite.backends.base import TORCH_DTYPES
from perfsuite.errors import BackendUnavailable
from perfsuite.models import LoadedModel

EXPORTER = "torch.onnx dynamo (torch.export)"
OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
MAX_DYNAMIC_BATCH = 256


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    model_bytes: bytes
    precision: str
    batch_size: int | None  # None: dynamic batch dimension
    exporter: str
    opset: int
    export_seconds: float

    def describe(self) -> dict[str, object]:
        return {"exporter": self.exporter, "opset": self.opset, "onnx_bytes": len(self.model_bytes),
                "export_s": self.export_seconds, "dynamic_batch": self.batch_size is None}


_cache: dict[tuple[str, str, int | None], OnnxExport] = {}
_lock = threading.Lock()


def export_onnx(model: LoadedModel, precision: str, batch_size: int | None) -> OnnxExport:
    """Export ``model`` at ``precision`` with a static batch (or dynamic with ``None``); memoized."""
    key = (model.fingerprint, precision, batch_size)
    with _lock:
        if key in _cache:
            return _cache[key]
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail with the extra's name)
    except ImportError as exc:
        raise BackendUnavailable("ONNX export needs onnx and onnxscript (pip install 'perfsuite[onnx]')") from exc
    dtype = TORCH_DTYPES[precision]
    module = model.module if dtype == torch.float32 else _cast_copy(model.module, dtype)
    example = torch.zeros(batch_size or 2, 3, 224, 224, dtype=dtype)
    dynamic = None
    if batch_size is None:
        dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)}}
    started = time.perf_counter()
    # The exporter reports progress on stdout; keep test and benchmark output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
        )
    result = OnnxExport(
        model_bytes=program.model_proto.SerializeToString(),
        precision=precision,
        batch_size=batch_size,
        exporter=EXPORTER,
        opset=OPSET,
        export_seconds=time.perf_counter() - started,
    )
    with _lock:
        _cache[key] = result
    return result


def _cast_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module).to(dtype)
