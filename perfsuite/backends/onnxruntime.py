"""``onnxruntime``: the shared ONNX export run by ONNX Runtime.

On the CPU it uses the CPU execution provider. On a GPU it needs the CUDA execution provider
(the ``onnxruntime-gpu`` package); inputs and outputs then stay on the GPU through I/O binding
so that the timed call does not include host copies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from perfsuite.backends.base import BackendConfig, Runner, RunSpec
from perfsuite.environment import is_cuda
from perfsuite.errors import BackendUnavailable
from perfsuite.onnx_export import INPUT_NAME, OUTPUT_NAME, OnnxExport, export_onnx

_NUMPY_DTYPES = {"fp32": np.float32, "fp16": np.float16}


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeConfig(BackendConfig):
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    requires = ("onnxruntime", "onnx", "onnxscript")
    extra = "onnx"
    config_class = OnnxRuntimeConfig
    config: OnnxRuntimeConfig

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        if is_cuda(spec.device):
            if spec.precision == "bf16":
                return "onnxruntime: bf16 I/O binding on the GPU is not implemented by perfsuite"
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return (
                    "onnxruntime: no CUDAExecutionProvider in this onnxruntime "
                    f"({', '.join(onnxruntime.get_available_providers())}); pip install onnxruntime-gpu"
                )
        return None

    def _build(self) -> None:
        # One dynamic-batch export serves every batch size.
        self.export: OnnxExport = export_onnx(self.model, self.spec.precision, batch_size=None)

    def _load(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.config.intra_op_threads:
            options.intra_op_num_threads = self.config.intra_op_threads
        providers = ["CUDAExecutionProvider"] if is_cuda(self.spec.device) else ["CPUExecutionProvider"]
        try:
            self._session = onnxruntime.InferenceSession(self.export.model_bytes, options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own exception types per failure
            raise BackendUnavailable(f"onnxruntime: cannot create a {providers[0]} session: {exc}") from exc
        self._output_shape = (self.spec.batch_size, *self._session.get_outputs()[0].shape[1:])

    def prepare(self, images: torch.Tensor) -> Any:
        if is_cuda(self.spec.device):
            return images.to(self.spec.device, self.spec.dtype).contiguous()
        return images.to(self.spec.dtype).numpy()

    def infer(self, prepared: Any) -> Any:
        if not is_cuda(self.spec.device):
            return self._session.run([OUTPUT_NAME], {INPUT_NAME: prepared})[0]
        # GPU: bind torch tensors in place so no host round trip is timed.
        output = torch.empty((prepared.shape[0], *self._output_shape[1:]), dtype=prepared.dtype,
                             device=prepared.device)
        index = prepared.device.index or 0
        binding = self._session.io_binding()
        element = _NUMPY_DTYPES[self.spec.precision]
        binding.bind_input(INPUT_NAME, "cuda", index, element, tuple(prepared.shape), prepared.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", index, element, tuple(output.shape), output.data_ptr())
        self._session.run_with_iobinding(binding)
        return output

    def to_tensor(self, output: Any) -> torch.Tensor:
        if isinstance(output, np.ndarray):
            return torch.from_numpy(output.astype(np.float32))
        return super().to_tensor(output)

    def _release(self) -> None:
        self._session = None

    def metrics(self) -> dict[str, Any]:
        facts = {**super().metrics(), **self.export.describe()} if hasattr(self, "export") else super().metrics()
        facts["onnxruntime_providers"] = self._session.get_providers() if getattr(self, "_session", None) else None
        return facts
