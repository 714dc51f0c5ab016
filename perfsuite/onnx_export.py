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

The file declares the lowest ONNX IR version its content needs (:func:`lowest_ir_version`), not the
newest the installed ``onnx`` package knows: onnx 1.23 writes IR 14, which ONNX Runtime 1.30 refuses
("max supported IR version: 13") although nothing in an AlexNet export needs more than IR 10. A runtime
that reads the opset reads the file; one that does not is refused by the backend naming both versions.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from perfsuite.backends.base import TORCH_DTYPES
from perfsuite.engine_cache import ArtifactKey, Built, CachedArtifact, EngineCache
from perfsuite.environment import package_version
from perfsuite.errors import BackendUnavailable
from perfsuite.models import LoadedModel

if TYPE_CHECKING:
    import onnx

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
        options={"exporter": EXPORTER, "opset": OPSET, "output": OUTPUT_NAME, "ir_version": "lowest needed"},
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
    proto = program.model_proto
    proto.ir_version = lowest_ir_version(proto)
    return proto.SerializeToString()


# What each ONNX IR version added that a model can use, from onnx.proto (message Version): a model that uses
# none of a version's additions is also a model of the version before it.
_ELEMENT_TYPES_ADDED = {
    9: ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"),
    10: ("UINT4", "INT4"),
    11: ("FLOAT4E2M1",),
    12: ("FLOAT8E8M0",),
    13: ("UINT2", "INT2"),
    14: ("FLOAT6E2M3", "FLOAT6E3M2"),
}
_FIELDS_ADDED = {  # (message, field): the IR version that added the field
    ("FunctionProto", "attribute_proto"): 9,
    **{(message, "metadata_props"): 10 for message in ("NodeProto", "GraphProto", "TensorProto", "ValueInfoProto",
                                                       "FunctionProto")},
    ("NodeProto", "overload"): 10, ("FunctionProto", "overload"): 10, ("FunctionProto", "value_info"): 10,
    ("NodeProto", "device_configurations"): 11, ("ModelProto", "configuration"): 11,
}
# Attributes that hold an element type (Cast's "to", EyeLike's "dtype", ...).
_TYPE_ATTRIBUTES = ("to", "dtype", "output_dtype")


def lowest_ir_version(model: onnx.ModelProto) -> int:
    """The lowest ONNX IR version whose format has everything ``model`` uses: what its operator sets need
    (onnx's own table, :func:`onnx.helper.find_min_ir_version_for`), its element types and its fields.
    Never above the model's own."""
    from onnx import TensorProto, helper

    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    type_needs = {getattr(TensorProto, name): version for version, names in _ELEMENT_TYPES_ADDED.items()
                  for name in names if hasattr(TensorProto, name)}
    for message, field, value in _fields(model):
        needed = max(needed, _FIELDS_ADDED.get((message, field), 0))
        if field in ("data_type", "elem_type"):
            needed = max(needed, type_needs.get(value, 0))
    for attribute in _attributes(model):
        if attribute.name in _TYPE_ATTRIBUTES:
            needed = max(needed, type_needs.get(attribute.i, 0))
    return min(needed, model.ir_version)


def _fields(message: Any) -> Iterator[tuple[str, str, Any]]:
    """(message type, field name, value) of every set field of ``message`` and of the messages in it;
    for a repeated scalar field, one entry per value."""
    name = message.DESCRIPTOR.name
    if name == "TensorProto":  # not ListFields: that would copy its raw_data (the weights) to look at it
        yield name, "data_type", message.data_type
        if len(message.metadata_props):
            yield name, "metadata_props", None
        return
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            values = value if _repeated(descriptor) else [value]
            if descriptor.name in ("data_type", "elem_type"):
                yield from ((name, descriptor.name, v) for v in values)
            else:
                yield name, descriptor.name, None
            continue
        yield name, descriptor.name, None
        for item in (value if _repeated(descriptor) else [value]):
            yield from _fields(item)


def _repeated(descriptor: Any) -> bool:
    if hasattr(descriptor, "is_repeated"):  # protobuf >= 6 (which dropped ``label``)
        return bool(descriptor.is_repeated)
    return descriptor.label == descriptor.LABEL_REPEATED


def _attributes(model: onnx.ModelProto) -> Iterator[Any]:
    """Every node attribute of the model, in subgraphs and functions too."""
    def nodes(graph: Any) -> Iterator[Any]:
        for node in graph.node:
            yield node
            for attribute in node.attribute:
                for subgraph in [attribute.g, *attribute.graphs]:
                    yield from nodes(subgraph)

    for node in [*nodes(model.graph), *(n for function in model.functions for n in function.node)]:
        yield from node.attribute
