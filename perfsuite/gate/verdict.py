"""The verdict per benchmark: regressed, improved, unchanged or inconclusive (or missing/failed).

Replicates are whole runs. Samples within one run share the machine's state during that run
(clocks, placement, other tenants, allocator layout), so they are not independent evidence about
the next run; only another run is. Each run contributes one number per benchmark (its median by
default), and the two sides' numbers are compared with

* an **effect size**: the relative change of the median over runs, new / baseline - 1; it must
  exceed ``threshold`` (default 5%) to count;
* a **test**: the one-sided Mann-Whitney U test of "new runs are slower" (or faster), exact for
  small samples, at significance ``alpha`` (default 0.05). With 3 runs a side its smallest
  possible p is 1/20 = 0.05, so 3 + 3 runs is the least that can pass the test at 0.05.

Verdicts:

* ``regressed`` / ``improved``: the effect exceeds the threshold and the test is significant;
* ``unchanged``: the effect is within the threshold;
* ``inconclusive``: the effect exceeds the threshold but the test is not significant (noise this
  large needs more runs), or most runs of a side were spoiled (below);
* with too few runs for the test (one run on a side, or 2 + 2), the verdict rests on the effect
  alone, says so, and needs the larger ``single_run_threshold`` (default 3 x threshold = 15%),
  or more where the runs themselves are noisier than that: the spread (max/min) of a side's runs,
  or 3 x the largest within-run CV (samples of one run are not independent evidence about the
  next run, but a run that scattered widely was measured on a noisy machine);
* ``missing``: in the baseline but absent from a new run (skipped or broken), ``failed``: the new
  run's test failed. Both fail the gate, like ``regressed``: a broken backend must never pass.

Spoiled runs are left out: a run whose measurement of the benchmark was throttled (GPU thermal or
hardware slowdown), shared the GPU with another process, or shared the CPU with other processes
using more than ``host_contention`` (10%) of its capacity (see ``telemetry``). The remaining runs
are compared, under the rules above for their number; if more than half of a side's runs were
spoiled, the verdict is inconclusive whatever the numbers say.

The interval shown with each effect is the exact distribution-free confidence interval of the
shift in log time (Hodges-Lehmann, by inverting the same U test), two-sided 1 - 2*alpha.

Memory (peak GPU memory and the runner's host RSS growth) is compared by the median over runs:
a growth beyond ``memory_threshold`` and ``memory_floor_bytes`` regresses.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import statistics
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from perfsuite.errors import InputError
from perfsuite.gate.hardware import HardwareFingerprint, mismatches
from perfsuite.gate.runs import BenchmarkRecord, SavedRun, per_run_values
from perfsuite.gate.settings import GateSettings

MEMORY_METRICS = {"peak_gpu_memory_bytes": "GPU peak", "host_rss_delta_bytes": "host RSS growth"}


class Verdict(str, enum.Enum):
    REGRESSED = "regressed"
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    INCONCLUSIVE = "inconclusive"
    MISSING = "missing"
    FAILED = "failed"
    NEW = "new"  # only in the new runs; nothing to compare with

    def __str__(self) -> str:
        return self.value


FAILING = frozenset({Verdict.REGRESSED, Verdict.MISSING, Verdict.FAILED})


class HardwareMismatch(InputError):
    """The runs were measured on different hardware; ``rows`` lists (field, baseline, new)."""

    def __init__(self, message: str, rows: list[tuple[str, Any, Any]]) -> None:
        super().__init__(message)
        self.rows = rows


# -- statistics ----------------------------------------------------------------------------------


def _scipy_stats():
    try:
        from scipy import stats
    except ImportError as exc:
        raise InputError("the gate's statistics need scipy (pip install 'perfsuite[report]')") from exc
    return stats


@lru_cache(maxsize=256)
def u_null_counts(m: int, n: int) -> tuple[int, ...]:
    """Under H0 (no ties), how many of the C(m+n, m) orderings give U = 0, 1, ..., m*n.

    U counts pairs (x, y), x from the sample of size m, with x > y. Recurrence on the largest
    element: it is an x (adds n to U) or a y (adds nothing).
    """
    table = {(0, j): (1,) for j in range(n + 1)}
    for i in range(1, m + 1):
        table[(i, 0)] = (1,)
        for j in range(1, n + 1):
            with_x, with_y = table[(i - 1, j)], table[(i, j - 1)]
            counts = [0] * (i * j + 1)
            for u, c in enumerate(with_x):
                counts[u + j] += c
            for u, c in enumerate(with_y):
                counts[u] += c
            table[(i, j)] = tuple(counts)
    return table[(m, n)]


def smallest_p(m: int, n: int) -> float:
    """The smallest one-sided p-value the exact U test can give with m and n runs."""
    return 1 / math.comb(m + n, m)


def upper_critical_u(m: int, n: int, alpha: float) -> int | None:
    """The smallest u with P(U >= u) <= alpha under H0, or None when no u is that rare."""
    counts = u_null_counts(m, n)
    total = sum(counts)
    tail = 0
    critical = None
    for u in range(len(counts) - 1, -1, -1):
        tail += counts[u]
        if tail / total > alpha + 1e-12:
            break
        critical = u
    return critical


def shift_interval(new: Sequence[float], base: Sequence[float], alpha: float) -> tuple[float, float] | None:
    """Two-sided 1 - 2*alpha confidence interval of the location shift new - base (exact, by
    inverting the one-sided U tests: the bounds are order statistics of the pairwise differences)."""
    critical = upper_critical_u(len(new), len(base), alpha)
    if critical is None:
        return None
    differences = sorted(x - y for x in new for y in base)
    return differences[len(differences) - critical], differences[critical - 1]


def one_sided_p(new: Sequence[float], base: Sequence[float], alternative: str) -> float:
    """Mann-Whitney U p-value that ``new`` is stochastically greater/less than ``base``."""
    return float(_scipy_stats().mannwhitneyu(new, base, alternative=alternative, method="auto").pvalue)


# -- comparisons ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TimeComparison:
    baseline: tuple[float, ...]  # per-run statistic, seconds
    new: tuple[float, ...]
    effect: float  # median(new) / median(baseline) - 1
    interval: tuple[float, float] | None  # of the ratio - 1, from the log-shift interval
    p_slower: float | None
    p_faster: float | None
    testable: bool  # enough runs for the U test to reach alpha

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def new_median(self) -> float:
        return statistics.median(self.new)


@dataclasses.dataclass(frozen=True)
class MemoryComparison:
    metric: str
    baseline: float
    new: float
    verdict: Verdict

    @property
    def label(self) -> str:
        return MEMORY_METRICS[self.metric]

    @property
    def change(self) -> float:
        return self.new - self.baseline


@dataclasses.dataclass
class BenchmarkComparison:
    key: str
    name: str
    backend: str | None
    verdict: Verdict
    time: TimeComparison | None = None
    memory: list[MemoryComparison] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def failing(self) -> bool:
        return self.verdict in FAILING or any(m.verdict is Verdict.REGRESSED for m in self.memory)


@dataclasses.dataclass
class GateResult:
    settings: GateSettings
    baseline_runs: list[SavedRun]
    new_runs: list[SavedRun]
    comparisons: list[BenchmarkComparison]
    hardware: HardwareFingerprint
    hardware_mismatch: list[tuple[str, Any, Any]]  # non-empty only with --allow-hardware-mismatch
    software_changes: list[tuple[str, str, str]]  # (package, baseline, new) where they differ
    software_same: dict[str, str]
    backend_failures: list[str]

    def count(self, verdict: Verdict) -> int:
        return sum(c.verdict is verdict for c in self.comparisons)

    @property
    def failed(self) -> bool:
        inconclusive = self.settings.fail_on_inconclusive and self.count(Verdict.INCONCLUSIVE) > 0
        return bool(self.backend_failures) or inconclusive or any(c.failing for c in self.comparisons)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def as_dict(self) -> dict[str, Any]:
        def comparison(c: BenchmarkComparison) -> dict[str, Any]:
            return {"key": c.key, "name": c.name, "backend": c.backend, "verdict": c.verdict.value,
                    "failing": c.failing, "notes": c.notes,
                    "time": dataclasses.asdict(c.time) if c.time else None,
                    "memory": [{"metric": m.metric, "baseline": m.baseline, "new": m.new, "verdict": m.verdict.value}
                               for m in c.memory]}

        return {
            "passed": not self.failed, "settings": self.settings.as_dict(),
            "hardware": {"id": self.hardware.id, "label": self.hardware.label, **self.hardware.as_dict()},
            "hardware_mismatch": [list(row) for row in self.hardware_mismatch],
            "software_changes": [list(row) for row in self.software_changes],
            "baseline_runs": [str(r.path) for r in self.baseline_runs],
            "new_runs": [str(r.path) for r in self.new_runs],
            "backend_failures": self.backend_failures,
            "counts": {v.value: self.count(v) for v in Verdict},
            "benchmarks": [comparison(c) for c in self.comparisons],
        }


def effect_needed_without_test(baseline: Sequence[float], new: Sequence[float], settings: GateSettings,
                               within_run_cv: float | None = None) -> tuple[float, str]:
    """The change a comparison without a test must exceed, and why: the single-run threshold, or more
    when the runs show more noise than that (the spread of a side's runs, 3 x a run's own CV)."""
    needed, reason = settings.single_run_threshold, "the single-run threshold"
    for side, values in (("baseline", baseline), ("new", new)):
        if len(values) >= 2 and max(values) / min(values) - 1 > needed:
            needed, reason = max(values) / min(values) - 1, f"the spread of the {side} runs"
    if within_run_cv is not None and 3 * within_run_cv > needed:
        needed, reason = 3 * within_run_cv, f"3 x the within-run CV ({within_run_cv:.1%})"
    return needed, reason


def compare_times(baseline: Sequence[float], new: Sequence[float], settings: GateSettings,
                  within_run_cv: float | None = None) -> tuple[TimeComparison, Verdict, list[str]]:
    """Effect, interval, tests and verdict of one benchmark's per-run times.

    ``within_run_cv``: the largest CV of the runs' own rounds, used only when there are too few
    runs for the test (a noisy single run needs a correspondingly larger change).
    """
    effect = statistics.median(new) / statistics.median(baseline) - 1
    testable = smallest_p(len(new), len(baseline)) <= settings.alpha + 1e-12
    log_new, log_base = [math.log(v) for v in new], [math.log(v) for v in baseline]
    shift = shift_interval(log_new, log_base, settings.alpha) if testable else None
    interval = (math.exp(shift[0]) - 1, math.exp(shift[1]) - 1) if shift else None
    p_slower = one_sided_p(new, baseline, "greater") if testable else None
    p_faster = one_sided_p(new, baseline, "less") if testable else None
    comparison = TimeComparison(tuple(baseline), tuple(new), effect, interval, p_slower, p_faster, testable)
    notes: list[str] = []
    if abs(effect) <= settings.threshold:
        return comparison, Verdict.UNCHANGED, notes
    direction = "slower" if effect > 0 else "faster"
    if testable:
        p = p_slower if effect > 0 else p_faster
        if p <= settings.alpha:
            return comparison, Verdict.REGRESSED if effect > 0 else Verdict.IMPROVED, notes
        notes.append(f"{abs(effect):.1%} {direction} but not significant (p = {p:.3f} > {settings.alpha:g} with "
                     f"{len(baseline)} vs {len(new)} runs); record more runs")
        return comparison, Verdict.INCONCLUSIVE, notes
    needed, reason = effect_needed_without_test(baseline, new, settings, within_run_cv)
    if abs(effect) > needed:
        return comparison, Verdict.REGRESSED if effect > 0 else Verdict.IMPROVED, notes
    notes.append(f"{abs(effect):.1%} {direction}: with this few runs a change must exceed {needed:.0%} "
                 f"({reason})")
    return comparison, Verdict.INCONCLUSIVE, notes


def few_runs_note(baseline: int, new: int, settings: GateSettings) -> str:
    if min(baseline, new) == 1:
        side = "the baseline" if baseline == 1 else "the new side"
        if baseline == new:
            side = "each side"
        return (f"verdict rests on one run ({side} has 1); no statistical test, needs > "
                f"{settings.single_run_threshold:.0%} to call a change")
    return (f"{baseline} vs {new} runs are too few for the U test at alpha {settings.alpha:g} "
            f"(smallest p {smallest_p(baseline, new):.3f}); needs > {settings.single_run_threshold:.0%}")


def compare_memory(metric: str, baseline: Sequence[float], new: Sequence[float],
                   settings: GateSettings) -> MemoryComparison:
    base_value, new_value = statistics.median(baseline), statistics.median(new)
    allowed = max(settings.memory_threshold * abs(base_value), settings.memory_floor_bytes)
    change = new_value - base_value
    verdict = Verdict.REGRESSED if change > allowed else Verdict.IMPROVED if change < -allowed else Verdict.UNCHANGED
    return MemoryComparison(metric, base_value, new_value, verdict)


def run_problem(record: BenchmarkRecord, settings: GateSettings) -> str | None:
    """Why this run's measurement of a benchmark cannot be trusted (throttled, GPU or CPU shared), or None."""
    gpu = record.telemetry
    if gpu and gpu.get("throttled"):
        return f"GPU throttled ({', '.join(gpu.get('throttle_reasons', []))})"
    if gpu and gpu.get("contended"):
        return f"{gpu.get('other_processes')} other process(es) on the GPU"
    host = record.extra_info.get("host_telemetry") or {}
    fraction = host.get("other_cpu_fraction")
    if fraction is not None and fraction > settings.host_contention:
        return f"other processes used {fraction:.0%} of the CPU (> {settings.host_contention:.0%})"
    return None


