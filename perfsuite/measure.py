"""Measure one callable (a runner on an input, a whole pipeline) the one way the suite does.

Every benchmark, ``perfsuite predict`` and the end-to-end pipeline time through :func:`measure`:

1. **Warm-up** first (cuDNN algorithm choice, kernel loading, allocator growth stay out), which
   also estimates one call's time.
2. **Calls per round.** A round is ``k`` calls back to back, synchronized after the k-th; pytest-
   benchmark divides the round by ``k``. ``k`` is the smallest count that keeps the timer's own
   cost (a clock read and a synchronize of an idle device, :func:`timing.timer_overhead`, 6-12 µs
   on the H200) below 1% of a round, so a 200 µs call is timed in rounds of 4+. The figure stays
   the host-inclusive latency a user feels: host launch work, device work, the wait for results.
3. **A host-speed probe** (:class:`HostProbe`) runs after every round, outside the timed region:
   20 tiny dependent operations and a synchronize (on a GPU, 20 kernel launches). Small-batch
   eager is host-bound, and on a shared VM the host's speed moves between whole processes (fast
   and slow modes, 397-925 µs per-process medians for one loop on one H200 machine); the probe,
   interleaved with the model's rounds, measures that state, and the gate compares
   ``median / probe median`` where that is steadier between runs (``gate.verdict``).
4. **Device time and host time, apart** (latency rows, ``device_and_host=True``): after the rounds,
   blocks of calls enqueued on a held CUDA stream give the device's time per call (CUDA events,
   no host gap in it) and the host's CPU time per call of the enqueue (``perfsuite.device_time``,
   docs/measurement.md), for about ``HELD_TIME_FRACTION`` of the rounds' time budget. On the CPU,
   or for a runner that declares its calls cannot be held, both are recorded unavailable with why.
5. **Telemetry** around the rounds: GPU throttling and other GPU processes (NVML), CPU time taken
   by other processes (``telemetry``).

Memory is measured per runner by :class:`RunnerFootprint`, around its build, load and first call,
the same whatever ran before it in the process (see its docstring).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from perfsuite import telemetry
from perfsuite.device_time import device_and_host_time
from perfsuite.environment import device_context, is_cuda, synchronize
from perfsuite.timing import plan_rounds, quartiles, synchronized, time_once, timer_overhead

#: the timer's cost must stay below this fraction of a timed round
MAX_TIMER_FRACTION = 0.01
MAX_CALLS_PER_ROUND = 1000
PROBE_OPS = 20
#: the held blocks (device and host time) take about this fraction of --benchmark-max-time
HELD_TIME_FRACTION = 0.3


@dataclasses.dataclass(frozen=True)
class MeasureSettings:
    """How long and how carefully to time (pytest-benchmark's options feed it in the plugin)."""

    warmup_rounds: int = 10
    max_time: float = 1.0
    min_rounds: int = 5
    host_probe: bool = True
    gc_disabled: bool = False  # pytest-benchmark's --benchmark-disable-gc (recorded, applied by it)


class HostProbe:
    """A host-bound control: ``PROBE_OPS`` tiny dependent operations, then a synchronize.

    On a GPU each operation is a kernel launch on a one-element tensor, so a block costs what the
    host's launch path costs, like small-batch eager inference; on the CPU it is the same chain of
    dispatcher calls. Blocks are timed by the host clock, each on an idle device.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.kind = "cuda-launches" if is_cuda(device) else "cpu-ops"
        self._seed = torch.ones(1, device=device)
        self.samples: list[float] = []

    def block(self, *_: Any, **__: Any) -> None:  # also pytest-benchmark's teardown(*args, **kwargs)
        synchronize(self.device)
        started = time.perf_counter()
        with torch.inference_mode():
            value = self._seed
            for _ in range(PROBE_OPS):
                value = value + 1.0  # each result feeds the next: no launch can be skipped or fused
        synchronize(self.device)
        self.samples.append(time.perf_counter() - started)

    def as_dict(self) -> dict[str, Any] | None:
        if not self.samples:
            return None
        q1, _, q3 = quartiles(self.samples)
        return {"kind": self.kind, "ops_per_block": PROBE_OPS, "blocks": len(self.samples),
                "median_s": statistics.median(self.samples), "q1_s": q1, "q3_s": q3}


def calls_per_round(seconds_per_call: float, overhead_s: float) -> int:
    """The fewest calls per round that keep ``overhead_s`` below ``MAX_TIMER_FRACTION`` of the round."""
    if seconds_per_call <= 0:
        return MAX_CALLS_PER_ROUND
    return max(1, min(math.ceil(overhead_s / (MAX_TIMER_FRACTION * seconds_per_call)), MAX_CALLS_PER_ROUND))


def synchronized_every(fn: Callable[..., Any], device: str, calls: int) -> Callable[..., Any]:
    """``fn``, with a device synchronize after every ``calls``-th call (one per timed round)."""
    count = 0

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        result = fn(*args, **kwargs)
        count += 1
        if count % calls == 0:
            synchronize(device)
        return result

    return call


@dataclasses.dataclass
class Measurement:
    """What :func:`measure` found; ``timing`` and ``host_probe`` go into the row's extra_info."""

    samples: list[float]  # seconds per call, one per round (pytest-benchmark keeps its own copy)
    timing: dict[str, Any]
    host_probe: dict[str, Any] | None
    gpu_telemetry: dict[str, Any] | None
    host_telemetry: dict[str, Any] | None
    device_time: dict[str, Any] | None = None  # with host_time: only where asked for (latency rows)
    host_time: dict[str, Any] | None = None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def row_fields(self) -> dict[str, Any]:
        """The extra_info fields of a benchmark row that come from this measurement."""
        fields = {"timing": self.timing, "host_probe": self.host_probe, "gpu_telemetry": self.gpu_telemetry,
                  "host_telemetry": self.host_telemetry}
        if self.device_time is not None:
            fields.update(device_time=self.device_time, host_time=self.host_time)
        return fields

    def problems(self, host_contention: float) -> list[str]:
        """What makes this measurement doubtful (throttling, a shared GPU or CPU), for a warning."""
        return telemetry.measurement_problems(self.gpu_telemetry, self.host_telemetry, host_contention)


def measure(call: Callable[[], Any], device: str, settings: MeasureSettings, benchmark: Any = None,
            *, max_calls_per_round: int = MAX_CALLS_PER_ROUND, device_and_host: bool = False,
            cannot_hold: str | None = None) -> Measurement:
    """Warm up, plan and time ``call`` (see the module docstring); with ``benchmark`` (pytest-benchmark's
    fixture) the rounds run through its pedantic mode and its statistics are the stored ones. With
    ``device_and_host``, device time and host time are measured apart after the rounds (``cannot_hold``:
    why the call's stream cannot be held, e.g. ``Runner.device_time_unavailable``)."""
    with device_context(device):  # events, probes and synchronizes on the run's GPU, not the current one
        return _measure(call, device, settings, benchmark, max_calls_per_round, device_and_host, cannot_hold)


def _measure(call: Callable[[], Any], device: str, settings: MeasureSettings, benchmark: Any,
             max_calls_per_round: int, device_and_host: bool, cannot_hold: str | None) -> Measurement:
    warmup = max(settings.warmup_rounds, 1)
    estimates = [time_once(call, device)[0] for _ in range(warmup)]
    per_call = statistics.median(estimates[len(estimates) // 2:])  # the later, warm half
    overhead = timer_overhead(device)
    calls = min(calls_per_round(per_call, overhead), max_calls_per_round)
    probe = HostProbe(device) if settings.host_probe else None
    probe_s = 0.0
    if probe is not None:
        for _ in range(3):
            probe.block()
        probe_s = statistics.median(probe.samples)
        probe.samples.clear()
    rounds = plan_rounds(calls * per_call + probe_s, settings.max_time, settings.min_rounds)
    target = synchronized_every(call, device, calls)
    samples: list[float] = []
    with telemetry.GpuWatch(device) as gpu_watch, telemetry.HostWatch() as host_watch:
        if benchmark is not None:
            benchmark.pedantic(target, rounds=rounds, iterations=calls, warmup_rounds=0,
                               teardown=probe.block if probe else None)
            samples = list(getattr(getattr(benchmark.stats, "stats", None), "data", None) or [])
        else:
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(calls):
                    target()
                samples.append((time.perf_counter() - started) / calls)
                if probe is not None:
                    probe.block()
        device_time = host_time = None
        if device_and_host:
            latency = statistics.median(samples) if samples else per_call
            device_time, host_time = device_and_host_time(call, device, latency,
                                                          HELD_TIME_FRACTION * settings.max_time, cannot_hold)
    if benchmark is not None and probe is not None and calls > 1 and len(probe.samples) > rounds:
        probe.samples.pop()  # pytest-benchmark's extra untimed call for the result ran one more teardown
    median = statistics.median(samples) if samples else per_call
    timing = {
        "clock": "host perf_counter; device synchronize after each round" if is_cuda(device) else "host perf_counter",
        "synchronized": is_cuda(device),
        "warmup_rounds": warmup,
        "rounds": rounds,
        "calls_per_round": calls,
        "timer_overhead_s": overhead,
        "timer_overhead_fraction": overhead / (calls * median) if median > 0 else None,
        "gc_disabled": settings.gc_disabled,
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    return Measurement(samples, timing, probe.as_dict() if probe else None, gpu_watch.as_dict(),
                       host_watch.as_dict(), device_time, host_time)


def measure_one_shot(call: Callable[..., Any], device: str, benchmark: Any, rounds: int, *,
                     setup: Callable[[], Any] | None = None, warmup_rounds: int = 0,
                     host_probe: bool = True) -> Measurement:
    """Time a one-time cost (a model load, a first inference after ``setup`` built a fresh runner) for a
    fixed number of rounds through pytest-benchmark, with the host probe after each round."""
    probe = HostProbe(device) if host_probe else None
    with device_context(device), telemetry.GpuWatch(device) as gpu_watch, telemetry.HostWatch() as host_watch:
        benchmark.pedantic(synchronized(call, device), setup=setup, rounds=rounds,
                           warmup_rounds=warmup_rounds, teardown=probe.block if probe else None)
    if probe is not None:
        del probe.samples[:warmup_rounds]  # blocks after warm-up rounds
    samples = list(getattr(getattr(benchmark.stats, "stats", None), "data", None) or [])
    timing = {"clock": "host perf_counter" + ("; device synchronize after each call" if is_cuda(device) else ""),
              "synchronized": is_cuda(device), "warmup_rounds": warmup_rounds, "rounds": rounds,
              "calls_per_round": 1}
    return Measurement(samples, timing, probe.as_dict() if probe else None, gpu_watch.as_dict(),
                       host_watch.as_dict())


# -- memory ---------------------------------------------------------------------------------------


def _return_freed_host_memory() -> None:
    """Collect garbage and give freed heap pages back to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _release_free_memory(device: str) -> None:
    """Freed host memory back to the OS and torch's CUDA cache emptied, so a reading counts memory
    that is held, not memory an earlier runner left free."""
    _return_freed_host_memory()
    if is_cuda(device):
        synchronize(device)
        torch.cuda.empty_cache()


def _find_libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _find_libc()


def current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class RunnerFootprint:
    """Memory one runner holds: host RSS growth, and device memory from ``cudaMemGetInfo``.

    The first reading is taken after freed memory went back (:func:`_release_free_memory`) and the
    backend's libraries were imported, so neither an earlier runner's leftovers nor a one-time
    library load is counted against this one. Host memory is the RSS growth of building and loading
    the runner, read before its first call: that call's one-time library work (lazy kernel loading,
    cuDNN and cuBLAS handles for a precision's first use: +100-150 MiB on the H200) belongs to the
    process, and would land on whichever row came first. Device memory is the fall of free memory
    on the device (``torch.cuda.mem_get_info``, i.e. cudaMemGetInfo): it sees every library's
    allocations (ONNX Runtime's and TensorRT's included, which torch's own counters cannot), and
    torch's caching allocator keeps what it reserved, so the lowest reading is the runner's peak
    among the points sampled (after load, after the first call, after the timed rounds). Other
    processes on the same GPU would show up too; the GPU telemetry flags them.
    """

    method = ("host: RSS growth over build and load (psutil, after gc + malloc_trim); device: peak fall of "
              "cudaMemGetInfo free memory over load, first call and timed rounds")

    def __init__(self, device: str) -> None:
        self.device = device
        _release_free_memory(device)
        self.rss_before = current_rss()
        self.free_before = torch.cuda.mem_get_info(device)[0] if is_cuda(device) else None
        self.rss_after: int | None = None
        self.lowest_free: int | None = self.free_before

    def sample(self) -> None:
        """A reading now (e.g. after the timed rounds)."""
        if self.free_before is not None:
            synchronize(self.device)
            self.lowest_free = min(self.lowest_free, torch.cuda.mem_get_info(self.device)[0])

    def loaded(self) -> None:
        """The reading once the runner is built and loaded, before its first call."""
        self.sample()
        _return_freed_host_memory()
        self.rss_after = current_rss()

    def as_dict(self) -> dict[str, Any]:
        return {
            "host_rss_delta_bytes": None if self.rss_after is None else self.rss_after - self.rss_before,
            "peak_gpu_memory_bytes": None if self.free_before is None else self.free_before - self.lowest_free,
            "memory_method": self.method,
        }
