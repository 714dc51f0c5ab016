"""torch -> ONNX, once per (weights, precision, batch, versions), kept in the engine cache on disk.

The exporter is pinned: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter,
the default since torch 2.9; the TorchScript one is deprecated). Precision is carried by the ONNX
dtypes: an fp16 or bf16 export is of the model cast to that dtype, which is what a strongly typed
TensorRT network needs.

The export is an entry of :class:`~perfsuite.engine_cache.EngineCache` (``<name>.onnx``, written
atomically, verified by sha256 when read), so every backend that uses it reads the same bytes, its
cost (``build_s`` in its metadata, measured when it was exported) is reported by every row that
uses it, and ``perfsuite export`` writes exactly the file the suite measured for other tools
(``polygraphy run``, ``trtexec --onnx``).

The export runs in a fresh process (:func:`export_in_fresh_process`): the exporter keeps 100-170 MiB
of tracing state in the process that ran it, which would otherwise be counted in the memory of
whichever row happened to make the export, and missing from the rows of a run that found it cached.
Its time is measured there around the export alone. A model the fresh process cannot rebuild from its
name and weights (one edited in memory) is exported here, and the metadata says so.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

import torch

from perfsuite.backends.base import TORCH_DTYPES
from perfsuite.engine_cache import ArtifactKey, Built, CachedArtifact, EngineCache
from perfsuite.environment import package_version
from perfsuite.errors import BackendUnavailable
from perfsuite.models import LoadedModel

EXPORTER = "torch.onnx dynamo (torch.export)"
OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
MAX_DYNAMIC_BATCH = 256
#: The image input every export has, after the batch dimension.
IMAGE_SHAPE = (3, 224, 224)


def export_key(model: LoadedModel, precision: str, batch_size: int | None) -> ArtifactKey:
    """The cache key of an export: what the exporter is given, and the versions of what produces the bytes."""
    if batch_size is None:
        shape: Any = {"min": [1, *IMAGE_SHAPE], "max": [MAX_DYNAMIC_BATCH, *IMAGE_SHAPE]}
    else:
        shape = [batch_size, *IMAGE_SHAPE]
    return ArtifactKey(
        backend="onnx-export", flavor="onnx", kind="onnx", model=model.name, model_fingerprint=model.fingerprint,
        library_version=f"torch {torch.__version__} / onnxscript {package_version('onnxscript')} / onnx "
                        f"{package_version('onnx')}",
        target={}, precision=precision, shapes={INPUT_NAME: shape},
        options={"exporter": EXPORTER, "opset": OPSET, "output": OUTPUT_NAME},
    )


def export_onnx(model: LoadedModel, precision: str, batch_size: int | None,
                cache: EngineCache | None = None) -> CachedArtifact:
    """The ONNX export of ``model`` at ``precision`` with a static batch (dynamic with ``None``): from
    the cache, or exported now and stored."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail with the extra's name)
    except ImportError as exc:
        raise BackendUnavailable("ONNX export needs onnx and onnxscript (pip install 'perfsuite[onnx]')") from exc
    cache = cache if cache is not None else EngineCache()
    return cache.get_or_build(export_key(model, precision, batch_size),
                              lambda: export_in_fresh_process(model, precision, batch_size))


def export_in_fresh_process(model: LoadedModel, precision: str, batch_size: int | None) -> Built:
    """The export's bytes, made by a fresh Python process from the model's name and weights, with the
    export's own time; made here where that process cannot rebuild the same weights."""
    import tempfile
    import time

    from perfsuite.fresh_process import run_in_fresh_process, weights_argument

    with tempfile.TemporaryDirectory(prefix="perfsuite-export-") as folder:
        output = Path(folder) / "model.onnx"
        result = run_in_fresh_process("perfsuite.onnx_export.export_to_file", {
            "model_name": model.name, "weights": weights_argument(model), "fingerprint": model.fingerprint,
            "precision": precision, "batch_size": batch_size, "path": str(output)})
        if result.get("exported"):
            return Built(output.read_bytes(), {"exported_in": "a fresh process"}, seconds=result["export_s"])
    started = time.perf_counter()
    data = _export(model, precision, batch_size)
    return Built(data, {"exported_in": f"this process ({result['not_exported']})"},
                 seconds=time.perf_counter() - started)


def export_to_file(process_started: float, model_name: str, weights: str, fingerprint: str, precision: str,
                   batch_size: int | None, path: str) -> dict[str, Any]:
    """The fresh process's side of :func:`export_in_fresh_process`."""
    import time

    from perfsuite.models import load_model

    model = load_model(model_name, weights)
    if model.fingerprint != fingerprint:
        return {"not_exported": f"weights {weights!r} give fingerprint {model.fingerprint[:12]} there, not "
                                f"{fingerprint[:12]}: the model was edited in memory"}
    started = time.perf_counter()
    data = _export(model, precision, batch_size)
    export_s = time.perf_counter() - started
    Path(path).write_bytes(data)
    return {"exported": True, "export_s": export_s}


def export_facts(export: CachedArtifact) -> dict[str, Any]:
    """What rows report about the ONNX file a backend ran: exporter, opset, size, sha256, cached file."""
    return {"exporter": export.key.options["exporter"], "opset": export.key.options["opset"],
            "onnx_bytes": export.size, "onnx_sha256": export.sha256, "onnx_file": export.path.name}


def _export(model: LoadedModel, precision: str, batch_size: int | None) -> bytes:
    dtype = TORCH_DTYPES[precision]
    module = model.module if dtype == torch.float32 else copy.deepcopy(model.module).to(dtype)
    example = torch.zeros(batch_size or 2, *IMAGE_SHAPE, dtype=dtype)
    dynamic = None
    if batch_size is None:
        dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)}}
    # The exporter reports progress on stdout; keep test and benchmark output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
        )
    return program.model_proto.SerializeToString()
