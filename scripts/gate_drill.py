"""The gate drill: does ``perfsuite compare`` stay quiet on unchanged code and catch a real slowdown?

    python scripts/gate_drill.py record DIR --runs 10 [-- PYTEST ARGS]   # 10 unchanged + 10 slowed runs
    python scripts/gate_drill.py analyze DIR --runs-per-side 1,3,5       # writes DIR/drill.md, DIR/drill.json

**Record.** ``2 x --runs`` fresh ``pytest benchmarks`` processes (the default tier; extra pytest
arguments after ``--``), alternating unchanged (``base-NN.json``) and slowed (``slowed-NN.json``),
so that whatever the machine does over time falls on both alike. Each run is pytest-benchmark JSON
exactly as ``perfsuite baseline record`` writes it.

**The slowdown is real extra work on the device, not a sleep.** In a slowed run every runner's
inference is followed by one in-place elementwise pass over a buffer on its device (memory-bound
work behind one cheap launch, so it adds device time and little host time). The first slowed run
sizes the buffer per row, closed-loop, until the row's per-call time (timed as ``perfsuite.measure``
times it, calls per round included) grows by the injected fraction: +5% at batch >= 64, +10%
below; later slowed runs reuse those sizes (``calibration.json``). Outputs are unchanged. The
calibration's own measurement is saved with the run (``gate_drill`` in the JSON), and the analysis
measures the realized effect over all runs.
Model-load and cold-start rows are not slowed: in the slowed comparisons they are unchanged rows.

**Analyze.** For each runs-per-side n: 20 comparisons of n unchanged runs against n other unchanged
runs (disjoint, seeded random subsets) and 20 of n unchanged against n slowed runs, each through
``perfsuite.gate.verdict.compare_runs`` with the default settings, exactly as ``perfsuite compare``
decides. Counted: whole-gate FAILs, and per row how often it was called regressed. Comparisons share
runs, so they are not independent draws.

This file is also the pytest plugin that makes the slowed variant (``-p gate_drill`` with this
folder on PYTHONPATH, option ``--drill-slowdown``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("base", "slowed")
LARGE_BATCH = 64  # batch sizes from here on are device-bound on a GPU
DEFAULT_SLOWDOWN = {"small": 0.10, "large": 0.05}


# -- the pytest plugin: the slowed variant ------------------------------------------------------------


class ExtraWork:
    """An in-place elementwise pass over a buffer on ``device`` after each inference: real device work
    (memory-bound, one cheap launch, so little host work is added) whose time grows with ``elements``."""

    def __init__(self, device: str, elements: int) -> None:
        import torch

        self.elements = elements
        self.buffer = torch.rand(elements, generator=torch.Generator().manual_seed(1)).to(device)

    def run(self) -> None:
        self.buffer.mul_(1.0)


def _per_call_ratio(plain, slowed, device: str, seconds: float = 0.6) -> tuple[float, float]:
    """(median seconds per call of ``plain``, median of ``slowed`` / that), timed as perfsuite.measure does
    (calls per round, one synchronize per round), rounds of the two alternating."""
    from perfsuite.measure import calls_per_round, synchronized_every
    from perfsuite.timing import time_once, timer_overhead

    for _ in range(3):
        time_once(plain, device)
        time_once(slowed, device)
    estimate = statistics.median(time_once(plain, device)[0] for _ in range(5))
    calls = calls_per_round(estimate, timer_overhead(device))
    rounds = max(5, min(400, int(seconds / (2 * calls * estimate))))  # slow CPU rows: a few rounds
    timed = {"plain": synchronized_every(plain, device, calls), "slowed": synchronized_every(slowed, device, calls)}
    samples: dict[str, list[float]] = {"plain": [], "slowed": []}
    for _ in range(rounds):
        for name, fn in timed.items():
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - started) / calls)
    plain_s = statistics.median(samples["plain"])
    return plain_s, statistics.median(samples["slowed"]) / plain_s


def slow_down(runner: Any, images: Any, fraction: float, elements: int | None = None) -> dict[str, Any]:
    """Make ``runner.infer`` do extra device work worth ``fraction`` of its per-call time: with ``elements``
    given, a buffer of that size; else calibrated here, closed-loop on the per-call time (the work can
    overlap the next call's host work, so its own duration is only the first guess)."""
    from perfsuite.images import tile_batch
    from perfsuite.timing import time_once

    device = runner.spec.device
    infer = runner.infer
    prepared = runner.prepare(tile_batch(images, runner.spec.batch_size))
    state: dict[str, Any] = {}

    def slowed_infer(x: Any) -> Any:
        output = infer(x)
        state["extra"].run()
        return output

    best = None
    if elements is None:
        plain_s, _ = _per_call_ratio(lambda: infer(prepared), lambda: infer(prepared), device, seconds=0.2)
        probe = ExtraWork(device, 1 << 24)
        for _ in range(3):
            time_once(probe.run, device)
        per_element = statistics.median(time_once(probe.run, device)[0] for _ in range(10)) / probe.elements
        elements = int(fraction * plain_s / per_element)
        for _ in range(5):
            state["extra"] = ExtraWork(device, elements)
            plain_s, ratio = _per_call_ratio(lambda: infer(prepared), lambda: slowed_infer(prepared), device)
            if best is None or abs(ratio - 1 - fraction) < abs(best["calibrated_effect"] - fraction):
                best = {"elements": elements, "calibrated_effect": ratio - 1, "plain_per_call_s": plain_s}
            if abs(ratio - 1 - fraction) < 0.1 * fraction:
                break
            scale = fraction / (ratio - 1) if ratio - 1 > 0.002 else 4.0
            elements = max(1024, int(elements * min(max(scale, 0.25), 4.0)))
        elements = best["elements"]
    state["extra"] = ExtraWork(device, elements)
    runner.infer = slowed_infer
    return {"fraction": fraction, "elements": elements, **(best or {"calibrated_effect": None})}


def pytest_addoption(parser) -> None:
    parser.addoption("--drill-slowdown", default=None, metavar="SMALL,LARGE",
                     help="gate drill: extra device work per inference, as fractions of the per-call time "
                          f"below and from batch {LARGE_BATCH} (e.g. 0.10,0.05)")
    parser.addoption("--drill-calibration", default=None, metavar="FILE",
                     help="gate drill: extra work per row (elements); calibrated and written by the first slowed run, "
                          "reused by the later ones")


def pytest_configure(config) -> None:
    option = config.getoption("--drill-slowdown")
    config._gate_drill = {"variant": "slowed" if option else "base", "rows": {}}
    if not option:
        return
    small, large = (float(v) for v in option.split(","))
    calibration_file = Path(config.getoption("--drill-calibration") or os.devnull)
    sizes = json.loads(calibration_file.read_text()) if calibration_file.is_file() else {}
    import perfsuite.plugin

    original_get = perfsuite.plugin.RunnerPool.get

    def get(pool, case):
        pooled = original_get(pool, case)
        runner = pooled.runner
        if not getattr(runner, "_drill_slowed", False):
            fraction = large if runner.spec.batch_size >= LARGE_BATCH else small
            key = f"{case.backend}-{runner.spec.label}"
            config._gate_drill["rows"][key] = slow_down(runner, pool.images, fraction, sizes.get(key))
            runner._drill_slowed = True
        return pooled

    perfsuite.plugin.RunnerPool.get = get


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    output_json["gate_drill"] = dict(config._gate_drill)
    calibration_file = config.getoption("--drill-calibration")
    if calibration_file and config._gate_drill["rows"] and not Path(calibration_file).exists():
        Path(calibration_file).write_text(json.dumps(
            {key: row["elements"] for key, row in config._gate_drill["rows"].items()}, indent=2))


# -- recording ------------------------------------------------------------------------------------------


def record(folder: Path, runs: int, pytest_args: list[str], slowdown: dict[str, float], start: int = 1) -> None:
    from perfsuite.gate.record import record_runs

    runs_dir = folder / "runs"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")]))}
    arguments = ["benchmarks", *pytest_args, "-p", "gate_drill"]
    log_file = folder / "record.json"
    log = json.loads(log_file.read_text())["runs"] if start > 1 and log_file.exists() else []
    for index in range(start, start + runs):
        for variant in VARIANTS:
            extra = ["--drill-slowdown", f"{slowdown['small']},{slowdown['large']}",
                     "--drill-calibration", str(folder / "calibration.json")] if variant == "slowed" else []
            started = time.perf_counter()
            (recorded,) = record_runs(1, runs_dir, [*arguments, *extra], env=env, prefix=variant, first_index=index)
            log.append({"run": recorded.path.name, "exit_code": recorded.exit_code,
                        "wall_s": round(time.perf_counter() - started, 2)})
            done, total = (index - start) * len(VARIANTS) + VARIANTS.index(variant) + 1, runs * len(VARIANTS)
            spent = sum(entry["wall_s"] for entry in log[-done:])
            print(f"gate drill: [{done}/{total}] {recorded.path.name} in {log[-1]['wall_s']} s (exit "
                  f"{recorded.exit_code}); about {spent / done * (total - done):.0f} s left", flush=True)
    log_file.write_text(json.dumps({
        "command": f"python scripts/gate_drill.py record DIR --runs {start + runs - 1} -- {' '.join(pytest_args)}",
        "pytest_arguments": arguments, "slowdown": slowdown, "runs": log,
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }, indent=2))


# -- analysis -------------------------------------------------------------------------------------------


def _gate(baseline: list, new: list, settings: Any) -> dict[str, Any]:
    from perfsuite.gate.verdict import FAILING, compare_runs

    result = compare_runs(baseline, new, settings)
    return {"failed": result.failed, "exit_code": result.exit_code, "outcome": result.outcome,
            # the slowed variant's extra buffer is a real memory growth too: count time verdicts apart
            "failed_on_time": any(c.verdict in FAILING for c in result.comparisons),
            "memory_regressed": any(m.verdict.value == "regressed" for c in result.comparisons for m in c.memory),
            "verdicts": {c.key: c.verdict.value for c in result.comparisons},
            "mde": {c.key: c.time.mde if c.time else None for c in result.comparisons}}


def _cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else None


def row_facts(runs: dict[str, list], key: str) -> dict[str, Any]:
    """Per-run medians, run-to-run spread raw and at equal host speed, and the realized effect of the slowdown
    (the gate's own test over all unchanged against all slowed runs)."""
    from perfsuite.gate.verdict import baseline_spread, t_test

    def values(variant: str) -> tuple[list[float], list[float] | None]:
        records = [run.benchmarks[key] for run in runs[variant] if key in run.benchmarks]
        probes = [record.host_probe_s for record in records]
        return [record.median_s for record in records], None if None in probes else probes

    (base, base_probe), (slowed, slowed_probe) = values("base"), values("slowed")
    test = t_test(base, slowed, base_probe, slowed_probe) if slowed and base_probe and slowed_probe else None
    sample = next(run.benchmarks[key] for run in runs["base"] if key in run.benchmarks)
    return {"kind": sample.kind, "batch_size": sample.extra_info.get("batch_size"),
            "base_median_s": statistics.median(base) if base else None,
            "run_to_run_cv": _cv(base), "run_to_run_spread_adjusted": baseline_spread(base, base_probe),
            "realized_effect": statistics.median(slowed) / statistics.median(base) - 1 if base and slowed else None,
            "realized_effect_adjusted": math.expm1(test.shift) if test else None,
            "probe_slope": test.slope if test else None,
            "calls_per_round": (sample.extra_info.get("timing") or {}).get("calls_per_round"),
            "timer_overhead_fraction": (sample.extra_info.get("timing") or {}).get("timer_overhead_fraction")}


def analyze(folder: Path, sides: list[int], comparisons: int, seed: int) -> dict[str, Any]:
    from perfsuite.config import load_suite_config
    from perfsuite.gate.runs import load_run
    from perfsuite.gate.settings import settings_from_config

    settings = settings_from_config(load_suite_config(ROOT / "pyproject.toml"))
    runs = {v: [load_run(p) for p in sorted((folder / "runs").glob(f"{v}-*.json"))] for v in VARIANTS}
    keys = list(dict.fromkeys(k for run in runs["base"] for k in run.benchmarks))
    summary: dict[str, Any] = {
        "settings": settings.as_dict(), "runs": {v: len(runs[v]) for v in VARIANTS},
        "rows": {key: row_facts(runs, key) for key in keys},
        "slowdown_calibration": [run.data.get("gate_drill", {}).get("rows") for run in runs["slowed"]],
        "by_runs_per_side": {},
    }
    for n in sides:
        if 2 * n > len(runs["base"]) or n > len(runs["slowed"]):
            continue
        rng = random.Random(seed * 1000 + n)
        unchanged, changed = [], []
        for _ in range(comparisons):
            picked = rng.sample(runs["base"], 2 * n)
            unchanged.append(_gate(picked[:n], picked[n:], settings))
            changed.append(_gate(rng.sample(runs["base"], n), rng.sample(runs["slowed"], n), settings))
        summary["by_runs_per_side"][n] = {
            "comparisons": comparisons,
            "unchanged_gate_failures": sum(c["failed"] for c in unchanged),
            "changed_gate_failures": sum(c["failed"] for c in changed),
            "unchanged_outcomes": {o: sum(c["outcome"] == o for c in unchanged) for o in ("pass", "undecided", "fail")},
            "changed_gate_failures_on_time": sum(c["failed_on_time"] for c in changed),
            "changed_memory_regressed": sum(c["memory_regressed"] for c in changed),
            "rows": {key: {
                "unchanged_regressed": sum(c["verdicts"].get(key) == "regressed" for c in unchanged),
                "changed_regressed": sum(c["verdicts"].get(key) == "regressed" for c in changed),
                "changed_verdicts": dict(sorted({v: sum(c["verdicts"].get(key) == v for c in changed)
                                                 for v in {c["verdicts"].get(key) for c in changed}}.items(),
                                                key=lambda item: -item[1])),
                "mde": statistics.median(m) if (m := [c["mde"][key] for c in changed
                                                      if c["mde"].get(key) is not None]) else None,
            } for key in keys},
        }
    record_log = json.loads((folder / "record.json").read_text()) if (folder / "record.json").exists() else {}
    walls = [entry["wall_s"] for entry in record_log.get("runs", [])]
    summary["record"] = {**{k: v for k, v in record_log.items() if k != "runs"},
                         "median_run_s": statistics.median(walls) if walls else None,
                         "exit_codes": sorted({entry["exit_code"] for entry in record_log.get("runs", [])})}
    summary["machine"] = runs["base"][0].machine_info.get("perfsuite", {}) if runs["base"] else {}
    summary["date"] = runs["base"][0].datetime if runs["base"] else None
    return summary


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.{digits}%}"


