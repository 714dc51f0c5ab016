"""Reports of saved runs: PNG charts (matplotlib, extra ``report``) and markdown tables.

One row per benchmark and machine: runs of the same hardware are merged (median over runs of each
run's median; latency samples pooled), runs of different hardware stay apart, so a folder of
results from several GPU runners gives one cross-GPU report.

Charts (each only when the runs have what it needs). Every chart's subtitle names the machine, the weights
and the runs' dates (:func:`chart_context`), so that one pasted alone still says what it shows; values are
written on bars and points, and an axis turns logarithmic where its values span more than :data:`LOG_SPAN`.
With a single batch size, throughput and memory are bars per series rather than lines over one x value.

``comparison.png``            per backend x precision: conversion (build) time, load time, and
                              inference latency at the smallest batch size
``latency_distribution.png``  per backend x precision, one panel per batch size: a box of every timed
                              round when the runs saved them (``--benchmark-json``,
                              ``--benchmark-save-data``), else of the quartiles, min and max that
                              pytest-benchmark saves in every run's stats (``--benchmark-autosave``)
``throughput.png``            images/s against batch size
``speedup.png``               speedup over eager at the same precision, batch size and machine (each bar
                              says both medians)
``memory.png``                peak GPU memory and host RSS growth per backend x precision (each series
                              with its own marker and line style, nudged sideways, so equal values
                              stay visible)

:func:`render_markdown` writes the tables (machine, versions, every benchmark with median, IQR,
CV, images/s, parity, build/load/cold start, memory, flags for instability, throttling, a shared GPU
and CPU contention; every skip and failure with its reason); ``summary.md`` and the
``docs/results/*.md`` tables are both made by it. A one-round row has no spread: its IQR and CV are
shown as "-", not as 0.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfsuite.errors import InputError
from perfsuite.gate.hardware import physical_gpu
from perfsuite.gate.runs import SavedRun, provenance
from perfsuite.gate.settings import GateSettings
from perfsuite.gate.tables import format_bytes, format_number, format_percent, format_seconds, render_table

DEFAULT_HOST_CONTENTION = GateSettings().host_contention
CHARTS = ("comparison", "latency_distribution", "throughput", "speedup", "memory")
SOFTWARE_SHOWN = ("torch", "torchvision", "cuda", "cudnn", "driver", "tensorrt", "tensorrt_rtx", "onnxruntime",
                  "onnx", "numpy", "python", "perfsuite")


@dataclasses.dataclass
class Row:
    """One benchmark on one machine, merged over that machine's runs."""

    machine: str  # hardware label
    machine_id: str
    key: str
    name: str
    kind: str | None
    backend: str | None
    precision: str | None
    batch_size: int | None
    runs: int
    median_s: float
    iqr_s: float | None  # None: fewer than two rounds, no spread to show
    cv: float | None
    samples: list[float] | None
    extra: dict[str, Any]
    box: dict[str, float] | None = None  # min, q1, q3, max in s from the runs' stats when no samples were saved

    @property
    def series(self) -> str:
        """'eager fp16', plus what a benchmark id adds after its case (e.g. 'eager fp16 (cudnn-benchmark)' for
        test_latency[eager-fp16-b8-cudnn-benchmark]), so that variants of one case are separate series."""
        case = f"{self.backend}-{self.precision}-b{self.batch_size}"
        parameters = self.name.partition("[")[2].removesuffix("]")
        variant = parameters[len(case):].strip("-") if parameters.startswith(case) else ""
        return f"{self.backend} {self.precision}" + (f" ({variant})" if variant else "")

    def value(self, field: str) -> Any:
        values = [v for v in self.extra.get(field, []) if v is not None]
        return statistics.median(values) if values else None

    @property
    def images_per_s(self) -> float | None:
        return self.batch_size / self.median_s if self.batch_size and self.median_s > 0 else None

    @property
    def artifact_cached(self) -> bool:
        """Whether the runs found the converted model (export, engine) in the cache: their conversion time is
        then the one measured when the artifact was made."""
        infos = [i for i in self.extra.get("backend_info", []) if isinstance(i, dict)]
        return bool(infos) and all(i.get("artifact_cache") == "hit" for i in infos)

    @property
    def parity(self) -> dict[str, Any] | None:
        reports = [p for p in self.extra.get("parity", []) if p]
        failed = [p for p in reports if not p.get("passed", True)]
        return (failed or reports)[-1] if reports else None  # a failure in any run must show


