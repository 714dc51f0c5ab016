"""Latency per backend x precision x batch size, with parity of the very runner that is timed.

Run: ``pytest benchmarks --benchmark-autosave``; later ``pytest benchmarks --benchmark-compare``.
"""

from __future__ import annotations

import warnings

from perfsuite import telemetry
from perfsuite.comparator import compare
from perfsuite.gate.settings import settings_from_config
from perfsuite.gate.stability import UnstableMeasurement, stability_info
from perfsuite.images import FIXTURE_IMAGES, tile_batch
from perfsuite.results import clean_json, make_extra_info, run_fields
from perfsuite.roofline import roofline_info
from perfsuite.timing import MemoryProbe, benchmark_synchronized


def test_latency(benchmark, case, runner_pool, fixture_images, reference_outputs, loaded_model,
                 suite_options, benchmark_settings):
    pooled = runner_pool.get(case)
    runner, spec = pooled.runner, pooled.runner.spec
    batch = tile_batch(fixture_images, spec.batch_size)

    # Parity of the runner being timed: its first outputs are dog and cat (tiled batch).
    shown = min(spec.batch_size, fixture_images.shape[0])
    outputs = runner.run(batch)[:shown]
    parity = compare(reference_outputs[:shown], outputs, suite_options.tolerance(spec.precision),
                     categories=loaded_model.categories, sample_names=FIXTURE_IMAGES[:shown])

    prepared = runner.prepare(batch)
    benchmark.group = f"latency {loaded_model.name} {spec.precision} batch {spec.batch_size}"
    with MemoryProbe(spec.device) as memory, telemetry.GpuWatch(spec.device) as gpu_watch, \
            telemetry.HostWatch() as host_watch:
        timing = benchmark_synchronized(
            benchmark, lambda: runner.infer(prepared), spec.device,
            warmup_rounds=benchmark_settings["warmup_rounds"],
            max_time=benchmark_settings["max_time"], min_rounds=benchmark_settings["min_rounds"],
        )
    median = benchmark.stats.stats.median if benchmark.stats else None
    gate_settings = settings_from_config(suite_options.config)
    stability = stability_info(benchmark.stats.stats, gate_settings.cv_threshold) if benchmark.stats else None
    gpu_telemetry, host_telemetry = gpu_watch.as_dict(), host_watch.as_dict()
    benchmark.extra_info.update(clean_json(make_extra_info(
        "latency",
        backend=case.backend,
        **run_fields(loaded_model, spec, suite_options.transform),
        build_s=runner.build_seconds,
        load_s=runner.load_seconds,
        cold_start_s=pooled.cold_start_s,
        images_per_s=spec.batch_size / median if median else None,
        peak_gpu_memory_bytes=max(filter(None, [pooled.memory.peak_gpu_bytes, memory.peak_gpu_bytes]), default=None),
        host_rss_delta_bytes=pooled.memory.rss_delta_bytes,
        host_peak_rss_bytes=memory.host_peak_rss_bytes,
        timing=timing,
        parity=parity.as_dict(),
        backend_info=runner.metrics(),
        roofline=roofline_info(loaded_model, spec.precision, spec.batch_size, spec.device, median),
        stability=stability,
        gpu_telemetry=gpu_telemetry,
        host_telemetry=host_telemetry,
    )))
    if stability and stability["unstable"]:
        warnings.warn(UnstableMeasurement(f"{case.id}: unstable measurement, CV {stability['cv']:.1%} > "
                                          f"{gate_settings.cv_threshold:.1%}"), stacklevel=1)
    if gpu_telemetry and (gpu_telemetry["throttled"] or gpu_telemetry["contended"]):
        warnings.warn(UnstableMeasurement(f"{case.id}: GPU throttled {gpu_telemetry['throttle_reasons']} or shared "
                                          f"with {gpu_telemetry['other_processes']} other process(es)"), stacklevel=1)
    if (host_telemetry["other_cpu_fraction"] or 0) > gate_settings.host_contention:
        warnings.warn(UnstableMeasurement(f"{case.id}: other processes used {host_telemetry['other_cpu_fraction']:.0%}"
                                          " of the CPU while it was timed"), stacklevel=1)
    assert parity.passed, f"{case.id} parity against eager fp32 (TF32 off):\n{parity.report()}"
