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

A query that fails is recorded as ``None``, never as "nothing there": ``throttled`` and
``contended`` are ``None`` (unknown) unless the readings that could be taken already show
throttling or another process.

nvidia-ml-py is imported lazily; without it, or without a driver, every reading is ``None`` and
:func:`unavailable_reason` says why.

Which GPU is read: the one torch's ``--device`` names, found in NVML by its UUID, else its PCI bus
id (both from torch's device properties), never by index, since ``CUDA_VISIBLE_DEVICES`` renumbers
torch's devices and not NVML's. Where neither matches, nothing is read (a
:class:`GpuTelemetryUnavailable` warning and :func:`device_problem` say why) rather than another
GPU's state. Every reading records the UUID and PCI bus id of the card it came from.

The host is watched too (:class:`HostWatch`, psutil, on every device): the CPU time that *other*
processes used while the benchmark ran, as a fraction of the CPU capacity this process may use
over that time. Capacity is the CPUs of the process's affinity mask (``os.sched_getaffinity``, a
container's cpuset): the busy time of those CPUs (psutil's per-CPU times; steal time, taken by
other virtual machines, counts as busy) minus this process's CPU time, over wall time x those
CPUs. Under a cgroup CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``; the tightest on
the process's cgroup path) the other processes of that cgroup compete for the quota: their CPU
time (the cgroup's usage minus ours, where the cgroup reports it) over wall time x quota counts
too, and the time the quota held the cgroup back is recorded. On a shared CPU machine this is
what makes whole runs several times slower; the gate leaves such runs out (``gate.verdict``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
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


class DeviceNotFound(LookupError):
    """NVML has no GPU matching torch's device by UUID or PCI bus id; the message says what was tried."""


class GpuTelemetryUnavailable(UserWarning):
    """NVML is running, but the run's GPU cannot be found in it (:func:`_handle`)."""


def _handle(nvml: Any, device: str) -> Any:
    """The NVML handle of torch's ``device``, matched by its UUID, else by its PCI bus id (both from torch's
    device properties). Never by index: ``CUDA_VISIBLE_DEVICES`` renumbers torch's devices but not NVML's,
    so torch's ``cuda:1`` may be NVML's GPU 0, 3 or 7. :class:`DeviceNotFound` where neither matches."""
    import torch

    from perfsuite.environment import cuda_index, gpu_uuid, pci_bus_id

    props = torch.cuda.get_device_properties(cuda_index(device))
    tried = []
    uuid = gpu_uuid(props)
    if uuid is None:
        tried.append("torch reports no UUID")
    else:
        # a MIG instance's UUID comes without its "MIG-" prefix from CUDA, as a GPU's without "GPU-"
        candidates = [uuid] if uuid.startswith("MIG-") else [uuid, "MIG-" + uuid.removeprefix("GPU-")]
        for candidate in candidates:
            try:
                return nvml.nvmlDeviceGetHandleByUUID(candidate)
            except Exception as exc:  # NVMLError_NotFound, or an older driver's InvalidArgument
                tried.append(f"UUID {candidate}: {exc}")
    bus_id = pci_bus_id(props)
    if bus_id is None:
        tried.append("torch reports no PCI bus id")
    else:
        lookup = getattr(nvml, "nvmlDeviceGetHandleByPciBusId_v2", None) or nvml.nvmlDeviceGetHandleByPciBusId
        try:
            return lookup(bus_id)
        except Exception as exc:
            tried.append(f"PCI bus id {bus_id}: {exc}")
    raise DeviceNotFound(f"NVML finds no GPU matching {device} ({props.name}): {'; '.join(tried)}. Its telemetry "
                         "is not read rather than read from another GPU")


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


@functools.cache
def _warn_unmatched(reason: str) -> None:
    """Say once per reason that a device's NVML readings are not taken."""
    import warnings

    warnings.warn(reason, GpuTelemetryUnavailable, stacklevel=3)


def _device_handle(nvml: Any, device: str) -> Any:
    """:func:`_handle`, or None with a warning naming why (a missing reading is unknown, never GPU 0's)."""
    try:
        return _handle(nvml, device)
    except DeviceNotFound as exc:
        _warn_unmatched(str(exc))
    except Exception as exc:  # torch cannot describe the device: nothing to match
        _warn_unmatched(f"cannot identify {device} for NVML: {exc}")
    return None


def device_problem(device: str) -> str | None:
    """Why NVML readings of the CUDA ``device`` are impossible here (NVML missing, or no GPU matching it), or None."""
    nvml, reason = _nvml()
    if nvml is None:
        return reason
    try:
        _handle(nvml, device)
    except Exception as exc:
        return str(exc)
    return None


def _try(fn: Any, *args: Any) -> Any:
    """One NVML query; None where the GPU or driver does not support it."""
    try:
        return fn(*args)
    except Exception:
        return None


def _decode_reasons(mask: int | None) -> list[str] | None:
    if mask is None:
        return None  # the query failed: unknown, not "no reasons"
    names = {**THROTTLE_REASONS, **OTHER_REASONS}
    return [name for bit, name in sorted(names.items()) if mask & bit]


def hardware_facts(device: str) -> dict[str, Any]:
    """Power limit (W) and MIG mode of ``device``, for the hardware fingerprint, and the UUID and PCI bus id
    of the GPU NVML read them from; {} without NVML."""
    nvml, _ = _nvml()
    if nvml is None or not device.startswith("cuda"):
        return {}
    handle = _device_handle(nvml, device)
    if handle is None:
        return {}
    limit_mw = _try(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    mig = _try(nvml.nvmlDeviceGetMigMode, handle)
    return {
        "power_limit_w": round(limit_mw / 1000) if limit_mw is not None else None,
        "mig_mode": None if mig is None else ("enabled" if mig[0] else "disabled"),
        **_identity(nvml, handle, "nvml_"),
    }


def _identity(nvml: Any, handle: Any, prefix: str = "") -> dict[str, Any]:
    """UUID and PCI bus id of the GPU behind an NVML handle: which card a reading came from."""
    pci = _try(nvml.nvmlDeviceGetPciInfo, handle)
    return {f"{prefix}gpu_uuid": _text(_try(nvml.nvmlDeviceGetUUID, handle)),
            f"{prefix}gpu_pci_bus_id": _text(getattr(pci, "busId", None))}


def read_state(device: str) -> dict[str, Any] | None:
    """One reading of ``device``'s clocks, temperature, power, reasons, violations and processes."""
    nvml, _ = _nvml()
    if nvml is None or not device.startswith("cuda"):
        return None
    handle = _device_handle(nvml, device)
    if handle is None:
        return None
    # newer nvidia-ml-py calls "throttle reasons" "clock event reasons"; accept either name.
    reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) \
        or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    power_mw = _try(nvml.nvmlDeviceGetPowerUsage, handle)
    limit_mw = _try(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    processes = _try(nvml.nvmlDeviceGetComputeRunningProcesses, handle)
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
        "processes": None if processes is None else [
            {"pid": int(p.pid), "used_memory_bytes": getattr(p, "usedGpuMemory", None)} for p in processes],
        "own_pid": os.getpid(),
        **_identity(nvml, handle),  # the card read, to check against the run's gpu_uuid
    }


def other_processes(reading: dict[str, Any]) -> int | None:
    """How many processes besides this one had a compute context on the GPU at ``reading``; None if
    the query failed.

    Readings are taken while this process holds a CUDA context, so one entry is ours: found by
    PID, or (in a container, where NVML reports host PIDs) assumed.
    """
    processes = reading.get("processes")
    if processes is None:
        return None
    return max(len({p["pid"] for p in processes}) - 1, 0)


def assess(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Throttling and contention over a benchmark, from the readings before and after it; ``None``
    where a reading or query is missing and the others show nothing."""
    readings = [r for r in (before, after) if r]
    reasons = sorted({name for r in readings for name in r.get("clock_event_reasons") or []
                      if name in THROTTLE_REASONS.values()})
    thermal = [((r or {}).get("violation_ns") or {}).get("thermal") for r in (before, after)]
    if before and after and None not in thermal and thermal[1] > thermal[0]:
        reasons.append(f"thermal violation for {(thermal[1] - thermal[0]) / 1e6:.0f} ms")
    reasons_read = all(r and r.get("clock_event_reasons") is not None for r in (before, after))
    counts = [other_processes(r) if r else None for r in (before, after)]
    seen = max((c for c in counts if c is not None), default=None)
    others = seen if seen or None not in counts else None
    return {"throttled": True if reasons else (False if reasons_read else None), "throttle_reasons": reasons,
            "contended": None if others is None else others > 0, "other_processes": others}


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


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on: its affinity mask where the OS has one, else every CPU."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclasses.dataclass(frozen=True)
class CpuQuota:
    """A cgroup CPU quota over this process: ``cpus`` worth of CPU time per wall second."""

    cpus: float
    source: Path  # the file that sets it
    throttled: tuple[Path, str, float]  # where the time the quota held the cgroup back is: file, key, s per unit
    usage: tuple[Path, str | None, float] | None  # the cgroup's own CPU time, where it reports it

    def throttled_s(self) -> float | None:
        return _counter(*self.throttled)

    def usage_s(self) -> float | None:
        return _counter(*self.usage) if self.usage else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _counter(path: Path, key: str | None, seconds_per_unit: float) -> float | None:
    """A cgroup counter in seconds: the whole file (``key`` None) or one ``key value`` line of it."""
    text = _read(path)
    if text is None:
        return None
    lines = dict(line.split(maxsplit=1) for line in text.splitlines() if " " in line) if key else {None: text}
    try:
        return int(lines[key]) * seconds_per_unit
    except (KeyError, ValueError):
        return None


def _cgroup_paths() -> dict[str, str]:
    """controller -> this process's cgroup path ("" for cgroup v2), from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _cgroup_folders(mount: Path, path: str) -> list[Path]:
    """The folder of cgroup ``path`` under ``mount`` and its ancestors up to the mount, innermost first."""
    leaf = mount / path.lstrip("/")
    if not leaf.is_dir():
        leaf = mount  # a container sees its own cgroup at the mount's root
    folders = [leaf]
    while folders[-1] != mount and folders[-1].parent != folders[-1]:
        folders.append(folders[-1].parent)
    return folders


def _ratio(quota: str | None, period: str | None) -> float | None:
    """CPUs' worth of a quota (``quota`` microseconds every ``period``); None where there is none."""
    try:
        value = int(quota or "") / int(period or "")
    except (ValueError, ZeroDivisionError):
        return None  # "max", -1 (v1's "none") or unreadable
    return value if value > 0 else None


def cpu_quota() -> CpuQuota | None:
    """The tightest cgroup CPU quota on this process's cgroup path (Linux, cgroup v1 or v2), or None."""
    paths, quotas = _cgroup_paths(), []
    if "" in paths:
        for mount in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
            for folder in _cgroup_folders(mount, paths[""]) if mount.is_dir() else []:
                quota, _, period = (_read(folder / "cpu.max") or "").partition(" ")  # "max 100000": none
                cpus = _ratio(quota, period)
                if cpus:
                    stat = folder / "cpu.stat"
                    quotas.append(CpuQuota(cpus, folder / "cpu.max", (stat, "throttled_usec", 1e-6),
                                           (stat, "usage_usec", 1e-6)))
    if "cpu" in paths:
        for mount in (CGROUP_ROOT / "cpu", CGROUP_ROOT / "cpu,cpuacct"):
            for folder in _cgroup_folders(mount, paths["cpu"]) if mount.is_dir() else []:
                cpus = _ratio(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))
                if cpus:
                    # cpuacct counts the cgroup's CPU time: beside the quota when mounted with cpu, else in
                    # its own hierarchy if this process sits at the same path there
                    usage = folder / "cpuacct.usage"
                    if not usage.exists() and paths.get("cpuacct") == paths["cpu"]:
                        usage = CGROUP_ROOT / "cpuacct" / folder.relative_to(mount) / "cpuacct.usage"
                    quotas.append(CpuQuota(cpus, folder / "cpu.cfs_quota_us",
                                           (folder / "cpu.stat", "throttled_time", 1e-9),
                                           (usage, None, 1e-9) if usage.exists() else None))
    return min(quotas, key=lambda q: q.cpus, default=None)


class HostWatch:
    """CPU time used by other processes while a block ran; ``as_dict()`` is the ``host_telemetry`` field."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self.cpus = allowed_cpus()
        self.quota = cpu_quota()
        self._start: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None

    def _busy_seconds(self) -> float:
        per_cpu = self._psutil.cpu_times(percpu=True)
        total = 0.0
        for cpu in (c for c in self.cpus if c < len(per_cpu)):
            times = per_cpu[cpu]
            idle = times.idle + getattr(times, "iowait", 0.0)
            total += sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        return total

    def _own_seconds(self) -> float:
        # Children this process waited for (the fresh-process cold-start and compile benchmarks)
        # are its own work, not contention.
        times = self._process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    def _sample(self) -> dict[str, Any]:
        return {"wall": time.perf_counter(), "busy": self._busy_seconds(), "own": self._own_seconds(),
                "cgroup": self.quota.usage_s() if self.quota else None,
                "throttled": self.quota.throttled_s() if self.quota else None, "load": list(os.getloadavg())}

    def __enter__(self) -> HostWatch:
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        end, start = self._sample(), self._start
        wall, own = end["wall"] - start["wall"], end["own"] - start["own"]
        others = max(end["busy"] - start["busy"] - own, 0.0)
        cgroup_others = throttled = None
        if end["cgroup"] is not None and start["cgroup"] is not None:
            cgroup_others = max(end["cgroup"] - start["cgroup"] - own, 0.0)
        if end["throttled"] is not None and start["throttled"] is not None:
            throttled = end["throttled"] - start["throttled"]
        fractions = [others / (wall * len(self.cpus))] if wall > 0 else []
        if cgroup_others is not None and fractions:
            fractions.append(cgroup_others / (wall * self.quota.cpus))
        self.result = {
            "wall_s": wall, "cpus": self.cpus, "cpu_count": len(self.cpus),
            "cpu_quota": self.quota.cpus if self.quota else None,
            "cpu_quota_source": str(self.quota.source) if self.quota else None,
            "own_cpu_s": own, "other_cpu_s": others, "cgroup_other_cpu_s": cgroup_others,
            "cpu_throttled_s": throttled, "other_cpu_fraction": max(fractions, default=None),
            "load_average_before": start["load"], "load_average_after": end["load"],
        }

    def as_dict(self) -> dict[str, Any] | None:
        return self.result


def measurement_problems(gpu: dict[str, Any] | None, host: dict[str, Any] | None,
                         host_contention: float) -> list[str]:
    """What makes a measurement doubtful, from a row's ``gpu_telemetry`` and ``host_telemetry``: a
    throttled or shared GPU, other processes above ``host_contention`` of the CPU (the gate leaves such
    a run out; a benchmark warns about it). Unknown readings (None) are not problems."""
    found = []
    if gpu and gpu.get("throttled"):
        found.append(f"GPU throttled ({', '.join(gpu.get('throttle_reasons') or [])})")
    if gpu and gpu.get("contended"):
        found.append(f"{gpu.get('other_processes')} other process(es) on the GPU")
    fraction = (host or {}).get("other_cpu_fraction")
    if fraction is not None and fraction > host_contention:
        found.append(f"other processes used {fraction:.0%} of the CPU (> {host_contention:.0%})")
    return found
