"""Reports: markdown tables and PNG charts from real saved runs.

``docs/examples/results/cpu-example.json`` is a real run of ``pytest benchmarks`` on the CPU
machine (eager and onnxruntime, fp32, batch 1 and 8, with a skipped backend); the drill's runs
(``docs/gate-drill/runs``) give several runs of one benchmark.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from perfsuite.cli import main
from perfsuite.gate.runs import load_run
from perfsuite.gate.tables import format_seconds
from perfsuite.report import CHARTS, collect_rows, render_markdown, speedups, write_report

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "results" / "cpu-example.json"
DRILL = sorted((ROOT / "docs" / "gate-drill" / "session-1" / "runs").glob("base-*.json"))

pytestmark = pytest.mark.skipif(not EXAMPLE.exists() or len(DRILL) < 2, reason="example runs not recorded")


def test_markdown_lists_every_benchmark_and_skip():
    run = load_run(EXAMPLE)
    text = render_markdown([run], "CPU example")
    assert text.startswith("# CPU example") and f"## {run.fingerprint.label}" in text
    latency = [b for b in run.benchmarks.values() if b.kind == "latency"]
    assert len(latency) >= 4
    for bench in latency:
        info = bench.extra_info
        row = f"| {info['backend']} | {info['precision']} | {info['batch_size']} | {format_seconds(bench.median_s)} |"
        assert row in text
    assert run.outcomes, "the example run records at least one skip"
    for outcome in run.outcomes.values():
        assert outcome["reason"] in text
    assert "torch " + run.software["torch"] in text


def test_images_per_second_and_speedup_are_computed_from_medians():
    run = load_run(EXAMPLE)
    rows = collect_rows([run])
    found = speedups(rows)
    assert found
    for row, speedup in found:
        eager = next(b for b in run.benchmarks.values() if b.kind == "latency" and b.backend == "eager"
                     and b.extra_info["batch_size"] == row.batch_size and b.extra_info["precision"] == row.precision)
        assert speedup == pytest.approx(eager.median_s / run.benchmarks[row.key].median_s, rel=1e-12)
        assert row.images_per_s == pytest.approx(row.batch_size / run.benchmarks[row.key].median_s, rel=1e-12)


def test_runs_of_one_machine_are_merged():
    runs = [load_run(p) for p in DRILL[:3]]
    (row,) = collect_rows(runs)
    records = [next(iter(r.benchmarks.values())) for r in runs]
    assert row.runs == 3
    assert row.median_s == statistics.median(r.median_s for r in records)
    assert len(row.samples) == sum(r.stats["rounds"] for r in records)


def test_cross_gpu_report_keeps_machines_apart(tmp_path):
    data = json.loads(EXAMPLE.read_text())
    data["machine_info"]["perfsuite"].update(device="cuda", gpu_name="NVIDIA H100 80GB HBM3",
                                             compute_capability="9.0", gpu_memory_bytes=85_024_112_640,
                                             power_limit_w=700, mig_mode="disabled")
    gpu = tmp_path / "h100.json"
    gpu.write_text(json.dumps(data))
    runs = [load_run(EXAMPLE), load_run(gpu)]
    text = render_markdown(runs)
    assert text.count("\n## ") == 2 and "NVIDIA H100 80GB HBM3 (sm 9.0, 79 GiB, 700 W, MIG disabled)" in text
    rows = collect_rows(runs)
    assert len({r.machine_id for r in rows}) == 2 and len(rows) == 2 * len(load_run(EXAMPLE).benchmarks)


def test_charts_are_written_as_png(tmp_path):
    from matplotlib.image import imread

    written = write_report([load_run(EXAMPLE)], tmp_path, "CPU example")
    names = {p.stem for p in written if p.suffix == ".png"}
    assert names == set(CHARTS)  # every chart: the example has eager and another backend, two batch sizes
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            height, width, _ = imread(path).shape
            assert height > 200 and width > 400
    summary = (tmp_path / "summary.md").read_text()
    assert "[speedup](speedup.png)" in summary


def test_cli_writes_only_tables_for_docs(tmp_path, capsys):
    assert main(["report", str(EXAMPLE), "--output", str(tmp_path), "--no-charts", "--markdown-name",
                 "cpu.md", "--title", "CPU results"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.md"]
    assert (tmp_path / "cpu.md").read_text().startswith("# CPU results")
    assert main(["report", str(tmp_path / "missing.json"), "--output", str(tmp_path)]) == 2
    assert "missing.json" in capsys.readouterr().err
