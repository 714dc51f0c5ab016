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


def _edited_example(tmp_path, edit, name="edited.json"):
    """The example run, edited as a run saved another way (autosave, contended, one round) would be."""
    data = json.loads(EXAMPLE.read_text())
    for bench in data["benchmarks"]:
        edit(bench)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return load_run(path)


def test_runs_saved_without_rounds_get_boxes_from_their_stats(tmp_path):
    """issue 9 #11: ``--benchmark-autosave`` keeps no rounds; the chart drew a median tick only, though
    the stats hold min, q1, q3 and max."""
    from perfsuite.report import _box, _box_source

    run = _edited_example(tmp_path, lambda bench: bench["stats"].pop("data"))
    latency = [r for r in collect_rows([run]) if r.kind == "latency"]
    # issue 17: where the boxes come from is said once per panel, not under every box
    assert _box_source(latency) == "pytest-benchmark's saved stats"
    for row in latency:
        stats = run.benchmarks[row.key].stats
        assert row.samples is None and row.box == {k: stats[k] for k in ("min", "q1", "q3", "max")}
        box = _box(row, False)
        assert (box["whislo"], box["q1"], box["med"], box["q3"], box["whishi"]) == pytest.approx(
            tuple(stats[k] * 1e3 for k in ("min", "q1", "median", "q3", "max")))
        assert box["q1"] < box["q3"] and box["label"] == row.series
    assert "latency_distribution.png" in {p.name for p in write_report([run], tmp_path / "out")}


