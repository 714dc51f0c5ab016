"""Whole-gate false alarms and power of ``perfsuite compare``'s defaults, by simulation.

    python scripts/gate_simulation.py                 # the tables in docs/gate.md (a few minutes)
    python scripts/gate_simulation.py --trials 200    # quicker, coarser

Each trial builds two sides of synthetic saved runs and runs the real decision code
(``perfsuite.gate.verdict.compare_runs``) on them. A run is the H200 gate tier of issue 11,
15 rows, with the noise measured there:

* 6 device-bound latency rows (eager fp32/fp16/bf16 x batch 64/256): log-normal run-to-run noise
  ``device_cv`` (1-3%), hardly touched by the host state;
* 6 host-bound latency rows (batch 1/8): ``host_cv`` (4%) within the fast host mode; a process
  lands in the slow host mode with probability ``slow_fraction`` (0.4: 4 of the 10 measured
  processes), where it runs 1.5-1.95x slower (397-771 µs per-process medians measured) and the
  host probe follows that slowdown only partly (so the per-probe ratio keeps ~10% run-to-run CV,
  the measured 12% regime), plus model load (5%) and two cold-start rows (15%, 3 rounds), as
  host-bound as the small batches;
* every row records its host probe (20 tiny launches: 2% noise around the run's host state).

A "change" multiplies every row of the new side by 1 + effect (an extra GPU kernel worth that
share of each case, as the GPU drill injects). Counted per scenario: gate FAIL (exit 1),
UNDECIDED (exit 3), every device-bound row called regressed, the share of device-bound rows
called unchanged, and per host-bound row the share called regressed and the share whose MDE allowed
the effect.
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

#: (row name, host-bound, run-to-run CV within the fast host mode; None: the scenario's device_cv)
ROWS = [
    *((f"test_latency[eager-{p}-b{b}]", False, None) for p in ("fp32", "fp16", "bf16") for b in (64, 256)),
    *((f"test_latency[eager-{p}-b{b}]", True, "host") for p in ("fp32", "fp16", "bf16") for b in (1, 8)),
    ("test_model_load", True, 0.05),
    ("test_cold_start[eager-fp32]", True, 0.15),
    ("test_cold_start[eager-fp16]", True, 0.15),
]
MACHINE = {"perfsuite": {"device": "cuda", "gpu_name": "NVIDIA H200", "compute_capability": "9.0",
                         "gpu_memory_bytes": 150_000_000_000, "cpu_model": "simulated host", "torch": "sim"}}


def synthetic_run(rng: random.Random, name: str, device_cv: float, host_cv: float, slow_fraction: float,
                  effect: float) -> SavedRun:
    """One saved run: every row's median and host probe, drawn from the model in the docstring."""
    slow = rng.random() < slow_fraction
    host = math.log(rng.uniform(1.5, 1.95)) if slow else rng.gauss(0, 0.01)  # the process's host state
    rows = []
    for row, host_bound, cv in ROWS:
        sigma = device_cv if cv is None else host_cv if cv == "host" else cv
        coupling = rng.gauss(1, 0.25) if host_bound else 0.02  # how much of the host state the row feels
        median = 1e-3 * math.exp(coupling * host + rng.gauss(0, sigma)) * (1 + effect)
        probe = 1e-4 * math.exp(host + rng.gauss(0, 0.02))
        rows.append({"name": row, "fullname": f"benchmarks/sim.py::{row}",
                     "stats": {"median": median, "mean": median, "stddev": 0.0, "rounds": 3},
                     "extra_info": {"backend": "eager", "model": "alexnet", "host_probe": {"median_s": probe}}})
    return SavedRun(Path(name), {"machine_info": MACHINE, "benchmarks": rows,
                                 "perfsuite": {"schema_version": 1, "outcomes": []}})


