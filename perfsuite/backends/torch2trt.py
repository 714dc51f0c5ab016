"""``torch2trt``: the lab report's converter, ``torch2trt(model, [x], fp16_mode=...)``.

As in the report, the fp32 model is converted on the GPU from an example input (fp16_mode lets
TensorRT pick fp16 kernels while the engine's I/O stays fp32), and the result is saved and
reloaded through ``TRTModule``'s state_dict. The saved state_dict lives in the engine cache (it
holds the serialized engine); it is read back with ``torch.load(..., weights_only=True)``.

torch2trt is not on PyPI. It supports TensorRT 8 and 10; TensorRT 11 removed the builder flags it
sets for fp16/int8 (detected by the absence of ``BuilderFlag.FP16``), so there it skips.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import torch

from perfsuite.backends.base import RunSpec
from perfsuite.backends.converted import ConvertedModuleRunner
from perfsuite.backends.tensorrt import engine_facts
from perfsuite.engine_cache import ArtifactKey, Built, gpu_target
from perfsuite.environment import package_version
from perfsuite.onnx_export import IMAGE_SHAPE

SOURCE = "pip install git+https://github.com/NVIDIA-AI-IOT/torch2trt"


class Torch2TrtRunner(ConvertedModuleRunner):
    name = "torch2trt"
    needs = ("tensorrt", "torch2trt")
    install = (f"torch2trt is not on PyPI; install it from source: {SOURCE} (it needs full TensorRT 8 or 10: "
               "pip install 'perfsuite[tensorrt]')")

    @classmethod
    def _gpu_reason(cls, spec: RunSpec) -> str | None:
        if spec.precision == "bf16":
            return "torch2trt: has no bf16 mode (fp16_mode and int8_mode only)"
        import tensorrt as trt

        if not hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 11: strong typing only
            return (f"torch2trt: TensorRT {trt.__version__} has no BuilderFlag.FP16 (removed in TensorRT 11), which "
                    f"torch2trt sets; torch2trt supports TensorRT 8 and 10: pip install 'tensorrt>=10,<11', then "
                    f"torch2trt from source: {SOURCE}")
        return None

    def prepare(self, images: torch.Tensor) -> Any:
        # The engine's I/O is fp32 in every mode (fp16_mode only changes the kernels inside).
        return images.to(self.spec.device, torch.float32).contiguous()

    def _key(self) -> ArtifactKey:
        import tensorrt as trt

        batch = self.spec.batch_size
        return ArtifactKey(
            backend=self.name, flavor="tensorrt",
            library_version=f"torch2trt {package_version('torch2trt')} / tensorrt {trt.__version__}",
            model=self.model.name, model_fingerprint=self.model.fingerprint, target=gpu_target(self.spec.device),
            precision=self.spec.precision, shapes={"input_0": [batch, *IMAGE_SHAPE]},
            options={"fp16_mode": self.spec.precision == "fp16", "max_batch_size": batch,
                     "saved_as": "TRTModule.state_dict"},
        )

    def _convert(self) -> Built:
        from torch2trt import torch2trt

        module = copy.deepcopy(self.model.module).to(self.spec.device).eval()
        example = torch.zeros(self.spec.batch_size, *IMAGE_SHAPE, device=self.spec.device)
        with torch.no_grad():
            converted = torch2trt(module, [example], fp16_mode=self.spec.precision == "fp16",
                                  max_batch_size=self.spec.batch_size)
        buffer = io.BytesIO()
        torch.save(converted.state_dict(), buffer)
        return Built(buffer.getvalue())

    def _load(self) -> None:
        from torch2trt import TRTModule

        state = torch.load(io.BytesIO(self.artifact.data), map_location="cpu", weights_only=True)
        self._engine_bytes = len(state.get("engine", b""))
        module = TRTModule()
        module.load_state_dict(state)
        self._module = module

    def metrics(self) -> dict[str, Any]:
        facts = super().metrics()  # artifact_bytes: the saved state_dict
        if self._module is not None:
            facts["engine_bytes"] = self._engine_bytes
            facts.update(engine_facts(self._module.engine))
        return facts
