"""Drill of the regression gate on this machine: false alarms on unchanged code, detection of +10%.

    python scripts/gate_drill.py --session session-3                 # record (about 10 min), analyse
    python scripts/gate_drill.py --session session-3 --analyze-only  # analyse recorded runs again

1. Record K whole runs of each variant, alternating (base, slower, base, slower, ...) so that
   the machine's changing load falls on both alike. A run is ``pytest benchmarks/test_latency.py``
   on the reduced set (eager fp32 batch 1, CPU, one thread) in a fresh process, saved as
   pytest-benchmark JSON exactly as CI saves it.
2. The slower variant does real extra forward work, no sleep: every Conv2d and Linear layer of
   AlexNet also computes a slice of its own output channels (``EXTRA_FRACTION`` of them) from the
   same input, and throws it away. Outputs are unchanged (parity still passes); the extra
   multiply-adds are counted and reported, and the drill measures the slowdown they cause.
3. For each runs-per-side n, form comparisons from the recorded runs: unchanged = n base runs vs
   n other base runs; changed = n base runs vs n slower runs. The two sides of a comparison are
   always disjoint; different comparisons draw different subsets of the same K runs (seeded), so
   they are not fully independent (a recorded run appears in several comparisons).
4. Count how many comparisons the gate flags (exit code 1); simulate the same decision code at
   known run-to-run noise levels; write ``docs/gate-drill/<session>/results.json`` and
   ``docs/gate-drill.md`` (every session, plus the hand-written ``docs/gate-drill/conclusion.md``).

This file is also the pytest plugin that makes the slower variant (``-p gate_drill`` with this
folder on PYTHONPATH, option ``--drill-extra-fraction``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXTRA_FRACTION = 0.06  # of each layer's output channels; measured below: about +10% time at batch 1 on this CPU
PYTEST_ARGS = ["benchmarks/test_latency.py", "--backends", "eager", "--precisions", "fp32", "--batch-sizes", "1",
               "--device", "cpu", "--weights", "random", "--benchmark-max-time", "1.0", "--benchmark-min-rounds", "10",
               "-q", "-p", "no:cacheprovider", "-p", "gate_drill"]
VARIANTS = ("base", "slower")


# -- the pytest plugin: the slower variant ---------------------------------------------------------


def _extra_work_hook(fraction: float):
    import torch
    import torch.nn.functional as F

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        channels = max(1, round(fraction * module.weight.shape[0]))
        weight, bias = module.weight[:channels], module.bias[:channels] if module.bias is not None else None
        if isinstance(module, torch.nn.Conv2d):
            F.conv2d(inputs[0], weight, bias, module.stride, module.padding, module.dilation, module.groups)
        else:
            F.linear(inputs[0], weight, bias)

    return hook


def add_extra_work(module, fraction: float) -> float:
    """Hook every Conv2d/Linear of ``module`` to compute ``fraction`` more output channels; returns the
    added multiply-adds as a fraction of the model's own (for a 224x224 image)."""
    import torch

    macs = {"model": 0, "extra": 0}

    def count(layer, inputs, output):
        per_channel = output[0].numel() // output.shape[1] * layer.weight[0].numel()
        macs["model"] += per_channel * output.shape[1]
        macs["extra"] += per_channel * max(1, round(fraction * layer.weight.shape[0]))

    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    counters = [layer.register_forward_hook(count) for layer in layers]
    with torch.inference_mode():
        module(torch.zeros(1, 3, 224, 224))
    for counter in counters:
        counter.remove()
    hook = _extra_work_hook(fraction)
    for layer in layers:
        layer.register_forward_hook(hook)
    return macs["extra"] / macs["model"]


def pytest_addoption(parser) -> None:
    parser.addoption("--drill-extra-fraction", type=float, default=0.0,
                     help="gate drill: extra output channels computed by every conv/linear layer")


