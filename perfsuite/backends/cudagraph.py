"""``cudagraph``: the eager model captured once in a CUDA graph and replayed.

A capture records every kernel of one forward pass at the runner's batch size; a replay launches
them all with one call, so the per-kernel launch cost of eager mode (Python, dispatcher, driver)
is paid once at capture instead of on every call. At batch 1 that cost, not the GPU's work, sets
AlexNet's latency.

A graph reads and writes the addresses it was captured with, so the runner owns a static input
and a static output. The timed call copies the prepared batch into the static input, replays,
and returns the static output, which the next replay overwrites (``to_tensor`` copies it).

The capture runs on seeded noise, never on an image, so a parity check on real images proves that
replays compute on the new input instead of returning what the capture saw.

``cudagraph-channels-last`` is the same with NHWC activations and weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from perfsuite.backends.base import RunSpec
from perfsuite.backends.eager import EagerConfig, EagerRunner
from perfsuite.environment import device_context, is_cuda
from perfsuite.errors import InputError

#: what the suite's preprocessing produces per image (see ``images.build_transform``)
CAPTURE_IMAGE_SHAPE = (3, 224, 224)
CAPTURE_SEED = 20261127


@dataclasses.dataclass(frozen=True)
class CudaGraphConfig(EagerConfig):
    # Eager calls on a side stream before capture: cuDNN/cuBLAS handle creation, workspace
    # allocation and algorithm choice must happen outside the graph.
    warmup_calls: int = 3


@dataclasses.dataclass(frozen=True)
class CudaGraphChannelsLastConfig(CudaGraphConfig):
    channels_last: bool = True


def capture_input(batch_size: int, dtype: torch.dtype, device: str,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Seeded standard-normal noise of an image batch's shape (the scale of normalized pixels)."""
    generator = torch.Generator().manual_seed(CAPTURE_SEED)
    noise = torch.randn((batch_size, *CAPTURE_IMAGE_SHAPE), generator=generator)
    return noise.to(device, dtype).contiguous(memory_format=memory_format)


class CudaGraphRunner(EagerRunner):
    name = "cudagraph"
    config_class = CudaGraphConfig
    config: CudaGraphConfig

    @classmethod
    def _device_reason(cls, spec: RunSpec) -> str | None:
        if not is_cuda(spec.device):
            return f"{cls.name}: CUDA graphs need a CUDA GPU (--device cuda)"
        return super()._device_reason(spec)

    def _load(self) -> None:
        super()._load()
        self.graph = CapturedGraph(self._module, self.spec, self._memory_format(), self.config.warmup_calls,
                                   self.name)

    def infer(self, prepared: torch.Tensor) -> torch.Tensor:
        return self.graph.replay(prepared)

    def _release(self) -> None:
        self.graph = None
        super()._release()

    def metrics(self) -> dict[str, Any]:
        return {**super().metrics(), "capture_seed": CAPTURE_SEED, "capture_warmup_calls": self.config.warmup_calls}


class CapturedGraph:
    """``forward`` captured once on a static input; ``replay`` copies a new input in and replays."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], spec: RunSpec,
                 memory_format: torch.memory_format, warmup_calls: int, owner: str) -> None:
        device, self.owner = spec.device, owner
        self.static_input = capture_input(spec.batch_size, spec.dtype, device, memory_format)
        # torch.cuda.graph captures on a stream of the current device: make it the run's (replay keeps it)
        with device_context(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(warmup_calls):
                    forward(self.static_input)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(self.graph):
                self.static_output = forward(self.static_input)

    def replay(self, prepared: torch.Tensor) -> torch.Tensor:
        if prepared.shape != self.static_input.shape:
            raise InputError(f"{self.owner}: input of shape {tuple(prepared.shape)}; the graph was captured for "
                             f"{tuple(self.static_input.shape)} (one runner per batch size)")
        self.static_input.copy_(prepared)
        self.graph.replay()
        return self.static_output


class CudaGraphChannelsLastRunner(CudaGraphRunner):
    name = "cudagraph-channels-last"
    config_class = CudaGraphChannelsLastConfig