def _plain_pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def markdown(summary: dict[str, Any], folder: Path) -> str:
    machine = summary["machine"]
    record_info = summary["record"]
    lines = [
        f"# Gate drill: {machine.get('gpu_name') or machine.get('cpu_model')}",
        "",
        f"Generated by `python scripts/gate_drill.py analyze {folder.as_posix()}` from the runs in `runs/`.",
        "",
        f"- Date: {summary['date']}; device: {machine.get('device')}; GPU: {machine.get('gpu_name', '–')}; "
        f"driver: {machine.get('driver', '–')}; CPU: {machine.get('cpu_model')} ({machine.get('cpu_count')} "
        f"logical); torch {machine.get('torch')}, CUDA {machine.get('cuda')}, cuDNN {machine.get('cudnn')}, "
        f"Python {machine.get('python')}; TF32 {machine.get('tf32')}",
        f"- Recorded with: `{record_info.get('command', '?')}`; {summary['runs']['base']} unchanged and "
        f"{summary['runs']['slowed']} slowed fresh-process runs, alternating; median wall time per run "
        f"{record_info.get('median_run_s') or 0:.1f} s; pytest exit codes {record_info.get('exit_codes')}",
        f"- Slowdown: extra device work after each inference, calibrated per row to "
        f"{record_info.get('slowdown', DEFAULT_SLOWDOWN)} (small batch below {LARGE_BATCH}, large from it)",
        f"- Gate settings (defaults): `{json.dumps(summary['settings'], sort_keys=True)}`",
        "",
        "## Whole gate",
        "",
        "| runs per side | unchanged vs unchanged: FAIL / UNDECIDED / PASS | unchanged vs slowed: FAIL on a "
        "latency row | (FAIL with memory: the slowed variant's buffer) |",
        "|---|---|---|---|",
    ]
    for n, cell in summary["by_runs_per_side"].items():
        outcomes = cell["unchanged_outcomes"]
        lines.append(f"| {n} | {outcomes['fail']} / {outcomes['undecided']} / {outcomes['pass']} of "
                     f"{cell['comparisons']} | {cell['changed_gate_failures_on_time']} of {cell['comparisons']} | "
                     f"{cell['changed_gate_failures']} of {cell['comparisons']} |")
    sides = list(summary["by_runs_per_side"])
    lines += ["", "## Per row", "",
              "Spread: run-to-run, of the unchanged runs' per-run medians (raw CV; and the residual SD at equal "
              "host speed, as the gate tests them). Realized: the slowdown over all unchanged and slowed runs, of "
              "the medians and at equal host speed (the gate's estimate; slope: d log time / d log probe). "
              "Cells: unchanged comparisons called regressed / slowed comparisons called regressed (of each n's "
              "comparisons), "
              "and the row's minimum detectable effect (median over the comparisons).", "",
              "| row | median | calls/round | spread raw | spread adjusted | realized raw | realized adjusted "
              "(slope) | " + " | ".join(f"{n}+{n}: false / detected, MDE" for n in sides) + " |",
              "|---|---|---|---|---|---|---|" + "---|" * len(sides)]
    for key, row in summary["rows"].items():
        cells = []
        for n in sides:
            cell = summary["by_runs_per_side"][n]["rows"][key]
            cells.append(f"{cell['unchanged_regressed']} / {cell['changed_regressed']}, "
                         f"{_plain_pct(cell['mde'], 0) if cell['mde'] is not None else '–'}")
        median = row["base_median_s"]
        slope = f" ({row['probe_slope']:.2f})" if row["probe_slope"] is not None else ""
        lines.append(f"| `{key.split('::')[-1]}` | {median * 1e3:.3f} ms | {row['calls_per_round'] or '–'} | "
                     f"{_plain_pct(row['run_to_run_cv'])} | {_plain_pct(row['run_to_run_spread_adjusted'])} | "
                     f"{_pct(row['realized_effect'])} | {_pct(row['realized_effect_adjusted'])}{slope} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    rec = actions.add_parser("record")
    rec.add_argument("folder", type=Path)
    rec.add_argument("--runs", type=int, default=10, help="runs of each variant (default 10)")
    rec.add_argument("--start", type=int, default=1, help="number of the first run (to add runs to a drill)")
    rec.add_argument("--slowdown", default=f"{DEFAULT_SLOWDOWN['small']},{DEFAULT_SLOWDOWN['large']}",
                     help=f"SMALL,LARGE fractions: below and from batch {LARGE_BATCH}")
    ana = actions.add_parser("analyze")
    ana.add_argument("folder", type=Path)
    ana.add_argument("--runs-per-side", default="1,3,5")
    ana.add_argument("--comparisons", type=int, default=20)
    ana.add_argument("--seed", type=int, default=1)
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    sys.path.insert(0, str(ROOT))
    if args.action == "record":
        small, large = (float(v) for v in args.slowdown.split(","))
        record(args.folder, args.runs, pytest_args, {"small": small, "large": large}, args.start)
        return 0
    summary = analyze(args.folder, [int(n) for n in args.runs_per_side.split(",")], args.comparisons, args.seed)
    (args.folder / "drill.json").write_text(json.dumps(summary, indent=2, default=str))
    (args.folder / "drill.md").write_text(markdown(summary, args.folder))
    print((args.folder / "drill.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
