"""``torch_tensorrt``: Torch-TensorRT's dynamo path, ``torch_tensorrt.compile(model, ir="dynamo", ...)``.

The compiled module is saved with ``torch_tensorrt.save`` (an ExportedProgram holding the TensorRT
engines) into the engine cache and loaded back with ``torch.export.load``, so build, load and size
are measured like every TensorRT path. Precision is carried by the model's and input's dtype; where
Torch-TensorRT offers explicit typing (``use_explicit_typing``, the way with TensorRT 11) it is
used, otherwise ``enabled_precisions`` names the dtype.

Torch-TensorRT needs full TensorRT and pins the torch version it was built for.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import tempfile
from pathlib import Path
from typing import Any

import torch

from perfsuite.backends.converted import ConvertedModuleRunner
from perfsuite.engine_cache import ArtifactKey, Built, gpu_target
from perfsuite.environment import cuda_index, package_version
from perfsuite.onnx_export import IMAGE_SHAPE


def _inputs_keyword(function: Any) -> str:
    """``arg_inputs`` in newer Torch-TensorRT, ``inputs`` in older ones."""
    try:
        return "arg_inputs" if "arg_inputs" in inspect.signature(function).parameters else "inputs"
    except (TypeError, ValueError):
        return "inputs"


class TorchTensorRTRunner(ConvertedModuleRunner):
    name = "torch_tensorrt"
    needs = ("torch_tensorrt", "tensorrt")
    install = ("pip install 'perfsuite[torch-tensorrt]' (Torch-TensorRT pins its torch version: use the release "
               f"matching torch {'.'.join(torch.__version__.split('.')[:2])}; it brings full TensorRT)")

    def _key(self) -> ArtifactKey:
        import tensorrt as trt

        return ArtifactKey(
            backend=self.name, flavor="tensorrt",
            library_version=f"torch_tensorrt {package_version('torch-tensorrt')} / tensorrt {trt.__version__} / "
                            f"torch {torch.__version__}",
            model=self.model.name, model_fingerprint=self.model.fingerprint, target=gpu_target(self.spec.device),
            precision=self.spec.precision, shapes={"x": [self.spec.batch_size, *IMAGE_SHAPE]},
            # the saved program names the CUDA ordinal it was built on, and Torch-TensorRT deserializes onto it
            options={"ir": "dynamo", "saved_as": "exported_program", "cuda_index": cuda_index(self.spec.device)},
        )

    def _convert(self) -> Built:
        import torch_tensorrt

        dtype = self.spec.dtype
        module = copy.deepcopy(self.model.module).to(self.spec.device, dtype).eval()
        example = torch.zeros(self.spec.batch_size, *IMAGE_SHAPE, dtype=dtype, device=self.spec.device)
        settings = {f.name for f in dataclasses.fields(torch_tensorrt.dynamo.CompilationSettings)}
        typing = {"use_explicit_typing": True} if "use_explicit_typing" in settings else {"enabled_precisions": {dtype}}
        compiled = torch_tensorrt.compile(module, ir="dynamo", min_block_size=1,
                                          **{_inputs_keyword(torch_tensorrt.compile): [example]}, **typing)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.ep"
            torch_tensorrt.save(compiled, str(path), **{_inputs_keyword(torch_tensorrt.save): [example]})
            return Built(path.read_bytes(), {"typing": next(iter(typing))})

    def _load(self) -> None:
        import torch_tensorrt  # noqa: F401  (registers the TensorRT engine class the program refers to)

        self._module = torch.export.load(io.BytesIO(self.artifact.data)).module()

    def metrics(self) -> dict[str, Any]:
        facts = super().metrics()
        if self.artifact is not None:  # the saved program holds the engines
            facts["engine_bytes"] = self.artifact.size
            facts["torch_tensorrt_typing"] = self.artifact.notes.get("typing")
        return facts
