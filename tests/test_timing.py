"""The timing module: synchronized regions, round planning, overhead, and the GPU sleep-kernel check."""

from __future__ import annotations

import time

import pytest
import torch

from perfsuite import timing


def test_time_once_measures_the_call():
    seconds, result = timing.time_once(lambda: (time.sleep(0.02), 7)[1], "cpu")
    assert result == 7
    assert 0.02 <= seconds < 0.5


def test_plan_rounds_fills_max_time_within_bounds():
    assert timing.plan_rounds(0.01, max_time=1.0, min_rounds=5) == 100
    assert timing.plan_rounds(2.0, max_time=1.0, min_rounds=5) == 5
    assert timing.plan_rounds(1e-9, max_time=1.0, min_rounds=5, max_rounds=1000) == 1000
    assert timing.plan_rounds(0.0, max_time=1.0, min_rounds=3) == 3


def test_timer_overhead_is_small_and_positive():
    overhead = timing.timer_overhead("cpu")
    assert 0 < overhead < 1e-3


def test_memory_probe_reports_host_memory():
    with timing.MemoryProbe("cpu") as probe:
        block = bytearray(64 << 20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    assert probe.rss_delta_bytes > 32 << 20
    assert probe.host_peak_rss_bytes >= probe.rss_before
    assert probe.peak_gpu_bytes is None


@pytest.mark.parametrize("warmup,expected_warmup", [(2, 4), (0, 1)])
def test_benchmark_synchronized_stores_warm_samples(benchmark, warmup, expected_warmup):
    calls = []
    info = timing.benchmark_synchronized(
        benchmark, lambda: calls.append(time.sleep(0.002)), "cpu", warmup_rounds=warmup, max_time=0.05, min_rounds=3
    )
    assert info["rounds"] >= 3 and info["warmup_rounds"] == expected_warmup
    assert len(calls) == info["warmup_rounds"] + info["rounds"]  # warm-up (planning + pedantic's), timed
    assert benchmark.stats.stats.median >= 0.002


def _sleep_cycles_for(seconds: float) -> int:
    """Calibrate torch.cuda._sleep (spins N clock cycles) to last ``seconds``, measured with CUDA events."""
    cycles = 1_000_000
    for _ in range(3):
        measured = min(timing.cuda_event_times(lambda c=cycles: torch.cuda._sleep(c), iterations=5, warmup=1))
        cycles = int(cycles * seconds / measured)
    return cycles


@pytest.mark.gpu
def test_stored_gpu_times_are_synchronized(benchmark):
    """A ~1 ms sleep kernel must be stored as >= 0.95 ms; unsynchronized timing would store the launch."""
    cycles = _sleep_cycles_for(1e-3)
    started = time.perf_counter()
    torch.cuda._sleep(cycles)
    launch_only = time.perf_counter() - started  # host clock, no synchronize: the lab report's mistake
    torch.cuda.synchronize()
    assert launch_only < 0.5e-3, "the unsynchronized host clock sees only the launch"

    info = timing.benchmark_synchronized(benchmark, lambda: torch.cuda._sleep(cycles), "cuda",
                                         warmup_rounds=3, max_time=0.2, min_rounds=20)
    benchmark.extra_info.update({"kind": "timer_check", "sleep_cycles": cycles, **info})
    assert benchmark.stats.stats.median >= 0.95e-3
    assert benchmark.stats.stats.median < 1.5e-3