@dataclasses.dataclass
class Machine:
    id: str
    label: str
    runs: list[SavedRun]

    @property
    def software(self) -> dict[str, str]:
        merged: dict[str, list[str]] = {}
        for run in self.runs:
            for name, version in run.software.items():
                merged.setdefault(name, [])
                if str(version) not in merged[name]:
                    merged[name].append(str(version))
        return {name: " / ".join(versions) for name, versions in merged.items()}

    @property
    def outcomes(self) -> list[dict[str, Any]]:
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for run in self.runs:
            for nodeid, entry in run.outcomes.items():
                seen.setdefault((nodeid, entry.get("outcome", "skipped")), dict(entry))
        return list(seen.values())


MERGED_FIELDS = ("build_s", "load_s", "cold_start_s", "peak_gpu_memory_bytes", "host_rss_delta_bytes",
                 "host_peak_rss_bytes", "parity", "stability", "gpu_telemetry", "host_telemetry", "backend_info")
#: a chart switches to a log axis when its values span more than this ratio
LOG_SPAN = 20.0
BOX_STATS = ("min", "q1", "q3", "max")


def group_machines(runs: Sequence[SavedRun]) -> list[Machine]:
    machines: dict[str, Machine] = {}
    for run in runs:
        fingerprint = run.fingerprint
        machines.setdefault(fingerprint.id, Machine(fingerprint.id, fingerprint.label, [])).runs.append(run)
    return list(machines.values())


#: No benchmark round of this suite takes a day: a time above it is a corrupt or hand-edited file, and a
#: report would publish it as a measurement.
MAX_PLAUSIBLE_TIME_S = 86400.0


def refuse_implausible_times(run: SavedRun) -> None:
    """An :class:`InputError` naming the file, benchmark and field of a time above a day (e.g. 1e+300 s)."""
    for record in run.benchmarks.values():
        for field in ("min", "median", "mean", "max", "q1", "q3"):
            value = record.stats.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_PLAUSIBLE_TIME_S:
                raise InputError(f"results file {run.path}: benchmark {record.key}: stats.{field} is {value:g} s, "
                                 f"more than a day ({MAX_PLAUSIBLE_TIME_S:g} s): not a plausible time for one "
                                 "round (a corrupt or edited file?); not published")


def collect_rows(runs: Sequence[SavedRun]) -> list[Row]:
    """Every benchmark of every machine, merged over that machine's runs, in first-seen order; an error
    when the runs hold no benchmark at all (an empty report would read as a pass)."""
    if not runs:
        raise InputError("report: no runs given")
    for run in runs:
        refuse_implausible_times(run)
    rows = []
    for machine in group_machines(runs):
        keys = list(dict.fromkeys(key for run in machine.runs for key in run.benchmarks))
        for key in keys:
            records = [run.benchmarks[key] for run in machine.runs if key in run.benchmarks]
            first = records[0]
            samples = [s for r in records for s in (r.samples or [])] if all(r.samples for r in records) else None
            spread = [r for r in records if (r.stats.get("rounds") or 0) >= 2]
            cvs = [r.cv for r in spread if r.cv is not None]
            info = first.extra_info
            rows.append(Row(
                machine.label, machine.id, key, first.name, first.kind, first.backend, info.get("precision"),
                info.get("batch_size"), len(records), statistics.median(r.median_s for r in records),
                statistics.median(float(r.stats.get("iqr", 0.0)) for r in spread) if spread else None,
                statistics.median(cvs) if cvs else None,
                samples, {f: [r.extra_info.get(f) for r in records] for f in MERGED_FIELDS},
                None if samples else _stats_box(records),
            ))
    if not rows:
        outcomes = [(nodeid, entry) for run in runs for nodeid, entry in run.outcomes.items()]
        example = (f" ({len(outcomes)} test(s) skipped or failed, e.g. {outcomes[0][0]}: "
                   f"{outcomes[0][1].get('reason') or outcomes[0][1].get('outcome')})") if outcomes else ""
        raise InputError(f"no benchmark results in {', '.join(str(run.path) for run in runs)}{example}; "
                         "nothing to report")
    return rows