def _clean_runs(runs: Sequence[SavedRun], key: str, side: str, settings: GateSettings,
                notes: list[str]) -> tuple[list[SavedRun], bool]:
    """The runs whose measurement of ``key`` is trustworthy, and whether too many were not."""
    kept = []
    for run in runs:
        problem = run_problem(run.benchmarks[key], settings)
        if problem:
            notes.append(f"{side} run {run.path.name} left out: {problem}")
        else:
            kept.append(run)
    spoiled = 2 * (len(runs) - len(kept)) > len(runs)
    if spoiled:
        notes.append(f"{len(runs) - len(kept)} of {len(runs)} {side} runs were throttled or shared their machine: "
                     "inconclusive")
    return kept, spoiled


def _stability_note(runs: Sequence[SavedRun], key: str, side: str, threshold: float) -> str | None:
    cvs = [run.benchmarks[key].cv for run in runs if key in run.benchmarks]
    unstable = [cv for cv in cvs if cv is not None and cv > threshold]
    if not unstable:
        return None
    return (f"unstable in {len(unstable)} of {len(cvs)} {side} runs (CV up to {max(unstable):.1%} > "
            f"{threshold:.1%})")


def _absence_reason(run: SavedRun, key: str) -> str:
    outcome = run.outcomes.get(key)
    if outcome:
        return f"{outcome['outcome']} in {run.path.name}: {outcome.get('reason') or 'no reason recorded'}"
    if not run.records_outcomes:
        return f"absent from {run.path.name} (a run saved without the perfsuite plugin: skips not recorded)"
    return f"absent from {run.path.name} (not collected: deselected, renamed or the test was removed)"