def simulate(runs_per_side: int, effect: float, device_cv: float = 0.02, host_cv: float = 0.04,
             slow_fraction: float = 0.4, trials: int = 400, seed: int = 11,
             settings: GateSettings | None = None) -> dict[str, Any]:
    """Rates over ``trials`` whole gate runs, each ``runs_per_side`` + ``runs_per_side`` runs."""
    settings = settings or GateSettings()
    rng = random.Random(f"{seed}-{runs_per_side}-{effect}-{device_cv}-{host_cv}-{slow_fraction}")
    counts = {"fail": 0, "undecided": 0, "device_all_regressed": 0}
    host_rows = host_called = host_resolved = device_unchanged = 0
    for trial in range(trials):
        baseline = [synthetic_run(rng, f"base-{trial}-{i}.json", device_cv, host_cv, slow_fraction, 0.0)
                    for i in range(runs_per_side)]
        new = [synthetic_run(rng, f"new-{trial}-{i}.json", device_cv, host_cv, slow_fraction, effect)
               for i in range(runs_per_side)]
        result = compare_runs(baseline, new, settings)
        counts["fail"] += result.outcome == "fail"
        counts["undecided"] += result.outcome == "undecided"
        by_name = {c.name: c for c in result.comparisons}
        device = [by_name[row].verdict for row, host_bound, _ in ROWS if not host_bound]
        counts["device_all_regressed"] += all(verdict is Verdict.REGRESSED for verdict in device)
        device_unchanged += sum(verdict is Verdict.UNCHANGED for verdict in device)
        for row, host_bound, cv in ROWS:
            if host_bound and cv == "host":
                comparison = by_name[row]
                host_rows += 1
                host_called += comparison.verdict is Verdict.REGRESSED
                mde = comparison.time.mde if comparison.time else None
                host_resolved += mde is not None and mde <= max(effect, settings.threshold)
    return {"runs_per_side": runs_per_side, "effect": effect, "device_cv": device_cv, "host_cv": host_cv,
            "slow_fraction": slow_fraction, "trials": trials,
            **{key: value / trials for key, value in counts.items()},
            "device_unchanged": device_unchanged / (trials * sum(not host_bound for _, host_bound, _ in ROWS)),
            "host_called": host_called / host_rows, "host_resolved": host_resolved / host_rows}


def table(trials: int) -> str:
    """The markdown tables of docs/gate.md: unchanged (4 x ``trials``: false alarms are rare), +5% and
    +10% (``trials``) per device-bound noise and runs per side; then the host-bound rows per fast-mode noise."""
    lines = ["| device-bound CV | runs per side | unchanged: FAIL | unchanged: UNDECIDED | +5%: all batch >= 64 "
             "rows called | +5%: gate FAIL | +10%: batch <= 8 rows called |", "|---|---|---|---|---|---|---|"]
    for device_cv in (0.01, 0.02, 0.03):
        for n in (3, 4, 5, 6):
            same = simulate(n, 0.0, device_cv, trials=4 * trials)
            plus5 = simulate(n, 0.05, device_cv, trials=trials)
            plus10 = simulate(n, 0.10, device_cv, trials=trials)
            lines.append(f"| {device_cv:.0%} | {n} | {same['fail']:.2%} | {same['undecided']:.1%} | "
                         f"{plus5['device_all_regressed']:.1%} | {plus5['fail']:.1%} | {plus10['host_called']:.1%} |")
    lines += ["", "| fast-host-mode CV (batch <= 8) | runs per side | +10%: rows called | +10%: rows with MDE <= 10% "
              "| unchanged: FAIL |", "|---|---|---|---|---|"]
    for host_cv in (0.015, 0.02, 0.04):
        for n in (6, 8):
            plus10 = simulate(n, 0.10, 0.01, host_cv, trials=trials)
            same = simulate(n, 0.0, 0.01, host_cv, trials=trials)
            lines.append(f"| {host_cv:.1%} | {n} | {plus10['host_called']:.1%} | {plus10['host_resolved']:.1%} | "
                         f"{same['fail']:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=400, help="gate runs per cell (default 400)")
    print(table(parser.parse_args().trials))


if __name__ == "__main__":
    main()