def _stats_box(records: Sequence[Any]) -> dict[str, float] | None:
    """The box of runs saved without their rounds: the extremes over the runs, the median of each quartile."""
    if not all(all(isinstance(r.stats.get(k), (int, float)) for k in BOX_STATS) for r in records):
        return None
    return {"min": min(float(r.stats["min"]) for r in records), "max": max(float(r.stats["max"]) for r in records),
            "q1": statistics.median(float(r.stats["q1"]) for r in records),
            "q3": statistics.median(float(r.stats["q3"]) for r in records)}


# -- markdown ------------------------------------------------------------------------------------


def parity_cell(parity: dict[str, Any] | None) -> str:
    if not parity:
        return "-"
    outputs = parity.get("outputs") or {}
    # max |Δ| / max |reference|; runs saved before its rename call it max_rel_error
    errors = [o.get("max_scaled_error", o.get("max_rel_error")) for o in outputs.values() if isinstance(o, dict)]
    top1 = [o.get("top1_agreement") for o in outputs.values() if isinstance(o, dict)]
    error = max((e for e in errors if e is not None), default=None)
    agreement = min((t for t in top1 if t is not None), default=None)
    state = "pass" if parity.get("passed") else "FAIL"
    return f"{state}, rel {format_number(error, 2)}, top-1 {format_percent(agreement, signed=False)}"


def _flags(row: Row, host_contention: float) -> str:
    flags = []
    stability = [s for s in row.extra.get("stability", []) if s]
    if any(s.get("unstable") for s in stability):
        flags.append(f"unstable (CV > {stability[0].get('cv_threshold', 0):.1%})")
    telemetry = [t for t in row.extra.get("gpu_telemetry", []) if t]
    if any(t.get("throttled") for t in telemetry):
        flags.append("throttled")
    if any(t.get("contended") for t in telemetry):
        flags.append("GPU shared")
    # The gate's rule (gate.verdict.run_problem): other processes' share of the CPU above host_contention.
    host = [t for t in row.extra.get("host_telemetry", []) if isinstance(t, dict)]
    fractions = [t["other_cpu_fraction"] for t in host if isinstance(t.get("other_cpu_fraction"), (int, float))]
    if fractions and max(fractions) > host_contention:
        contended = sum(f > host_contention for f in fractions)
        runs = f" in {contended} of {len(fractions)} runs" if len(fractions) > 1 else ""
        flags.append(f"CPU contended (other processes used up to {max(fractions):.0%} of the CPU{runs})")
    elif len(fractions) < len(host):
        flags.append("CPU contention unknown")
    return ", ".join(flags)


def _physical_gpu_lines(runs: Sequence[SavedRun]) -> list[str]:
    """The card(s) the runs of one fingerprint ran on, where recorded (several cards of a model share it)."""
    cards: dict[str, list[str]] = {}
    for run in runs:
        card = physical_gpu(run.machine_info)
        if card is not None:
            cards.setdefault(card.label, []).append(f"`{run.path.name}`")
    if not cards:
        return []
    if len(cards) == 1:
        (label, names), = cards.items()
        return [f"Physical GPU: {label} ({len(names)} of {len(runs)} runs recorded it).", ""]
    return [f"Physical GPUs ({len(cards)} cards of this model): "
            + "; ".join(f"{label}: {', '.join(names)}" for label, names in cards.items()) + ".", ""]


