"""Roofline context for a latency: how close a result is to what the machine allows.

For a model, a precision and a batch size, two lower bounds on the time of one call, both from
rates measured on this machine in this process (never from a datasheet):

``memory floor``   weight bytes / memory bandwidth. Every call reads every weight at least once.
                   Bandwidth is measured with a device-to-device copy of a buffer at least 4x the
                   last-level cache (GPU: ``L2_cache_size``), so the cache cannot serve it; a copy
                   moves 2x its size (read + write).
``compute floor``  batch x FLOPs per image / matrix-multiply rate. FLOPs are counted by
                   ``torch.utils.flop_counter.FlopCounterMode`` on the CPU at batch 1 (2 per
                   multiply-add, convolutions and matmuls); the rate is that of a large square
                   matmul in the run's dtype (fp32 under the TF32 setting in effect).

The floor is the larger of the two (``bound`` says which); ``percent_of_floor`` is floor /
measured median x 100, i.e. how much of the machine's limit the result reaches, and
``ceiling_images_per_s`` is batch / floor. Activations are ignored, so the floor is optimistic:
real results stay below 100%, unless the weights fit in a cache the bandwidth buffer does not
(a server CPU's shared L3 of hundreds of MiB can hold AlexNet's 244 MB of fp32 weights; a GPU's
L2 of 50-60 MiB cannot hold its 122 MB of fp16 weights): then the memory floor is no bound, and
a result can pass 100% (seen on a 2-core CPU VM reporting a 480 MiB L3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import statistics
from pathlib import Path
from typing import Any

import torch

from perfsuite.backends.base import TORCH_DTYPES
from perfsuite.environment import is_cuda, synchronize, tf32_in_effect, tf32_matmuls, tf32_settings
from perfsuite.models import LoadedModel
from perfsuite.timing import cuda_event_times, time_once

#: the bandwidth buffer is at least this many times the last-level cache
CACHE_MULTIPLE = 4
MIN_BUFFER_BYTES = 64 * 2**20
MAX_CPU_BUFFER_BYTES = 2**30
GPU_MATMUL_SIZE = 8192
CPU_MATMUL_SIZE = 1024
IMAGE_SHAPE = (3, 224, 224)


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """What one image costs: FLOPs, and the weights that every call reads."""

    flops_per_image: int
    parameters: int  # floating-point elements of parameters and buffers

    def weight_bytes(self, precision: str) -> int:
        return self.parameters * TORCH_DTYPES[precision].itemsize


@functools.lru_cache(maxsize=8)
def _model_cost(fingerprint: str, module: torch.nn.Module) -> ModelCost:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(torch.zeros(1, *IMAGE_SHAPE))
    tensors = [*module.parameters(), *module.buffers()]
    parameters = sum(t.numel() for t in tensors if t.is_floating_point())
    return ModelCost(flops_per_image=int(counter.get_total_flops()), parameters=parameters)


def model_cost(model: LoadedModel) -> ModelCost:
    """FLOPs per image and parameter count of ``model`` (counted once per weights fingerprint)."""
    return _model_cost(model.fingerprint, model.module)


def _cache_bytes(device: str) -> int | None:
    """The last-level cache: the GPU's L2, or the CPU's largest cache level from sysfs."""
    if is_cuda(device):
        return getattr(torch.cuda.get_device_properties(torch.device(device)), "L2_cache_size", None)
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=None)


def bandwidth_buffer_bytes(device: str) -> int:
    """The copy buffer's size: 4x the last-level cache, at least 64 MiB; on the CPU at most 1 GiB
    (a server's shared L3 can reach hundreds of MiB; the record keeps both sizes)."""
    size = max(CACHE_MULTIPLE * (_cache_bytes(device) or 0), MIN_BUFFER_BYTES)
    return size if is_cuda(device) else min(size, MAX_CPU_BUFFER_BYTES)


def _median_call_seconds(fn, device: str, repeats: int) -> float:
    if is_cuda(device):
        return statistics.median(cuda_event_times(fn, repeats, warmup=2, device=device))
    fn()  # warm-up: page faults, thread pool start
    return statistics.median(time_once(fn, device)[0] for _ in range(repeats))


def measure_bandwidth(device: str, buffer_bytes: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Memory bandwidth in bytes/s from copies of a buffer that no cache holds."""
    size = buffer_bytes or bandwidth_buffer_bytes(device)
    source = torch.ones(size // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    seconds = _median_call_seconds(lambda: target.copy_(source), device, repeats or (20 if is_cuda(device) else 5))
    moved = 2 * source.numel() * source.element_size()
    return {"bandwidth_bytes_per_s": moved / seconds, "bandwidth_buffer_bytes": size,
            "last_level_cache_bytes": _cache_bytes(device), "bandwidth_method": "copy; read + write bytes counted"}


def measure_matmul_rate(device: str, precision: str, size: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """FLOP/s of a square matmul in ``precision``.

    fp32 on a GPU where TF32 is in effect (cuDNN runs fp32 convolutions as TF32 by default, and
    convolutions are most of a CNN's FLOPs) is measured as a TF32 matmul: an IEEE fp32 rate would
    put the ceiling too low and the percentage reached above 100.
    """
    n = size or (GPU_MATMUL_SIZE if is_cuda(device) else CPU_MATMUL_SIZE)
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=generator).to(device, TORCH_DTYPES[precision])
    b = torch.rand(n, n, generator=generator).to(device, TORCH_DTYPES[precision])
    as_tf32 = precision == "fp32" and tf32_in_effect(device)
    with tf32_matmuls() if as_tf32 else contextlib.nullcontext():
        seconds = _median_call_seconds(lambda: torch.mm(a, b), device, repeats)
        synchronize(device)
    return {"matmul_flops_per_s": 2 * n**3 / seconds, "matmul_size": n,
            "matmul_precision": "tf32" if as_tf32 else precision,
            "tf32": tf32_settings() if precision == "fp32" and is_cuda(device) else None}


_bandwidth_once = functools.lru_cache(maxsize=4)(measure_bandwidth)


@functools.lru_cache(maxsize=16)
def _matmul_rate_once(device: str, precision: str, tf32_key: tuple) -> dict[str, Any]:
    return measure_matmul_rate(device, precision)


def machine_rates(device: str, precision: str) -> dict[str, Any]:
    """Bandwidth (once per process and device) and the matmul rate (once per precision and TF32
    setting) of ``device``."""
    return {**_bandwidth_once(device), **_matmul_rate_once(device, precision, tuple(sorted(tf32_settings().items())))}


def roofline(cost: ModelCost, precision: str, batch_size: int, median_s: float | None,
             rates: dict[str, Any]) -> dict[str, Any]:
    """The floor and ceiling of one result and the share of it reached; see the module docstring."""
    weight_bytes = cost.weight_bytes(precision)
    memory_floor = weight_bytes / rates["bandwidth_bytes_per_s"]
    compute_floor = batch_size * cost.flops_per_image / rates["matmul_flops_per_s"]
    floor = max(memory_floor, compute_floor)
    return {
        "flops_per_image": cost.flops_per_image,
        "weight_bytes": weight_bytes,
        **rates,
        "memory_floor_s": memory_floor,
        "compute_floor_s": compute_floor,
        "floor_s": floor,
        "bound": "memory" if memory_floor >= compute_floor else "compute",
        "ceiling_images_per_s": batch_size / floor,
        "percent_of_floor": 100.0 * floor / median_s if median_s else None,
    }


def roofline_info(model: LoadedModel, precision: str, batch_size: int, device: str,
                  median_s: float | None) -> dict[str, Any]:
    """The ``roofline`` extra_info field of a latency row (rates measured on first use in this process)."""
    return roofline(model_cost(model), precision, batch_size, median_s, machine_rates(device, precision))
