"""Whole-gate false alarms and power of ``perfsuite compare``'s defaults, by simulation.

    python scripts/gate_simulation.py                 # the tables in docs/gate.md (a few minutes)
    python scripts/gate_simulation.py --trials 100    # quicker, coarser

Each trial builds two sides of synthetic saved runs and runs the real decision code
(``perfsuite.gate.verdict.compare_runs``) on them. A run is the H200 gate tier of the committed drill
(docs/results/2026-12-01-h200-gate-drill), 16 rows, with the numbers measured there:

* every row records its own host probe; the host's speed varies from run to run (log SD 0.12) and
  from row to row within a run (0.15), so one row's probe scatters by ~20% over runs, as measured;
* a row's time follows its probe as probe^slope, times log-normal noise of its own: batch 1/8 latency
  slope 1.2, noise ``host_cv`` (6% measured at equal host speed); batch 64/256 slope 0.05, noise
  ``device_cv`` (0.3-2% measured); model load slope 0.5, 12%; three cold-start rows slope 0.75, 8%.

With ``device_time`` the latency rows also carry the figures of a CUDA run (docs/gate.md): device
time, run-to-run noise ``device_cv`` and no host term (the stream is held while the host enqueues), and
host time, following the probe as latency does, noise ``host_cv``; the change slows device time and
latency alike. Without it the runs are those of a recording made before perfsuite measured them.

A change is the drill's: the new side's batch <= 8 rows +2 x ``effect``, batch >= 64 rows +``effect``
(extra device work: the probe does not move), model load and cold start unchanged. Counted per
scenario: gate FAIL (exit 1), UNDECIDED (exit 3), every batch >= 64 row called regressed, and per
batch <= 8 row the share called regressed and the share whose MDE allowed that change.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path
from typing import Any

from perfsuite.gate.runs import SavedRun
from perfsuite.gate.settings import GateSettings
from perfsuite.gate.verdict import Verdict, compare_runs

#: (row name, kind: small / large batch / other, slope on the probe, noise; None: the scenario's)
ROWS = [
    *((f"test_latency[eager-{p}-b{b}]", "small" if b < 64 else "large", 1.2 if b < 64 else 0.05, None)
      for p in ("fp32", "fp16", "bf16") for b in (1, 8, 64, 256)),
    ("test_model_load", "other", 0.5, 0.12),
    *((f"test_cold_start[eager-{p}-b1]", "other", 0.75, 0.08) for p in ("fp32", "fp16", "bf16")),
]
MACHINE = {"perfsuite": {"device": "cuda", "gpu_name": "NVIDIA H200", "compute_capability": "9.0",
                         "gpu_memory_bytes": 150_000_000_000, "cpu_model": "simulated host", "torch": "sim"}}
RUN_HOST_SD, ROW_HOST_SD, PROBE_NOISE = 0.12, 0.15, 0.02


def synthetic_run(rng: random.Random, name: str, device_cv: float, host_cv: float, effect: float,
                  device_time: bool = False) -> SavedRun:
    """One saved run: every row's median and host probe (and device and host time), drawn from the model in
    the docstring."""
    run_host = rng.gauss(0, RUN_HOST_SD)
    rows = []
    for row, kind, slope, noise in ROWS:
        host = run_host + rng.gauss(0, ROW_HOST_SD)
        sigma = noise if noise is not None else host_cv if kind == "small" else device_cv
        change = {"small": 2 * effect, "large": effect, "other": 0.0}[kind]
        median = 1e-3 * math.exp(slope * host + rng.gauss(0, sigma)) * (1 + change)
        probe = 2e-4 * math.exp(host + rng.gauss(0, PROBE_NOISE))
        extra = {"backend": "eager", "model": "alexnet", "host_probe": {"median_s": probe},
                 "kind": "latency" if kind != "other" else "model_load" if "load" in row else "cold_start"}
        if device_time and kind != "other":
            device = 5e-4 * math.exp(rng.gauss(0, device_cv)) * (1 + change)
            host_s = 2e-4 * math.exp(host + rng.gauss(0, host_cv))
            extra["device_time"] = {"available": True, "median_s": device}
            extra["host_time"] = {"available": True, "median_s": host_s}
        rows.append({"name": row, "fullname": f"benchmarks/sim.py::{row}",
                     "stats": {"median": median, "mean": median, "stddev": 0.0, "rounds": 100},
                     "extra_info": extra})
    return SavedRun(Path(name), {"machine_info": MACHINE, "benchmarks": rows,
                                 "perfsuite": {"schema_version": 1, "outcomes": []}})


def simulate(runs_per_side: int, effect: float, device_cv: float = 0.01, host_cv: float = 0.06,
             trials: int = 400, seed: int = 11, settings: GateSettings | None = None,
             device_time: bool = False) -> dict[str, Any]:
    """Rates over ``trials`` whole gate runs, each ``runs_per_side`` + ``runs_per_side`` runs."""
    settings = settings or GateSettings()
    rng = random.Random(f"{seed}-{runs_per_side}-{effect}-{device_cv}-{host_cv}")
    counts = dict.fromkeys(("fail", "undecided", "large_all_regressed", "small_called", "small_resolved",
                            "large_unchanged"), 0)
    small = [row for row, kind, _, _ in ROWS if kind == "small"]
    large = [row for row, kind, _, _ in ROWS if kind == "large"]
    for trial in range(trials):
        baseline = [synthetic_run(rng, f"base-{trial}-{i}.json", device_cv, host_cv, 0.0, device_time)
                    for i in range(runs_per_side)]
        new = [synthetic_run(rng, f"new-{trial}-{i}.json", device_cv, host_cv, effect, device_time)
               for i in range(runs_per_side)]
        result = compare_runs(baseline, new, settings)
        rows = {c.name: c for c in result.comparisons}
        counts["fail"] += result.outcome == "fail"
        counts["undecided"] += result.outcome == "undecided"
        counts["large_all_regressed"] += all(rows[row].verdict is Verdict.REGRESSED for row in large)
        counts["large_unchanged"] += sum(rows[row].verdict is Verdict.UNCHANGED for row in large) / len(large)
        counts["small_called"] += sum(rows[row].verdict is Verdict.REGRESSED for row in small) / len(small)
        counts["small_resolved"] += sum(rows[row].time.mde is not None and rows[row].time.mde <= max(
            2 * effect, settings.threshold) for row in small) / len(small)
    return {"runs_per_side": runs_per_side, "effect": effect, "device_cv": device_cv, "host_cv": host_cv,
            "trials": trials, **{key: value / trials for key, value in counts.items()}}


def table(trials: int) -> str:
    """The markdown tables of docs/gate.md: unchanged (2 x ``trials``) and the drill's change (``trials``) per
    batch >= 64 noise and runs per side; then the batch <= 8 rows per noise at equal host speed."""
    lines = ["| batch >= 64 noise | runs per side | unchanged: FAIL | unchanged: UNDECIDED | +5%: every batch >= 64 "
             "row called | +10%: batch <= 8 rows called |", "|---|---|---|---|---|---|"]
    for device_cv in (0.005, 0.01, 0.02):
        for n in (3, 5, 8):
            same = simulate(n, 0.0, device_cv, trials=2 * trials)
            changed = simulate(n, 0.05, device_cv, trials=trials)
            lines.append(f"| {device_cv:.1%} | {n} | {same['fail']:.1%} | {same['undecided']:.1%} | "
                         f"{changed['large_all_regressed']:.1%} | {changed['small_called']:.1%} |")
    lines += ["", "| batch <= 8 noise at equal host speed | runs per side | +10%: rows called | +10%: rows with "
              "MDE <= 10% | unchanged: FAIL |", "|---|---|---|---|---|"]
    for host_cv in (0.03, 0.06):
        for n in (5, 8, 10):
            changed = simulate(n, 0.05, 0.01, host_cv, trials=trials)
            same = simulate(n, 0.0, 0.01, host_cv, trials=trials)
            lines.append(f"| {host_cv:.0%} | {n} | {changed['small_called']:.1%} | {changed['small_resolved']:.1%} | "
                         f"{same['fail']:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=400, help="gate runs per cell (default 400)")
    print(table(parser.parse_args().trials))


if __name__ == "__main__":
    main()
