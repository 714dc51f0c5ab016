"""End to end: image file -> class label, per pipeline x backend x precision x batch size.

An opt-in tier: ``pytest benchmarks -m e2e``. It follows the report's scenario: batch 1 classifies
``fixtures/dog.jpg`` (1546x1213, the report's image); the suite's batch sizes up to 8 alternate
dog.jpg and cat.jpg (a PIL decode takes ~30 ms, so larger batches would time decoding alone). The
benchmark times the whole pipeline as deployed (one synchronization, at the end); ``stages_s`` holds
per-stage medians from separately synchronized runs, and
``test_e2e_cold_start`` the one-time costs of a fresh process. See ``perfsuite.e2e``.
"""

from __future__ import annotations

import dataclasses

import pytest

from perfsuite import environment
from perfsuite.backends.base import RunSpec
from perfsuite.e2e import (
    PIPELINES,
    Pipeline,
    cold_start_in_fresh_process,
    e2e_paths,
    image_facts,
    pipeline_parity,
)
from perfsuite.fresh_process import weights_argument
from perfsuite.measure import measure, measure_one_shot
from perfsuite.results import clean_json, make_extra_info, run_fields

STAGE_RUNS = 10
#: the PIL pipeline takes ~30 ms per image; a few warm-up calls suffice for every pipeline
E2E_WARMUP_ROUNDS = 3


pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_e2e(benchmark, e2e_case, pipeline, runner_pool, loaded_model, suite_options, measure_settings):
    case = e2e_case
    pooled = runner_pool.get(case)
    runner, spec = pooled.runner, pooled.runner.spec
    paths = e2e_paths(spec.batch_size)
    flow = Pipeline(pipeline, runner, loaded_model.categories, suite_options.transform)

    ours = flow.run(paths, keep_logits=True)
    parity = None
    if pipeline != "pil":
        reference = Pipeline("pil", runner, loaded_model.categories, suite_options.transform)
        parity = pipeline_parity(pipeline, reference.run(paths, keep_logits=True), ours)
    stages = flow.stage_medians(paths, runs=STAGE_RUNS if environment.is_cuda(spec.device) else 3)

    benchmark.group = f"e2e {loaded_model.name} {spec.precision} batch {spec.batch_size}"
    settings = dataclasses.replace(measure_settings, warmup_rounds=min(measure_settings.warmup_rounds,
                                                                       E2E_WARMUP_ROUNDS))
    # One call per round: the pipeline ends by copying the top-5 to the host, as a deployment does.
    measured = measure(lambda: flow.run(paths), spec.device, settings, benchmark, max_calls_per_round=1)
    median = measured.median_s
    benchmark.extra_info.update(clean_json(make_extra_info(
        "e2e",
        backend=case.backend,
        pipeline=pipeline,
        **run_fields(loaded_model, spec, suite_options.transform),
        images=image_facts(paths),
        **measured.row_fields(),
        stages_s=stages,
        stage_sum_s=sum(v for v in stages.values() if v is not None),
        images_per_s=spec.batch_size / median if median else None,
        labels=[p.label for p in ours.predictions],
        top=[[list(entry) for entry in p.top] for p in ours.predictions],
        build_s=runner.conversion_seconds,
        load_s=runner.load_seconds,
        parity=parity.as_dict() if parity else None,
        backend_info=runner.metrics(),
    )))
    if parity is not None:
        assert parity.passed, f"{pipeline} pipeline vs pil pipeline ({case.id}):\n{parity.summary()}"


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_e2e_cold_start(benchmark, startup_case, pipeline, loaded_model, suite_options, runner_pool):
    """A fresh process from its first instruction to dog.jpg's label (the benchmark times the
    whole process); the breakdown separates imports, CUDA context, model load, runner build and
    load, and each stage's first-run excess (nvJPEG and library handles, kernel loading)."""
    spec = RunSpec(startup_case.precision, 1, suite_options.device)
    # Skip here, with the reason, what cannot run (a failed real attempt included): a skip raised
    # inside the timed call would leave pytest-benchmark an empty benchmark.
    runner_pool.get(startup_case)
    paths = e2e_paths(1)
    results = []

    def fresh_process():
        results.append(cold_start_in_fresh_process(
            pipeline, startup_case.backend, loaded_model.name, weights_argument(loaded_model), spec.precision,
            spec.device, paths, suite_options.transform))

    benchmark.group = f"e2e cold start {loaded_model.name}"
    measured = measure_one_shot(fresh_process, spec.device, benchmark, rounds=1, host_probe=False)
    cold = results[-1]
    benchmark.extra_info.update(clean_json(make_extra_info(
        "e2e_cold_start", backend=startup_case.backend, pipeline=pipeline, **measured.row_fields(),
        **run_fields(loaded_model, spec, suite_options.transform), images=image_facts(paths), **cold,
    )))
    assert cold["time_to_first_label_s"] > cold["runner_ready_s"] > 0
