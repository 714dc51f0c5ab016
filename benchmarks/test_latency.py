"""Latency per backend x precision x batch size, with parity of the very runner that is timed.

Run: ``pytest benchmarks --benchmark-autosave``; later ``pytest benchmarks --benchmark-compare``, or
for a gate you can trust ``perfsuite compare`` (docs/gate.md). How the timing is done: ``perfsuite.measure``.
"""

from __future__ import annotations

import warnings

from perfsuite.comparator import compare
from perfsuite.gate.settings import settings_from_config
from perfsuite.gate.stability import UnstableMeasurement, stability_info
from perfsuite.images import FIXTURE_IMAGES, tile_batch
from perfsuite.measure import measure
from perfsuite.results import clean_json, make_extra_info, run_fields
from perfsuite.roofline import roofline_info


def test_latency(benchmark, case, runner_pool, fixture_images, reference_outputs, loaded_model,
                 suite_options, measure_settings):
    pooled = runner_pool.get(case)
    runner, spec = pooled.runner, pooled.runner.spec
    batch = tile_batch(fixture_images, spec.batch_size)

    # Parity of the runner being timed: its first outputs are dog and cat (tiled batch).
    shown = min(spec.batch_size, fixture_images.shape[0])
    parity = compare(reference_outputs[:shown], runner.run(batch)[:shown], suite_options.tolerance(spec.precision),
                     categories=loaded_model.categories, sample_names=FIXTURE_IMAGES[:shown])

    prepared = runner.prepare(batch)
    benchmark.group = f"latency {loaded_model.name} {spec.precision} batch {spec.batch_size}"
    measured = measure(lambda: runner.infer(prepared), spec.device, measure_settings, benchmark,
                       device_and_host=True, cannot_hold=runner.device_time_unavailable)
    pooled.footprint.sample()
    gate = settings_from_config(suite_options.config)
    stability = stability_info(benchmark.stats.stats, gate.cv_threshold) if benchmark.stats else None
    median = measured.median_s
    benchmark.extra_info.update(clean_json(make_extra_info(
        "latency",
        backend=case.backend,
        **run_fields(loaded_model, spec, suite_options.transform),
        build_s=runner.conversion_seconds,
        load_s=runner.load_seconds,
        cold_start_s=pooled.cold_start_s,
        images_per_s=spec.batch_size / median if median else None,
        **pooled.footprint.as_dict(),
        **measured.row_fields(),
        parity=parity.as_dict(),
        backend_info=runner.metrics(),
        roofline=roofline_info(loaded_model, spec.precision, spec.batch_size, spec.device, median)
        if suite_options.roofline else None,
        stability=stability,
    )))
    doubts = measured.problems(gate.host_contention)
    if stability and stability["unstable"]:
        doubts.append(f"CV {stability['cv']:.1%} > {gate.cv_threshold:.1%}")
    if doubts:
        warnings.warn(UnstableMeasurement(f"{case.id}: {'; '.join(doubts)}"), stacklevel=1)
    assert parity.passed, f"{case.id} parity against eager fp32 (TF32 off):\n{parity.report()}"
