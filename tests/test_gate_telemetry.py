"""GPU telemetry: what NVML readings mean for a benchmark, and behaviour without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import psutil
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
    assert telemetry._decode_reasons(None) is None  # the query failed: unknown, not "no reasons"


def test_a_reading_that_could_not_be_taken_is_unknown_not_quiet():
    unknown_processes = {**reading(), "processes": None}
    unknown_reasons = {**reading(), "clock_event_reasons": None}
    assert telemetry.assess(unknown_processes, reading()) == {
        "throttled": False, "throttle_reasons": [], "contended": None, "other_processes": None}
    assert telemetry.assess(reading(), unknown_reasons)["throttled"] is None
    assert telemetry.assess(reading(), None) == {
        "throttled": None, "throttle_reasons": [], "contended": None, "other_processes": None}
    # what the readings that were taken show still counts
    assert telemetry.assess(reading(["hw_slowdown"]), unknown_reasons)["throttled"] is True
    assert telemetry.assess(unknown_processes, reading(pids=(OWN_PID, 4242))) == {
        "throttled": False, "throttle_reasons": [], "contended": True, "other_processes": 1}


class FailingNvml:
    """NVML as a driver answers when a query fails: the process list raises (there is no GPU here)."""

    NVML_PERF_POLICY_POWER, NVML_PERF_POLICY_THERMAL, NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = range(5)

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        raise self.NVMLError("Unknown Error")

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetViolationStatus(self, handle, policy):
        return types.SimpleNamespace(violationTime=0)

    def __getattr__(self, name):  # every other query answers
        return lambda *args: 1000


def test_failed_nvml_queries_are_recorded_as_unknown(monkeypatch):
    monkeypatch.setattr(telemetry, "_nvml", lambda: (FailingNvml(), None))
    monkeypatch.setattr(telemetry, "_handle", lambda nvml, device: "handle")
    with telemetry.GpuWatch("cuda:0") as watch:
        pass
    result = watch.as_dict()
    assert result["before"]["processes"] is None and result["before"]["clock_event_reasons"] is None
    assert result["contended"] is None and result["throttled"] is None and result["other_processes"] is None


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


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def test_host_watch_sees_another_busy_process():
    """A child spinning the whole time shows up as other processes' CPU time: at least the CPU time
    the child itself reports (the machine may be busy with more; psutil counts in 10 ms ticks)."""
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.5)  # let it start
        with telemetry.HostWatch() as watch:
            spun = cpu_seconds(psutil.Process(spinner.pid))
            started = time.perf_counter()
            while time.perf_counter() - started < 1.0:
                pass
            spun = cpu_seconds(psutil.Process(spinner.pid)) - spun
    finally:
        spinner.wait()
    result = watch.as_dict()
    assert result["wall_s"] == pytest.approx(1.0, abs=0.2)
    assert spun > 0.05 and result["own_cpu_s"] > 0.05  # both ran
    assert result["other_cpu_s"] >= spun - 0.03
    assert result["other_cpu_s"] / (result["wall_s"] * result["cpu_count"]) <= result["other_cpu_fraction"] <= 1
    assert result["cpus"] == sorted(os.sched_getaffinity(0)) and result["cpu_count"] == len(result["cpus"])


# A child that measures with HostWatch while it spins for a second. It runs where the test puts it
# (a CPU, a cgroup) and reports, besides the watch, the host-wide busy time and the spinner's own
# CPU time over the same second: exact figures to hold the watch's accounting to.
WATCHED_CHILD = textwrap.dedent('''
    import json, os, sys, time
    import psutil
    from perfsuite import telemetry

    cpu, procs, spinner = json.loads(sys.argv[1]), sys.argv[2:-1], psutil.Process(int(sys.argv[-1]))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    for path in procs:
        with open(path, "w") as handle:
            handle.write(str(os.getpid()))

    def host_busy():
        t = psutil.cpu_times()
        return sum(t) - t.idle - t.iowait - t.guest - t.guest_nice

    def spinner_cpu():
        t = spinner.cpu_times()
        return t.user + t.system

    time.sleep(0.2)
    host, spun = host_busy(), spinner_cpu()
    with telemetry.HostWatch() as watch:
        started = time.perf_counter()
        while time.perf_counter() - started < 1.5:
            pass
    print(json.dumps({**watch.as_dict(), "host_other_cpu_s": host_busy() - host - watch.as_dict()["own_cpu_s"],
                      "spinner_cpu_s": spinner_cpu() - spun}))
''')
SPINNER = "import os, sys, time\nfor path in sys.argv[2:]:\n    open(path, 'w').write(str(os.getpid()))\n" \
          "if sys.argv[1] != 'null':\n    os.sched_setaffinity(0, {int(sys.argv[1])})\n" \
          "t = time.time()\nwhile time.time() - t < 4: pass\n"


def watched(cpu=None, spinner_cpu=None, procs=()) -> dict:
    """What HostWatch records in a child on ``cpu`` while a spinner runs on ``spinner_cpu``, both
    joining the cgroups whose ``cgroup.procs`` files are ``procs``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(telemetry.__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))}
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER, json.dumps(spinner_cpu), *procs])
    try:
        time.sleep(0.3)
        child = subprocess.run([sys.executable, "-c", WATCHED_CHILD, json.dumps(cpu), *procs, str(spinner.pid)],
                               capture_output=True, text=True, env=env, check=True, timeout=60)
    finally:
        spinner.kill()
        spinner.wait()
    return json.loads(child.stdout)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs this process may use")
