"""GPU telemetry: what NVML readings mean for a benchmark, and behaviour without a GPU."""

from __future__ import annotations

import os

import pytest
import torch

from perfsuite import telemetry
from perfsuite.gate.stability import coefficient_of_variation, stability_info

OWN_PID = os.getpid()


def reading(reasons=(), thermal_ns=0, pids=(OWN_PID,)):
    """A reading as :func:`telemetry.read_state` returns it."""
    return {"sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "memory_clock_mhz": 2619, "temperature_c": 41,
            "power_w": 120.0, "power_limit_w": 700.0, "clock_event_reasons": list(reasons),
            "violation_ns": {"power": 0, "thermal": thermal_ns},
            "processes": [{"pid": pid, "used_memory_bytes": 1 << 30} for pid in pids], "own_pid": os.getpid()}


def test_quiet_gpu_is_neither_throttled_nor_contended():
    assert telemetry.assess(reading(), reading()) == {
        "throttled": False, "throttle_reasons": [], "contended": False, "other_processes": 0}


def test_power_cap_is_recorded_but_not_throttling():
    """A GPU under full load sits at its power limit by design (the limit is in the fingerprint)."""
    assert not telemetry.assess(reading(["sw_power_cap"]), reading(["sw_power_cap"]))["throttled"]


def test_thermal_slowdown_and_violation_counter_mean_throttled():
    result = telemetry.assess(reading(), reading(["hw_thermal_slowdown"]))
    assert result["throttled"] and result["throttle_reasons"] == ["hw_thermal_slowdown"]
    result = telemetry.assess(reading(thermal_ns=5_000_000), reading(thermal_ns=17_000_000))
    assert result["throttled"] and result["throttle_reasons"] == ["thermal violation for 12 ms"]


def test_other_processes_mean_contended():
    assert telemetry.assess(reading(), reading(pids=(os.getpid(), 4242)))["other_processes"] == 1
    # in a container NVML reports host PIDs: ours is not in the list, one entry is still ours
    assert not telemetry.assess(reading(pids=(98765,)), reading(pids=(98765,)))["contended"]
    assert telemetry.assess(reading(pids=(98765, 4242)), None)["contended"]


def test_reason_bits_decode():
    assert telemetry._decode_reasons(0x20 | 0x04 | 0x01) == ["gpu_idle", "sw_power_cap", "sw_thermal_slowdown"]
    assert telemetry._decode_reasons(None) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_without_gpu_every_reading_is_none_and_says_why():
    assert telemetry.read_state("cpu") is None
    assert telemetry.hardware_facts("cpu") == {}
    with telemetry.GpuWatch("cpu") as watch:
        pass
    assert watch.as_dict() is None
    reason = telemetry.unavailable_reason()
    assert reason is None or "NVML cannot start" in reason or "perfsuite[nvml]" in reason


@pytest.mark.gpu
def test_gpu_reading_has_clocks_and_our_process():
    torch.zeros(1, device="cuda")  # hold a context, as a benchmark does
    if telemetry.unavailable_reason():
        pytest.skip(telemetry.unavailable_reason())
    with telemetry.GpuWatch("cuda") as watch:
        torch.ones(1 << 20, device="cuda").sum().item()
    result = watch.as_dict()
    assert result["before"]["sm_clock_mhz"] > 0 and result["after"]["temperature_c"] > 0
    assert result["before"]["power_limit_w"] > 0
    assert set(result) >= {"throttled", "contended", "throttle_reasons", "other_processes"}
    facts = telemetry.hardware_facts("cuda")
    assert facts["power_limit_w"] > 0 and facts["mig_mode"] in ("enabled", "disabled", None)


def test_coefficient_of_variation():
    assert coefficient_of_variation({"mean": 2.0, "stddev": 0.1, "rounds": 10}) == pytest.approx(0.05)
    assert coefficient_of_variation({"mean": 2.0, "stddev": 0.0, "rounds": 1}) is None
    info = stability_info({"mean": 2.0, "stddev": 0.1, "rounds": 10}, 0.025)
    assert info == {"cv": pytest.approx(0.05), "cv_threshold": 0.025, "unstable": True}
    assert not stability_info({"mean": 2.0, "stddev": 0.01, "rounds": 10}, 0.025)["unstable"]


def test_host_watch_sees_another_busy_process():
    """A child spinning on a CPU the whole time shows up as other processes' CPU time."""
    import subprocess
    import sys
    import time

    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.5)  # let it start
        with telemetry.HostWatch() as watch:
            started = time.perf_counter()
            while time.perf_counter() - started < 1.0:
                pass
    finally:
        spinner.wait()
    result = watch.as_dict()
    assert result["wall_s"] == pytest.approx(1.0, abs=0.2)
    assert result["other_cpu_s"] > 0.3  # the spinner got at least a third of a CPU in that second
    assert 0 < result["other_cpu_fraction"] <= 1
    assert result["own_cpu_s"] > 0.3
