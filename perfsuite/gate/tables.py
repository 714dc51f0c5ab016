"""Plain-text and markdown tables: the gate's result, and the number formats reports share."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfsuite.gate.verdict import FAILING, FIGURES, BenchmarkComparison, FigureComparison, GateResult, Verdict

MIB = 1024 * 1024


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def format_seconds(value: float | None) -> str:
    """Three significant digits in s, ms or µs; "-" for a value that is missing or not finite."""
    if not _finite(value):
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(value) >= 0.9995 * scale or unit == "µs":  # 999.6 µs rounds to "1 ms", not "1e+03 µs"
            return f"{value / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def format_bytes(value: float | None, signed: bool = False) -> str:
    if not _finite(value):
        return "-"
    return f"{round(value / MIB):+d} MiB" if signed else f"{value / MIB:.0f} MiB"  # round: no "-0 MiB"


def format_percent(value: float | None, signed: bool = True) -> str:
    if not _finite(value):
        return "-"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def format_mde(value: float | None) -> str:
    """An MDE as a percentage; beyond 1000% only that (the figure resolves nothing; digits would mislead)."""
    if _finite(value) and value > 10:
        return ">1000%"
    return format_percent(value, signed=False)


def format_number(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if _finite(value) else "-"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool) -> str:
    """Aligned columns (plain) or a GitHub-flavoured markdown table; cells are str()-ed."""
    cells = [[str(c) for c in row] for row in rows]
    if markdown:
        def line(row: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |"

        return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|", *map(line, cells)])
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) if cells else len(str(h))
              for i, h in enumerate(headers)]

    def plain(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()

    return "\n".join([plain(headers), plain(["-" * w for w in widths]), *map(plain, cells)])


def _names(result: GateResult) -> dict[str, str]:
    """Short names where unique (test name with parameters), else the full node id."""
    names = [c.name for c in result.comparisons]
    return {c.key: c.name if names.count(c.name) == 1 else c.key for c in result.comparisons}


def _memory_cell(comparison) -> str:
    parts = []
    for memory in comparison.memory:
        flag = "" if memory.verdict is Verdict.UNCHANGED else f" {memory.verdict.value}"
        parts.append(f"{memory.label} {format_bytes(memory.change, signed=True)}{flag}")
    return "; ".join(parts) or "-"


OUTCOME_WORDS = {"pass": "PASS", "fail": "FAIL", "undecided": "UNDECIDED"}


def headline(result: GateResult) -> str:
    counts = [f"{result.count(v)} {v.value}" for v in Verdict if result.count(v)]
    if result.informational:
        counts.append(f"{len(result.informational)} informational")
    if result.backend_failures:
        counts.append(f"{len(result.backend_failures)} required backend(s) without results")
    return (f"perfsuite compare: {OUTCOME_WORDS[result.outcome]} ({', '.join(counts) or 'no benchmarks'}; "
            f"exit {result.exit_code})")


def _method(result: GateResult) -> str:
    s = result.settings
    figures = {name for c in result.comparisons for name in c.figures}
    host = (f"; host-side figures of rows with device time (their latency and host time): threshold "
            f"{s.host_threshold:.0%} (called from {s.min_effect_for(s.host_threshold):.1%})" if "device" in figures
            else "")
    return (f"runs: baseline {len(result.baseline_runs)}, new {len(result.new_runs)}; per-run {s.statistic}; "
            f"one-sided t-test on log values (latency and host time at equal host speed where probed), "
            f"Benjamini-Hochberg over all {result.family_size} tests (each figure of each row) at "
            f"alpha {s.alpha:g}; threshold {s.threshold:.1%} (changes called from {s.min_effect:.1%}){host}; "
            f"MDE at {s.power:.0%} power")


def _conclusions(result: GateResult) -> list[str]:
    """What the outcome means, in words, where it is not a plain pass or fail."""
    lines = []
    if result.comparisons and all(c.time is None or c.time.p_slower is None for c in result.comparisons
                                  if c.verdict not in (Verdict.NEW, Verdict.MISSING, Verdict.FAILED)):
        lines.append("One run a side: without run-to-run spread no change can be told from noise. Nothing is "
                     f"called regressed or improved; rows beyond the {result.settings.threshold:.0%} threshold are "
                     "inconclusive, the rest unresolved (no change seen, none ruled out). Record 3+ runs a side "
                     "for a verdict.")
    if result.count(Verdict.INCONCLUSIVE):
        failed_anyway = result.backend_failures or any(c.failing for c in result.comparisons)
        action = "the gate fails anyway (another check failed)" if failed_anyway else {
                  "undecided": "the gate is UNDECIDED (exit 3), not green",
                  "fail": "counted as a failure (inconclusive = fail)",
                  "pass": "counted as a pass (inconclusive = pass)"}[result.settings.inconclusive]
        lines.append(f"{result.count(Verdict.INCONCLUSIVE)} row(s) could not tell a change from noise: {action}.")
    if result.count(Verdict.UNRESOLVED):
        lines.append(f"{result.count(Verdict.UNRESOLVED)} row(s) cannot resolve their threshold in some figure "
                     f"({result.settings.threshold:.0%}, host-side {result.settings.host_threshold:.0%}; MDE above "
                     "it, or unknown): no change beyond it seen, but one of threshold size could hide in their noise.")
    if result.informational:
        kinds = ", ".join(sorted({c.kind or "?" for c in result.informational}))
        shown = ", ".join(f"{n} {v.value}" for v in Verdict
                          if (n := sum(c.verdict is v for c in result.informational)))
        lines.append(f"{len(result.informational)} informational row(s) ({kinds}: {shown}): shown with their "
                     "verdicts but never deciding the outcome, as their run-to-run noise cannot resolve the "
                     "threshold at a few runs a side (docs/gate.md); a missing or failed one, or its memory, still "
                     "counts. [tool.perfsuite.gate] informational = [] gates them.")
    return lines


def _host_lines(result: GateResult) -> list[str]:
    speeds = {side: [r.host_speed_s for r in runs if r.host_speed_s is not None]
              for side, runs in (("baseline", result.baseline_runs), ("new", result.new_runs))}
    if not speeds["baseline"] or not speeds["new"]:
        return ["host probe: not recorded on both sides (runs made before it existed, or --no-host-probe): rows are "
                "compared without host-speed adjustment"]
    ranges = "; ".join(f"{side} {format_seconds(min(v))} to {format_seconds(max(v))}" for side, v in speeds.items())
    change = statistics.median(speeds["new"]) / statistics.median(speeds["baseline"]) - 1
    timed = [c.figures["latency"].time for c in result.comparisons if "latency" in c.figures]
    adjusted = sum(t.host_adjusted for t in timed)
    others = "" if adjusted == len(timed) else " (the others: a compared run without a probe, or nothing to fit)"
    return [f"host probe (a host-bound control between every row's rounds), per-run medians: {ranges}; the new side's "
            f"host ran {format_percent(change)} against the baseline's. {adjusted} of {len(timed)} rows compared at "
            f"equal host speed{others}: 'change' is that (latency; host time likewise), 'raw' the change of the "
            "medians"]


def _figure_lines(result: GateResult) -> list[str]:
    """Figures not compared on several rows, said once: not recorded, or recorded as unavailable and why."""
    lines = []
    unrecorded: dict[str, int] = {}
    unavailable: dict[tuple[str, str], int] = {}
    for c in result.comparisons:
        for name in c.not_recorded:
            unrecorded[name] = unrecorded.get(name, 0) + 1
        for name, reason in c.unavailable.items():
            unavailable[(name, reason)] = unavailable.get((name, reason), 0) + 1
    if unrecorded:
        names = " and ".join(FIGURES[name] for name in unrecorded)
        lines.append(f"{names}: not recorded in the runs of {max(unrecorded.values())} latency row(s) (runs made "
                     "before perfsuite measured them): those rows are compared on latency alone")
    for (name, reason), rows in unavailable.items():
        lines.append(f"{FIGURES[name]} not compared on {rows} row(s): {reason}")
    return lines


def _figure_cell(figure: FigureComparison | None) -> str:
    if figure is None:
        return "-"
    t = figure.time
    text = f"{format_percent(t.effect)} (MDE {format_mde(t.mde)})"
    if figure.verdict is not Verdict.UNCHANGED:
        text += " " + (figure.verdict.value.upper() if figure.verdict in FAILING else figure.verdict.value)
    return text


def _verdict_cell(c: BenchmarkComparison) -> str:
    verdict = c.verdict.value.upper() if c.verdict in FAILING and c.failing else c.verdict.value
    several = len(c.figures) > 1
    if several and c.called_by and c.verdict is not Verdict.UNCHANGED:
        verdict += f" ({', '.join(FIGURES[name] for name in c.called_by)})"
    if c.informational:
        verdict += " [informational]"
    if c.failing and c.verdict not in FAILING:
        verdict += ", MEMORY REGRESSED"
    return verdict


def render_result(result: GateResult, markdown: bool = False, verbose: bool = False) -> str:
    """The whole report: outcome line, method, hardware, change under test, table, notes."""
    bold = (lambda s: f"**{s}**") if markdown else (lambda s: s)
    lines = [("### " if markdown else "") + headline(result), ""]
    lines += [*_conclusions(result), *([""] if _conclusions(result) else [])]
    lines.append(f"{bold('hardware')}: {result.hardware.label} (`{result.hardware.id}`)" if markdown
                 else f"hardware: {result.hardware.label} ({result.hardware.id})")
    lines += [f"{bold('physical GPUs')}: {note}" for note in result.physical_gpus]
    if result.hardware_mismatch:
        lines.append(f"{bold('hardware mismatch allowed')} (--allow-hardware-mismatch); numbers not comparable:")
        lines.append(render_table(["field", "baseline", "new"], result.hardware_mismatch, markdown))
    if result.config_mismatch:
        lines.append(f"{bold('configuration mismatch allowed')} (--allow-config-mismatch); numbers not comparable:")
        lines.append(render_table(["field", "baseline", "new", "benchmarks"], result.config_mismatch, markdown))
    lines.append(_method(result))
    lines += _host_lines(result)
    lines += _figure_lines(result)
    if result.software_changes:
        lines += ["", bold("change under test") + " (software that differs):", ""]
        lines.append(render_table(["package", "baseline", "new"], result.software_changes, markdown))
    if result.software_same:
        same = ", ".join(f"{k} {v}" for k, v in result.software_same.items() if v != "-")
        lines += ["", f"{bold('same on both sides')}: {same}"]
    names = _names(result)
    several = any(len(c.figures) > 1 for c in result.comparisons)
    rows = []
    for c in result.comparisons:
        latency = c.figures.get("latency")
        t = latency.time if latency else c.time
        row = [names[c.key], c.backend or "-", format_seconds(t.baseline_median if t else None),
               format_seconds(t.new_median if t else None), format_percent(t.raw_effect if t else None)]
        if several:
            row += [_figure_cell(c.figures.get(name)) for name in FIGURES]
        else:
            row += [format_percent(t.effect if t else None), format_mde(t.mde) if t else "-"]
        deciding = c.time
        row += [format_number(deciding.p_adjusted if deciding else None, 2),
                f"{len(t.baseline)}/{len(t.new)}" if t else "-", _verdict_cell(c), _memory_cell(c)]
        rows.append(row)
    figure_headers = ["latency", "device time", "host time"] if several else ["change", "MDE"]
    lines += ["", render_table(["benchmark", "backend", "baseline", "new", "raw", *figure_headers, "p (adj.)", "runs",
                                "verdict", "memory"], rows, markdown)]
    if several:
        lines.append("")
        lines.append("baseline/new/raw: latency medians; figure cells: change tested (latency and host time at equal "
                     "host speed) and MDE, the figure's verdict where not unchanged; p (adj.): of the deciding figure")
    if result.backend_failures:
        lines.append("")
        lines += [f"- FAIL: {failure}" for failure in result.backend_failures]
    if verbose:
        noted = [(names[c.key], note) for c in result.comparisons for note in _row_notes(c)]
    else:
        noted = [(names[c.key], "; ".join(notes)) for c in result.comparisons if (notes := _grouped_notes(c))]
    if noted:
        hint = "" if verbose else " (one line a row; --verbose for every detail)"
        lines += ["", bold("notes") + hint + ":", *([""] if markdown else [])]
        lines += [f"- {name}: {note}" for name, note in noted]
    return "\n".join(lines) + "\n"


def _grouped_notes(comparison: BenchmarkComparison) -> list[str]:
    """The row's notes shortened to one line: left-out runs counted, stability of both sides together."""
    several = len(comparison.figures) > 1
    figure_notes = {f"{f.label}: {f.note}" if several else f.note for f in comparison.figures.values() if f.note}
    notes = []
    unresolved = [f"{f.label} MDE {format_mde(f.time.mde)}" for f in comparison.figures.values()
                  if f.verdict is Verdict.UNRESOLVED and f.time.mde is not None]
    if unresolved:
        notes.append(", ".join(unresolved) + " > threshold: cannot resolve it; record more runs")
    notes += [f"{f.label}: {f.note}" if several else f.note for f in comparison.figures.values()
              if f.note and f.verdict is not Verdict.UNRESOLVED and not f.note.startswith("significant but")]
    notes += [f"{f.label}: {f.note}" if several else f.note for f in comparison.figures.values()
              if f.note and f.verdict is Verdict.UNRESOLVED and f.time.mde is None]
    unstable = []
    for note in comparison.notes:
        if note in figure_notes:
            continue
        if note.startswith("unstable in "):
            unstable.append(note[len("unstable in "):])
        else:
            notes.append(note)
    if unstable:
        notes.append("unstable in " + " and ".join(unstable))
    t = comparison.figures["latency"].time if "latency" in comparison.figures else comparison.time
    if t and t.host_adjusted and abs(t.slope) > 0.5 and abs(t.effect - t.raw_effect) > 0.02:
        notes.append(f"host-bound: latency {t.effect:+.1%} at equal host speed, medians {t.raw_effect:+.1%}")
    if comparison.left_out:
        sides = {side: sum(entry.side == side for entry in comparison.left_out) for side in ("baseline", "new")}
        counts = " and ".join(f"{n} {side}" for side, n in sides.items() if n)
        notes.append(f"{counts} run(s) left out ({comparison.left_out[0].reason}"
                     + (", ..." if len(comparison.left_out) > 1 else "") + ")")
    return notes


def _row_notes(comparison: BenchmarkComparison) -> list[str]:
    notes = list(comparison.notes)
    t = comparison.figures["latency"].time if "latency" in comparison.figures else comparison.time
    if t and t.host_adjusted and abs(t.slope) > 0.5 and abs(t.effect - t.raw_effect) > 0.02:
        notes.append(f"host-bound (time ~ probe^{t.slope:.2f}): {t.effect:+.1%} at equal host speed, medians "
                     f"{t.raw_effect:+.1%} with the new side's probes {format_percent(t.probe_change)}")
    notes += [f"{entry.side} run {Path(entry.run).name} left out: {entry.reason}" for entry in comparison.left_out]
    return notes
