"""Timing of GPU and CPU work, done right.

GPU work is asynchronous: a host clock read right after a launch measures the launch, not the
work (the lab report's mistake). Every timed region here ends with a device synchronize before
the clock is read (or is bracketed by CUDA events), and starts on an idle device, so the
recorded time is the wall time from submit to results ready. Warm-up always comes first, so
that lazy initialization (cuDNN algorithm choice, kernel loading, allocator growth) stays out
of the numbers; it is measured separately as cold start.

What pytest-benchmark stores in ``stats`` comes from :func:`benchmark_synchronized`: its target
synchronizes, so every stored sample is a synchronized time. The cost of that synchronize and
of reading the clock is measured by :func:`timer_overhead` and recorded with each result.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from perfsuite.environment import is_cuda, synchronize


def synchronized(fn: Callable[..., Any], device: str) -> Callable[..., Any]:
    """``fn`` followed by a device synchronize: what a benchmark must time on a GPU."""
    if not is_cuda(device):
        return fn

    def call(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        return result

    return call


def time_once(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """Seconds for one synchronized call of ``fn`` (device idle before and after), and its result."""
    synchronize(device)
    started = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - started, result


def timer_overhead(device: str, samples: int = 200) -> float:
    """Median seconds of an empty synchronized region: clock reads plus an idle-device synchronize."""
    empty = synchronized(lambda: None, device)
    synchronize(device)
    readings = []
    for _ in range(samples):
        started = time.perf_counter()
        empty()
        readings.append(time.perf_counter() - started)
    return statistics.median(readings)


def cuda_event_times(fn: Callable[[], Any], iterations: int, warmup: int = 3, device: str = "cuda") -> list[float]:
    """Per-call seconds of ``fn`` measured between CUDA events on ``device``'s current stream."""
    with torch.cuda.device(torch.device(device)):  # events and synchronize act on the current device
        for _ in range(warmup):
            fn()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
        torch.cuda.synchronize()
        for start, end in zip(starts, ends):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]


def plan_rounds(seconds_per_call: float, max_time: float, min_rounds: int, max_rounds: int = 100_000) -> int:
    """Rounds that fill ``max_time`` (pytest-benchmark's --benchmark-max-time), at least ``min_rounds``."""
    if seconds_per_call <= 0:
        return max(min_rounds, 1)
    return int(min(max(math.ceil(max_time / seconds_per_call), min_rounds), max_rounds))


def benchmark_synchronized(
    benchmark: Any,
    fn: Callable[[], Any],
    device: str,
    *,
    warmup_rounds: int,
    max_time: float,
    min_rounds: int,
) -> dict[str, Any]:
    """Time ``fn`` with pytest-benchmark's pedantic mode, synchronizing after every call.

    Warm-up is explicit (pedantic ``warmup_rounds``) and the round count is planned from a warm
    call, so the stored statistics are of warm, synchronized calls only. Returns the timing
    metadata to put into ``extra_info``.
    """
    target = synchronized(fn, device)
    for _ in range(max(warmup_rounds, 1)):  # also estimates the per-call time for planning
        estimate, _ = time_once(fn, device)
    rounds = plan_rounds(estimate, max_time, min_rounds)
    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    return {
        "clock": "host perf_counter around call + device synchronize" if is_cuda(device) else "host perf_counter",
        "synchronized": is_cuda(device),
        "warmup_rounds": max(warmup_rounds, 1) + warmup_rounds,  # planning calls + pedantic's
        "rounds": rounds,
        "timer_overhead_s": timer_overhead(device),
    }


@dataclasses.dataclass
class MemoryProbe:
    """Peak GPU memory allocated through torch, and host resident memory, around a block."""

    device: str
    rss_before: int = 0
    peak_gpu_bytes: int | None = None
    rss_delta_bytes: int = 0
    host_peak_rss_bytes: int = 0

    def __enter__(self) -> MemoryProbe:
        self.rss_before = current_rss()
        if is_cuda(self.device):
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if is_cuda(self.device):
            synchronize(self.device)
            self.peak_gpu_bytes = int(torch.cuda.max_memory_allocated(self.device))
        self.rss_delta_bytes = current_rss() - self.rss_before
        self.host_peak_rss_bytes = peak_rss()


def current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """The process's peak resident set size in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