def render_markdown(runs: Sequence[SavedRun], title: str = "Benchmark results", charts: Sequence[str] = (),
                    host_contention: float = DEFAULT_HOST_CONTENTION) -> str:
    """The results tables: per machine its hardware, software, every benchmark row and every skip;
    ``host_contention`` is the gate's threshold for flagging a row measured while other processes
    used the CPU ([tool.perfsuite.gate] host_contention)."""
    rows = collect_rows(runs)
    lines = [f"# {title}", ""]
    if charts:
        lines += ["Charts: " + ", ".join(f"[{Path(c).stem}]({Path(c).name})" for c in charts), ""]
    for machine in group_machines(runs):
        software = machine.software
        lines += [f"## {machine.label}", "",
                  f"Hardware fingerprint `{machine.id}`; {len(machine.runs)} run(s): "
                  + ", ".join(f"`{r.path.name}`" for r in machine.runs) + ".", "",
                  *_physical_gpu_lines(machine.runs),
                  "Software: " + ", ".join(f"{name} {software[name]}" for name in SOFTWARE_SHOWN
                                           if software.get(name) not in (None, "None")) + ".", ""]
        mine = [r for r in rows if r.machine_id == machine.id]
        latency = [r for r in mine if r.kind == "latency"]
        if latency:
            table = [[r.backend, r.precision, r.batch_size, format_seconds(r.median_s), format_seconds(r.iqr_s),
                      format_percent(r.cv, signed=False), format_number(r.images_per_s, 4), parity_cell(r.parity),
                      format_seconds(r.value("build_s")), format_seconds(r.value("load_s")),
                      format_seconds(r.value("cold_start_s")), format_bytes(r.value("peak_gpu_memory_bytes")),
                      format_bytes(r.value("host_rss_delta_bytes"), signed=True), _flags(r, host_contention) or "-"]
                     for r in latency]
            lines += ["### Latency", "", render_table(
                ["backend", "precision", "batch", "median", "IQR", "CV", "img/s", "parity", "build", "load",
                 "cold start", "GPU peak", "host RSS", "flags"], table, True), ""]
        other = [r for r in mine if r.kind != "latency"]
        if other:
            table = [[r.name, r.kind or "-", r.backend or "-", r.precision or "-", format_seconds(r.median_s),
                      format_seconds(r.iqr_s), format_seconds(r.value("build_s")), format_seconds(r.value("load_s"))]
                     for r in other]
            lines += ["### Startup and other benchmarks", "", render_table(
                ["benchmark", "kind", "backend", "precision", "median", "IQR", "build", "load"], table, True), ""]
        outcomes = machine.outcomes
        if outcomes:
            table = [[o["nodeid"].split("::")[-1], o.get("outcome", "skipped"), o.get("reason") or "-"]
                     for o in outcomes]
            lines += ["### Skipped and failed", "", render_table(["test", "outcome", "reason"], table, True), ""]
        elif not any(run.records_outcomes for run in machine.runs):
            lines += ["(These runs were saved without the perfsuite plugin: skips were not recorded.)", ""]
    return "\n".join(lines)


# -- charts --------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise InputError("charts need matplotlib (pip install 'perfsuite[report]')") from exc
    return Figure(figsize=(width, height), layout="constrained")


def _save(figure, path: Path) -> Path:
    import io

    from perfsuite.output import write_bytes

    buffer = io.BytesIO()  # rendered in memory, then written by perfsuite.output's rules (atomic, never a device)
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    write_bytes(path, buffer.getvalue(), f"--output {path}")
    return path


def chart_context(runs: Sequence[SavedRun]) -> str:
    """What every chart's subtitle says: the machine, the weights and when the runs were made, so that a chart
    pasted alone into an issue or a CI summary still says what it shows."""
    machines = list(dict.fromkeys(run.fingerprint.label for run in runs))
    weights, when = provenance(runs)
    return " · ".join([machines[0] if len(machines) == 1 else f"{len(machines)} machines", weights,
                       f"{len(runs)} run{'s' if len(runs) != 1 else ''}, {when}"])


def _title(figure, title: str, context: str) -> None:
    figure.suptitle(f"{title}\n{context}", fontsize=10)


def _spans_decades(values: Sequence[float | None]) -> bool:
    positive = [v for v in values if v and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > LOG_SPAN


def _label(row: Row, several_machines: bool) -> str:
    return f"{row.series} · {row.machine}" if several_machines else row.series


def _barh(ax, labels: Sequence[str], values: Sequence[float | None], texts: Sequence[str], unit: str) -> None:
    """Horizontal bars with their values written at the end; a log axis where the values span decades."""
    shown = [v if v else float("nan") for v in values]
    ax.barh(range(len(labels)), shown, color="C0")
    ax.set_yticks(range(len(labels)), labels)
    if _spans_decades(values):
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis)
        unit += ", log scale"
        ax.set_xlim(right=max(v for v in values if v) * 12)
    else:
        ax.margins(x=0.35)  # room for the value labels; linear, so bar lengths compare honestly
    ax.set_xlabel(unit)
    for index, (value, text) in enumerate(zip(values, texts)):
        if value:
            ax.annotate(text, (value, index), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)


