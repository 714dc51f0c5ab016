"""Device time and host time of a call, measured apart on a held CUDA stream.

The host-inclusive latency of a small batch is mostly the host's launch work, and on a shared VM
that work's speed moves between processes by tens of percent. To see the model's own time, the
device's work is timed while the host's enqueue is kept out of it:

1. **Hold.** The current stream is held before a block: preferably by a host-released flag, a
   driver stream wait (``cuStreamWaitValue32``, "wait until a pinned host word >= N") on a pinned,
   device-mapped host int32; the host writes N after the enqueue. N grows by one per block, so the
   word never needs a reset. Where stream memory operations are not available (the symbol is
   missing, the driver refuses, or the wait does not hold) a spin kernel (``torch.cuda._sleep``)
   of a computed duration holds the stream instead, lengthened whenever it proves too short.
2. **Block.** A start event is recorded after the hold, the host enqueues ``calls`` calls (its
   thread CPU time, ``time.thread_time``, read around them), then an end event.
3. **Verification, every block.** Just before the release the start event must still be pending:
   then the device had not begun the block when the host finished enqueueing it, so the events
   see back-to-back device work with no host gap in it. A block that fails is rejected, never
   recorded. A call that waits for the device (a synchronize inside ``infer``), or an enqueue
   stuck on a full launch queue (~1000 pending launches), would wait forever on a held stream:
   a watchdog thread (torch releases the GIL while it waits in CUDA) releases the flag after a
   timeout, and the block is rejected with that reason; ``calls`` is halved after each such block,
   and when even one call cannot be enqueued under a hold the figures are unavailable.
4. **Figures.** Device time per call = the block's event time / calls; host time per call = the
   enqueue's thread CPU time / calls (during a hold the enqueue never waits for the device, so
   this is pure host work). Blocks run until the device time's median is known to ~0.5% (a
   distribution-free confidence interval, ``timing.median_ci_halfwidth``) or the time budget is
   spent, at least ``MIN_BLOCKS``. Each figure's timer cost is measured too: an empty held block
   (the event pair) and an empty enqueue (the CPU-time reads), per call.

The block logic (:func:`time_apart`) works on any :class:`HeldStream`; :class:`FlagHoldStream` and
:class:`SpinHoldStream` are the CUDA ones. :func:`device_and_host_time` picks one and returns the
two extra_info fields (schema in ``perfsuite.results``).
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import torch

from perfsuite.environment import is_cuda
from perfsuite.timing import cuda_event_times, median_ci_halfwidth, quartiles

FLAG_HOLD = "host-released stream wait (cuStreamWaitValue32)"
SPIN_HOLD = "timed spin kernel, verified per block"
HOST_CLOCK = "thread CPU time of the enqueue"

MAX_CALLS_PER_BLOCK = 20  # ~20 kernels per eager AlexNet call: 400 launches, well inside the launch queue
BLOCK_TARGET_S = 10e-3  # fewer calls per block where one call is long (large batches)
MIN_BLOCKS = 10
MAX_BLOCKS = 400
TARGET_CI = 0.005  # stop once the median's relative CI half-width is below this
EMPTY_BLOCKS = 10
WATCHDOG_MIN_S = 2.0
WATCHDOG_FACTOR = 50  # times the expected enqueue
MAX_TIMEOUTS = 3
MIN_SPIN_S = 1e-3
MAX_SPIN_S = 1.0
MIN_VERIFIED_BLOCKS = 3

CU_STREAM_WAIT_VALUE_GEQ = 0x0
CU_MEMHOSTALLOC_PORTABLE = 0x01
CU_MEMHOSTALLOC_DEVICEMAP = 0x02


class HoldUnavailable(Exception):
    """This kind of hold cannot be used here (the message says why); another may."""


class Marker(Protocol):
    """A point in a stream's order (a CUDA event)."""

    def done(self) -> bool: ...

    def seconds_until(self, later: Marker) -> float: ...


class HeldStream(Protocol):
    """A stream whose work can be held while the host enqueues (see the module docstring)."""

    hold_name: str

    def hold(self) -> None:
        """Enqueue the hold; work enqueued after it waits until :meth:`release` (or the hold's end)."""

    def release(self) -> None:
        """Let the held work run; thread-safe (the watchdog calls it), idempotent."""

    def marker(self) -> Marker:
        """Enqueue a timing marker."""

    def synchronize(self) -> None:
        """Wait until everything enqueued has run."""

    def expect_enqueue(self, seconds: float) -> None:
        """The next blocks' enqueue is expected to take ``seconds`` (a timed hold sizes itself)."""

    def lengthen(self) -> bool:
        """A block's enqueue outlasted the hold: lengthen it (False: this hold cannot be lengthened)."""