def test_host_watch_counts_only_the_cpus_the_process_may_use():
    """Pinned to one CPU, a spinner on the other CPU is not contention; on the same CPU it is."""
    cpu, other = sorted(os.sched_getaffinity(0))[:2]
    apart = watched(cpu=cpu, spinner_cpu=other)
    assert apart["cpus"] == [cpu] and apart["cpu_count"] == 1
    assert apart["spinner_cpu_s"] > 0.05  # it ran (however busy the machine is with other work)
    # the host-wide count includes the spinner's time on the other CPU; the watch leaves it out
    # (the spinner's figure spans a little more than the watch's: 50 ms of slack; psutil ticks are 10 ms)
    assert apart["host_other_cpu_s"] - apart["other_cpu_s"] >= apart["spinner_cpu_s"] - 0.05
    shared = watched(cpu=cpu, spinner_cpu=cpu)
    assert shared["spinner_cpu_s"] > 0.05
    assert shared["other_cpu_s"] >= shared["spinner_cpu_s"] - 0.05
    assert shared["other_cpu_fraction"] >= (shared["spinner_cpu_s"] - 0.05) / shared["wall_s"]


@pytest.fixture
def quota_cgroup():
    """A real cgroup with a CPU quota of 0.2 CPU (cgroup v1 cpu + cpuacct, as on this machine, or v2),
    yielding (its cgroup.procs files, the file that sets the quota)."""
    root, name = Path("/sys/fs/cgroup"), f"perfsuite-test-{os.getpid()}"
    v2, v1 = root / name, [root / "cpu" / name, root / "cpuacct" / name]
    made = []
    try:
        controls = root / "cgroup.subtree_control"
        if controls.exists() and "cpu" in controls.read_text().split():
            v2.mkdir()
            made.append(v2)
            (v2 / "cpu.max").write_text("20000 100000")
            yield [str(v2 / "cgroup.procs")], v2 / "cpu.max"
        elif (root / "cpu" / "cpu.cfs_quota_us").exists():
            for folder in v1:
                folder.mkdir()
                made.append(folder)
            (v1[0] / "cpu.cfs_period_us").write_text("100000")
            (v1[0] / "cpu.cfs_quota_us").write_text("20000")
            yield [str(folder / "cgroup.procs") for folder in v1], v1[0] / "cpu.cfs_quota_us"
        else:
            pytest.skip("no cgroup CPU controller to make a quota with (needs cgroup v1 cpu or v2 with cpu enabled)")
    except PermissionError as exc:
        pytest.skip(f"cannot make a cgroup with a CPU quota here (needs root and a writable cgroup fs): {exc}")
    finally:
        for folder in reversed(made):
            for _ in range(50):  # the children are dead; the kernel lets the cgroup go shortly after
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def test_host_watch_measures_against_a_cgroup_cpu_quota(quota_cgroup):
    """In a 0.2-CPU cgroup, the spinner that shares the quota is contention, and the throttling shows."""
    procs, source = quota_cgroup
    result = watched(procs=procs)
    assert result["cpu_quota"] == pytest.approx(0.2) and result["cpu_quota_source"] == str(source)
    assert result["cpu_throttled_s"] > 0.1  # 1.5 s of spinning at 0.2 CPU: held back most of the time
    assert result["own_cpu_s"] < 0.2 * result["wall_s"] * 1.3
    # the cgroup's other process (the spinner) used part of the quota: measured, and counted against it
    assert result["cgroup_other_cpu_s"] == pytest.approx(result["spinner_cpu_s"], abs=0.05)
    assert result["other_cpu_fraction"] >= 0.9 * result["cgroup_other_cpu_s"] / (0.2 * result["wall_s"])
    assert result["other_cpu_fraction"] > 0.25  # the two share 0.2 CPU: about half of it each
