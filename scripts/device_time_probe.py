"""Probe of the held-stream device time and host time on a GPU (the table in docs/measurement.md).

    PYTHONPATH=$PWD python3 scripts/device_time_probe.py

Sleep kernels of known length (flag and spin hold), a host busy loop, random-init torchvision AlexNet
in eager mode and as a CUDA-graph replay (two repeats each), a call that synchronizes (the watchdog
must release it) and a call of 150 launches (the launch queue: a block times out and the calls per
block are halved). Needs only torch and torchvision.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision

from perfsuite import device_time as dt
from perfsuite.timing import cuda_event_times

DEVICE = "cuda"


Fields = tuple[dict[str, Any], dict[str, Any]]


def show(name: str, fields: Fields, seconds: float, reference: float | None = None) -> None:
    device, host = fields
    if not device["available"]:
        print(f"{name:34s} UNAVAILABLE after {seconds:.2f} s: {device['reason']}")
        return
    versus = f" ({device['median_s'] / reference - 1:+.2%} vs reference)" if reference else ""
    print(f"{name:34s} device {device['median_s'] * 1e6:9.2f} µs{versus} | host {host['median_s'] * 1e6:8.2f} µs | "
          f"{device['blocks']} blocks x {device['calls_per_block']}, {device['blocks_rejected']} rejected, CI "
          f"{device['relative_ci_halfwidth']:.3%}, timer {device['timer_overhead_s'] * 1e9:.0f} / "
          f"{host['timer_overhead_s'] * 1e9:.0f} ns | {device['hold'][:16]} | {seconds:.2f} s")
    if device.get("rejections") or device.get("flag_hold_unavailable"):
        print(f"    rejections: {device.get('rejections')}; flag: {device.get('flag_hold_unavailable')}")


def timed(call: Callable[[], Any], per_call_s: float) -> tuple[Fields, float]:
    started = time.perf_counter()
    fields = dt.device_and_host_time(call, DEVICE, per_call_s, 0.3)
    return fields, time.perf_counter() - started


def sleep_cycles(seconds: float) -> int:
    cycles = 1_000_000
    for _ in range(3):
        cycles = int(cycles * seconds / statistics.median(
            cuda_event_times(lambda c=cycles: torch.cuda._sleep(c), 21, 3)))
    return cycles


def sleep_kernels() -> None:
    for milliseconds in (1.0, 0.1):
        cycles = sleep_cycles(milliseconds * 1e-3)
        alone = statistics.median(cuda_event_times(lambda c=cycles: torch.cuda._sleep(c), 51, 3))
        back_to_back = statistics.median(cuda_event_times(
            lambda c=cycles: [torch.cuda._sleep(c) for _ in range(50)], 5, 1)) / 50
        print(f"sleep {milliseconds} ms: alone {alone * 1e6:.2f} µs, back to back {back_to_back * 1e6:.2f} µs")
        for name, make in (("flag", lambda: dt.FlagHoldStream(DEVICE)), ("spin", lambda: dt.SpinHoldStream(DEVICE))):
            started = time.perf_counter()
            torch.cuda.synchronize()
            fields = dt.time_apart(make(), lambda c=cycles: torch.cuda._sleep(c), alone, 0.4)
            show(f"sleep {milliseconds} ms, {name} hold", fields, time.perf_counter() - started, back_to_back)


def busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def host_work() -> None:
    for microseconds in (200, 50):
        for _ in range(3):
            busy(microseconds * 1e-6)
        fields, seconds = timed(lambda us=microseconds: busy(us * 1e-6), microseconds * 1e-6)
        show(f"host busy loop {microseconds} µs", fields, seconds)
        if fields[1]["available"]:
            print(f"    host time {fields[1]['median_s'] / (microseconds * 1e-6) - 1:+.2%} of the busy loop")


def alexnet() -> None:
    model = torchvision.models.alexnet().eval()
    for precision, batch in (("fp16", 1), ("fp32", 8), ("fp16", 64), ("fp32", 256)):
        dtype = torch.float16 if precision == "fp16" else torch.float32
        module = model.to(DEVICE, dtype)
        images = torch.randn(batch, 3, 224, 224, device=DEVICE, dtype=dtype)

        def call(module=module, images=images) -> torch.Tensor:
            with torch.inference_mode():
                return module(images)

        for _ in range(20):
            call()
        latencies = []
        for _ in range(50):
            torch.cuda.synchronize()
            started = time.perf_counter()
            call()
            torch.cuda.synchronize()
            latencies.append(time.perf_counter() - started)
        latency = statistics.median(latencies)
        for repeat in range(2):
            show(f"eager {precision} b{batch} (latency {latency * 1e6:.0f} µs) #{repeat}", *timed(call, latency))
        if batch == 1:
            replay = captured(module, images)
            for repeat in range(2):
                show(f"cudagraph {precision} b{batch} #{repeat}", *timed(replay, latency / 3))


def captured(module: torch.nn.Module, images: torch.Tensor) -> Callable[[], Any]:
    static = images.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            module(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        module(static)

    def replay() -> None:
        static.copy_(images)
        graph.replay()

    replay()
    return replay


def waiting_calls() -> None:
    def synchronizing() -> None:
        torch.cuda._sleep(1000)
        torch.cuda.current_stream().synchronize()

    synchronizing()
    show("a call that synchronizes", *timed(synchronizing, 1e-4))
    counter = torch.ones(1, device=DEVICE)

    def many_launches() -> None:
        for _ in range(150):
            counter.add_(1)

    many_launches()
    show("150 launches a call", *timed(many_launches, 150 * 5e-6))


def main() -> None:
    print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
    print(subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv"],
                         capture_output=True, text=True).stdout)
    torch.cuda.init()
    with torch.cuda.device(0):
        sleep_kernels()
        host_work()
        alexnet()
        waiting_calls()


if __name__ == "__main__":
    main()