@dataclasses.dataclass(frozen=True)
class HeldBlock:
    """One held block: its device time (between the markers), the enqueue's CPU time, and why it was
    rejected (None: verified)."""

    calls: int
    device_s: float
    host_s: float
    rejected: str | None = None
    timed_out: bool = False


class Watchdog:
    """A thread that releases a hold whose enqueue overran its deadline, so a call that waits for the
    device cannot deadlock the process (torch releases the GIL while it waits in CUDA)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._deadline: float | None = None
        self._action: Callable[[], None] | None = None
        self._fired = self._closed = False
        self._thread = threading.Thread(target=self._watch, name="perfsuite-hold-watchdog", daemon=True)
        self._thread.start()

    def arm(self, seconds: float, action: Callable[[], None]) -> None:
        with self._condition:
            self._deadline, self._action, self._fired = time.monotonic() + seconds, action, False
            self._condition.notify()

    def disarm(self) -> bool:
        """Stop watching; whether the action ran."""
        with self._condition:
            fired, self._deadline, self._action = self._fired, None, None
            return fired

    def _watch(self) -> None:
        with self._condition:
            while not self._closed:
                if self._deadline is None:
                    self._condition.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._condition.wait(remaining)
                    continue
                action, self._deadline, self._fired = self._action, None, True
                if action is not None:
                    action()  # under the lock: disarm() returns only after the release

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def held_block(stream: HeldStream, call: Callable[[], Any], calls: int, watchdog: Watchdog,
               timeout_s: float) -> HeldBlock:
    """Hold ``stream``, enqueue ``calls`` calls between two markers, verify, release, wait (see module)."""
    stream.hold()
    try:
        start = stream.marker()
        watchdog.arm(timeout_s, stream.release)
        began = time.thread_time()
        for _ in range(calls):
            call()
        host_s = time.thread_time() - began
        end = stream.marker()
        timed_out = watchdog.disarm()
        covered = not start.done()  # the device has not begun the block: no host gap inside it
    finally:
        watchdog.disarm()
        stream.release()
    stream.synchronize()
    rejected = None
    if timed_out:
        rejected = (f"the enqueue did not return within {timeout_s:.1f} s of a hold: it waited for the device "
                    f"(a synchronize inside the call, or a full launch queue); the watchdog released the hold")
    elif not covered:
        rejected = "the hold ended before the enqueue did"
    return HeldBlock(calls, start.seconds_until(end), host_s, rejected, timed_out)


def calls_per_block(per_call_s: float) -> int:
    """Calls in a block: ``MAX_CALLS_PER_BLOCK``, fewer where a call is long (about ``BLOCK_TARGET_S`` a block)."""
    if per_call_s <= 0:
        return MAX_CALLS_PER_BLOCK
    return max(1, min(MAX_CALLS_PER_BLOCK, round(BLOCK_TARGET_S / per_call_s)))


def unavailable(reason: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two fields of a row where device and host time cannot be measured, with the reason."""
    device = {"available": False, "reason": reason, "median_s": None, "q1_s": None, "q3_s": None, "blocks": 0,
              "calls_per_block": None, "hold": None, "blocks_rejected": 0, "timer_overhead_s": None,
              "method": None}
    host = {"available": False, "reason": reason, "median_s": None, "q1_s": None, "q3_s": None, "blocks": 0,
            "clock": HOST_CLOCK, "timer_overhead_s": None}
    return device, host


