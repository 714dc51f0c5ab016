"""Device time and host time measured apart on a held stream (``perfsuite.device_time``).

The block logic (hold, verification, watchdog, halving, stopping) runs here on a CPU stand-in for a
CUDA stream: a worker thread that runs queued work in order, with a bounded queue (the finite launch
queue) and a hold that waits on a flag the host sets. Only the GPU is stood in for; the threads, the
waits and the clocks are real. The CUDA holds themselves are tested on the GPU (marked ``gpu``).
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections.abc import Callable

import pytest
import torch

from perfsuite import device_time as dt
from perfsuite import measure, timing

pytestmark = pytest.mark.gpu_timing  # on a GPU shared by xdist workers, these tests have it to themselves


class _ThreadMarker:
    def __init__(self) -> None:
        self.at: float | None = None
        self.reached = threading.Event()

    def done(self) -> bool:
        return self.reached.is_set()

    def seconds_until(self, later: _ThreadMarker) -> float:
        return later.at - self.at


class ThreadStream:
    """Work runs in order on one worker thread; at most ``depth`` items wait in its queue (``put`` blocks
    when full, as a CUDA launch does when the launch queue is full)."""

    hold_name = "thread stream wait on a host flag"

    def __init__(self, depth: int = 1000, holds: bool = True) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._flag = threading.Event()
        self.holds = holds  # False: a hold that does not hold (a wait the driver ignored)
        self.lengthened = 0
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            item()
            self._queue.task_done()

    def submit(self, work: Callable[[], object]) -> None:
        self._queue.put(work)

    def hold(self) -> None:
        self._flag.clear()
        if self.holds:
            self.submit(self._flag.wait)

    def release(self) -> None:
        self._flag.set()

    def marker(self) -> _ThreadMarker:
        marker = _ThreadMarker()

        def reach() -> None:
            marker.at = time.perf_counter()
            marker.reached.set()

        self.submit(reach)
        return marker

    def synchronize(self) -> None:
        self._queue.join()

    def expect_enqueue(self, seconds: float) -> None:
        pass

    def lengthen(self) -> bool:
        self.lengthened += 1
        return False


def _device_sleep(stream: ThreadStream, seconds: float) -> Callable[[], None]:
    """A call that enqueues ``seconds`` of device work and returns at once."""
    return lambda: stream.submit(lambda: time.sleep(seconds))


def test_device_time_is_the_work_on_the_stream_not_the_host_enqueue():
    stream = ThreadStream()
    small = torch.ones(16)

    def call() -> None:  # ~1 ms of host work in the enqueue: it must not land in the device time
        _busy(1e-3)
        for _ in range(10):
            small.add_(1)
        stream.submit(lambda: time.sleep(2e-3))

    for _ in range(3):  # warm, as measure() calls it
        call()
    stream.synchronize()
    device, host_time = dt.time_apart(stream, call, per_call_s=3e-3, budget_s=0.3, watchdog_min_s=1.0)
    assert device["available"] and host_time["available"], device
    assert device["blocks_rejected"] == 0 and device["blocks"] >= dt.MIN_BLOCKS, device
    assert 2e-3 <= device["median_s"] < 2.8e-3  # time.sleep overshoots, never undershoots; with the host part: 3 ms
    assert device["q1_s"] <= device["median_s"] <= device["q3_s"]
    assert device["hold"] == ThreadStream.hold_name and device["calls_per_block"] == dt.calls_per_block(3e-3)
    assert 1e-3 <= host_time["median_s"] < 1.3e-3  # the host's part, not the 2 ms of device work
    assert 0 <= device["timer_overhead_s"] < 1e-4 and 0 <= host_time["timer_overhead_s"] < 1e-5


def _busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_host_time_is_the_thread_cpu_time_of_the_enqueue():
    stream = ThreadStream()

    def call() -> None:
        _busy(300e-6)
        stream.submit(lambda: None)

    _, host = dt.time_apart(stream, call, per_call_s=3e-4, budget_s=0.2, watchdog_min_s=0.5)
    assert host["clock"] == dt.HOST_CLOCK
    assert 300e-6 <= host["median_s"] < 300e-6 * 1.15


def test_a_call_that_waits_for_the_device_is_detected_by_the_watchdog_without_deadlock():
    stream = ThreadStream()

    def synchronizing_call() -> None:
        stream.submit(lambda: time.sleep(1e-4))
        stream.synchronize()  # as onnxruntime's infer does: waits behind the hold

    started = time.perf_counter()
    device, host = dt.time_apart(stream, synchronizing_call, per_call_s=1e-4, budget_s=0.2, watchdog_min_s=0.3)
    assert time.perf_counter() - started < 3
    assert not device["available"] and not host["available"]
    assert "watchdog released" in device["reason"] and "one call" in device["reason"]
    assert device["median_s"] is None and host["median_s"] is None


def test_a_full_launch_queue_halves_the_calls_per_block():
    stream = ThreadStream(depth=30)  # a call is 2 launches: 20 calls need 40 places, 10 calls fit

    def call() -> None:
        stream.submit(lambda: None)
        stream.submit(lambda: time.sleep(2e-4))

    device, _ = dt.time_apart(stream, call, per_call_s=2e-4, budget_s=0.2, watchdog_min_s=0.3)
    assert device["available"]
    assert device["calls_per_block"] == 10
    assert device["blocks_rejected"] == 1 and "watchdog" in next(iter(device["rejections"]))


def test_a_hold_that_does_not_hold_is_never_recorded():
    stream = ThreadStream(holds=False)

    def call() -> None:  # a slow enqueue: the unheld stream has begun the block before it returns
        time.sleep(2e-3)
        stream.submit(lambda: None)

    with pytest.raises(dt.HoldUnavailable, match="did not hold"):
        dt.time_apart(stream, call, per_call_s=2e-3, budget_s=0.2, watchdog_min_s=0.3)
    assert stream.lengthened == 1


def test_blocks_stop_when_the_median_is_known_or_the_budget_is_spent():
    steady = ThreadStream()
    started = time.perf_counter()
    device, _ = dt.time_apart(steady, lambda: steady.submit(lambda: time.sleep(1e-3)), per_call_s=1e-3,
                              budget_s=30.0, watchdog_min_s=0.5, target_ci=0.5)  # any 10 blocks know it to 50%
    assert time.perf_counter() - started < 10  # stopped on precision, long before the budget
    assert device["blocks"] == dt.MIN_BLOCKS and device["relative_ci_halfwidth"] < 0.5

    noisy = ThreadStream()
    lengths = iter([1e-3, 3e-3] * 1000)  # the median of such blocks is never known to 0.5%
    started = time.perf_counter()

    def noisy_call() -> None:
        seconds = next(lengths)
        noisy.submit(lambda: time.sleep(seconds))

    device, _ = dt.time_apart(noisy, noisy_call, per_call_s=2e-3, budget_s=0.3, watchdog_min_s=0.5, target_ci=1e-9)
    assert 0.3 <= time.perf_counter() - started < 2
    assert device["blocks"] >= dt.MIN_BLOCKS


def test_an_exception_in_the_call_still_releases_the_hold():
    stream = ThreadStream()

    def failing() -> None:
        raise RuntimeError("broken runner")

    with pytest.raises(RuntimeError, match="broken runner"):
        dt.time_apart(stream, failing, per_call_s=1e-4, budget_s=0.1, watchdog_min_s=5.0)
    done = threading.Event()
    stream.submit(done.set)
    assert done.wait(1), "the stream stayed held"


def test_calls_that_do_no_device_work_give_no_figure():
    stream = ThreadStream()  # its markers read the same instant when nothing runs between them
    stream.marker = lambda: _InstantMarker()  # type: ignore[method-assign]
    device, host = dt.time_apart(stream, lambda: _busy(1e-4), per_call_s=1e-4, budget_s=0.1, watchdog_min_s=0.5)
    assert not device["available"] and "no measurable work" in device["reason"] and host["median_s"] is None


class _InstantMarker:
    """A marker of a stream with no clock resolution: both ends of any block read the same time."""

    def done(self) -> bool:
        return False

    def seconds_until(self, later: _InstantMarker) -> float:
        return 0.0


def test_median_ci_halfwidth():
    assert timing.median_ci_halfwidth([1.0] * 5) is None
    assert timing.median_ci_halfwidth([1.0] * 20) == 0
    spread = timing.median_ci_halfwidth([1.0 + i / 100 for i in range(21)])  # median 1.10
    assert 0 < spread < 0.05


def test_calls_per_block():
    assert dt.calls_per_block(100e-6) == dt.MAX_CALLS_PER_BLOCK
    assert dt.calls_per_block(2e-3) == 5
    assert dt.calls_per_block(50e-3) == 1


def test_cpu_rows_carry_both_figures_unavailable_with_the_reason():
    settings = measure.MeasureSettings(warmup_rounds=2, max_time=0.02, min_rounds=3)
    measured = measure.measure(lambda: torch.ones(8).sum(), "cpu", settings, device_and_host=True)
    fields = measured.row_fields()
    for name in ("device_time", "host_time"):
        assert fields[name]["available"] is False and fields[name]["median_s"] is None
        assert fields[name]["reason"].startswith("no CUDA device: device is cpu")
    assert "device_time" not in measure.measure(lambda: None, "cpu", settings).row_fields()  # only where asked


def test_a_runner_that_cannot_be_held_records_its_reason(monkeypatch):
    from perfsuite.backends.onnxruntime import OnnxRuntimeRunner

    assert OnnxRuntimeRunner.device_time_unavailable.startswith("onnxruntime:")
    monkeypatch.setattr(dt, "is_cuda", lambda device: True)  # the runner's declaration decides before any GPU call
    device, host = dt.device_and_host_time(lambda: None, "cuda", 1e-3, 0.1, OnnxRuntimeRunner.device_time_unavailable)
    assert device["reason"] == host["reason"] == OnnxRuntimeRunner.device_time_unavailable
    assert device["available"] is False


# -- on a GPU ----------------------------------------------------------------------------------------------


def _sleep_cycles(seconds: float) -> int:
    cycles = 1_000_000
    for _ in range(3):
        cycles = int(cycles * seconds / statistics.median(
            timing.cuda_event_times(lambda c=cycles: torch.cuda._sleep(c), iterations=21, warmup=3)))
    return cycles


@pytest.mark.gpu
@pytest.mark.parametrize("hold", ["flag", "spin"])
@pytest.mark.parametrize("milliseconds", [1.0, 0.1])
def test_a_sleep_kernel_comes_back_at_its_length(hold, milliseconds):
    """The kernel's length, measured alone: events around 50 back-to-back launches (each launch takes ~6 µs
    of host time, far less than the kernel, so the device never waits for the host), per kernel. An
    event pair around a single kernel would add ~2 µs of its own (2% of 0.1 ms; H100: 100.5 µs against
    98.6 µs back to back)."""
    cycles = _sleep_cycles(milliseconds * 1e-3)
    alone = statistics.median(timing.cuda_event_times(lambda: [torch.cuda._sleep(cycles) for _ in range(50)],
                                                      iterations=5, warmup=1)) / 50
    with torch.cuda.device(0):
        torch.cuda.synchronize()
        stream = dt.FlagHoldStream("cuda") if hold == "flag" else dt.SpinHoldStream("cuda")
        device, host = dt.time_apart(stream, lambda: torch.cuda._sleep(cycles), alone, budget_s=0.5)
    assert device["available"] and device["blocks_rejected"] == 0, device
    assert device["hold"] == (dt.FLAG_HOLD if hold == "flag" else dt.SPIN_HOLD)
    assert abs(device["median_s"] / alone - 1) < 0.02, (device["median_s"], alone)
    assert device["timer_overhead_s"] < 0.02 * alone
    assert host["median_s"] < alone  # the launch only


@pytest.mark.gpu
def test_host_time_of_a_busy_loop_within_two_percent():
    """A call that is a known amount of host work (a thread-CPU busy loop) comes back at it."""
    for _ in range(3):
        _busy(200e-6)
    device, host = dt.device_and_host_time(lambda: _busy(200e-6), "cuda", 2e-4, 0.3)
    assert device["hold"] == dt.FLAG_HOLD and host["available"], device
    assert 200e-6 <= host["median_s"] < 200e-6 * 1.02


@pytest.mark.gpu
def test_eager_alexnet_fp16_batch1_device_time_is_held_and_verified(alexnet):
    from perfsuite.backends.base import RunSpec
    from perfsuite.backends.eager import EagerRunner

    runner = EagerRunner(alexnet, RunSpec("fp16", 1, "cuda")).activate()
    prepared = runner.prepare(torch.rand(1, 3, 224, 224))
    settings = measure.MeasureSettings(warmup_rounds=10, max_time=0.5, min_rounds=5)
    measured = measure.measure(lambda: runner.infer(prepared), "cuda", settings, device_and_host=True,
                               cannot_hold=runner.device_time_unavailable)
    device, host = measured.device_time, measured.host_time
    assert device["available"] and host["available"], device
    assert device["hold"] == dt.FLAG_HOLD and device["blocks_rejected"] == 0
    assert device["blocks"] >= dt.MIN_BLOCKS and device["median_s"] < measured.median_s
    runner.release()


@pytest.mark.gpu
def test_a_synchronizing_call_is_detected_within_seconds_and_the_watchdog_releases():
    def synchronizing() -> None:
        torch.cuda._sleep(1000)
        torch.cuda.current_stream().synchronize()

    synchronizing()  # warm: a kernel's first launch loads its module, which waits for the device too
    started = time.perf_counter()
    device, host = dt.device_and_host_time(synchronizing, "cuda", 1e-4, 0.3)
    assert time.perf_counter() - started < 2 * dt.WATCHDOG_MIN_S + 2
    assert not device["available"] and "watchdog released" in device["reason"]
    assert host["reason"] == device["reason"]
    torch.cuda.synchronize()  # nothing is left held


def _measured_with_figures(runner, spec, settings) -> tuple[measure.Measurement, float]:
    """An activated runner's calls measured with device and host time apart (then released), and the
    seconds the measurement took."""
    try:
        prepared = runner.prepare(torch.rand(spec.batch_size, 3, 224, 224))
        started = time.perf_counter()
        measured = measure.measure(lambda: runner.infer(prepared), "cuda", settings, device_and_host=True,
                                   cannot_hold=runner.device_time_unavailable)
        return measured, time.perf_counter() - started
    finally:
        runner.release()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", [
    "eager-channels-last", "cudagraph", "tensorrt",
    pytest.param("compile", marks=pytest.mark.slow), pytest.param("compile-reduce-overhead", marks=pytest.mark.slow),
    pytest.param("compile-max-autotune-cudagraph", marks=pytest.mark.slow),
])
def test_every_cuda_runner_is_held_and_verified(alexnet, backend):
    """Each CUDA runner's calls stay behind the hold (TensorRT's own stream through its two events)."""
    from perfsuite.backends import get_runner_class
    from perfsuite.backends.base import RunSpec

    spec = RunSpec("fp16", 8, "cuda")
    runner_class = get_runner_class(backend)
    reason = runner_class.unavailable_reason(spec)
    if reason:
        pytest.skip(reason)
    measured, _ = _measured_with_figures(runner_class(alexnet, spec).activate(), spec,
                                         measure.MeasureSettings(warmup_rounds=10, max_time=0.3, min_rounds=5))
    device = measured.device_time
    assert device["available"] and device["hold"] == dt.FLAG_HOLD and device["blocks_rejected"] == 0, device
    assert device["median_s"] <= measured.median_s * 1.02  # device work, never more than the synchronized call


@pytest.mark.gpu
def test_onnxruntime_on_a_gpu_declares_its_reason_without_trying(alexnet):
    from perfsuite.backends.base import RunSpec
    from perfsuite.backends.onnxruntime import OnnxRuntimeCudaRunner

    spec = RunSpec("fp16", 1, "cuda")
    reason = OnnxRuntimeCudaRunner.unavailable_reason(spec)
    if reason:
        pytest.skip(reason)
    measured, seconds = _measured_with_figures(OnnxRuntimeCudaRunner(alexnet, spec).activate(), spec,
                                               measure.MeasureSettings(warmup_rounds=3, max_time=0.1, min_rounds=3))
    assert measured.device_time["reason"] == OnnxRuntimeCudaRunner.device_time_unavailable
    assert seconds < 5


@pytest.mark.gpu
def test_without_stream_memory_operations_a_verified_spin_holds(monkeypatch):
    """A driver without cuStreamWaitValue32: the timed spin kernel holds instead, and says why."""

    def no_driver() -> None:
        raise dt.HoldUnavailable("the CUDA driver has no cuStreamWaitValue32")

    monkeypatch.setattr(dt, "_Driver", no_driver)
    cycles = _sleep_cycles(0.2e-3)
    torch.cuda._sleep(cycles)
    device, _ = dt.device_and_host_time(lambda: torch.cuda._sleep(cycles), "cuda", 0.2e-3, 0.3)
    assert device["available"] and device["hold"] == dt.SPIN_HOLD, device
    assert device["flag_hold_unavailable"] == "the CUDA driver has no cuStreamWaitValue32"
    assert device["median_s"] == pytest.approx(0.2e-3, rel=0.05)
