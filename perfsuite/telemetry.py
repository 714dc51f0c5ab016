"""GPU state through NVML (nvidia-ml-py, pip extra ``nvml``), read before and after a benchmark.

What is read, where NVML allows: SM and memory clocks (current and maximum), temperature, power
draw and enforced power limit, the clock-event ("throttle") reasons, the cumulative thermal and
power violation counters, MIG mode, and the compute processes on the GPU.

What it means (:func:`assess`):

* **throttled**: a thermal or hardware slowdown (SW/HW thermal, HW slowdown, HW power brake) was
  active at either reading, or the thermal violation counter grew while the benchmark ran. Such a
  benchmark measured a slowed GPU, so the gate calls it inconclusive. Running at the software
  power cap is recorded but not counted: a GPU under full load sits at its power limit by design,
  and that limit is part of the hardware fingerprint.
* **contended**: another process had a compute context on the GPU. NVML reports host PIDs; in a
  container our own PID differs, so when our PID is not in the list one entry is taken to be us
  (we hold a CUDA context while the benchmark runs).

nvidia-ml-py is imported lazily; without it, or without a driver, every reading is ``None`` and
:func:`unavailable_reason` says why.

The host is watched too (:class:`HostWatch`, psutil, on every device): the CPU time that *other*
processes used while the benchmark ran, as a fraction of the machine's CPU capacity over that
time (busy time of all CPUs, minus this process's CPU time, over wall time x logical CPUs; steal
time, taken by other virtual machines, counts as busy). On a shared CPU machine this is what
makes whole runs several times slower; the gate leaves such runs out (``gate.verdict``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

THROTTLE_REASONS = {  # NVML clock-event bits that mean the GPU was slowed against its will
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x08: "hw_slowdown",
    0x80: "hw_power_brake_slowdown",
}
OTHER_REASONS = {  # recorded, not counted as throttling
    0x01: "gpu_idle",
    0x02: "applications_clocks_setting",
    0x04: "sw_power_cap",
    0x10: "sync_boost",
    0x100: "display_clock_setting",
}


@functools.lru_cache(maxsize=1)
def _nvml() -> tuple[Any, str | None]:
    """(pynvml module or None, reason it is unusable); initializes NVML once per process."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install 'perfsuite[nvml]')"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError subclasses: no library, no driver, no permission
        return None, f"NVML cannot start: {exc}"
    return pynvml, None


def unavailable_reason() -> str | None:
    """Why NVML readings are impossible here, or None."""
    return _nvml()[1]


def _handle(nvml: Any, device: str) -> Any:
    """The NVML handle of torch's ``device``: matched by UUID (CUDA_VISIBLE_DEVICES may reorder), else index."""
    import torch

    index = torch.device(device).index or 0
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        except Exception:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(index)


def _try(fn: Any, *args: Any) -> Any:
    """One NVML query; None where the GPU or driver does not support it."""
    try:
        return fn(*args)
    except Exception:
        return None


def _decode_reasons(mask: int | None) -> list[str]:
    if mask is None:
        return []
    names = {**THROTTLE_REASONS, **OTHER_REASONS}
    return [name for bit, name in sorted(names.items()) if mask & bit]


