"""The gate drill's analysis (scripts/gate_drill.py): per row and figure, through the gate's own code."""

from __future__ import annotations

import importlib.util
import json
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "docs" / "results" / "2026-12-01-h200-gate-drill" / "runs"
_SPEC = importlib.util.spec_from_file_location("gate_drill", ROOT / "scripts" / "gate_drill.py")
gate_drill = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gate_drill)

pytestmark = pytest.mark.skipif(not RUNS.is_dir(), reason="the H200 gate drill's runs are not in docs/results")


def _with_figures(source: Path, target: Path, device_s: float, host_s: float) -> None:
    """A real run, its latency rows given device and host time as device_time would record them."""
    data = json.loads(source.read_text())
    for row in data["benchmarks"]:
        info = row["extra_info"]
        if info.get("kind") == "latency":
            scale = info["batch_size"]
            info["device_time"] = {"available": True, "reason": None, "median_s": device_s * scale, "blocks": 10,
                                   "calls_per_block": 20, "hold": "h", "blocks_rejected": 0, "timer_overhead_s": 1e-7}
            info["host_time"] = {"available": True, "reason": None, "median_s": host_s, "blocks": 10,
                                 "clock": "thread CPU time of the enqueue", "timer_overhead_s": 1e-8}
    target.write_text(json.dumps(data))


def test_analysis_reports_each_figure_and_variant(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    bases = sorted(RUNS.glob("base-*.json"))[:6]
    for index, source in enumerate(bases, 1):
        jitter = 1 + 0.002 * (index % 3)  # 0.2-0.4% run to run
        _with_figures(source, runs / f"base-{index:02d}.json", 1e-4 * jitter, 3e-4 * jitter)
        _with_figures(source, runs / f"slowed-{index:02d}.json", 1.05e-4 * jitter, 3e-4 * jitter)
        _with_figures(source, runs / f"host-slowed-{index:02d}.json", 1e-4 * jitter, 3.15e-4 * jitter)
    summary = gate_drill.analyze(tmp_path, [3], comparisons=2, seed=1)
    key = next(k for k in summary["rows"] if k.endswith("test_latency[eager-fp16-b1]"))
    figures = summary["rows"][key]["figures"]
    assert figures["device_time"]["realized_slowed"] == pytest.approx(0.05, abs=1e-9)
    assert figures["device_time"]["realized_host-slowed"] == pytest.approx(0.0, abs=1e-9)
    assert figures["host_time"]["realized_host-slowed"] == pytest.approx(0.05, abs=1e-9)
    assert 0 < figures["device_time"]["run_to_run_cv"] < 0.005
    cold = next(k for k in summary["rows"] if "cold_start" in k)
    assert summary["rows"][cold]["figures"]["device_time"]["base_median_s"] is None  # no such figure there
    cell = summary["by_runs_per_side"][3]
    assert set(cell) >= {"unchanged", "slowed", "host-slowed"}
    assert cell["slowed"]["rows"][key]["latency"]["compared"] == 2
    text = gate_drill.markdown(summary, tmp_path)
    assert "| device_time |" in text and "host-slowed" in text
    assert "Device time, run-to-run CV" in text and "largest 0.18%" in text


def test_figure_results_reads_the_gates_figures_where_it_has_them():
    verdict = types.SimpleNamespace(value="regressed")
    figure = types.SimpleNamespace(verdict=verdict, time=types.SimpleNamespace(effect=0.05, mde=0.02))
    judged_apart = types.SimpleNamespace(figures={"device": figure}, verdict=verdict, time=None)
    assert gate_drill.figure_results(judged_apart) == {"device": {"verdict": "regressed", "effect": 0.05, "mde": 0.02}}
    latency_only = types.SimpleNamespace(verdict=verdict, time=types.SimpleNamespace(effect=0.1, mde=0.3))
    assert gate_drill.figure_results(latency_only)["latency"] == {"verdict": "regressed", "effect": 0.1, "mde": 0.3}


def test_host_slowdown_is_host_cpu_work_not_a_wait():
    cpu_started, wall_started = time.thread_time(), time.perf_counter()
    gate_drill.busy_host(0.02)
    assert time.thread_time() - cpu_started >= 0.02
    assert time.perf_counter() - wall_started >= 0.02


def test_record_refuses_an_unknown_variant(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gate_drill.main(["record", "/nonexistent", "--variants", "base,slower"])
    assert exit_info.value.code == 2
    assert "--variants 'base,slower': choose from base, slowed, host-slowed" in capsys.readouterr().err


def test_slowdowns_are_sized_and_applied_on_a_real_runner_call():
    """On the CPU (no held stream) both are sized on the latency; the slowed calls still return the output."""
    import torch

    from perfsuite.backends.base import RunSpec

    weight = torch.randn(16, 3, 3, 3)

    def infer(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, weight)

    images = torch.rand(2, 3, 64, 64)
    expected = infer(images[:1])
    device_runner = types.SimpleNamespace(spec=RunSpec("fp32", 1, "cpu"), prepare=lambda x: x, infer=infer,
                                          device_time_unavailable=None)
    facts = gate_drill.slow_down(device_runner, images, 0.5)
    assert facts["calibrated_on"] == "latency" and facts["elements"] >= 1024
    assert 0.25 < facts["calibrated_effect"] < 1.0  # closed loop towards +50%
    assert torch.equal(device_runner.infer(images[:1]), expected)

    host_runner = types.SimpleNamespace(spec=RunSpec("fp32", 1, "cpu"), prepare=lambda x: x, infer=infer,
                                        device_time_unavailable=None)
    facts = gate_drill.slow_host(host_runner, images, 0.05)
    assert facts["calibrated_on"] == "latency"
    assert facts["busy_s"] == pytest.approx(0.05 * facts["plain_per_call_s"])
    started = time.thread_time()
    assert torch.equal(host_runner.infer(images[:1]), expected)
    assert time.thread_time() - started >= facts["busy_s"]