def time_apart(stream: HeldStream, call: Callable[[], Any], per_call_s: float, budget_s: float, *,
               watchdog_min_s: float = WATCHDOG_MIN_S, min_blocks: int = MIN_BLOCKS,
               max_blocks: int = MAX_BLOCKS, target_ci: float = TARGET_CI) -> tuple[dict[str, Any], dict[str, Any]]:
    """Device and host time per call of ``call`` (warm, ~``per_call_s`` host-inclusive), from held blocks on
    ``stream`` for about ``budget_s`` (see the module docstring). Raises :class:`HoldUnavailable` when
    ``stream``'s hold does not hold and cannot be lengthened (another kind of hold may)."""

    def timeout(calls: int) -> float:
        return max(watchdog_min_s, WATCHDOG_FACTOR * calls * per_call_s)

    rejected: collections.Counter[str] = collections.Counter()
    with Watchdog() as watchdog:
        # Can one call be enqueued under a hold at all? A call that waits for the device cannot.
        stream.expect_enqueue(per_call_s)
        first = held_block(stream, call, 1, watchdog, timeout(1))
        while first.rejected and not first.timed_out:
            rejected[first.rejected] += 1
            if not stream.lengthen():
                raise HoldUnavailable(f"{stream.hold_name}: the stream ran on during the enqueue (the hold "
                                      f"did not hold)")
            first = held_block(stream, call, 1, watchdog, timeout(1))
        if first.timed_out:
            return unavailable(f"device time: one call could not be enqueued on a held stream within "
                               f"{timeout(1):.1f} s (the call waits for the device; the watchdog released it)")

        calls = calls_per_block(per_call_s)
        stream.expect_enqueue(calls * per_call_s)
        empty = [held_block(stream, lambda: None, 0, watchdog, timeout(1)) for _ in range(EMPTY_BLOCKS)]
        device_overhead = statistics.median(b.device_s for b in empty)
        host_overhead = statistics.median(b.host_s for b in empty)

        accepted: list[HeldBlock] = []
        timeouts, spent, started = 0, 0, time.perf_counter()
        hard_limit = max(10 * budget_s, 5.0)
        while len(accepted) < max_blocks:
            block = held_block(stream, call, calls, watchdog, timeout(calls))
            spent += 1
            elapsed = time.perf_counter() - started
            if block.rejected is None:
                accepted.append(block)
                if len(accepted) >= min_blocks:
                    ci = median_ci_halfwidth([b.device_s / b.calls for b in accepted])
                    if elapsed >= budget_s or (ci is not None and ci < target_ci):
                        break
            else:
                rejected[block.rejected] += 1
                if block.timed_out:
                    timeouts += 1
                    if timeouts >= MAX_TIMEOUTS or calls == 1:
                        return unavailable(f"device time: {timeouts} held blocks timed out (last at {calls} calls "
                                           f"a block): {block.rejected}")
                    calls = max(1, calls // 2)  # blocks of one size only: start again
                    accepted.clear()
                    stream.expect_enqueue(calls * per_call_s)
                elif not stream.lengthen():
                    raise HoldUnavailable(f"{stream.hold_name}: the stream ran on during the enqueue (the hold "
                                          f"did not hold)")
            if elapsed > hard_limit:
                break

    if len(accepted) < MIN_VERIFIED_BLOCKS:
        return unavailable(f"device time: only {len(accepted)} of {spent} held blocks verified; rejected: "
                           f"{dict(rejected)}")
    device_per_call = [b.device_s / b.calls for b in accepted]
    host_per_call = [b.host_s / b.calls for b in accepted]
    d_q1, d_median, d_q3 = quartiles(device_per_call)
    h_q1, h_median, h_q3 = quartiles(host_per_call)
    if d_median <= 0 or h_median <= 0:  # a figure of nothing: the gate would divide by it
        return unavailable(f"device time: the calls did no measurable work (device {d_median:.3g} s, host "
                           f"{h_median:.3g} s per call)")
    device = {
        "available": True, "reason": None, "median_s": d_median, "q1_s": d_q1, "q3_s": d_q3,
        "blocks": len(accepted), "calls_per_block": calls, "hold": stream.hold_name,
        "blocks_rejected": sum(rejected.values()), "rejections": dict(rejected) or None,
        "timer_overhead_s": device_overhead / calls,
        "relative_ci_halfwidth": median_ci_halfwidth(device_per_call),
        "method": (f"{calls} calls enqueued while the stream was held ({stream.hold_name}), CUDA events after "
                   f"the hold and after the last call, each block verified to have been held through its "
                   f"enqueue; per call: the block's event time / {calls}, median over blocks"),
    }
    host = {"available": True, "reason": None, "median_s": h_median, "q1_s": h_q1, "q3_s": h_q3,
            "blocks": len(accepted), "calls_per_block": calls, "clock": HOST_CLOCK,
            "timer_overhead_s": host_overhead / calls}
    return device, host


# -- CUDA --------------------------------------------------------------------------------------------------


class _EventMarker:
    def __init__(self, stream: torch.cuda.Stream) -> None:
        self.event = torch.cuda.Event(enable_timing=True)
        self.event.record(stream)

    def done(self) -> bool:
        return self.event.query()

    def seconds_until(self, later: _EventMarker) -> float:
        return self.event.elapsed_time(later.event) / 1e3


class _Driver:
    """The CUDA driver API functions the flag hold needs (libcuda.so.1, through ctypes)."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            raise HoldUnavailable(f"libcuda.so.1 cannot be loaded: {exc}") from exc
        wait = getattr(lib, "cuStreamWaitValue32_v2", None) or getattr(lib, "cuStreamWaitValue32", None)
        if wait is None:
            raise HoldUnavailable("the CUDA driver has no cuStreamWaitValue32")
        wait.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint]
        self.wait_value32 = wait
        self.lib = lib

    def check(self, result: int, what: str) -> None:
        if result != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(result, ctypes.byref(name))
            raise HoldUnavailable(f"{what} failed: CUresult {result} ({(name.value or b'?').decode()})")


class HostFlag:
    """A pinned, device-mapped host int32 that stream waits poll; one per device for the process (4 bytes,
    never freed: a wait may only be pending while a block runs, and a block always releases it)."""

    _flags: ClassVar[dict[int, HostFlag]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, driver: _Driver) -> None:
        context = ctypes.c_void_p()
        driver.check(driver.lib.cuCtxGetCurrent(ctypes.byref(context)), "cuCtxGetCurrent")
        if not context.value:
            raise HoldUnavailable("no current CUDA context on this thread")
        host = ctypes.c_void_p()
        driver.check(driver.lib.cuMemHostAlloc(ctypes.byref(host), ctypes.c_size_t(4),
                                               CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP),
                     "cuMemHostAlloc")
        pointer = ctypes.c_uint64()
        driver.check(driver.lib.cuMemHostGetDevicePointer_v2(ctypes.byref(pointer), host, 0),
                     "cuMemHostGetDevicePointer")
        self.word = ctypes.c_uint32.from_address(host.value)
        self.word.value = 0
        self.device_pointer = pointer.value
        self.count = 0

    @classmethod
    def for_device(cls, index: int, driver: _Driver) -> HostFlag:
        with cls._lock:
            if index not in cls._flags:
                cls._flags[index] = cls(driver)
            return cls._flags[index]


class FlagHoldStream:
    """The current CUDA stream of ``device``, held by a stream wait on a host flag the host releases."""

    hold_name = FLAG_HOLD

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.stream = torch.cuda.current_stream(self.device)
        self._driver = _Driver()
        self._flag = HostFlag.for_device(self.device.index if self.device.index is not None
                                         else torch.cuda.current_device(), self._driver)
        self._target = self._flag.count

    def hold(self) -> None:
        target = self._flag.count + 1
        result = self._driver.wait_value32(ctypes.c_void_p(self.stream.cuda_stream), self._flag.device_pointer, target,
                                           CU_STREAM_WAIT_VALUE_GEQ)
        self._driver.check(result, "cuStreamWaitValue32")
        self._flag.count = self._target = target

    def release(self) -> None:
        if self._flag.word.value < self._target:  # only ever raised: the word stays monotonic
            self._flag.word.value = self._target

    def marker(self) -> _EventMarker:
        return _EventMarker(self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def expect_enqueue(self, seconds: float) -> None:
        pass  # held until released: no length to size

    def lengthen(self) -> bool:
        return False


def spin_cycles_per_second(device: str) -> float:
    """The clock ``torch.cuda._sleep`` counts, measured: cycles of a spin kernel per second of events."""
    cycles = 1_000_000
    seconds = statistics.median(cuda_event_times(lambda: torch.cuda._sleep(cycles), 7, warmup=2, device=device))
    return cycles / seconds


class SpinHoldStream:
    """The current CUDA stream of ``device``, held by a spin kernel of a computed duration: at least twice
    the expected enqueue, doubled whenever a block shows it too short."""

    hold_name = SPIN_HOLD

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.stream = torch.cuda.current_stream(self.device)
        self.cycles_per_s = spin_cycles_per_second(device)
        self.seconds = MIN_SPIN_S

    def hold(self) -> None:
        with torch.cuda.stream(self.stream):
            torch.cuda._sleep(int(self.seconds * self.cycles_per_s))

    def release(self) -> None:
        pass  # the spin ends by itself

    def marker(self) -> _EventMarker:
        return _EventMarker(self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def expect_enqueue(self, seconds: float) -> None:
        self.seconds = min(MAX_SPIN_S, max(self.seconds, 2 * seconds))

    def lengthen(self) -> bool:
        if self.seconds >= MAX_SPIN_S:
            return False
        self.seconds = min(MAX_SPIN_S, 2 * self.seconds)
        return True


def device_and_host_time(call: Callable[[], Any], device: str, per_call_s: float, budget_s: float,
                         cannot_hold: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``device_time`` and ``host_time`` fields of a row for warm ``call`` (see the module docstring);
    ``cannot_hold``: the runner's reason why its calls cannot be held (both unavailable with it)."""
    if not is_cuda(device):
        return unavailable(f"no CUDA device: device is {device}; device and host time are measured apart on a "
                           f"held CUDA stream")
    if cannot_hold:
        return unavailable(cannot_hold)
    with torch.cuda.device(torch.device(device)):
        torch.cuda.synchronize()  # the primary context is current on this thread; the device is idle
        try:
            return time_apart(FlagHoldStream(device), call, per_call_s, budget_s)
        except HoldUnavailable as exc:
            why_not_flag = str(exc)
        torch.cuda.synchronize()
        try:
            fields = time_apart(SpinHoldStream(device), call, per_call_s, budget_s)
        except HoldUnavailable as exc:
            return unavailable(f"device time: no hold covers the enqueue (flag: {why_not_flag}; spin: {exc})")
        fields[0]["flag_hold_unavailable"] = why_not_flag
        return fields
