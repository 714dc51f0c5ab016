"""The verdict chart: the gate's result as one picture, readable at a glance in a CI summary.

One line per row: the change of the row's deciding figure (the one whose verdict is the row's)
with its 95% confidence interval (a cross marks the change of the medians where the tested one is
at equal host speed: rule 3 judges both), the row's ±threshold band (5%, or the host-side threshold for
host-side figures), a tick at the row's MDE (the slowdown it would catch), coloured by verdict.
Values beyond the axis are clipped with an arrow and their number. The subtitle names the machine,
the weights and the dates of the runs. Drawn with matplotlib's object API (no pyplot, no display).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from perfsuite.errors import InputError
from perfsuite.gate.runs import provenance
from perfsuite.gate.verdict import FIGURES, BenchmarkComparison, GateResult, Verdict

COLOURS = {
    Verdict.REGRESSED: "#c62828", Verdict.IMPROVED: "#2e7d32", Verdict.UNCHANGED: "#1565c0",
    Verdict.UNRESOLVED: "#ef8f00", Verdict.INCONCLUSIVE: "#7b1fa2",
}
OUTCOME_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "undecided": "#7b1fa2"}


def _subtitle(result: GateResult) -> str:
    weights, when = provenance([*result.baseline_runs, *result.new_runs])
    return (f"{result.hardware.label}\n{weights} · runs from {when} · baseline {len(result.baseline_runs)}, "
            f"new {len(result.new_runs)} run(s) · threshold {result.settings.threshold:.0%}"
            + (f", host-side {result.settings.host_threshold:.0%}"
               if any("device" in c.figures for c in result.comparisons) else ""))


def _label(c: BenchmarkComparison, name: str) -> str:
    label = name
    if len(c.figures) > 1 and c.deciding:
        label += f" · {FIGURES[c.deciding]}"
    if c.informational:
        label += " (informational)"
    return label


def _axis_limit(rows: Sequence[BenchmarkComparison]) -> float:
    """Wide enough for every change, interval and band; where an MDE or interval is far wider, the axis
    stops at twice the largest change or threshold, and the rest is clipped (shown as a number)."""
    effects = [abs(c.time.effect) for c in rows]
    thresholds = [c.deciding_figure.threshold for c in rows if c.deciding_figure]
    reach = [*effects, *thresholds]
    for c in rows:
        interval = c.time.interval()
        if interval:
            reach += [abs(interval[0]), abs(interval[1])]
        if c.time.mde is not None:
            reach.append(c.time.mde)
    cap = max(2 * max([*effects, *thresholds, 0.05]), 0.1)
    return min(max(reach) * 1.12, cap)


def _percent(value: float) -> str:
    return f"{value:+.0%}" if abs(value) >= 0.995 else f"{value:+.1%}"


def draw_verdict_chart(result: GateResult) -> bytes:
    """The chart as PNG bytes (see the module docstring)."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise InputError("the verdict chart needs matplotlib (pip install 'perfsuite[report]')") from exc
    from perfsuite.gate.tables import _names, headline

    rows = [c for c in result.comparisons if c.time is not None]
    names = _names(result)
    figure = Figure(figsize=(11, 1.9 + 0.36 * max(len(rows), 1)), layout="constrained")
    axes = figure.add_subplot()
    figure.suptitle(headline(result).replace("perfsuite compare: ", "Gate: "), fontsize=13, fontweight="bold",
                    color=OUTCOME_COLOURS[result.outcome])
    axes.set_title(_subtitle(result), fontsize=9, color="#444444")
    if not rows:
        axes.text(0.5, 0.5, "no row compared on time", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return _png(figure)
    limit = _axis_limit(rows)
    floor = -min(limit, 1.0)  # nothing gets faster than -100%
    for y, c in enumerate(rows):
        t, figure_of_row = c.time, c.deciding_figure
        colour = COLOURS.get(c.verdict, "#555555")
        threshold = figure_of_row.threshold if figure_of_row else result.settings.threshold
        axes.barh(y, 2 * threshold, left=-threshold, height=0.72, color="#e3e3e3", zorder=0)
        if t.mde is not None:
            for tick in (-t.mde, t.mde):
                if floor <= tick <= limit:
                    axes.plot([tick] * 2, [y - 0.3, y + 0.3], color="#777777", lw=1.2, zorder=1)
            if t.mde > limit:
                axes.text(limit * 0.99, y + 0.22, f"MDE {t.mde:.0%} ›", ha="right", va="center", fontsize=7,
                          color="#777777")
        interval = t.interval()
        if interval:
            low, high = max(interval[0], floor), min(interval[1], limit)
            axes.plot([low, high], [y, y], color=colour, lw=2.2, solid_capstyle="butt", zorder=2)
            for end, clipped in ((low, interval[0] < floor), (high, interval[1] > limit)):
                axes.plot([end], [y], marker="<" if end < 0 and clipped else ">" if clipped else "|",
                          color=colour, ms=7, zorder=2)
        if t.host_adjusted and abs(t.raw_effect - t.effect) > 0.005:  # medians' change, where the host moved it
            axes.plot([max(floor, min(limit, t.raw_effect))], [y], marker="x", ms=7, mew=1.8, color="#555555",
                      zorder=3)
        effect = max(floor, min(limit, t.effect))
        hollow = c.informational
        axes.plot([effect], [y], marker="o", ms=8, zorder=3, color=colour,
                  markerfacecolor="white" if hollow else colour, markeredgewidth=2)
        text = _percent(t.effect) + (f"  {c.verdict.value}" if c.verdict is not Verdict.UNCHANGED else "")
        axes.annotate(text, (effect, y), xytext=(0, 7), textcoords="offset points", ha="center", va="bottom",
                      fontsize=7.5, color=colour)
    axes.axvline(0, color="#333333", lw=0.8, zorder=1)
    axes.set_yticks(range(len(rows)), [_label(c, names[c.key]) for c in rows], fontsize=8.5)
    for tick, c in zip(axes.get_yticklabels(), rows):
        tick.set_color("#888888" if c.informational else "#222222" if c.verdict is Verdict.UNCHANGED
                       else COLOURS.get(c.verdict, "#222222"))
    axes.set_ylim(len(rows) - 0.5, -0.7)
    axes.set_xlim(floor - 0.02 * limit, limit)
    axes.xaxis.set_major_formatter(lambda value, _: f"{value:+.0%}" if value else "0")
    axes.set_xlabel("change of the row's deciding figure, new against baseline, with its 95% confidence interval")
    axes.grid(axis="x", color="#dddddd", lw=0.6)
    axes.set_axisbelow(True)
    shown = [v for v in COLOURS if any(c.verdict is v for c in rows)]
    handles = [Line2D([], [], marker="o", ls="-", color=COLOURS[v], label=v.value) for v in shown]
    handles += [Patch(color="#e3e3e3", label="±threshold"),
                Line2D([], [], marker="|", ls="", ms=10, color="#777777", label="±MDE")]
    if any(c.time.host_adjusted and abs(c.time.raw_effect - c.time.effect) > 0.005 for c in rows):
        handles.append(Line2D([], [], marker="x", ls="", mew=1.8, color="#555555",
                              label="medians' change (dot: at equal host speed)"))
    if any(c.informational for c in rows):
        handles.append(Line2D([], [], marker="o", ls="", color="#555555", markerfacecolor="white",
                              label="informational (never decides)"))
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=8,
                  frameon=False)
    return _png(figure)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def write_verdict_chart(result: GateResult, path: str | Path, option: str = "--chart") -> Path:
    """Draw the chart and write it atomically to ``path`` (checked beforehand with ``check_output_file``)."""
    from perfsuite.results import write_bytes_atomic

    data = draw_verdict_chart(result)
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write ({exc.strerror or exc})") from exc
    return Path(path)
