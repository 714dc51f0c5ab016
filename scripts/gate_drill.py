"""The gate drill: does ``perfsuite compare`` stay quiet on unchanged code and catch a real slowdown?

    python scripts/gate_drill.py record DIR --runs 10 [-- PYTEST ARGS]   # 10 unchanged, device- and host-slowed runs
    python scripts/gate_drill.py analyze DIR --runs-per-side 3,5         # writes DIR/drill.md, DIR/drill.json

**Record.** ``3 x --runs`` fresh ``pytest benchmarks`` processes (the default tier; extra pytest
arguments after ``--``), interleaved unchanged (``base-NN.json``), device-slowed (``slowed-NN.json``)
and host-slowed (``host-slowed-NN.json``), so that whatever the machine does over time falls on all
alike; ``--variants`` picks fewer, ``--start`` adds runs to a drill (recording in chunks). Each run is
pytest-benchmark JSON exactly as ``perfsuite baseline record`` writes it; the log (``record.json``)
is rewritten after every run.

**Device-slowed: real extra work on the device, not a sleep.** Every runner's inference is followed
by one in-place elementwise pass over a buffer on its device (memory-bound work behind one cheap
launch: device time, little host time). The first slowed run sizes the buffer per row, closed-loop,
until the row's device time per call (held-stream blocks, ``perfsuite.device_time``) grows by the
fraction, +5% at every batch size; rows without device time (the CPU, ONNX Runtime) are sized on the
per-call latency as ``perfsuite.measure`` times it. Later slowed runs reuse the sizes
(``calibration.json``).

**Host-slowed: real extra work on the host.** Every inference is preceded by a busy loop of the
thread's own CPU time (``time.thread_time``, not a sleep) worth the fraction (+5%) of the row's host
time per call, measured first by the same held blocks (on the CPU, where the host does all the
work, of the row's latency); sizes in ``host-calibration.json``.

Outputs are unchanged in both. Each run saves its calibration (``gate_drill`` in the JSON), and the
analysis measures the realized effect per figure over all runs. Model-load and cold-start rows are
not slowed: in the slowed comparisons they are unchanged rows.

**Analyze.** For each runs-per-side n: 20 comparisons of n unchanged runs against n other unchanged
runs (disjoint, seeded random subsets), 20 of n unchanged against n device-slowed runs and 20 against
n host-slowed runs, each through ``perfsuite.gate.verdict.compare_runs`` with the default settings,
exactly as ``perfsuite compare`` decides. Counted: whole-gate FAILs, and per row and per figure
(latency, device time, host time, as the gate reports them) how often it was called regressed, and
its MDE. Comparisons share runs, so they are not independent draws.

This file is also the pytest plugin that makes the slowed variants (``-p gate_drill`` with this
folder on PYTHONPATH, options ``--drill-slowdown`` and ``--drill-host-slowdown``).
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
VARIANTS = ("base", "slowed", "host-slowed")
DEFAULT_SLOWDOWN = 0.05  # of the device time per call, at every batch size
DEFAULT_HOST_SLOWDOWN = 0.05  # of the host time per call
CALIBRATION_FILES = {"slowed": "calibration.json", "host-slowed": "host-calibration.json"}
#: the figures of a row, as the analysis names them, and where a run's row keeps each
FIGURES = ("latency", "device_time", "host_time")


# -- the pytest plugin: the slowed variants -----------------------------------------------------------


class ExtraWork:
    """An in-place elementwise pass over a buffer on ``device`` after each inference: real device work
    (memory-bound, one cheap launch, so little host work is added) whose time grows with ``elements``."""

    def __init__(self, device: str, elements: int) -> None:
        import torch

        self.elements = elements
        self.buffer = torch.rand(elements, generator=torch.Generator().manual_seed(1)).to(device)

    def run(self) -> None:
        self.buffer.mul_(1.0)


def busy_host(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time in a loop: host work, not a wait."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


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


def _held_figures(call, device: str, latency_s: float, cannot_hold: str | None) -> tuple[dict, dict]:
    from perfsuite.device_time import device_and_host_time

    return device_and_host_time(call, device, latency_s, 0.3, cannot_hold)


def _plain_figure(call, device: str, cannot_hold: str | None, figure: str) -> tuple[float, str]:
    """(per call, which figure): ``figure`` ("device_time" or "host_time") of ``call`` from held blocks where
    the row has it, else its latency as perfsuite.measure times it."""
    latency_s, _ = _per_call_ratio(call, call, device, seconds=0.1)
    fields = dict(zip(("device_time", "host_time"), _held_figures(call, device, latency_s, cannot_hold)))
    return (fields[figure]["median_s"], figure) if fields[figure]["available"] else (latency_s, "latency")


def _figure_ratio(plain, slowed, device: str, cannot_hold: str | None, figure: str) -> tuple[float, float, str]:
    """(plain per call, slowed / plain, which figure), of ``figure`` where the row has it (see _plain_figure)."""
    plain_s, measured = _plain_figure(plain, device, cannot_hold, figure)
    if measured == figure:
        slowed_s, slowed_measured = _plain_figure(slowed, device, cannot_hold, figure)
        if slowed_measured == figure:
            return plain_s, slowed_s / plain_s, figure
    plain_s, ratio = _per_call_ratio(plain, slowed, device)
    return plain_s, ratio, "latency"


def slow_down(runner: Any, images: Any, fraction: float, elements: int | None = None) -> dict[str, Any]:
    """Make ``runner.infer`` do extra device work worth ``fraction`` of its device time per call (of its latency
    where device time is unavailable): with ``elements`` given, a buffer of that size; else calibrated here,
    closed-loop on that figure."""
    from perfsuite.images import tile_batch
    from perfsuite.timing import time_once

    device = runner.spec.device
    infer = runner.infer
    cannot_hold = runner.device_time_unavailable
    prepared = runner.prepare(tile_batch(images, runner.spec.batch_size))
    state: dict[str, Any] = {}

    def slowed_infer(x: Any) -> Any:
        output = infer(x)
        state["extra"].run()
        return output

    best = None
    if elements is None:
        probe = ExtraWork(device, 1 << 24)
        for _ in range(3):
            time_once(probe.run, device)
        per_element = statistics.median(time_once(probe.run, device)[0] for _ in range(10)) / probe.elements
        plain_s, _ = _plain_figure(lambda: infer(prepared), device, cannot_hold, "device_time")
        elements = max(1024, int(fraction * plain_s / per_element))
        for _ in range(5):
            state["extra"] = ExtraWork(device, elements)
            plain_s, ratio, figure = _figure_ratio(lambda: infer(prepared), lambda: slowed_infer(prepared), device,
                                                   cannot_hold, "device_time")
            if best is None or abs(ratio - 1 - fraction) < abs(best["calibrated_effect"] - fraction):
                best = {"elements": elements, "calibrated_effect": ratio - 1, "plain_per_call_s": plain_s,
                        "calibrated_on": figure}
            if abs(ratio - 1 - fraction) < 0.1 * fraction:
                break
            scale = fraction / (ratio - 1) if ratio - 1 > 0.002 else 4.0
            elements = max(1024, int(elements * min(max(scale, 0.25), 4.0)))
        elements = best["elements"]
    state["extra"] = ExtraWork(device, elements)
    runner.infer = slowed_infer
    return {"fraction": fraction, "elements": elements, **(best or {"calibrated_effect": None})}


def slow_host(runner: Any, images: Any, fraction: float, busy_s: float | None = None) -> dict[str, Any]:
    """Make ``runner.infer`` do a host busy loop worth ``fraction`` of its host time per call first (of its
    latency on the CPU, where the host does all the work): ``busy_s`` given, or measured here."""
    from perfsuite.environment import is_cuda
    from perfsuite.images import tile_batch

    device = runner.spec.device
    infer = runner.infer
    facts: dict[str, Any] = {}
    if busy_s is None:
        prepared = runner.prepare(tile_batch(images, runner.spec.batch_size))
        host_s, basis = _plain_figure(lambda: infer(prepared), device, runner.device_time_unavailable, "host_time")
        if basis == "latency" and is_cuda(device):
            basis = "latency (no host time for this row)"
        busy_s = fraction * host_s
        facts = {"plain_per_call_s": host_s, "calibrated_on": basis}

    def slowed_infer(x: Any) -> Any:
        busy_host(busy_s)
        return infer(x)

    runner.infer = slowed_infer
    return {"fraction": fraction, "busy_s": busy_s, **facts}


def pytest_addoption(parser) -> None:
    parser.addoption("--drill-slowdown", default=None, type=float, metavar="FRACTION",
                     help="gate drill: extra device work per inference, as a fraction of its device time (e.g. 0.05)")
    parser.addoption("--drill-host-slowdown", default=None, type=float, metavar="FRACTION",
                     help="gate drill: a host busy loop before each inference, as a fraction of its host time")
    parser.addoption("--drill-calibration", default=None, metavar="FILE",
                     help="gate drill: the extra work per row; calibrated and written by the first slowed run of "
                          "the variant, reused by the later ones")


def _calibration(path: Path, field: str) -> dict[str, Any]:
    sizes = json.loads(path.read_text()) if path.is_file() else {}
    # drills recorded before the host variant stored elements as plain numbers
    return {key: value[field] if isinstance(value, dict) else value for key, value in sizes.items()}


def pytest_configure(config) -> None:
    device_fraction = config.getoption("--drill-slowdown")
    host_fraction = config.getoption("--drill-host-slowdown")
    variant = "slowed" if device_fraction else "host-slowed" if host_fraction else "base"
    config._gate_drill = {"variant": variant, "rows": {}}
    if variant == "base":
        return
    if device_fraction and host_fraction:
        import pytest

        raise pytest.UsageError("gate drill: --drill-slowdown and --drill-host-slowdown are separate variants; "
                                "give one")
    calibration_file = Path(config.getoption("--drill-calibration") or os.devnull)
    field = "elements" if variant == "slowed" else "busy_s"
    sizes = _calibration(calibration_file, field)
    import perfsuite.plugin

    original_get = perfsuite.plugin.RunnerPool.get

    def get(pool, case):
        pooled = original_get(pool, case)
        runner = pooled.runner
        if not getattr(runner, "_drill_slowed", False):
            key = f"{case.backend}-{runner.spec.label}"
            if variant == "slowed":
                config._gate_drill["rows"][key] = slow_down(runner, pool.images, device_fraction, sizes.get(key))
            else:
                config._gate_drill["rows"][key] = slow_host(runner, pool.images, host_fraction, sizes.get(key))
            runner._drill_slowed = True
        return pooled

    perfsuite.plugin.RunnerPool.get = get


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    output_json["gate_drill"] = dict(config._gate_drill)
    calibration_file = config.getoption("--drill-calibration")
    if calibration_file and config._gate_drill["rows"] and not Path(calibration_file).exists():
        field = "elements" if config._gate_drill["variant"] == "slowed" else "busy_s"
        Path(calibration_file).write_text(json.dumps(
            {key: {field: row[field]} for key, row in config._gate_drill["rows"].items()}, indent=2))


# -- recording ------------------------------------------------------------------------------------------


def _variant_arguments(variant: str, folder: Path, slowdown: dict[str, float]) -> list[str]:
    if variant == "base":
        return []
    option = "--drill-slowdown" if variant == "slowed" else "--drill-host-slowdown"
    return [option, str(slowdown[variant]), "--drill-calibration", str(folder / CALIBRATION_FILES[variant])]


def record(folder: Path, runs: int, pytest_args: list[str], slowdown: dict[str, float], start: int = 1,
           variants: tuple[str, ...] = VARIANTS) -> None:
    """``runs`` runs of each of ``variants``, interleaved, numbered from ``start``; the log is rewritten after
    every run, so a drill recorded in chunks (a machine that may go away between them) keeps every run."""
    from perfsuite.gate.record import record_runs

    runs_dir = folder / "runs"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")]))}
    arguments = ["benchmarks", *pytest_args, "-p", "gate_drill"]
    log_file = folder / "record.json"
    log = json.loads(log_file.read_text())["runs"] if log_file.exists() else []
    for index in range(start, start + runs):
        for variant in variants:
            started = time.perf_counter()
            (recorded,) = record_runs(1, runs_dir, [*arguments, *_variant_arguments(variant, folder, slowdown)],
                                      env=env, prefix=variant, first_index=index)
            log = [entry for entry in log if entry["run"] != recorded.path.name]
            log.append({"run": recorded.path.name, "exit_code": recorded.exit_code,
                        "wall_s": round(time.perf_counter() - started, 2)})
            done, total = (index - start) * len(variants) + variants.index(variant) + 1, runs * len(variants)
            spent = sum(entry["wall_s"] for entry in log[-done:])
            print(f"gate drill: [{done}/{total}] {recorded.path.name} in {log[-1]['wall_s']} s (exit "
                  f"{recorded.exit_code}); about {spent / done * (total - done):.0f} s left", flush=True)
            log_file.write_text(json.dumps({
                "command": f"python scripts/gate_drill.py record DIR --runs N -- {' '.join(pytest_args)}",
                "pytest_arguments": arguments, "slowdown": slowdown, "runs": log,
                "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }, indent=2))


# -- analysis -------------------------------------------------------------------------------------------


def figure_results(comparison: Any) -> dict[str, dict[str, Any]]:
    """Per figure of one row's comparison: {"verdict", "effect", "mde"}. The gate exposes its figures as
    ``comparison.figures`` (name -> object with ``.verdict`` and ``.time``); a gate that judges only the
    latency has ``comparison.verdict`` and ``comparison.time``."""
    figures = getattr(comparison, "figures", None)
    if not figures:
        figures = {"latency": comparison}
    results = {}
    for name, figure in figures.items():
        time_test = getattr(figure, "time", None)
        verdict = getattr(figure, "verdict", None)
        results[name] = {"verdict": getattr(verdict, "value", verdict),
                         "effect": getattr(time_test, "effect", None), "mde": getattr(time_test, "mde", None)}
    return results


def _gate(baseline: list, new: list, settings: Any) -> dict[str, Any]:
    from perfsuite.gate.verdict import FAILING, compare_runs

    result = compare_runs(baseline, new, settings)
    return {"failed": result.failed, "exit_code": result.exit_code, "outcome": result.outcome,
            # the device-slowed variant's extra buffer is a real memory growth too: count time verdicts apart
            "failed_on_time": any(c.verdict in FAILING for c in result.comparisons),
            "memory_regressed": any(m.verdict.value == "regressed" for c in result.comparisons for m in c.memory),
            "figures": {c.key: figure_results(c) for c in result.comparisons}}


def _cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else None


def figure_value(record: Any, figure: str) -> float | None:
    """A run's value of one figure of a row: the stored median latency, or the held-stream figure's median."""
    return record.median_s if figure == "latency" else record.timing_figure(figure)[0]  # the gate's own reader


def row_facts(runs: dict[str, list], key: str) -> dict[str, Any]:
    """Per figure: per-run medians' run-to-run CV and the realized effect of each slowdown (median of the
    slowed runs' values / the unchanged runs' - 1); for the latency also the spread and effect at equal host
    speed, as the gate tests it."""
    from perfsuite.gate.verdict import baseline_spread, t_test

    def records(variant: str) -> list[Any]:
        return [run.benchmarks[key] for run in runs.get(variant, []) if key in run.benchmarks]

    base_records = records("base")
    sample = base_records[0]
    facts: dict[str, Any] = {"kind": sample.kind, "batch_size": sample.extra_info.get("batch_size"),
                             "calls_per_round": (sample.extra_info.get("timing") or {}).get("calls_per_round"),
                             "figures": {}}
    for figure in FIGURES:
        base = [v for r in base_records if (v := figure_value(r, figure)) is not None]
        cell: dict[str, Any] = {"base_median_s": statistics.median(base) if base else None,
                                "run_to_run_cv": _cv(base) if len(base) == len(base_records) else None}
        for variant in VARIANTS[1:]:
            changed = [v for r in records(variant) if (v := figure_value(r, figure)) is not None]
            cell[f"realized_{variant}"] = statistics.median(changed) / statistics.median(base) - 1 \
                if base and changed else None
        facts["figures"][figure] = cell
    latency = facts["figures"]["latency"]
    base_probe = [r.host_probe_s for r in base_records]
    if None not in base_probe:
        latency["run_to_run_spread_adjusted"] = baseline_spread([r.median_s for r in base_records], base_probe)
        slowed = records("slowed")
        slowed_probe = [r.host_probe_s for r in slowed]
        if slowed and None not in slowed_probe:
            test = t_test([r.median_s for r in base_records], [r.median_s for r in slowed], base_probe, slowed_probe)
            latency["realized_slowed_adjusted"] = math.expm1(test.shift) if test else None
    return facts


def _count_rows(comparisons: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, Any]]:
    """Per row and figure: how many of ``comparisons`` called it regressed, and its median MDE."""
    rows: dict[str, dict[str, Any]] = {}
    for key in keys:
        names = list(dict.fromkeys(name for c in comparisons for name in c["figures"].get(key, {})))
        rows[key] = {}
        for name in names:
            cells = [c["figures"].get(key, {}).get(name) for c in comparisons]
            cells = [cell for cell in cells if cell is not None]
            mdes = [cell["mde"] for cell in cells if cell["mde"] is not None]
            verdicts = [cell["verdict"] for cell in cells]
            rows[key][name] = {"regressed": verdicts.count("regressed"), "compared": len(cells),
                               "verdicts": dict(sorted({v: verdicts.count(v) for v in set(verdicts)}.items(),
                                                       key=lambda item: -item[1])),
                               "mde": statistics.median(mdes) if mdes else None}
    return rows


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
        "calibration": {v: [run.data.get("gate_drill", {}).get("rows") for run in runs[v]] for v in VARIANTS[1:]},
        "by_runs_per_side": {},
    }
    for n in sides:
        if 2 * n > len(runs["base"]):
            continue
        rng = random.Random(seed * 1000 + n)
        drawn: dict[str, list[dict[str, Any]]] = {"unchanged": []}
        for _ in range(comparisons):
            picked = rng.sample(runs["base"], 2 * n)
            drawn["unchanged"].append(_gate(picked[:n], picked[n:], settings))
            for variant in VARIANTS[1:]:
                if len(runs[variant]) >= n:
                    drawn.setdefault(variant, []).append(
                        _gate(rng.sample(runs["base"], n), rng.sample(runs[variant], n), settings))
        summary["by_runs_per_side"][n] = {
            "comparisons": comparisons,
            **{name: {"gate_failures": sum(c["failed"] for c in done),
                      "gate_failures_on_time": sum(c["failed_on_time"] for c in done),
                      "memory_regressed": sum(c["memory_regressed"] for c in done),
                      "outcomes": {o: sum(c["outcome"] == o for c in done) for o in ("pass", "undecided", "fail")},
                      "rows": _count_rows(done, keys)}
               for name, done in drawn.items()},
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
    counts = summary["runs"]
    lines = [
        f"# Gate drill: {machine.get('gpu_name') or machine.get('cpu_model')}",
        "",
        f"Generated by `python scripts/gate_drill.py analyze {folder.as_posix()}` from the runs in `runs/`.",
        "",
        f"- Date: {summary['date']}; device: {machine.get('device')}; GPU: {machine.get('gpu_name', '–')}; "
        f"driver: {machine.get('driver', '–')}; CPU: {machine.get('cpu_model')} ({machine.get('cpu_count')} "
        f"logical); torch {machine.get('torch')}, CUDA {machine.get('cuda')}, cuDNN {machine.get('cudnn')}, "
        f"Python {machine.get('python')}; TF32 {machine.get('tf32')}",
        f"- Recorded with: `{record_info.get('command', '?')}`; {counts['base']} unchanged, {counts['slowed']} "
        f"device-slowed and {counts['host-slowed']} host-slowed fresh-process runs, interleaved; median wall "
        f"time per run {record_info.get('median_run_s') or 0:.1f} s; pytest exit codes {record_info.get('exit_codes')}",
        f"- Slowdowns: {record_info.get('slowdown')} (device: extra device work after each inference, calibrated "
        f"per row on its device time; host: a thread-CPU busy loop before each inference, of the row's host time)",
        f"- Gate settings (defaults): `{json.dumps(summary['settings'], sort_keys=True)}`",
        "",
        "## Whole gate",
        "",
        "| runs per side | unchanged vs unchanged: FAIL / UNDECIDED / PASS | vs device-slowed: FAIL on time "
        "(FAIL at all) | vs host-slowed: FAIL on time (FAIL at all) |",
        "|---|---|---|---|",
    ]
    for n, cell in summary["by_runs_per_side"].items():
        outcomes = cell["unchanged"]["outcomes"]
        slowed = [f"{cell[v]['gate_failures_on_time']} ({cell[v]['gate_failures']}) of {cell['comparisons']}"
                  if v in cell else "–" for v in VARIANTS[1:]]
        lines.append(f"| {n} | {outcomes['fail']} / {outcomes['undecided']} / {outcomes['pass']} of "
                     f"{cell['comparisons']} | {' | '.join(slowed)} |")
    device_cvs = {key.split("::")[-1]: row["figures"]["device_time"]["run_to_run_cv"]
                  for key, row in summary["rows"].items() if row["kind"] == "latency"}
    measured = {k: v for k, v in device_cvs.items() if v is not None}
    if measured:
        worst = max(measured, key=measured.get)
        missing = sorted(set(device_cvs) - set(measured))
        lines += ["", f"Device time, run-to-run CV of the unchanged runs' per-run medians: largest "
                      f"{measured[worst]:.2%} (`{worst}`); {sum(v <= 0.015 for v in measured.values())} of "
                      f"{len(device_cvs)} latency rows at or below 1.5%"
                      + (f"; without device time: {', '.join(missing)}" if missing else "")]
    lines += ["", "## Per row and figure", "",
              "Per figure: the base runs' median; run-to-run CV of the per-run values; the realized effect of "
              "each slowdown (median over the slowed runs / over the unchanged runs - 1). Cells per runs-per-side "
              "n: unchanged comparisons called regressed (false alarms) / device-slowed called regressed / "
              "host-slowed called regressed, of each n's comparisons, and the MDE (median over the device-slowed "
              "comparisons). A figure the gate does not judge shows –.", ""]
    sides = list(summary["by_runs_per_side"])
    lines += ["| row | figure | median | CV | realized: device / host | "
              + " | ".join(f"{n}+{n}: false / dev / host, MDE" for n in sides) + " |",
              "|---|---|---|---|---|" + "---|" * len(sides)]
    gate_names = {"latency": ("latency",), "device_time": ("device_time", "device"), "host_time": ("host_time", "host")}
    for key, row in summary["rows"].items():
        for figure, facts in row["figures"].items():
            if facts["base_median_s"] is None:
                continue
            cells = []
            for n in sides:
                cell = summary["by_runs_per_side"][n]
                found = [(name, cell["unchanged"]["rows"].get(key, {}).get(name)) for name in gate_names[figure]]
                name, unchanged = next(((nm, c) for nm, c in found if c is not None), (None, None))
                if unchanged is None:
                    cells.append("–")
                    continue
                caught = [str(cell[v]["rows"].get(key, {}).get(name, {}).get("regressed", "–")) if v in cell else "–"
                          for v in VARIANTS[1:]]
                mde = (cell.get("slowed") or cell["unchanged"])["rows"].get(key, {}).get(name, {}).get("mde")
                cells.append(f"{unchanged['regressed']} / {' / '.join(caught)}, {_plain_pct(mde, 1)}")
            lines.append(f"| `{key.split('::')[-1]}` | {figure} | {facts['base_median_s'] * 1e6:.1f} µs | "
                         f"{_plain_pct(facts['run_to_run_cv'], 2)} | {_pct(facts['realized_slowed'])} / "
                         f"{_pct(facts['realized_host-slowed'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    rec = actions.add_parser("record")
    rec.add_argument("folder", type=Path)
    rec.add_argument("--runs", type=int, default=10, help="runs of each variant (default 10)")
    rec.add_argument("--start", type=int, default=1, help="number of the first run (to add runs to a drill)")
    rec.add_argument("--variants", default=",".join(VARIANTS), help=f"which, in order (default {','.join(VARIANTS)})")
    rec.add_argument("--slowdown", type=float, default=DEFAULT_SLOWDOWN,
                     help="device-slowed: extra device work, fraction of the device time per call (default 0.05)")
    rec.add_argument("--host-slowdown", type=float, default=DEFAULT_HOST_SLOWDOWN,
                     help="host-slowed: host busy loop, fraction of the host time per call (default 0.05)")
    ana = actions.add_parser("analyze")
    ana.add_argument("folder", type=Path)
    ana.add_argument("--runs-per-side", default="3,5")
    ana.add_argument("--comparisons", type=int, default=20)
    ana.add_argument("--seed", type=int, default=1)
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    sys.path.insert(0, str(ROOT))
    if args.action == "record":
        variants = tuple(v for v in args.variants.split(",") if v)
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            parser.error(f"--variants {args.variants!r}: choose from {', '.join(VARIANTS)}")
        record(args.folder, args.runs, pytest_args, {"slowed": args.slowdown, "host-slowed": args.host_slowdown},
               args.start, variants)
        return 0
    summary = analyze(args.folder, [int(n) for n in args.runs_per_side.split(",")], args.comparisons, args.seed)
    (args.folder / "drill.json").write_text(json.dumps(summary, indent=2, default=str))
    (args.folder / "drill.md").write_text(markdown(summary, args.folder))
    print((args.folder / "drill.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