def _comparison_chart(rows: list[Row], path: Path, several: bool, context: str) -> Path | None:
    latency = [r for r in rows if r.kind == "latency"]
    if not latency:
        return None
    smallest = min(r.batch_size for r in latency)
    chosen = [r for r in latency if r.batch_size == smallest]
    labels = [_label(r, several) for r in chosen]
    builds = [r.value("build_s") for r in chosen]
    build_texts = [format_seconds(v) + (" (cached: timed when made)" if r.artifact_cached else "")
                   for r, v in zip(chosen, builds)]
    panels = [("conversion (export, engine build)", builds, build_texts),
              ("load", [r.value("load_s") for r in chosen], None),
              (f"inference, batch {smallest} (median)", [r.median_s for r in chosen], None)]
    figure = _figure(13, 0.45 * len(chosen) + 2.4)
    axes = figure.subplots(1, 3, sharey=True)
    for ax, (title, values, texts) in zip(axes, panels):
        _barh(ax, labels, [v * 1e3 if v else None for v in values],
              texts or [format_seconds(v) if v else "" for v in values], "ms")
        ax.set_title(title, fontsize=9)
    axes[0].invert_yaxis()
    if any(r.artifact_cached for r in chosen):
        figure.supxlabel("A cache hit's conversion is the time measured when the artifact was made, not in this "
                         "run.", fontsize=7)
    _title(figure, "Conversion, load and inference time per backend", context)
    return _save(figure, path)


def _distribution_chart(rows: list[Row], path: Path, several: bool, context: str) -> Path | None:
    latency = [r for r in rows if r.kind == "latency"]
    if not latency:
        return None
    batches = sorted({r.batch_size for r in latency})
    most = max(sum(r.batch_size == b for r in latency) for b in batches)
    figure = _figure(max(10, 1.1 * most + 4), 4.5 * len(batches) + 0.8)
    axes = figure.subplots(len(batches), 1, squeeze=False)[:, 0]
    for ax, batch in zip(axes, batches):
        chosen = [r for r in latency if r.batch_size == batch]
        boxes = [_box(r, several) for r in chosen]
        ax.bxp(boxes, showfliers=False)
        values = [b[k] for b in boxes for k in ("whislo", "whishi")]
        scale = ""
        if _spans_decades(values):
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
            scale = ", log scale"
        ax.set_ylabel(f"ms per batch{scale}")
        ax.set_title(f"batch {batch}: box = quartiles, whiskers = min and max; {_box_source(chosen)}", fontsize=9)
        ax.tick_params(axis="x", labelrotation=15, labelsize=8)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        for index, box in enumerate(boxes, start=1):
            ax.annotate(f"median {format_seconds(box['med'] / 1e3)}", (index + 0.3, box["med"]), va="center",
                        fontsize=7)
    _title(figure, "Latency distribution per backend (timed rounds)", context)
    return _save(figure, path)


def _box_source(rows: Sequence[Row]) -> str:
    """Where the boxes come from, said once per panel rather than under every box."""
    runs = max(r.runs for r in rows)
    over = f" of {runs} runs" if runs > 1 else ""
    if all(r.samples for r in rows):
        return f"every timed round{over}"
    if all(r.samples or r.box for r in rows):
        return f"pytest-benchmark's saved stats{over}" if not any(r.samples for r in rows) else \
            f"timed rounds or saved stats{over}"
    return "median only where neither rounds nor stats were saved"