def test_memory_series_stay_distinguishable_when_their_values_are_equal():
    """issue 9 #11: memory.png drew equal series on top of each other, so one hid the other."""
    from matplotlib.figure import Figure

    from perfsuite.report import _plot_series

    rows = [row for row in collect_rows([load_run(EXAMPLE)]) if row.kind == "latency"]
    series = {f"series {i}": rows[:2] for i in range(12)}  # twelve series with identical values
    ax = Figure().subplots()
    _plot_series(ax, series, lambda r: 100.0)
    lines = ax.get_lines()
    styles = {(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines}
    assert len(styles) == len(lines) == 12
    assert len({tuple(line.get_xdata()) for line in lines}) == 12  # nudged sideways apart


def test_log_axis_labels_are_plain_numbers():
    """issue 9 #11: the throughput axis read 6×10^1."""
    from matplotlib.figure import Figure

    from perfsuite.report import _plain_log_axis

    figure = Figure()
    ax = figure.subplots()
    ax.plot([1, 8], [31.5, 174])  # the example run's images/s
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
    assert {"50", "100"} <= set(labels) and not any("10^" in t or "times" in t or "×" in t for t in labels)


def test_summary_flags_cpu_contention_and_shows_no_iqr_for_one_round(tmp_path, capsys):
    """issue 9 #11: a row measured while other processes used 35% of the CPU was not flagged, and a
    one-round row showed an IQR of "0 µs"."""
    def edit(bench):
        if bench["name"] == "test_latency[eager-fp32-b8]":
            bench["extra_info"]["host_telemetry"]["other_cpu_fraction"] = 0.35
        if bench["name"] == "test_cold_start[eager-fp32-b1]":
            bench["stats"].update(rounds=1, iqr=0.0, stddev=0.0, data=bench["stats"]["data"][:1])

    run = _edited_example(tmp_path, edit)
    text = render_markdown([run])
    contended = next(line for line in text.splitlines() if line.startswith("| eager | fp32 | 8 |"))
    assert contended.endswith("| CPU contended (other processes used up to 35% of the CPU) |")
    assert "CPU contended" not in next(line for line in text.splitlines() if line.startswith("| eager | fp32 | 1 |"))
    assert "CPU contended" not in render_markdown([run], host_contention=0.5)  # [tool.perfsuite.gate] host_contention
    one_round = next(line for line in text.splitlines() if line.startswith("| test_cold_start[eager-fp32-b1] |"))
    assert one_round.split(" | ")[5] == "-" and "0 µs" not in one_round


def test_zero_benchmarks_are_an_error_not_an_empty_report(tmp_path, capsys):
    """issue 9 #5: runs without a single benchmark gave an empty report and exit 0."""
    data = json.loads(EXAMPLE.read_text())
    data["benchmarks"] = []
    path = tmp_path / "nothing.json"
    path.write_text(json.dumps(data))
    assert main(["report", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"no benchmark results in {path}" in err and "skipped or failed, e.g. " in err
    assert not list((tmp_path / "out").glob("*"))


def test_variants_of_a_case_are_separate_series(tmp_path):
    def edit(bench):
        bench["name"] = bench["name"].replace("eager-fp32-b8]", "eager-fp32-b8-cudnn-benchmark]")

    rows = collect_rows([_edited_example(tmp_path, edit)])
    assert {r.series for r in rows if r.kind == "latency"} == {
        "eager fp32", "eager fp32 (cudnn-benchmark)", "onnxruntime fp32"}


def test_every_chart_stands_alone(tmp_path, monkeypatch):
    """issue 17: no chart named the machine, the weights or the date; speedups did not say what they are
    against; one batch size was drawn as lines; the memory chart had no y label; a ~1 s row squashed the others
    on a linear axis; cache hits' conversion did not say it was timed when the artifact was made."""
    from perfsuite import report

    figures = {}
    real_save = report._save
    monkeypatch.setattr(report, "_save", lambda figure, path: real_save(figures.setdefault(path.stem, figure), path))

    def batch_one_and_a_slow_row(bench):
        info = bench.get("extra_info") or {}
        if info.get("backend") == "onnxruntime" and isinstance(info.get("backend_info"), dict):
            info["backend_info"]["artifact_cache"] = "hit"  # an export found in the cache
        if bench["name"] == "test_latency[eager-fp32-b1]":
            bench["stats"] = {k: v * 100 if isinstance(v, float) else v for k, v in bench["stats"].items()}
            bench["stats"]["data"] = [v * 100 for v in bench["stats"].get("data", [])]

    run = _edited_example(tmp_path, batch_one_and_a_slow_row)
    kept = [b for b in run.data["benchmarks"] if (b.get("extra_info") or {}).get("batch_size") in (1, None)]
    path = tmp_path / "batch1.json"
    path.write_text(json.dumps({**run.data, "benchmarks": kept}))
    run = load_run(path)
    report.write_charts([run], tmp_path / "out")
    context = report.chart_context([run])
    assert run.fingerprint.label in context and str(run.datetime)[:10] in context
    assert "weights " in context and "not recorded" not in context
    assert set(figures) >= {"comparison", "latency_distribution", "throughput", "speedup", "memory"}
    for name, figure in figures.items():
        assert context in figure.get_suptitle(), name
    texts = {name: " ".join(t.get_text() for ax in figure.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label))
             for name, figure in figures.items()}
    assert "against PyTorch eager at the same precision, batch size and machine" in texts["speedup"]
    assert "MiB" in texts["memory"]
    # one batch size: bars with their values written, not lines
    throughput = figures["throughput"].axes[0]
    assert throughput.patches and not throughput.lines and "batch 1" in texts["throughput"]
    assert any("images" not in t.get_text() and t.get_text() for t in throughput.texts)
    # the 100x slower row: a log axis, and the box provenance said once in the panel title
    distribution = figures["latency_distribution"].axes[0]
    assert distribution.get_yscale() == "log" and "saved" not in " ".join(distribution.get_xticklabels()[0]
                                                                             .get_text().split())
    comparison_texts = " ".join(t.get_text() for ax in figures["comparison"].axes for t in ax.texts)
    cached = [r for r in collect_rows([run]) if r.kind == "latency" and r.artifact_cached]
    assert cached and "cached: timed when made" in comparison_texts