def hardware_facts(device: str) -> dict[str, Any]:
    """Power limit (W) and MIG mode of ``device``, for the hardware fingerprint; {} without NVML."""
    nvml, _ = _nvml()
    if nvml is None or not device.startswith("cuda"):
        return {}
    handle = _try(_handle, nvml, device)
    if handle is None:
        return {}
    limit_mw = _try(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    mig = _try(nvml.nvmlDeviceGetMigMode, handle)
    return {
        "power_limit_w": round(limit_mw / 1000) if limit_mw is not None else None,
        "mig_mode": None if mig is None else ("enabled" if mig[0] else "disabled"),
    }


def read_state(device: str) -> dict[str, Any] | None:
    """One reading of ``device``'s clocks, temperature, power, reasons, violations and processes."""
    nvml, _ = _nvml()
    if nvml is None or not device.startswith("cuda"):
        return None
    handle = _try(_handle, nvml, device)
    if handle is None:
        return None
    # newer nvidia-ml-py calls "throttle reasons" "clock event reasons"; accept either name.
    reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) \
        or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    power_mw = _try(nvml.nvmlDeviceGetPowerUsage, handle)
    limit_mw = _try(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    processes = _try(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
    violations = {}
    for name, policy in (("power", nvml.NVML_PERF_POLICY_POWER), ("thermal", nvml.NVML_PERF_POLICY_THERMAL)):
        status = _try(nvml.nvmlDeviceGetViolationStatus, handle, policy)
        violations[name] = int(status.violationTime) if status is not None else None
    mask = _try(reasons_fn, handle)
    return {
        "sm_clock_mhz": _try(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
        "sm_clock_max_mhz": _try(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM),
        "memory_clock_mhz": _try(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM),
        "temperature_c": _try(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
        "power_w": power_mw / 1000 if power_mw is not None else None,
        "power_limit_w": limit_mw / 1000 if limit_mw is not None else None,
        "clock_event_reasons": _decode_reasons(mask),
        "violation_ns": violations,
        "processes": [{"pid": int(p.pid), "used_memory_bytes": getattr(p, "usedGpuMemory", None)}
                      for p in processes],
        "own_pid": os.getpid(),
    }


def other_processes(reading: dict[str, Any]) -> int:
    """How many processes besides this one had a compute context on the GPU at ``reading``.

    Readings are taken while this process holds a CUDA context, so one entry is ours: found by
    PID, or (in a container, where NVML reports host PIDs) assumed.
    """
    pids = {p["pid"] for p in reading.get("processes") or []}
    return max(len(pids) - 1, 0)


def assess(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Throttling and contention over a benchmark, from the readings before and after it."""
    readings = [r for r in (before, after) if r]
    reasons = sorted({name for r in readings for name in r.get("clock_event_reasons", [])
                      if name in THROTTLE_REASONS.values()})
    thermal = [((r or {}).get("violation_ns") or {}).get("thermal") for r in (before, after)]
    if before and after and None not in thermal and thermal[1] > thermal[0]:
        reasons.append(f"thermal violation for {(thermal[1] - thermal[0]) / 1e6:.0f} ms")
    others = max((other_processes(r) for r in readings), default=0)
    return {"throttled": bool(reasons), "throttle_reasons": reasons, "contended": others > 0,
            "other_processes": others}


class GpuWatch:
    """Reads the GPU before and after a block; ``as_dict()`` is the ``gpu_telemetry`` result field."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.before: dict[str, Any] | None = None
        self.after: dict[str, Any] | None = None

    def __enter__(self) -> GpuWatch:
        self.before = read_state(self.device)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.after = read_state(self.device) if self.before is not None else None

    def as_dict(self) -> dict[str, Any] | None:
        if self.before is None:
            return None
        return {"before": self.before, "after": self.after, **assess(self.before, self.after)}


class HostWatch:
    """CPU time used by other processes while a block ran; ``as_dict()`` is the ``host_telemetry`` field."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._start: tuple[float, float, float, tuple[float, ...]] | None = None
        self.result: dict[str, Any] | None = None

    def _busy_seconds(self) -> float:
        times = self._psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)

    def _own_seconds(self) -> float:
        # Children this process waited for (the fresh-process cold-start and compile benchmarks)
        # are its own work, not contention.
        times = self._process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    def __enter__(self) -> HostWatch:
        import time

        self._start = (time.perf_counter(), self._busy_seconds(), self._own_seconds(), os.getloadavg())
        return self

    def __exit__(self, *exc_info: object) -> None:
        import time

        wall = time.perf_counter() - self._start[0]
        busy = self._busy_seconds() - self._start[1]
        own = self._own_seconds() - self._start[2]
        cpus = self._psutil.cpu_count() or 1
        others = max(busy - own, 0.0)
        self.result = {
            "wall_s": wall, "cpu_count": cpus, "own_cpu_s": own, "other_cpu_s": others,
            "other_cpu_fraction": others / (wall * cpus) if wall > 0 else None,
            "load_average_before": list(self._start[3]), "load_average_after": list(os.getloadavg()),
        }

    def as_dict(self) -> dict[str, Any] | None:
        return self.result