def pytest_configure(config) -> None:
    fraction = config.getoption("--drill-extra-fraction")
    config._gate_drill = {"variant": "slower" if fraction else "base", "extra_fraction": fraction}
    if not fraction:
        return
    import perfsuite.plugin

    load_model = perfsuite.plugin.load_model

    def load_slower_model(*args: Any, **kwargs: Any):
        loaded = load_model(*args, **kwargs)  # runners deep-copy the module, hooks included
        config._gate_drill["extra_macs_fraction"] = add_extra_work(loaded.module, fraction)
        return loaded

    perfsuite.plugin.load_model = load_slower_model


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    output_json["gate_drill"] = dict(config._gate_drill)


# -- recording ------------------------------------------------------------------------------------


def record(runs_dir: Path, per_variant: int) -> list[dict[str, Any]]:
    from perfsuite.gate.record import record_runs

    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"),
                                                                  os.environ.get("PYTHONPATH", "")])}
    log = []
    for index in range(1, per_variant + 1):
        for variant in VARIANTS:
            extra = ["--drill-extra-fraction", str(EXTRA_FRACTION)] if variant == "slower" else []
            started = time.perf_counter()
            (recorded,) = record_runs(1, runs_dir, [*PYTEST_ARGS, *extra], env=env, prefix=variant,
                                      first_index=index)
            log.append({"run": recorded.path.name, "exit_code": recorded.exit_code,
                        "wall_s": time.perf_counter() - started})
    return log


# -- analysis -------------------------------------------------------------------------------------


def comparison_outcome(baseline, new, settings) -> dict[str, Any]:
    from perfsuite.gate.verdict import compare_runs

    result = compare_runs(baseline, new, settings)
    (only,) = [c for c in result.comparisons if c.time]
    return {"flagged": result.failed, "verdict": only.verdict.value, "effect": only.time.effect,
            "p_slower": only.time.p_slower, "baseline": [r.path.name for r in baseline],
            "new": [r.path.name for r in new]}


def analyse(runs_dir: Path, sides: list[int], comparisons: int, seed: int) -> dict[str, Any]:
    from perfsuite.config import load_suite_config
    from perfsuite.gate.runs import load_run
    from perfsuite.gate.settings import settings_from_config

    settings = settings_from_config(load_suite_config(ROOT / "pyproject.toml"))
    runs = {v: [load_run(p) for p in sorted(runs_dir.glob(f"{v}-*.json"))] for v in VARIANTS}
    medians = {v: [next(iter(r.benchmarks.values())).median_s for r in runs[v]] for v in VARIANTS}
    cvs = {v: [next(iter(r.benchmarks.values())).cv for r in runs[v]] for v in VARIANTS}
    base_median = statistics.median(medians["base"])
    summary: dict[str, Any] = {
        "settings": settings.as_dict(), "runs_per_variant": {v: len(runs[v]) for v in VARIANTS},
        "per_run_median_s": medians, "within_run_cv": cvs,
        "true_effect": statistics.median(medians["slower"]) / base_median - 1,
        "run_to_run_cv_base": statistics.stdev(medians["base"]) / statistics.mean(medians["base"])
        if len(medians["base"]) > 1 else None,
        "extra_macs_fraction": runs["slower"][0].data.get("gate_drill", {}).get("extra_macs_fraction"),
        "by_runs_per_side": {},
    }
    for n in sides:
        if 2 * n > len(runs["base"]) or n > len(runs["slower"]):
            continue
        rng = random.Random(seed * 1000 + n)
        unchanged, changed = [], []
        for _ in range(comparisons):
            picked = rng.sample(runs["base"], 2 * n)
            unchanged.append(comparison_outcome(picked[:n], picked[n:], settings))
            changed.append(comparison_outcome(rng.sample(runs["base"], n), rng.sample(runs["slower"], n), settings))
        chronological = {  # earliest runs as the baseline, latest as the new side: drift shows here
            "unchanged": comparison_outcome(runs["base"][:n], runs["base"][-n:], settings),
            "changed": comparison_outcome(runs["base"][:n], runs["slower"][-n:], settings),
        }
        summary["by_runs_per_side"][n] = {
            "unchanged_flagged": sum(c["flagged"] for c in unchanged),
            "unchanged_improved": sum(c["verdict"] == "improved" for c in unchanged),
            "unchanged_inconclusive": sum(c["verdict"] == "inconclusive" for c in unchanged),
            "changed_flagged": sum(c["flagged"] and c["verdict"] == "regressed" for c in changed),
            "changed_inconclusive": sum(c["verdict"] == "inconclusive" for c in changed),
            "chronological": chronological, "unchanged": unchanged, "changed": changed,
        }
    return summary