def _box(row: Row, several: bool) -> dict[str, Any]:
    """matplotlib's bxp statistics of one row, in ms: from every round when saved, else from the runs'
    own stats; a row with neither shows its median alone."""
    label, median = _label(row, several), row.median_s * 1e3
    if row.samples:
        values = [v * 1e3 for v in row.samples]
        low, q1, median, q3, high = (min(values), _quantile(values, 0.25), statistics.median(values),
                                     _quantile(values, 0.75), max(values))
    elif row.box:
        low, q1, q3, high = (row.box[k] * 1e3 for k in BOX_STATS)
    else:
        low = q1 = q3 = high = median
    return {"med": median, "q1": q1, "q3": q3, "whislo": low, "whishi": high, "fliers": [], "label": label}


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _series(rows: list[Row], several: bool) -> dict[str, list[Row]]:
    series: dict[str, list[Row]] = {}
    for r in rows:
        series.setdefault(_label(r, several), []).append(r)
    return {k: sorted(v, key=lambda r: r.batch_size) for k, v in series.items()}


def _batch_axis(ax, rows: list[Row]) -> None:
    """Log2 x axis labelled with the batch sizes actually measured."""
    batches = sorted({r.batch_size for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size")


def _plain_number(value: float, _position: Any = None) -> str:
    """Tick labels a reader takes in at a glance: 60, 200, 1,500, 0.5 (not 6×10^1)."""
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2g}"


def _plain_log_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_formatter(FuncFormatter(_plain_number))
    # Label 1, 2, 3 and 5 of each decade (a span of less than a decade still gets labels), not every minor tick.
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 5.0)))
    axis.set_minor_formatter(FuncFormatter(_plain_number))
    if len(axis.get_majorticklocs()) + len(axis.get_minorticklocs()) > 12:
        axis.set_minor_formatter(NullFormatter())


def _plot_series(ax, series: dict[str, list[Row]], value) -> None:
    """One line per series, each with its own colour, marker and line style, and nudged sideways by a
    few percent of a doubling, so that series with equal values stay visible instead of hiding each other."""
    styles = [(marker, line) for line in ("-", "--", ":", "-.") for marker in "osD^vP*X<>"]
    count = len(series)
    for index, (label, points) in enumerate(series.items()):
        marker, line = styles[index % len(styles)]
        nudge = 2 ** (0.06 * (index - (count - 1) / 2)) if count > 1 else 1.0
        ax.plot([r.batch_size * nudge for r in points], [value(r) for r in points], marker=marker, linestyle=line,
                color=f"C{index % 10}", markerfacecolor="none", markersize=7, linewidth=1.4, label=label)


def _by_batch_bars(rows: list[Row], path: Path, several: bool, context: str, title: str,
                   value, text, unit: str) -> Path:
    """A single batch size: one bar per series (lines across one x value would say nothing)."""
    batch = rows[0].batch_size
    labels = [_label(r, several) for r in rows]
    values = [value(r) for r in rows]
    figure = _figure(9, 0.45 * len(rows) + 2.2)
    ax = figure.subplots()
    _barh(ax, labels, values, [text(v) for v in values], unit)
    ax.invert_yaxis()
    ax.set_title(f"batch {batch}", fontsize=9)
    _title(figure, title, context)
    return _save(figure, path)


def _annotate_points(ax, series: dict[str, list[Row]], value, text) -> None:
    for points in series.values():
        for r in points:
            v = value(r)
            if v:
                ax.annotate(text(v), (r.batch_size, v), xytext=(4, 4), textcoords="offset points", fontsize=6)


def _throughput_chart(rows: list[Row], path: Path, several: bool, context: str) -> Path | None:
    latency = [r for r in rows if r.kind == "latency" and r.images_per_s]
    if not latency:
        return None
    title = "Throughput: images / s (batch size / median latency)"
    if len({r.batch_size for r in latency}) == 1:
        return _by_batch_bars(latency, path, several, context, title, lambda r: r.images_per_s,
                              lambda v: f"{v:,.3g}", "images / s")
    figure = _figure(9, 5.5)
    ax = figure.subplots()
    series = _series(latency, several)
    _plot_series(ax, series, lambda r: r.images_per_s)
    _annotate_points(ax, series, lambda r: r.images_per_s, lambda v: f"{v:,.3g}")
    _batch_axis(ax, latency)
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_ylabel("images / s, log scale")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    _title(figure, title, context)
    return _save(figure, path)


