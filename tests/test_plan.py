"""The plan's estimate and the progress lines (perfsuite.plan), in process; the real run's lines are checked
by tests/test_plugin.py."""

from __future__ import annotations

import types

import pytest
import torch

from perfsuite import plan


def _reporter(verbosity: int) -> types.SimpleNamespace:
    """pytest's terminal reporter as ProgressLog uses it: write_line, ensure_newline and the verbosity."""
    lines: list[str] = []
    return types.SimpleNamespace(lines=lines, write_line=lines.append, ensure_newline=lambda: None,
                                 config=types.SimpleNamespace(get_verbosity=lambda: verbosity))


def test_a_line_per_finished_benchmark_with_median_time_so_far_and_time_left():
    rows = [plan.RowPlan("a", "latency eager-fp32-b1", 2.0), plan.RowPlan("b", "latency eager-fp32-b8", 6.0)]
    reporter = _reporter(0)
    log = plan.ProgressLog(rows, reporter)
    log.record_median("a", 0.0123)
    log.write("a", "passed")
    log.write("a", "passed")  # once per benchmark
    log.write("b", "skipped")
    log.write("not-planned", "passed")
    assert len(reporter.lines) == 2
    assert reporter.lines[0].startswith("perfsuite: [1/2] latency eager-fp32-b1: median 12.3 ms; ")
    assert "so far, about" in reporter.lines[0] and reporter.lines[0].endswith("left")
    assert reporter.lines[1].startswith("perfsuite: [2/2] latency eager-fp32-b8: skipped;")
    assert log.total_estimate_s == 8.0


def test_quiet_under_minus_q():
    reporter = _reporter(-1)
    log = plan.ProgressLog([plan.RowPlan("a", "model_load", 1.0)], reporter)
    log.write("a", "passed")
    assert reporter.lines == []


def test_time_left_scales_with_how_the_finished_rows_compared_with_their_estimates():
    rows = [plan.RowPlan(name, name, 10.0) for name in "abc"]
    log = plan.ProgressLog(rows, None)
    log.finished("a", "passed")
    assert log.seconds_left(20.0) == pytest.approx(40.0)  # twice as slow as planned: 2 x 2 x 10 s
    assert log.seconds_left(5.0) == pytest.approx(10.0)


def test_row_estimates_follow_what_the_suite_does():
    warm = plan.WarmUp(model_load_s=2.0, forward_s={1: 0.01, 8: 0.1})
    settings = {"warmup_rounds": 10, "max_time": 1.0, "min_rounds": 5, "export_cached": True}
    assert plan.row_seconds("model_load", None, None, warm, first_build=False, **settings) == pytest.approx(6.0)
    # latency: first call + parity + 10 warm-up calls + max(1 s, 5 rounds) + one more call
    assert plan.row_seconds("latency", "eager", 8, warm, first_build=True, **settings) == pytest.approx(
        12 * 0.1 + 1.0 + 0.1)
    slow = plan.row_seconds("latency", "eager", 8, plan.WarmUp(2.0, {8: 1.0}), first_build=True, **settings)
    assert slow == pytest.approx(12 * 1.0 + 5 * 1.0 + 1.0)  # min rounds, not max time, bound a slow call
    converted = plan.row_seconds("latency", "onnxruntime", 8, warm, first_build=True, **settings)
    uncached = plan.row_seconds("latency", "onnxruntime", 8, warm, first_build=True,
                                **{**settings, "export_cached": False})
    assert uncached > converted > plan.row_seconds("latency", "onnxruntime", 8, warm, first_build=False, **settings)


def test_warm_up_times_one_forward_per_batch_size():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    calls = []

    def time_call(fn):
        calls.append(fn().shape[0])
        return 0.5

    warm = plan.warm_up_timings(model, [8, 1, 8], "cpu", 1.5, time_call)
    assert warm.forward_s == {1: 0.5, 8: 0.5} and calls == [1, 8] and warm.model_load_s == 1.5
    assert warm.forward(64) == pytest.approx(0.5 * 64 / 8)  # an unmeasured size: scaled from the nearest


def test_other_precisions_are_timed_once_and_scale_eager_rows():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    dtypes = []

    def time_call(fn):
        dtypes.append(fn().dtype)
        return 0.2 if dtypes[-1] == torch.float32 else 1.0

    warm = plan.warm_up_timings(model, [1, 8], "cpu", 1.0, time_call, ["fp32", "bf16", "bf16"])
    assert dtypes == [torch.float32, torch.float32, torch.bfloat16] and warm.precision_factor == {"bf16": 5.0}
    assert next(model.parameters()).dtype == torch.float32  # the session's model is left as it was
    settings = {"warmup_rounds": 10, "max_time": 1.0, "min_rounds": 5, "export_cached": True, "first_build": False}
    assert plan.row_seconds("latency", "eager", 8, warm, precision="bf16", **settings) == pytest.approx(
        12 * 1.0 + 5 * 1.0 + 1.0)
