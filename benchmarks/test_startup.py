"""Model load time and cold start (first inference after load), per backend and precision."""

from __future__ import annotations

import pytest

from perfsuite import environment
from perfsuite.backends import get_runner_class
from perfsuite.backends.base import RunSpec
from perfsuite.errors import BackendUnavailable
from perfsuite.images import tile_batch
from perfsuite.models import load_model
from perfsuite.results import clean_json, make_extra_info
from perfsuite.telemetry import HostWatch
from perfsuite.timing import synchronized

STARTUP_ROUNDS = 3


def test_model_load(benchmark, suite_options, loaded_model):
    """torchvision model construction + weights + move to the device, synchronized."""
    device = suite_options.device

    def load():
        model = load_model(suite_options.model, loaded_model.weights_source
                           if loaded_model.weights == "file" else loaded_model.weights)
        return model.module.to(device)

    benchmark.group = f"startup {suite_options.model}"
    with HostWatch() as host_watch:  # lets the gate leave out runs that shared the CPU
        benchmark.pedantic(synchronized(load, device), rounds=STARTUP_ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(clean_json(make_extra_info(
        "model_load", **loaded_model.describe(), device=device, tf32=environment.tf32_settings(),
        host_telemetry=host_watch.as_dict(),
    )))


def test_cold_start(benchmark, startup_case, suite_options, loaded_model, fixture_images, runner_pool):
    """Build and load a fresh runner (untimed), then time its first inference (batch 1)."""
    spec = RunSpec(startup_case.precision, 1, suite_options.device)
    runner_class = get_runner_class(startup_case.backend)
    runner_pool.get(startup_case)  # skips, with the reason, what cannot run here (a real attempt included)
    image = tile_batch(fixture_images, 1)
    runners = []

    def fresh_runner():
        while runners:
            runners.pop().release()
        runner = runner_class(loaded_model, spec)
        try:
            runner.load()
        except BackendUnavailable as exc:
            pytest.skip(str(exc))
        runners.append(runner)
        return (runner.prepare(image),), {}

    def first_inference(prepared):
        return runners[-1].infer(prepared)

    benchmark.group = f"startup {suite_options.model}"
    with HostWatch() as host_watch:
        benchmark.pedantic(synchronized(first_inference, spec.device), setup=fresh_runner,
                           rounds=STARTUP_ROUNDS, iterations=1, warmup_rounds=0)
    runner = runners[-1]
    benchmark.extra_info.update(clean_json(make_extra_info(
        "cold_start", backend=startup_case.backend, **loaded_model.describe(), precision=spec.precision,
        batch_size=1, device=spec.device, tf32=environment.tf32_settings(),
        build_s=runner.build_seconds, load_s=runner.load_seconds, backend_info=runner.metrics(),
        host_telemetry=host_watch.as_dict(),
    )))
    runner.release()