def simulate(cvs: list[float], sides: list[int], trials: int, seed: int) -> list[dict[str, Any]]:
    """What the same decision code does with independent log-normal run-to-run noise of each CV:
    the false-alarm and detection rates per comparison, and the chance that a 20 + 20 drill meets
    both targets (0 of 20 flagged, at least 19 of 20 detected)."""
    from perfsuite.gate.runs import SavedRun
    from perfsuite.gate.settings import GateSettings
    from perfsuite.gate.verdict import compare_runs

    def flagged(base: list[float], new: list[float]) -> bool:
        def runs(values: list[float]) -> list[SavedRun]:
            return [SavedRun(Path(f"sim-{i}.json"), {"benchmarks": [{"name": "sim", "stats": {
                "median": v, "mean": v, "stddev": 0.0, "rounds": 1}}]}) for i, v in enumerate(values)]
        return compare_runs(runs(base), runs(new), settings).failed

    settings, table = GateSettings(), []
    for cv in cvs:
        for n in sides:
            rng = random.Random(f"{seed}-{cv}-{n}")  # each cell its own stream: same numbers in every session
            alarms = detections = 0
            for _ in range(trials):
                base, same, slower = ([scale * rng.lognormvariate(0, cv) for _ in range(n)]
                                      for scale in (1.0, 1.0, 1.10))
                alarms += flagged(base, same)
                detections += flagged(base, slower)
            alarm, detect = alarms / trials, detections / trials
            table.append({"cv": cv, "runs_per_side": n, "false_alarm_rate": alarm, "detection_rate": detect,
                          "p_meets_targets": (1 - alarm) ** 20 * (detect**20 + 20 * detect**19 * (1 - detect))})
    return table


def cli_demo(runs_dir: Path, n: int) -> dict[str, Any]:
    """One comparison through the real command line, as CI runs it: the first n base runs against the
    last n slower ones."""
    def side(prefix: str, chosen: slice) -> str:
        paths = sorted(runs_dir.glob(f"{prefix}-*.json"))[chosen]
        return ",".join(path.relative_to(ROOT).as_posix() for path in paths)

    arguments = ["compare", side("base", slice(None, n)), side("slower", slice(-n, None)), "--format", "markdown"]
    completed = subprocess.run([sys.executable, "-m", "perfsuite", *arguments], cwd=ROOT, capture_output=True,
                               text=True, check=False)
    return {"command": "perfsuite " + " ".join(arguments), "exit_code": completed.returncode,
            "output": completed.stdout + completed.stderr}


FIXED_CVS = (0.03, 0.045, 0.06)  # the "3-6%" run-to-run variation of a quiet CPU machine


def _simulation_table(rows: list[dict[str, Any]]) -> str:
    from perfsuite.gate.tables import render_table

    return render_table(["run-to-run CV", "runs per side", "false alarms", "detected", "meets targets"],
                        [[f"{r['cv']:.1%}", r["runs_per_side"], f"{r['false_alarm_rate']:.1%}",
                          f"{r['detection_rate']:.1%}", f"{r['p_meets_targets']:.0%}"] for r in rows], True)


