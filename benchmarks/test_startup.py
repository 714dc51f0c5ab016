"""Model load time and cold start (first inference after load), per backend and precision."""

from __future__ import annotations

import pytest

from perfsuite import environment
from perfsuite.backends import get_runner_class
from perfsuite.backends.base import RunSpec
from perfsuite.errors import BackendUnavailable
from perfsuite.images import tile_batch
from perfsuite.measure import measure_one_shot
from perfsuite.models import load_model
from perfsuite.results import clean_json, make_extra_info, run_fields

STARTUP_ROUNDS = 3


@pytest.mark.row_params(backend="eager", precision="fp32")  # the fp32 PyTorch module every backend starts from
def test_model_load(benchmark, suite_options, loaded_model, measure_settings):
    """torchvision model construction + weights + move to the device, synchronized."""
    device = suite_options.device

    def load():
        model = load_model(suite_options.model, loaded_model.weights_source
                           if loaded_model.weights == "file" else loaded_model.weights)
        return model.module.to(device)

    benchmark.group = f"startup {suite_options.model}"
    # No warm-up round: the session fixture's load already warmed the page cache and the allocator.
    measured = measure_one_shot(load, device, benchmark, STARTUP_ROUNDS, host_probe=measure_settings.host_probe)
    benchmark.extra_info.update(clean_json(make_extra_info(
        "model_load", **loaded_model.describe(), device=device, tf32=environment.tf32_settings(),
        **measured.row_fields(),
    )))


def test_cold_start(benchmark, startup_case, suite_options, loaded_model, fixture_images, runner_pool,
                    measure_settings):
    """Build and load a fresh runner (untimed), then time its first inference (batch 1)."""
    spec = RunSpec(startup_case.precision, 1, suite_options.device)
    runner_class = get_runner_class(startup_case.backend)
    runner_pool.skip_if_unavailable(startup_case)  # with the reason; a failed real attempt skips in setup
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

    benchmark.group = f"startup {suite_options.model}"
    measured = measure_one_shot(lambda prepared: runners[-1].infer(prepared), spec.device, benchmark,
                                STARTUP_ROUNDS, setup=fresh_runner, host_probe=measure_settings.host_probe)
    runner = runners[-1]
    benchmark.extra_info.update(clean_json(make_extra_info(
        "cold_start", backend=startup_case.backend, **run_fields(loaded_model, spec, suite_options.transform),
        build_s=runner.conversion_seconds, load_s=runner.load_seconds, backend_info=runner.metrics(),
        **measured.row_fields(),
    )))
    runner.release()