def _compare_one(key: str, baseline_runs: Sequence[SavedRun], new_runs: Sequence[SavedRun],
                 settings: GateSettings) -> BenchmarkComparison:
    sample = next(run.benchmarks[key] for run in [*baseline_runs, *new_runs] if key in run.benchmarks)
    result = BenchmarkComparison(key, sample.name, sample.backend, Verdict.UNCHANGED)
    in_baseline = [run for run in baseline_runs if key in run.benchmarks]
    absent = [run for run in new_runs if key not in run.benchmarks]
    if not in_baseline:
        result.verdict = Verdict.NEW
        return result
    if absent:
        result.verdict = Verdict.MISSING
        result.notes.extend(_absence_reason(run, key) for run in absent)
        return result
    failed = [run for run in new_runs if run.outcomes.get(key, {}).get("outcome") == "failed"]
    if failed:
        result.verdict = Verdict.FAILED
        result.notes.extend(_absence_reason(run, key) for run in failed)
        return result
    left_out: list[str] = []
    clean_base, base_spoiled = _clean_runs(in_baseline, key, "baseline", settings, left_out)
    clean_new, new_spoiled = _clean_runs(new_runs, key, "new", settings, left_out)
    compared_base, compared_new = clean_base or in_baseline, clean_new or new_runs
    base_values = per_run_values(compared_base, key, settings.statistic)
    new_values = per_run_values(compared_new, key, settings.statistic)
    cvs = [cv for run in [*compared_base, *compared_new] if (cv := run.benchmarks[key].cv) is not None]
    result.time, result.verdict, notes = compare_times(base_values, new_values, settings, max(cvs, default=None))
    if not result.time.testable:
        result.notes.append(few_runs_note(len(base_values), len(new_values), settings))
    result.notes.extend(notes)
    result.notes.extend(left_out)
    if base_spoiled or new_spoiled:
        result.verdict = Verdict.INCONCLUSIVE
    for side, runs in (("baseline", baseline_runs), ("new", new_runs)):
        note = _stability_note(runs, key, side, settings.cv_threshold)
        if note:
            result.notes.append(note)
    for metric in MEMORY_METRICS:
        base_memory = [v for run in in_baseline if (v := run.benchmarks[key].extra_info.get(metric)) is not None]
        new_memory = [v for run in new_runs if (v := run.benchmarks[key].extra_info.get(metric)) is not None]
        if base_memory and new_memory:
            result.memory.append(compare_memory(metric, base_memory, new_memory, settings))
    return result


