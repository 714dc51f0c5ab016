"""``eager``: the model in PyTorch eager mode, on the CPU or a CUDA GPU, in fp32, fp16 or bf16."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from perfsuite.backends.base import BackendConfig, Runner, RunSpec
from perfsuite.environment import device_context, is_cuda, synchronize, tf32_disabled
from perfsuite.models import LoadedModel


@dataclasses.dataclass(frozen=True)
class EagerConfig(BackendConfig):
    channels_last: bool = False  # NHWC memory format for convolutions


def _bf16_supported(device: str) -> bool:
    with device_context(device):  # torch asks the current device
        return torch.cuda.is_bf16_supported()


class EagerRunner(Runner):
    name = "eager"
    config_class = EagerConfig
    config: EagerConfig

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        if is_cuda(spec.device) and spec.precision == "bf16" and not _bf16_supported(spec.device):
            name = torch.cuda.get_device_name(spec.device)
            return f"{cls.name}: {name} has no bf16 support (needs compute capability 8.0 or newer)"
        return None

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.config.channels_last else torch.contiguous_format

    def _build(self) -> None:
        # Conversion for eager is the dtype cast of a private copy (the shared model stays fp32).
        self._module = copy.deepcopy(self.model.module).to(self.spec.dtype)

    def _load(self) -> None:
        self._module = self._module.to(self.spec.device, memory_format=self._memory_format())

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.spec.device, self.spec.dtype).contiguous(memory_format=self._memory_format())

    def infer(self, prepared: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._module(prepared)

    def _release(self) -> None:
        self._module = None
        if is_cuda(self.spec.device):
            torch.cuda.empty_cache()

    def metrics(self) -> dict[str, Any]:
        return {**super().metrics(), "channels_last": self.config.channels_last}


def reference_logits(model: LoadedModel, images: torch.Tensor, device: str) -> torch.Tensor:
    """The parity reference: eager fp32 with TF32 off on ``device``, as an fp32 CPU tensor."""
    module = model.module if device == "cpu" else copy.deepcopy(model.module).to(device)
    with tf32_disabled(), torch.inference_mode():
        logits = module(images.to(device)).float()
        synchronize(device)
    return logits.cpu()


@dataclasses.dataclass(frozen=True)
class EagerChannelsLastConfig(EagerConfig):
    channels_last: bool = True


class EagerChannelsLastRunner(EagerRunner):
    """``eager-channels-last``: eager with NHWC activations and weights (tensor-core convolutions
    need NHWC; with the default NCHW cuDNN inserts layout transposes around them)."""

    name = "eager-channels-last"
    config_class = EagerChannelsLastConfig
