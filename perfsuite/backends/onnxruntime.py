"""``onnxruntime``: the shared ONNX export run by ONNX Runtime.

On the CPU it uses the CPU execution provider. On a GPU it needs the CUDA execution provider
(the ``onnxruntime-gpu`` package); inputs and outputs then stay on the GPU through I/O binding
so that the timed call does not include host copies.

``onnxruntime-cuda`` and ``onnxruntime-trt`` name the GPU execution provider explicitly (CUDA, or
TensorRT with CUDA for what TensorRT does not take); both need ``onnxruntime-gpu`` and skip with
that reason without it. TensorRT engines are cached under ``<cache_dir>/onnxruntime-tensorrt``.

A session that cannot be created fails the test with ONNX Runtime's message (:class:`BackendError`),
except where the environment is the reason (:class:`BackendUnavailable`, a skip): a provider that is
missing or could not be created, a dtype the provider has no kernel for (ONNX Runtime's CPU
provider refuses bf16 Conv), or an export of an ONNX IR version newer than this ONNX Runtime reads
(the skip names both versions), each with ONNX Runtime's own words.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import numpy as np
import torch

from perfsuite.backends.base import BackendConfig, Runner, RunSpec
from perfsuite.config import cache_root, load_suite_config
from perfsuite.engine_cache import CachedArtifact, conversion_facts
from perfsuite.environment import cuda_index, is_cuda
from perfsuite.errors import BackendError, BackendUnavailable
from perfsuite.onnx_export import INPUT_NAME, OUTPUT_NAME, export_facts, export_onnx

_NUMPY_DTYPES = {"fp32": np.float32, "fp16": np.float16}
_ONNX_TYPE_NAMES = {"fp32": "float", "fp16": "float16", "bf16": "bfloat16"}
# ONNX Runtime's words for a model of an IR version newer than it reads (onnxruntime/core/graph/model.cc).
_NEWER_IR = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def missing_kernel(exc: Exception, precision: str) -> bool:
    """Whether ONNX Runtime refused a session for lack of a kernel: its NOT_IMPLEMENTED error, or a type
    error on the run's own dtype (how its CPU provider refuses bf16 Conv)."""
    text = str(exc)
    return type(exc).__name__ == "NotImplemented" or (
        f"Type 'tensor({_ONNX_TYPE_NAMES[precision]})' of input parameter" in text and "is invalid" in text)


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeConfig(BackendConfig):
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    requires = ("onnxruntime", "onnx", "onnxscript")
    extra = "onnx"
    config_class = OnnxRuntimeConfig
    config: OnnxRuntimeConfig
    #: the GPU execution provider a subclass insists on; None: CPU provider on the CPU, CUDA on a GPU
    execution_provider: ClassVar[str | None] = None
    device_time_unavailable = ("onnxruntime: infer() synchronizes torch's stream before the session runs, and "
                               "run_with_iobinding() waits for its results: the stream cannot be held")

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        if is_cuda(spec.device) or cls.execution_provider:
            if spec.precision == "bf16":
                return f"{cls.name}: bf16 I/O binding on the GPU is not implemented by perfsuite"
            import onnxruntime

            wanted = cls.execution_provider or "CUDAExecutionProvider"
            if wanted not in onnxruntime.get_available_providers():
                return (
                    f"{cls.name}: no {wanted} in this onnxruntime "
                    f"({', '.join(onnxruntime.get_available_providers())}); pip install onnxruntime-gpu"
                )
            if not is_cuda(spec.device):
                return f"{cls.name}: {wanted} runs on a CUDA GPU (--device cuda)"
        return None

    @classmethod
    def expected_skip(cls, spec: RunSpec) -> str | None:
        if spec.precision == "bf16" and not is_cuda(spec.device) and not cls.execution_provider:
            return (f"{cls.name}: ONNX Runtime's CPU execution provider has no bf16 kernel for Conv, so a session "
                    "for this model cannot be created")
        return None

    def _providers(self) -> list[Any]:
        if not is_cuda(self.spec.device):
            return ["CPUExecutionProvider"]
        # Each GPU provider is told the run's GPU: ONNX Runtime's default is device 0, whatever --device says.
        cuda = ("CUDAExecutionProvider", {"device_id": cuda_index(self.spec.device)})
        if self.execution_provider == "TensorrtExecutionProvider":
            shape = f"{INPUT_NAME}:{self.spec.batch_size}x3x224x224"
            options = {
                "device_id": cuda_index(self.spec.device),
                "trt_fp16_enable": self.spec.precision == "fp16",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_root(load_suite_config()) / "onnxruntime-tensorrt"),
                "trt_profile_min_shapes": shape, "trt_profile_opt_shapes": shape, "trt_profile_max_shapes": shape,
            }
            return [("TensorrtExecutionProvider", options), cuda]
        return [cuda]

    def _build(self) -> None:
        # One dynamic-batch export serves every batch size.
        self.export: CachedArtifact = export_onnx(self.model, self.spec.precision, batch_size=None)

    def _load(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.config.intra_op_threads:
            options.intra_op_num_threads = self.config.intra_op_threads
        providers = self._providers()
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        try:
            self._session = onnxruntime.InferenceSession(self.export.data, options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own exception types per failure
            newer = _NEWER_IR.search(str(exc))
            if newer:
                raise BackendUnavailable(
                    f"{self.name}: {self.export.path.name} is of ONNX IR version {newer[1]} (exports declare the "
                    f"lowest their content needs); ONNX Runtime {onnxruntime.__version__} reads IR versions up to "
                    f"{newer[2]} (pip install -U onnxruntime): {exc}") from exc
            if missing_kernel(exc, self.spec.precision):
                raise BackendUnavailable(f"{self.name}: ONNX Runtime {onnxruntime.__version__} {wanted} does not "
                                         f"take {self.spec.precision} for an operator of this model: {exc}") from exc
            raise BackendError(f"{self.name}: cannot create a {wanted} session from {self.export.path.name}: "
                               f"{exc}") from exc
        self.export = self.export.without_data()  # the session holds the model now
        if wanted not in self._session.get_providers():  # ONNX Runtime falls back silently
            needs = "TensorRT's libraries: pip install tensorrt" if "Tensorrt" in wanted else "CUDA and cuDNN libraries"
            raise BackendUnavailable(f"{self.name}: {wanted} could not be created (it needs {needs}); ONNX Runtime "
                                     f"fell back to {', '.join(self._session.get_providers())}")
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
        # ONNX Runtime runs on its own CUDA stream: let torch's queued work (the input's cast or
        # GPU preprocessing) finish before it reads the input.
        torch.cuda.current_stream(prepared.device).synchronize()
        self._session.run_with_iobinding(binding)
        return output

    def to_tensor(self, output: Any) -> torch.Tensor:
        if isinstance(output, np.ndarray):
            return torch.from_numpy(output.astype(np.float32))
        return super().to_tensor(output)

    def _release(self) -> None:
        self._session = None

    def metrics(self) -> dict[str, Any]:
        facts = super().metrics()
        if hasattr(self, "export"):
            facts.update({**conversion_facts(self.export), **export_facts(self.export)})
        facts["onnxruntime_providers"] = self._session.get_providers() if getattr(self, "_session", None) else None
        return facts


class OnnxRuntimeCudaRunner(OnnxRuntimeRunner):
    name = "onnxruntime-cuda"
    execution_provider = "CUDAExecutionProvider"


class OnnxRuntimeTensorRTRunner(OnnxRuntimeRunner):
    name = "onnxruntime-trt"
    execution_provider = "TensorrtExecutionProvider"