def session_section(name: str, summary: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    from perfsuite.gate.tables import format_seconds, render_table

    rows = []
    for n, r in summary["by_runs_per_side"].items():
        meets = r["unchanged_flagged"] == 0 and r["changed_flagged"] >= 19
        chrono = r["chronological"]
        rows.append([n, f"{r['unchanged_flagged']} / {meta['comparisons']}", r["unchanged_inconclusive"],
                     f"{r['changed_flagged']} / {meta['comparisons']}", r["changed_inconclusive"],
                     f"{chrono['unchanged']['verdict']}, {chrono['changed']['verdict']}",
                     "yes" if meets else "no"])
    needed = [str(n) for n, r in summary["by_runs_per_side"].items()
              if r["unchanged_flagged"] == 0 and r["changed_flagged"] >= 19]
    medians = summary["per_run_median_s"]
    measured = [r for r in summary["simulation"] if r["cv"] not in FIXED_CVS]
    return [
        f"## Drill {name}", "",
        f"Raw runs in `docs/gate-drill/{name}/runs/`, every comparison in `docs/gate-drill/{name}/results.json`.", "",
        f"- Machine: {meta['hardware']}, shared with other engineers' jobs (load average over 1/5/15 min: "
        f"{meta['load_before']} before recording, {meta.get('load_after', '?')} after).",
        f"- Runs: {summary['runs_per_variant']['base']} base and {summary['runs_per_variant']['slower']} slower, "
        f"alternating; recording took {meta['record_wall_s'] / 60:.1f} min, the analysis "
        f"{meta['analyse_wall_s']:.0f} s.",
        f"- Effect of the slower variant measured over all its runs (median of per-run medians against the "
        f"base's): **{summary['true_effect']:+.1%}** (+{summary['extra_macs_fraction']:.1%} multiply-adds).",
        f"- Noise: base per-run medians from {format_seconds(min(medians['base']))} to "
        f"{format_seconds(max(medians['base']))}, **run-to-run CV {summary['run_to_run_cv_base']:.1%}**; "
        f"within-run CV median {statistics.median(c for c in summary['within_run_cv']['base'] if c):.1%}.",
        "",
        render_table(["runs per side", "unchanged flagged", "unchanged inconclusive", "+slower flagged",
                      "+slower inconclusive", "chronological (unchanged, slower)", "meets targets"], rows, True),
        "",
        (f"Both targets are met with **{', '.join(needed)} runs per side**." if needed else
         "The targets are missed at every runs-per-side tried (see the table for by how much)."),
        "",
        "The same decision code on simulated runs with this drill's measured run-to-run CV:", "",
        _simulation_table(measured) if measured else "(no simulation recorded)", "",
        f"One comparison through the command line, `{meta['cli']['command']}`, exited {meta['cli']['exit_code']}:",
        "", "```", meta["cli"]["output"].strip(), "```", "",
        "<details><summary>Per-run medians</summary>", "",
        render_table(["run", "base", "slower"], [[i + 1, format_seconds(b), format_seconds(s)] for i, (b, s)
                                                  in enumerate(zip(medians["base"], medians["slower"]))], True),
        "", "</details>", "",
    ]


def write_markdown(path: Path, drills: list[tuple[str, dict[str, Any], dict[str, Any]]], conclusion: str) -> None:
    """``docs/gate-drill.md`` from every recorded drill session (``docs/gate-drill/<session>/results.json``)."""
    settings = drills[-1][1]["settings"]
    fixed = [r for r in drills[-1][1]["simulation"] if r["cv"] in FIXED_CVS]
    lines = [
        "# Gate drill: false alarms and detection on the CPU machine", "",
        "Generated by `python scripts/gate_drill.py` (design in its docstring); "
        "`python scripts/gate_drill.py --analyze-only --session NAME` re-analyses recorded runs.", "",
        "## Set-up", "",
        "- Benchmark set (reduced): `benchmarks/test_latency.py`, eager fp32 batch 1 on the CPU, one thread "
        "(`OMP_NUM_THREADS=1`), `--benchmark-max-time 1.0`; each run a fresh pytest process writing "
        "pytest-benchmark JSON, as CI does.",
        f"- The slower variant does real extra forward work, no sleep: every Conv2d and Linear layer also computes "
        f"{EXTRA_FRACTION:.0%} of its output channels from the same input (hooks on the model; outputs unchanged, "
        "parity passes). At batch 1 on this CPU that is about +10% time on a quiet machine "
        "(the small extra kernels cost more per multiply-add than the big ones).",
        "- Per drill: K runs of each variant, alternating base and slower so that the machine's changing load "
        "falls on both alike. Comparisons: for each runs-per-side n, 20 'unchanged' comparisons (n base runs vs "
        "n other base runs) and 20 'slower' ones (n base vs n slower), seeded random subsets; the two sides of a "
        "comparison are disjoint, different comparisons share runs (so they are not independent). Plus one "
        "chronological pair per n: the earliest n base runs against the latest n runs.",
        f"- Gate settings: the defaults (threshold {settings['threshold']:.0%}, one-sided t-test on log per-run "
        f"medians, Benjamini-Hochberg at alpha {settings['alpha']}; docs/gate.md). 'Flagged' = the gate fails "
        "(exit 1).",
        "- Targets: 0 of 20 unchanged comparisons flagged; at least 19 of 20 slower ones flagged.", "",
        "## Conclusion", "", conclusion, "",
        "## What the gate needs: runs per side against run-to-run noise", "",
        "The decision code (`perfsuite.gate.verdict.compare_runs`) on simulated per-run medians with independent "
        f"log-normal run-to-run noise ({drills[-1][2]['simulation_trials']} trials per row, +10% true effect). "
        "'meets targets' is the chance that one 20 + 20 drill meets both targets.", "",
        _simulation_table(fixed), "",
    ]
    for name, summary, meta in drills:
        lines += session_section(name, summary, meta)
    path.write_text("\n".join(lines))


CONCLUSION_FILE = "conclusion.md"  # hand-written reading of the numbers, kept beside the sessions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", default="session-1", help="name of this drill (docs/gate-drill/NAME/)")
    parser.add_argument("--runs-per-variant", type=int, default=20)
    parser.add_argument("--comparisons", type=int, default=20)
    parser.add_argument("--sides", default="1,2,3,4,5,6,8,10", help="runs per side to evaluate")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--simulation-trials", type=int, default=1000)
    parser.add_argument("--analyze-only", action="store_true", help="reuse the runs already recorded")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # pytest runs from the repository root (its pyproject.toml, conftest.py, benchmarks/)

    from perfsuite.gate.hardware import current_fingerprint
    from perfsuite.results import write_json_atomic

    drills_dir = ROOT / "docs" / "gate-drill"
    out = drills_dir / args.session
    runs_dir = out / "runs"
    meta: dict[str, Any] = {"comparisons": args.comparisons, "hardware": current_fingerprint("cpu").label,
                            "load_before": " / ".join(f"{v:.1f}" for v in os.getloadavg())}
    results_path = out / "results.json"
    if args.analyze_only:
        previous = json.loads(results_path.read_text()) if results_path.exists() else {}
        meta.update({k: previous.get("meta", {}).get(k, meta.get(k)) for k in
                     ("record_wall_s", "record_log", "load_before", "load_after", "hardware")})
        meta.setdefault("record_wall_s", 0.0)
    else:
        started = time.perf_counter()
        meta["record_log"] = record(runs_dir, args.runs_per_variant)
        meta["record_wall_s"] = time.perf_counter() - started
        meta["load_after"] = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    started = time.perf_counter()
    summary = analyse(runs_dir, [int(n) for n in args.sides.split(",")], args.comparisons, args.seed)
    meta["simulation_trials"] = args.simulation_trials
    measured = round(summary["run_to_run_cv_base"], 3)
    summary["simulation"] = simulate(sorted({*FIXED_CVS, measured}), [3, 5, 8, 12], args.simulation_trials,
                                     args.seed)
    meta["analyse_wall_s"] = time.perf_counter() - started
    meta["cli"] = cli_demo(runs_dir, 6)
    write_json_atomic(results_path, {"meta": meta, "summary": summary})
    drills = []
    for path in sorted(drills_dir.glob("*/results.json")):
        recorded = json.loads(path.read_text())
        drills.append((path.parent.name, recorded["summary"], recorded["meta"]))
    conclusion = drills_dir / CONCLUSION_FILE
    write_markdown(ROOT / "docs" / "gate-drill.md", drills,
                   conclusion.read_text().strip() if conclusion.exists() else "(not written yet)")
    for n, r in summary["by_runs_per_side"].items():
        print(f"{n} runs/side: unchanged flagged {r['unchanged_flagged']}/{args.comparisons}, "
              f"slower flagged {r['changed_flagged']}/{args.comparisons}")
    print(f"effect {summary['true_effect']:+.1%}, run-to-run CV {summary['run_to_run_cv_base']:.1%}; "
          f"wrote docs/gate-drill.md and {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
