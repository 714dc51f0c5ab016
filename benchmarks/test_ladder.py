"""The optimization ladder's own measurements: roofline rates and torch.compile compile times.

The rungs' latencies come from ``test_latency.py`` (every registered backend, ``--backends``);
``docs/ladder.md`` explains the ladder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from perfsuite import environment
from perfsuite.backends import get_runner_class
from perfsuite.backends.base import RunSpec
from perfsuite.backends.compile import CompileRunner, compile_in_fresh_process
from perfsuite.config import cache_root
from perfsuite.fresh_process import weights_argument
from perfsuite.results import clean_json, make_extra_info
from perfsuite.roofline import bandwidth_buffer_bytes, machine_rates, model_cost
from perfsuite.timing import synchronized

pytestmark = pytest.mark.ladder


def test_roofline_rates(benchmark, suite_options, loaded_model):
    """Memory bandwidth (timed here: one copy of a buffer >= 4x the last-level cache) and the
    matmul rate of every suite precision, the denominators of every result's roofline."""
    device = suite_options.device
    rates = {precision: machine_rates(device, precision) for precision in suite_options.precisions}
    buffer_bytes = bandwidth_buffer_bytes(device)  # what the bandwidth measurement copies
    source = torch.ones(buffer_bytes // 4, device=device)
    target = torch.empty_like(source)
    benchmark.group = f"roofline {device}"
    benchmark.pedantic(synchronized(lambda: target.copy_(source), device), rounds=10, iterations=1, warmup_rounds=2)
    cost = model_cost(loaded_model)
    benchmark.extra_info.update(clean_json(make_extra_info(
        "roofline_rates", **loaded_model.describe(), device=device, tf32=environment.tf32_settings(),
        flops_per_image=cost.flops_per_image, parameters=cost.parameters,
        weight_bytes={p: cost.weight_bytes(p) for p in suite_options.precisions},
        rates=rates, copy_bytes_per_round=2 * buffer_bytes,
    )))
    for precision, measured in rates.items():
        assert measured["bandwidth_bytes_per_s"] > 0 and measured["matmul_flops_per_s"] > 0, precision


def test_compile_time(benchmark, startup_case, suite_options, loaded_model):
    """Cold and warm compilation, each in a fresh process: cold with an empty Inductor cache
    folder, warm with the folder the cold run filled (the benchmark times the warm process)."""
    runner_class = get_runner_class(startup_case.backend)
    if not issubclass(runner_class, CompileRunner):
        pytest.skip(f"{startup_case.backend}: compile time applies to the torch.compile backends only")
    spec = RunSpec(startup_case.precision, 1, suite_options.device)
    reason = runner_class.unavailable_reason(spec)
    if reason:
        pytest.skip(reason)
    weights = weights_argument(loaded_model)
    cache_parent = cache_root(suite_options.config)
    cache_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cold-compile-", dir=cache_parent) as folder:
        cold = compile_in_fresh_process(startup_case.backend, loaded_model.name, weights, spec, Path(folder))
        runs = []
        benchmark.group = f"compile time {loaded_model.name}"
        benchmark.pedantic(lambda: runs.append(compile_in_fresh_process(
            startup_case.backend, loaded_model.name, weights, spec, Path(folder))), rounds=1, iterations=1)
    warm = runs[-1]
    benchmark.extra_info.update(clean_json(make_extra_info(
        "compile_time", backend=startup_case.backend, **loaded_model.describe(), precision=spec.precision,
        batch_size=1, device=spec.device, tf32=environment.tf32_settings(),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        cold_compile_s=cold["compile_s"], warm_compile_s=warm["compile_s"],
        cold_build_s=cold["build_s"], warm_build_s=warm["build_s"],
        cold_process_s=cold["process_wall_s"], warm_process_s=warm["process_wall_s"],
        cold=cold, warm=warm,
    )))
    assert cold["compile_cache"] == "cold", f"first compilation in an empty folder was {cold['compile_cache']}"
    assert warm["compile_cache"] == "warm", f"second compilation did not come from the disk cache: {warm}"
