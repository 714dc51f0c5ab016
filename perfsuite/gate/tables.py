"""Plain-text and markdown tables: the gate's result, and the number formats reports share."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfsuite.gate.verdict import FAILING, GateResult, Verdict

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
    if result.backend_failures:
        counts.append(f"{len(result.backend_failures)} required backend(s) without results")
    return (f"perfsuite compare: {OUTCOME_WORDS[result.outcome]} ({', '.join(counts) or 'no benchmarks'}; "
            f"exit {result.exit_code})")


def _method(result: GateResult) -> str:
    s = result.settings
    return (f"runs: baseline {len(result.baseline_runs)}, new {len(result.new_runs)}; per-run {s.statistic}; "
            f"one-sided t-test on log values (at equal host speed where probed), Benjamini-Hochberg over "
            f"{result.family_size} rows at "
            f"alpha {s.alpha:g}; threshold {s.threshold:.1%} (changes called from {s.min_effect:.1%}); "
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
        action = {"undecided": "the gate is UNDECIDED (exit 3), not green",
                  "fail": "counted as a failure (inconclusive = fail)",
                  "pass": "counted as a pass (inconclusive = pass)"}[result.settings.inconclusive]
        lines.append(f"{result.count(Verdict.INCONCLUSIVE)} row(s) could not tell a change from noise: {action}.")
    if result.count(Verdict.UNRESOLVED):
        lines.append(f"{result.count(Verdict.UNRESOLVED)} row(s) cannot resolve the {result.settings.threshold:.0%} "
                     "threshold (MDE above it, or unknown): no change seen, but one of threshold size could hide in "
                     "their noise.")
    return lines


def _host_lines(result: GateResult) -> list[str]:
    speeds = {side: [r.host_speed_s for r in runs if r.host_speed_s is not None]
              for side, runs in (("baseline", result.baseline_runs), ("new", result.new_runs))}
    if not speeds["baseline"] or not speeds["new"]:
        return ["host probe: not recorded on both sides (runs made before it existed, or --no-host-probe): rows are "
                "compared without host-speed adjustment"]
    ranges = "; ".join(f"{side} {format_seconds(min(v))} to {format_seconds(max(v))}" for side, v in speeds.items())
    change = statistics.median(speeds["new"]) / statistics.median(speeds["baseline"]) - 1
    timed = [c.time for c in result.comparisons if c.time is not None]
    adjusted = sum(t.host_adjusted for t in timed)
    others = "" if adjusted == len(timed) else " (the others: a compared run without a probe, or nothing to fit)"
    return [f"host probe (a host-bound control between every row's rounds), per-run medians: {ranges}; the new side's "
            f"host ran {format_percent(change)} against the baseline's. {adjusted} of {len(timed)} rows compared at "
            f"equal host speed{others}: 'change' is that, 'raw' the change of the medians"]


def render_result(result: GateResult, markdown: bool = False) -> str:
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
    if result.software_changes:
        lines += ["", bold("change under test") + " (software that differs):", ""]
        lines.append(render_table(["package", "baseline", "new"], result.software_changes, markdown))
    if result.software_same:
        same = ", ".join(f"{k} {v}" for k, v in result.software_same.items() if v != "-")
        lines += ["", f"{bold('same on both sides')}: {same}"]
    names = _names(result)
    rows = []
    for c in result.comparisons:
        t = c.time
        verdict = c.verdict.value.upper() if c.verdict in FAILING else c.verdict.value
        if c.failing and c.verdict not in FAILING:
            verdict += ", MEMORY REGRESSED"
        rows.append([names[c.key], c.backend or "-", format_seconds(t.baseline_median if t else None),
                     format_seconds(t.new_median if t else None), format_percent(t.raw_effect if t else None),
                     format_percent(t.effect if t else None),
                     format_percent(t.mde, signed=False) if t else "-", format_number(t.p_adjusted if t else None, 2),
                     f"{len(t.baseline)}/{len(t.new)}" if t else "-", verdict, _memory_cell(c)])
    lines += ["", render_table(["benchmark", "backend", "baseline", "new", "raw", "change", "MDE", "p (adj.)", "runs",
                                "verdict", "memory"], rows, markdown)]
    if result.backend_failures:
        lines.append("")
        lines += [f"- FAIL: {failure}" for failure in result.backend_failures]
    noted = [(names[c.key], note) for c in result.comparisons for note in _row_notes(c)]
    if noted:
        lines += ["", bold("notes") + ":", *([""] if markdown else [])]
        lines += [f"- {name}: {note}" for name, note in noted]
    return "\n".join(lines) + "\n"


def _row_notes(comparison) -> list[str]:
    notes = list(comparison.notes)
    t = comparison.time
    if t and t.host_adjusted and abs(t.slope) > 0.5 and abs(t.effect - t.raw_effect) > 0.02:
        notes.append(f"host-bound (time ~ probe^{t.slope:.2f}): {t.effect:+.1%} at equal host speed, medians "
                     f"{t.raw_effect:+.1%} with the new side's probes {format_percent(t.probe_change)}")
    notes += [f"{entry.side} run {Path(entry.run).name} left out: {entry.reason}" for entry in comparison.left_out]
    return notes