def speedups(rows: Sequence[Row]) -> list[tuple[Row, float]]:
    """(row, eager median / row median) for every non-eager latency row with an eager counterpart."""
    eager = {(r.machine_id, r.precision, r.batch_size): r for r in rows if r.kind == "latency" and r.backend == "eager"}
    found = []
    for r in rows:
        reference = eager.get((r.machine_id, r.precision, r.batch_size))
        if r.kind == "latency" and r.backend != "eager" and reference is not None:
            found.append((r, reference.median_s / r.median_s))
    return found


def _speedup_chart(rows: list[Row], path: Path, several: bool, context: str) -> Path | None:
    found = speedups(rows)
    if not found:
        return None
    eager = {(r.machine_id, r.precision, r.batch_size): r for r in rows if r.kind == "latency" and r.backend == "eager"}
    labels = [f"{_label(r, several)}, batch {r.batch_size}" for r, _ in found]
    values = [s for _, s in found]
    texts = [f"{s:.2f}x ({format_seconds(eager[(r.machine_id, r.precision, r.batch_size)].median_s)} eager -> "
             f"{format_seconds(r.median_s)})" for r, s in found]
    figure = _figure(10, 0.45 * len(found) + 2.4)
    ax = figure.subplots()
    _barh(ax, labels, values, texts, "speedup (eager median / backend median)")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_title("each bar against PyTorch eager at the same precision, batch size and machine "
                 "(above 1: faster than eager)", fontsize=9)
    _title(figure, "Speedup over PyTorch eager", context)
    return _save(figure, path)


def _memory_chart(rows: list[Row], path: Path, several: bool, context: str) -> Path | None:
    latency = [r for r in rows if r.kind == "latency"]
    gpu = [r for r in latency if r.value("peak_gpu_memory_bytes")]
    host = [r for r in latency if r.value("host_rss_delta_bytes") is not None]
    panels = [(title, chosen, field) for title, chosen, field in (
        ("peak GPU memory", gpu, "peak_gpu_memory_bytes"),
        ("host RSS growth at build and load", host, "host_rss_delta_bytes")) if chosen]
    if not panels:
        return None
    single = len({r.batch_size for _, chosen, _ in panels for r in chosen}) == 1
    height = (0.45 * max(len(chosen) for _, chosen, _ in panels) + 2.4) if single else 5.5
    figure = _figure(7 * len(panels), height)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, chosen, field) in zip(axes, panels):
        value = lambda r, f=field: r.value(f) / 2**20  # noqa: E731
        if single:
            values = [value(r) for r in chosen]
            _barh(ax, [_label(r, several) for r in chosen], values, [f"{v:,.0f} MiB" for v in values], "MiB")
            ax.invert_yaxis()
            ax.set_title(f"{title}, batch {chosen[0].batch_size}", fontsize=9)
            continue
        series = _series(chosen, several)
        _plot_series(ax, series, value)
        _annotate_points(ax, series, value, lambda v: f"{v:,.0f}")
        _batch_axis(ax, chosen)
        ax.set_ylabel("MiB")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    _title(figure, "Memory per backend", context)
    return _save(figure, path)


def write_charts(runs: Sequence[SavedRun], output: str | Path) -> list[Path]:
    """Every chart the runs support, as PNG files in ``output``."""
    rows = collect_rows(runs)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    several = len({r.machine_id for r in rows}) > 1
    context = chart_context(runs)
    makers = {"comparison": _comparison_chart, "latency_distribution": _distribution_chart,
              "throughput": _throughput_chart, "speedup": _speedup_chart, "memory": _memory_chart}
    written = []
    for name in CHARTS:
        path = makers[name](rows, output / f"{name}.png", several, context)
        if path is not None:
            written.append(path)
    return written


def write_report(runs: Sequence[SavedRun], output: str | Path, title: str = "Benchmark results",
                 charts: bool = True, markdown_name: str = "summary.md",
                 host_contention: float = DEFAULT_HOST_CONTENTION) -> list[Path]:
    """Charts and the markdown summary into ``output``; returns the files written."""
    from perfsuite.results import write_text_atomic

    output = Path(output)
    written = write_charts(runs, output) if charts else []
    summary = output / markdown_name
    write_text_atomic(summary, render_markdown(runs, title, [p.name for p in written], host_contention),
                      f"--output {summary}")
    return [*written, summary]