def _backend_failures(new_runs: Sequence[SavedRun], required: Sequence[str]) -> list[str]:
    failures = []
    for backend in required:
        for run in new_runs:
            if any(record.backend == backend for record in run.benchmarks.values()):
                continue
            skips = [f"{entry.get('reason')}" for nodeid, entry in run.outcomes.items()
                     if re.search(rf"\[{re.escape(backend)}-(fp32|fp16|bf16|int8)-", nodeid)]
            why = f": {skips[0]}" if skips else ""
            failures.append(f"required backend {backend} has no results in {run.path}{why}")
    return failures


def _software(runs: Sequence[SavedRun]) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    for run in runs:
        for name, version in run.software.items():
            text = str(version) if version is not None else "-"
            values.setdefault(name, [])
            if text not in values[name]:
                values[name].append(text)
    return {name: " / ".join(versions) for name, versions in values.items()}


def check_hardware(baseline_runs: Sequence[SavedRun], new_runs: Sequence[SavedRun],
                   allow_mismatch: bool) -> list[tuple[str, Any, Any]]:
    """Rows (field, baseline, new) where any run's hardware differs from the first baseline run's."""
    reference = baseline_runs[0]
    rows: list[tuple[str, Any, Any]] = []
    culprit = None
    for run in [*baseline_runs[1:], *new_runs]:
        diff = mismatches(reference.fingerprint, run.fingerprint)
        if diff and culprit is None:
            culprit, rows = run, diff
    if rows and not allow_mismatch:
        table = "\n".join(f"  {field:<20} {a!s:<36} {b}" for field, a, b in rows)
        raise HardwareMismatch(
            f"{reference.path} and {culprit.path} were measured on different hardware "
            f"(use --allow-hardware-mismatch to compare anyway):\n  {'field':<20} {'baseline':<36} new\n{table}",
            rows)
    return rows


def compare_runs(baseline_runs: Sequence[SavedRun], new_runs: Sequence[SavedRun], settings: GateSettings,
                 allow_hardware_mismatch: bool = False) -> GateResult:
    """The gate: every benchmark of either side, compared (see the module docstring)."""
    if not baseline_runs or not new_runs:
        raise InputError("compare: each side needs at least one run")
    rows = check_hardware(baseline_runs, new_runs, allow_hardware_mismatch)
    keys = list(dict.fromkeys(key for run in [*baseline_runs, *new_runs] for key in run.benchmarks))
    comparisons = [_compare_one(key, baseline_runs, new_runs, settings) for key in keys]
    before, after = _software(baseline_runs), _software(new_runs)
    changes = [(name, before.get(name, "-"), after.get(name, "-")) for name in dict.fromkeys([*before, *after])
               if before.get(name) != after.get(name)]
    same = {name: version for name, version in before.items() if after.get(name) == version}
    return GateResult(settings, list(baseline_runs), list(new_runs), comparisons, baseline_runs[0].fingerprint,
                      rows, changes, same, _backend_failures(new_runs, settings.require_backends))
