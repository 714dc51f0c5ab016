"""Print the three figures of every row of one pytest-benchmark JSON run as a Markdown table.

    python scripts/figures_table.py RUN.json > figures.md

Per row: the latency median (host-inclusive, as pytest-benchmark stores it), the device time and the
host time per call (``extra_info["device_time"]`` / ``["host_time"]``, perfsuite.device_time), with
their interquartile range; a figure that was not measured shows its recorded reason. Used to make the
tables under docs/results from the saved run, so that no number there is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.4g} ms"
    return f"{seconds * 1e6:.4g} µs"


def _figure(entry: dict[str, Any] | None) -> tuple[str, str]:
    """(median, IQR) of a device_time / host_time entry, or its reason when unavailable."""
    if not entry:
        return "-", "-"
    if not entry.get("available"):
        return f"unavailable: {entry.get('reason') or 'no reason recorded'}", "-"
    q1, q3 = entry.get("q1_s"), entry.get("q3_s")
    iqr = _time(q3 - q1) if q1 is not None and q3 is not None else "-"
    return _time(entry.get("median_s")), iqr


def table(run: dict[str, Any]) -> str:
    lines = ["| row | latency median | latency IQR | device time per call | device IQR | host time per call "
             "| host IQR | device / latency |", "|---|---|---|---|---|---|---|---|"]
    for bench in run.get("benchmarks", []):
        info = bench.get("extra_info", {})
        stats = bench.get("stats", {})
        device, device_iqr = _figure(info.get("device_time"))
        host, host_iqr = _figure(info.get("host_time"))
        share = "-"
        device_s = (info.get("device_time") or {}).get("median_s")
        if device_s and stats.get("median"):
            share = f"{device_s / stats['median']:.0%}"
        lines.append(f"| `{bench['name']}` | {_time(stats.get('median'))} | {_time(stats.get('iqr'))} | {device} "
                     f"| {device_iqr} | {host} | {host_iqr} | {share} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/figures_table.py RUN.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"figures_table: cannot read {path} as pytest-benchmark JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(run, dict) or not isinstance(run.get("benchmarks"), list):
        print(f"figures_table: {path} has no 'benchmarks' list: not a pytest-benchmark JSON run", file=sys.stderr)
        return 2
    print(table(run))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
