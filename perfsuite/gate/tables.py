"""Plain-text and markdown tables: the gate's result, and the number formats reports share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from perfsuite.gate.verdict import FAILING, GateResult, Verdict

MIB = 1024 * 1024


def format_seconds(value: float | None) -> str:
    """Three significant digits in s, ms or µs."""
    if value is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(value) >= scale or unit == "µs":
            return f"{value / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def format_bytes(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value / MIB:+.0f} MiB" if signed else f"{value / MIB:.0f} MiB"


def format_percent(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def format_number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


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


def headline(result: GateResult) -> str:
    counts = [f"{result.count(v)} {v.value}" for v in Verdict if result.count(v)]
    if result.backend_failures:
        counts.append(f"{len(result.backend_failures)} required backend(s) without results")
    return f"perfsuite compare: {'FAIL' if result.failed else 'PASS'} ({', '.join(counts) or 'no benchmarks'})"


def render_result(result: GateResult, markdown: bool = False) -> str:
    """The whole report: verdict line, hardware, change under test, table, notes."""
    settings = result.settings
    bold = (lambda s: f"**{s}**") if markdown else (lambda s: s)
    lines = [("### " if markdown else "") + headline(result), ""]
    lines.append(f"{bold('hardware')}: {result.hardware.label} (`{result.hardware.id}`)" if markdown
                 else f"hardware: {result.hardware.label} ({result.hardware.id})")
    if result.hardware_mismatch:
        lines.append(f"{bold('hardware mismatch allowed')} (--allow-hardware-mismatch); numbers not comparable:")
        lines.append(render_table(["field", "baseline", "new"], result.hardware_mismatch, markdown))
    lines.append(f"{bold('runs')}: baseline {len(result.baseline_runs)}, new {len(result.new_runs)}; per-run "
                 f"{settings.statistic}; threshold {settings.threshold:.0%} (one run a side: "
                 f"{settings.single_run_threshold:.0%}), one-sided Mann-Whitney U at alpha {settings.alpha:g}, "
                 f"interval {1 - 2 * settings.alpha:.0%}")
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
        interval = f"{t.interval[0]:+.1%} .. {t.interval[1]:+.1%}" if t and t.interval else "-"
        p = t.p_slower if t and t.effect >= 0 else t.p_faster if t else None
        verdict = c.verdict.value.upper() if c.verdict in FAILING else c.verdict.value
        if c.failing and c.verdict not in FAILING:
            verdict += ", MEMORY REGRESSED"
        rows.append([names[c.key], c.backend or "-", format_seconds(t.baseline_median if t else None),
                     format_seconds(t.new_median if t else None), format_percent(t.effect if t else None), interval,
                     format_number(p, 2), f"{len(t.baseline)}/{len(t.new)}" if t else "-", verdict, _memory_cell(c)])
    lines += ["", render_table(["benchmark", "backend", "baseline", "new", "change", "interval", "p", "runs",
                                "verdict", "memory"], rows, markdown)]
    if result.backend_failures:
        lines.append("")
        lines += [f"- FAIL: {failure}" for failure in result.backend_failures]
    noted = [(names[c.key], note) for c in result.comparisons for note in c.notes]
    if noted:
        lines += ["", bold("notes") + ":", *([""] if markdown else [])]
        lines += [f"- {name}: {note}" for name, note in noted]
    return "\n".join(lines) + "\n"
