"""Timing of GPU and CPU work, done right.

GPU work is asynchronous: a host clock read right after a launch measures the launch, not the
work (the lab report's mistake). Every timed region here ends with a device synchronize before
the clock is read (or is bracketed by CUDA events), and starts on an idle device, so the
recorded time is the wall time from submit to results ready. Warm-up always comes first, so
that lazy initialization (cuDNN algorithm choice, kernel loading, allocator growth) stays out
of the numbers; it is measured separately as cold start.

These are the primitives; ``perfsuite.measure`` composes them into the one way every benchmark,
``predict`` and the end-to-end pipeline time a call (warm-up, calls per round, host probe).
"""

from __future__ import annotations

import math
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


def median_ci_halfwidth(samples: list[float], z: float = 1.96) -> float | None:
    """Half the width of a distribution-free ~95% confidence interval of the median, relative to the median.

    The interval is between the order statistics ``k`` and ``n - 1 - k`` with ``k = floor((n - z√n) / 2)``
    (the normal approximation of the binomial count below the median); None for fewer than 6 samples,
    where that interval would span the whole sample.
    """
    n = len(samples)
    if n < 6:
        return None
    ordered = sorted(samples)
    k = max(0, math.floor((n - z * math.sqrt(n)) / 2))
    median = statistics.median(ordered)
    if median <= 0:
        return None
    return (ordered[n - 1 - k] - ordered[k]) / (2 * median)


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3) of ``samples`` (one sample: itself three times)."""
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return q1, statistics.median(samples), q3
