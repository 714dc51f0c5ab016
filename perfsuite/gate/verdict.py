"""The verdict per benchmark, and of the whole gate run: pass, fail or undecided.

Replicates are whole runs. Samples within one run share the machine's state during that run
(clocks, placement, host speed, other tenants), so they are not independent evidence about the
next run; only another run is. Each run contributes one number per benchmark (row) and **figure**:
the host-inclusive ``latency`` (its median by default), and on CUDA latency rows the ``device``
time (stream held while the host enqueues, events around the block) and ``host`` time (thread CPU
time of the enqueue), read from ``extra_info.device_time`` / ``host_time`` where every compared run
has them (``FIGURE_FIELDS``). For each figure of each row the gate computes

* the **change**: new against baseline, at equal host speed where the runs recorded it (latency and
  host time, below; device time is not host work and is compared as measured), and the plain change
  of the medians beside it (the headline);
* a **test**: Student's t-test of "new runs are slower" (or faster) on the logarithms of the
  per-run numbers, the spread pooled over both sides (so a single new run can be tested against a
  baseline's spread). A rank test cannot serve: with 6 + 6 runs the exact Mann-Whitney p is never
  below 1/924, above what a gate run of 15 rows needs of one row;
* **one error rate for the whole gate run**: the p-values of every figure of every row are adjusted
  together (Benjamini-Hochberg at ``alpha``, 1%). When nothing changed this bounds the chance that
  *any* figure is called by ``alpha``; when several change together (a slower kernel, a torch
  upgrade) it still calls them, more easily than one alone;
* the figure's **minimum detectable effect** (MDE) from its run-to-run spread (the baseline's, or the
  pooled one where larger: a few lucky baseline runs must not make a row look steadier than it
  is): the slowdown called with probability ``power`` (95%) at the runs compared, were this the
  only figure to change (the test at alpha / tests, and the figure's ``min_effect`` floor).

Each figure has its own **threshold** (``figure_threshold``): device time, and latency of a row
without device time, against ``threshold`` (5%); the host-side figures of a row that has device
time (its latency and host time) against ``host_threshold`` (25%): on a shared VM they carry the
host's noise, and the model's work is judged by device time. ``min_effect`` scales with it.

Verdicts of a figure: ``regressed`` / ``improved`` when the adjusted test is significant and the
change exceeds ``min_effect`` (half the threshold: a slowdown of threshold size is still called when
it measures a little smaller); otherwise ``inconclusive`` ("could not tell") when the observed change
is beyond the threshold, whatever the MDE (rule 3: a change beyond the threshold is never a pass; the
observed change is the tested one and that of the medians, unless the host probe accounts for the
latter: see ``raw_change_counts``); ``unchanged`` when the figure resolves the threshold (MDE <=
threshold); else ``unresolved``: no change beyond the threshold seen, but the figure's noise could
hide one of threshold size (shown, with its MDE). With one run a side there is no run-to-run spread,
no test and no MDE: nothing is called; changes beyond the threshold are inconclusive, the rest
unresolved. A row's verdict is the first of ``ROW_ORDER`` any of its figures has, except that host time
(``SUPPORTING_FIGURES``) counts only when it calls a change: its inconclusive or unresolved verdict is
shown with its MDE but does not hold the gate (on a shared VM it scatters by 6-38% between unchanged runs,
H100 2026-12-06, and would make most gate runs undecided); the figure that called the row's verdict is its
``deciding`` figure (``time`` is its comparison; ``figures`` holds them all).

Rows whose kind is in ``informational`` (model load and cold start by default) are judged and shown
the same way, but their time verdicts never decide the gate's outcome (missing, failed or a memory
regression still do).

Runs are left out of a row, with the reason shown and recorded: a run whose measurement was
throttled or shared its GPU, or shared the CPU with other processes beyond ``host_contention``; if
most of a side was spoiled the row is inconclusive.

**Host speed.** Small-batch rows are host-bound, and a VM's host moves between fast and slow states
from one process to the next (and even between rows of one run): per-run medians of one row scatter
by 20-30% (H200, docs/results). Every row records its own host probe, a host-bound control timed
between its rounds (``perfsuite.measure``). Where every compared run of a row has one, the test of
its latency (and host time) compares the two sides *at equal host speed*: a regression of the log
per-run values on the log of the row's probe, with a term for the side (analysis of covariance; the
slope is fitted, about 1.2 for host-bound rows and about 0 for device-bound ones, so one fixed model
serves both and nothing is chosen after looking at the numbers). The change called is the side term;
the host-inclusive change of the medians stays the headline and is shown beside it. Where the two
sides ran at different host speeds, the probe term takes up part of the difference between them and
the side term is known less precisely: the row's MDE counts that. Measured on the H200, this cut the
run-to-run spread of batch-1 rows from 25% to 6% and of batch-64/256 rows to 0.3-2%. A change that
slows the probe as much as the model (e.g. more overhead in torch's launch path itself) is partly
taken for host speed: the report shows how much slower the new side's probes ran.

The whole gate: ``fail`` (exit 1) on any regressed (not informational), missing or failed row,
memory regression or required backend without results; else ``undecided`` (exit 3; the
``inconclusive`` setting can make it fail or pass instead) on any inconclusive row that is not
informational; else ``pass`` (exit 0).

Memory (peak GPU memory and the runner's host RSS growth) is compared by the median over runs
of the finite values: a growth beyond ``memory_threshold`` and ``memory_floor_bytes`` regresses.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import statistics
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from perfsuite.errors import InputError
from perfsuite.gate.hardware import HardwareFingerprint, mismatches, physical_gpu_notes
from perfsuite.gate.runs import BenchmarkRecord, SavedRun
from perfsuite.gate.settings import GateSettings
from perfsuite.telemetry import measurement_problems

MEMORY_METRICS = {"peak_gpu_memory_bytes": "GPU peak", "host_rss_delta_bytes": "host RSS growth"}
#: the run configuration (``results.run_fields``) both sides of a row must share
CONFIG_FIELDS = ("model", "weights_fingerprint", "transform", "precision", "numeric_mode", "tf32",
                 "cudnn_benchmark", "batch_size")
EXIT_CODES = {"pass": 0, "fail": 1, "undecided": 3}


class Verdict(str, enum.Enum):
    REGRESSED = "regressed"
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    UNRESOLVED = "unresolved"  # no change called, but the row cannot resolve the threshold
    INCONCLUSIVE = "inconclusive"  # could not tell
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


class ConfigMismatch(InputError):
    """Rows were run with different configurations; ``rows`` lists (field, baseline, new, benchmarks)."""

    def __init__(self, message: str, rows: list[tuple[str, str, str, str]]) -> None:
        super().__init__(message)
        self.rows = rows


# -- statistics ----------------------------------------------------------------------------------


def _scipy():
    try:
        import scipy.optimize
        import scipy.special
        import scipy.stats
    except ImportError as exc:
        raise InputError("the gate's statistics need scipy (pip install 'perfsuite[report]')") from exc
    return scipy


#: fewer runs than this give no usable estimate of a spread (two runs' difference is mostly luck)
MIN_RUNS_FOR_SPREAD = 3


@dataclasses.dataclass(frozen=True)
class TTest:
    """The t-test of the side term in a least-squares fit of log per-run values (see :func:`t_test`)."""

    shift: float  # estimated log(new / baseline), at equal host speed when adjusted
    p_slower: float  # one-sided: new slower
    p_faster: float
    pooled_spread: float  # residual SD of the log values, both sides pooled
    df: int
    slope: float | None  # fitted d log(value) / d log(host probe); None: not adjusted
    #: the shift's standard error per unit of spread: sqrt(1/n_baseline + 1/n_new) for the plain test; more
    #: where the sides' probes differ, as the probe term then takes up part of the difference between them
    error_factor: float


def _fit(logs: Sequence[float], columns: Sequence[Sequence[float]]) -> tuple[Any, float, int, Any] | None:
    """Least squares of ``logs`` on ``columns`` (an intercept added): (coefficients, residual SD, df,
    (X'X)^-1), or None when the columns are degenerate or nothing is left to estimate the spread."""
    import numpy as np

    design = np.column_stack([np.ones(len(logs)), *columns])
    df = len(logs) - design.shape[1]
    if df < 1 or np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    coefficients, *_ = np.linalg.lstsq(design, np.asarray(logs), rcond=None)
    residuals = np.asarray(logs) - design @ coefficients
    spread = math.sqrt(float(residuals @ residuals) / df)
    return coefficients, spread, df, np.linalg.inv(design.T @ design)


def t_test(baseline: Sequence[float], new: Sequence[float], baseline_probe: Sequence[float] | None = None,
           new_probe: Sequence[float] | None = None) -> TTest | None:
    """Student's t-test of log new vs log baseline values, spread pooled over both sides; with probes
    (each run's host probe), at equal host speed: log value = a + slope * log probe + shift * [new].
    None without any run-to-run spread left (one run a side, identical runs, probes that leave no
    degree of freedom). Pooled: both sides ran on one machine, so under "no change" they are one
    distribution, and a side of one run can still be tested against the other side's spread."""
    logs = [math.log(v) for v in (*baseline, *new)]
    side = [0.0] * len(baseline) + [1.0] * len(new)
    fit = None
    if baseline_probe is not None and new_probe is not None:
        fit = _fit(logs, [[math.log(v) for v in (*baseline_probe, *new_probe)], side])
    adjusted = fit is not None
    fit = fit or _fit(logs, [side])
    if fit is None or fit[1] == 0:
        return None
    coefficients, spread, df, inverse = fit
    shift, error_factor = float(coefficients[-1]), math.sqrt(float(inverse[-1, -1]))
    p_slower = float(_scipy().special.stdtr(df, -shift / (spread * error_factor)))
    return TTest(shift, p_slower, 1 - p_slower, spread, df, float(coefficients[1]) if adjusted else None,
                 error_factor)


def baseline_spread(values: Sequence[float], probes: Sequence[float] | None) -> float | None:
    """The baseline's own run-to-run spread of log values (residual SD about the probe fit where given);
    None below ``MIN_RUNS_FOR_SPREAD`` runs."""
    if len(values) < MIN_RUNS_FOR_SPREAD:
        return None
    logs = [math.log(v) for v in values]
    fit = _fit(logs, [[math.log(v) for v in probes]]) if probes is not None else None
    return fit[1] if fit is not None else statistics.stdev(logs)


@lru_cache(maxsize=4096)
def detectable_shift(alpha: float, power: float, df: int) -> float:
    """The true shift, in standard errors, that the one-sided t-test at ``alpha`` with ``df`` degrees
    of freedom detects with probability ``power`` (solved on the noncentral t distribution)."""
    scipy = _scipy()
    critical = float(scipy.stats.t.ppf(1 - alpha, df))
    high = critical + 10
    while scipy.stats.nct.sf(critical, df, high) < power:
        high *= 2
    return float(scipy.optimize.brentq(lambda shift: scipy.stats.nct.sf(critical, df, shift) - power, 0, high))


def minimum_detectable_effect(spread: float | None, n_baseline: int, n_new: int, alpha: float, power: float,
                              min_effect: float, parameters: int = 2,
                              error_factor: float | None = None) -> float | None:
    """The slowdown called with probability ``power``: significant in the one-sided t-test at ``alpha``
    and measured beyond ``min_effect``, for runs whose log values scatter by ``spread`` (``parameters``:
    2 for the plain test, 3 with the host-probe term; ``error_factor``: the test's ``TTest.error_factor``,
    default that of sides at equal host speed, sqrt(1/n_baseline + 1/n_new))."""
    if spread is None or n_new < 1 or n_baseline + n_new <= parameters:
        return None
    df = n_baseline + n_new - parameters
    standard_error = spread * (error_factor or math.sqrt(1 / n_baseline + 1 / n_new))
    beyond_floor = math.log1p(min_effect) + float(_scipy().stats.t.ppf(power, df)) * standard_error
    return math.expm1(max(detectable_shift(alpha, power, df) * standard_error, beyond_floor))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Adjusted p-values: a row is significant for the whole gate run when its adjusted p <= alpha."""
    if not p_values:
        return []
    return [float(p) for p in _scipy().stats.false_discovery_control(list(p_values), method="bh")]


# -- comparisons ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TimeComparison:
    baseline: tuple[float, ...]  # per-run statistic of the compared runs, seconds (the headline figures)
    new: tuple[float, ...]
    baseline_probe: tuple[float, ...] | None  # each compared run's host probe (seconds), None where not used
    new_probe: tuple[float, ...] | None
    effect: float  # the change tested: exp(shift) - 1, at equal host speed when adjusted
    raw_effect: float  # of the headline figures: median(new) / median(baseline) - 1
    probe_change: float | None  # median(new probe) / median(baseline probe) - 1: how much slower the new host ran
    slope: float | None  # fitted d log(time) / d log(probe); None: not adjusted
    baseline_spread: float | None  # residual SD of the baseline's log values (None below MIN_RUNS_FOR_SPREAD)
    pooled_spread: float | None  # the test's: both sides pooled
    mde: float | None  # from the baseline spread, or the pooled one where larger
    p_slower: float | None  # one-sided, this row alone
    p_faster: float | None
    p_slower_adjusted: float | None = None  # Benjamini-Hochberg over all tests of the gate run
    p_faster_adjusted: float | None = None
    standard_error: float | None = None  # of the tested log change (None: no test)
    df: int | None = None  # the test's degrees of freedom

    def interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """Two-sided confidence interval of the tested change (as ``effect``), None without a test."""
        if self.standard_error is None or self.df is None:
            return None
        half = float(_scipy().stats.t.ppf(0.5 + confidence / 2, self.df)) * self.standard_error
        shift = math.log1p(self.effect)
        return math.expm1(shift - half), math.expm1(shift + half)

    @property
    def host_adjusted(self) -> bool:
        return self.slope is not None

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def new_median(self) -> float:
        return statistics.median(self.new)

    @property
    def p_adjusted(self) -> float | None:
        """The adjusted p-value in the direction of the change."""
        return self.p_slower_adjusted if self.effect >= 0 else self.p_faster_adjusted


#: the figures of a row, in the order the report shows them: the host-inclusive latency (pytest-benchmark's
#: statistic), and on CUDA rows the device time (stream held while the host enqueues) and host time
#: (the enqueue's thread CPU time), read from extra_info (perfsuite.measure, results.py)
FIGURES = {"latency": "latency", "device": "device time", "host": "host time"}
FIGURE_FIELDS = {"device": "device_time", "host": "host_time"}
#: which figure stands for a row whose figures agree: the device's own work first
PRIMARY_ORDER = ("device", "latency", "host")
#: a row's verdict from its figures': the first of these that any figure has
#: figures that call a regression (or improvement) when significant but whose "could not tell" does not hold
#: the row: host time, the host's CPU work per call, scatters by 6-38% between unchanged runs on a shared VM
#: (H100 drill, 2026-12-06), so it cannot resolve even ``host_threshold``; latency keeps the host side gated
SUPPORTING_FIGURES = ("host",)
ROW_ORDER = (Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.UNRESOLVED, Verdict.IMPROVED, Verdict.UNCHANGED)


@dataclasses.dataclass(frozen=True)
class FigureComparison:
    """One figure of a row, judged against its own threshold (see the module docstring)."""

    name: str  # a key of FIGURES
    time: TimeComparison
    threshold: float
    min_effect: float
    verdict: Verdict = Verdict.UNCHANGED
    note: str | None = None

    @property
    def label(self) -> str:
        return FIGURES[self.name]

    def as_dict(self) -> dict[str, Any]:
        interval = self.time.interval()
        return {"verdict": self.verdict.value, "threshold": self.threshold, "min_effect": self.min_effect,
                "note": self.note, "interval_95": list(interval) if interval else None,
                **dataclasses.asdict(self.time)}


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


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """A run left out of one row's comparison, and why."""

    side: str  # "baseline" or "new"
    run: str  # the run's file
    reason: str


@dataclasses.dataclass
class BenchmarkComparison:
    key: str
    name: str
    backend: str | None
    verdict: Verdict  # the row's: from its figures' (ROW_ORDER)
    time: TimeComparison | None = None  # the deciding figure's (``deciding``)
    memory: list[MemoryComparison] = dataclasses.field(default_factory=list)
    left_out: list[LeftOut] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    kind: str | None = None  # extra_info "kind": latency, model_load, cold_start
    informational: bool = False  # shown, never deciding the gate (settings.informational)
    figures: dict[str, FigureComparison] = dataclasses.field(default_factory=dict)
    deciding: str | None = None  # the figure whose verdict is the row's (the most significant where several)
    called_by: list[str] = dataclasses.field(default_factory=list)  # every figure with the row's verdict
    #: figures no compared run recorded (runs made before perfsuite measured them), and figures every run
    #: recorded as unavailable: name -> reason (the report says each once, not per row)
    not_recorded: list[str] = dataclasses.field(default_factory=list)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def failing(self) -> bool:
        """Whether this row fails the gate: missing or failed, a memory regression, or a time regression of
        a row that is not informational."""
        if self.verdict in (Verdict.MISSING, Verdict.FAILED) or any(m.verdict is Verdict.REGRESSED
                                                                    for m in self.memory):
            return True
        return self.verdict is Verdict.REGRESSED and not self.informational

    @property
    def deciding_figure(self) -> FigureComparison | None:
        return self.figures.get(self.deciding) if self.deciding else None


@dataclasses.dataclass
class GateResult:
    settings: GateSettings
    baseline_runs: list[SavedRun]
    new_runs: list[SavedRun]
    comparisons: list[BenchmarkComparison]
    hardware: HardwareFingerprint
    hardware_mismatch: list[tuple[str, Any, Any]]  # non-empty only with --allow-hardware-mismatch
    config_mismatch: list[tuple[str, str, str, str]]  # non-empty only with --allow-config-mismatch
    software_changes: list[tuple[str, str, str]]  # (package, baseline, new) where they differ
    software_same: dict[str, str]
    backend_failures: list[str]
    family_size: int  # tests (figures of rows) compared on time: the MDE assumes the test at alpha / family_size
    #: runs on different physical GPUs of the fingerprint (``gate.hardware.physical_gpu_notes``)
    physical_gpus: list[str] = dataclasses.field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        """Rows with this verdict that decide the gate (informational rows are counted apart)."""
        return sum(c.verdict is verdict and not c.informational for c in self.comparisons)

    @property
    def informational(self) -> list[BenchmarkComparison]:
        return [c for c in self.comparisons if c.informational]

    @property
    def outcome(self) -> str:
        """One of "pass", "fail", "undecided" (see the module docstring)."""
        if self.backend_failures or any(c.failing for c in self.comparisons):
            return "fail"
        return self.settings.inconclusive if self.count(Verdict.INCONCLUSIVE) else "pass"

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        """The result as ``compare --json`` writes it; its JSON Schema is ``gate.result_schema.COMPARE_SCHEMA``."""
        from perfsuite.gate.result_schema import SCHEMA_ID, SCHEMA_VERSION

        def comparison(c: BenchmarkComparison) -> dict[str, Any]:
            return {"key": c.key, "name": c.name, "backend": c.backend, "kind": c.kind, "verdict": c.verdict.value,
                    "failing": c.failing, "informational": c.informational, "deciding_figure": c.deciding,
                    "called_by": c.called_by, "notes": c.notes,
                    "time": dataclasses.asdict(c.time) if c.time else None,
                    "figures": {name: figure.as_dict() for name, figure in c.figures.items()},
                    "figures_not_recorded": c.not_recorded, "figures_unavailable": c.unavailable,
                    "left_out": [dataclasses.asdict(entry) for entry in c.left_out],
                    "memory": [{"metric": m.metric, "baseline": m.baseline, "new": m.new, "verdict": m.verdict.value}
                               for m in c.memory]}

        return {
            "schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION,
            "passed": self.outcome == "pass", "outcome": self.outcome, "exit_code": self.exit_code,
            "settings": self.settings.as_dict(),
            "statistics": {"test": "one-sided Student t-test (pooled) on log per-run values of each figure; latency "
                                   "and host time at equal host speed (least squares on the log host probe) where "
                                   "recorded, device time as measured",
                           "multiplicity": "Benjamini-Hochberg over every figure test of the gate run",
                           "family_size": self.family_size,
                           "mde_alpha": self.settings.alpha / max(self.family_size, 1),
                           "mde_power": self.settings.power},
            "hardware": {"id": self.hardware.id, "label": self.hardware.label, **self.hardware.as_dict()},
            "hardware_mismatch": [list(row) for row in self.hardware_mismatch],
            "physical_gpus": self.physical_gpus,
            "config_mismatch": [list(row) for row in self.config_mismatch],
            "software_changes": [list(row) for row in self.software_changes],
            "host_probe_s": {"baseline": [r.host_speed_s for r in self.baseline_runs],
                             "new": [r.host_speed_s for r in self.new_runs]},
            "baseline_runs": [str(r.path) for r in self.baseline_runs],
            "new_runs": [str(r.path) for r in self.new_runs],
            "backend_failures": self.backend_failures,
            "counts": {v.value: self.count(v) for v in Verdict},
            "informational": [c.key for c in self.informational],
            "rows": [comparison(c) for c in self.comparisons],
        }


def raw_change_counts(time: TimeComparison) -> bool:
    """Whether rule 3 judges the change of the medians beside the tested one: always, except where the
    figure is compared at equal host speed and the medians' change lies outside the 95% confidence interval
    of the change at equal host speed, i.e. the host probes significantly account for the difference. Where
    the sides' host speeds are confounded with the side (every new run on a slower host), the interval is
    wide, holds the medians' change, and that change counts."""
    interval = time.interval() if time.host_adjusted else None
    return interval is None or interval[0] <= time.raw_effect <= interval[1]


def decide(time: TimeComparison, settings: GateSettings, threshold: float | None = None,
           min_effect: float | None = None) -> tuple[Verdict, str | None]:
    """A figure's verdict from its change, adjusted test and MDE against its ``threshold`` (default the
    gate's) and ``min_effect`` (default scaled to that threshold), see the module docstring; and why."""
    threshold = settings.threshold if threshold is None else threshold
    min_effect = settings.min_effect_for(threshold) if min_effect is None else min_effect
    effect = time.effect
    significant = time.p_adjusted is not None and time.p_adjusted <= settings.alpha
    if significant and abs(effect) > min_effect:
        return (Verdict.REGRESSED if effect > 0 else Verdict.IMPROVED), None
    # Rule 3: an observed change beyond the threshold, tested or of the medians, is never a pass. The medians'
    # change is left aside only where the host probe accounts for it: compared at equal host speed, it lies
    # outside the tested change's 95% confidence interval (the sides ran at measurably different host speeds).
    observed = max(effect, time.raw_effect, key=abs) if raw_change_counts(time) else effect
    beyond = abs(observed) > threshold
    seen = (f"{abs(effect):.1%} {'slower' if effect > 0 else 'faster'}" if abs(observed) == abs(effect) else
            f"{abs(observed):.1%} {'slower' if observed > 0 else 'faster'} (medians; {effect:+.1%} as tested)")
    if time.p_adjusted is None:
        why = "one run a side" if len(time.baseline) == len(time.new) == 1 else "identical runs"
        if beyond:
            return Verdict.INCONCLUSIVE, (f"{seen}, but without run-to-run spread ({why}) a "
                                          "change cannot be told from noise: could not tell")
        return Verdict.UNRESOLVED, f"no run-to-run spread ({why}): no test, no MDE; nothing can be called"
    if beyond:
        mde = "unknown" if time.mde is None else ">1000%" if time.mde > 10 else f"{time.mde:.1%}"
        return Verdict.INCONCLUSIVE, (f"{seen}, beyond the {threshold:.0%} threshold but not called (adjusted p = "
                                      f"{time.p_adjusted:.3f}, alpha {settings.alpha:g}; MDE {mde}): could not "
                                      "tell; record more runs")
    if significant:
        return Verdict.UNCHANGED, f"significant but {abs(effect):.1%}, below min_effect {min_effect:.1%}"
    if time.mde is not None and time.mde <= threshold:
        return Verdict.UNCHANGED, None
    if time.mde is None:
        return Verdict.UNRESOLVED, (f"the baseline has fewer than {MIN_RUNS_FOR_SPREAD} runs compared: its "
                                    "run-to-run spread, hence the MDE, is unknown")
    return Verdict.UNRESOLVED, (f"MDE {time.mde:.1%} > threshold {threshold:.0%}: this figure's run-to-run "
                                "noise hides changes of threshold size; record more runs")


def compare_memory(metric: str, baseline: Sequence[float], new: Sequence[float],
                   settings: GateSettings) -> MemoryComparison:
    base_value, new_value = statistics.median(baseline), statistics.median(new)
    allowed = max(settings.memory_threshold * abs(base_value), settings.memory_floor_bytes)
    change = new_value - base_value
    verdict = Verdict.REGRESSED if change > allowed else Verdict.IMPROVED if change < -allowed else Verdict.UNCHANGED
    return MemoryComparison(metric, base_value, new_value, verdict)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _memory(key: str, baseline_runs: Sequence[SavedRun], new_runs: Sequence[SavedRun], settings: GateSettings,
            result: BenchmarkComparison) -> None:
    for metric, label in MEMORY_METRICS.items():
        sides = {}
        for side, runs in (("baseline", baseline_runs), ("new", new_runs)):
            values = [run.benchmarks[key].extra_info.get(metric) for run in runs]
            sides[side] = [float(v) for v in values if _finite(v)]
            bad = [f"{run.path.name} ({value!r})" for run, value in zip(runs, values)
                   if value is not None and not _finite(value)]
            if bad:
                result.notes.append(f"{label} left out of {side} run(s) {', '.join(bad)}: not a finite number")
        if sides["baseline"] and sides["new"]:
            result.memory.append(compare_memory(metric, sides["baseline"], sides["new"], settings))
        elif sides["baseline"] or sides["new"]:
            missing = "new" if sides["baseline"] else "baseline"
            result.notes.append(f"{label} not compared: no finite value in the {missing} runs")


def run_problem(record: BenchmarkRecord, settings: GateSettings) -> str | None:
    """Why this run's measurement of a benchmark cannot be trusted (throttled, GPU or CPU shared), or None."""
    found = measurement_problems(record.telemetry, record.extra_info.get("host_telemetry"), settings.host_contention)
    return found[0] if found else None


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


def _clean_runs(runs: Sequence[SavedRun], key: str, side: str, settings: GateSettings,
                left_out: list[LeftOut]) -> list[SavedRun]:
    """The runs whose measurement of ``key`` is trustworthy."""
    kept = []
    for run in runs:
        problem = run_problem(run.benchmarks[key], settings)
        if problem:
            left_out.append(LeftOut(side, str(run.path), problem))
        else:
            kept.append(run)
    return kept


#: per figure: (baseline values, new values, baseline probes, new probes); probes None where not all recorded
FigureInputs = dict[str, tuple[list[float], list[float], list[float] | None, list[float] | None]]


def _figure_inputs(key: str, compared_base: Sequence[SavedRun], compared_new: Sequence[SavedRun],
                   settings: GateSettings, result: BenchmarkComparison) -> FigureInputs:
    """Each figure's per-run values, where every compared run has it (the contract in docs/gate.md)."""
    records = [[run.benchmarks[key] for run in runs] for runs in (compared_base, compared_new)]
    probes = [[record.host_probe_s for record in side] for side in records]
    probed = None not in (*probes[0], *probes[1])
    inputs: FigureInputs = {"latency": ([r.statistic(settings.statistic) for r in records[0]],
                                        [r.statistic(settings.statistic) for r in records[1]],
                                        *((probes[0], probes[1]) if probed else (None, None)))}
    for name, field in FIGURE_FIELDS.items():
        readings = [[record.timing_figure(field) for record in side] for side in records]
        flat = [*readings[0], *readings[1]]
        if all(value is not None for value, _ in flat):
            # host time is host work: compared at equal host speed like latency; device time as measured
            adjust = name == "host" and probed
            inputs[name] = ([v for v, _ in readings[0]], [v for v, _ in readings[1]],
                            *((probes[0], probes[1]) if adjust else (None, None)))
        elif all(value is None and why is None for value, why in flat):
            if result.kind == "latency":
                result.not_recorded.append(name)
        elif all(value is None and why is not None for value, why in flat) and len({why for _, why in flat}) == 1:
            result.unavailable[name] = flat[0][1]
        else:
            counts = [f"{sum(value is not None for value, _ in side)} of {len(side)} {label}"
                      for side, label in zip(readings, ("baseline", "new"))]
            reasons = sorted({why for _, why in flat if why})
            result.notes.append(f"{FIGURES[name]} not compared: recorded in {' and '.join(counts)} runs"
                                + (f" ({'; '.join(reasons)})" if reasons else ""))
    return inputs


def _compare_one(key: str, baseline_runs: Sequence[SavedRun], new_runs: Sequence[SavedRun],
                 settings: GateSettings) -> tuple[BenchmarkComparison, FigureInputs | None]:
    """One row up to its figures' values; rows still to be decided have a provisional UNCHANGED."""
    sample = next(run.benchmarks[key] for run in [*baseline_runs, *new_runs] if key in run.benchmarks)
    result = BenchmarkComparison(key, sample.name, sample.backend, Verdict.UNCHANGED, kind=sample.kind,
                                 informational=sample.kind in settings.informational)
    in_baseline = [run for run in baseline_runs if key in run.benchmarks]
    absent = [run for run in new_runs if key not in run.benchmarks]
    if not in_baseline:
        result.verdict = Verdict.NEW
        return result, None
    if absent:
        result.verdict = Verdict.MISSING
        result.notes.extend(_absence_reason(run, key) for run in absent)
        return result, None
    failed = [run for run in new_runs if run.outcomes.get(key, {}).get("outcome") == "failed"]
    if failed:
        result.verdict = Verdict.FAILED
        result.notes.extend(_absence_reason(run, key) for run in failed)
        return result, None
    clean_base = _clean_runs(in_baseline, key, "baseline", settings, result.left_out)
    clean_new = _clean_runs(new_runs, key, "new", settings, result.left_out)
    compared_base, compared_new = clean_base or in_baseline, clean_new or new_runs
    for side, runs in (("baseline", baseline_runs), ("new", new_runs)):
        note = _stability_note(runs, key, side, settings.cv_threshold)
        if note:
            result.notes.append(note)
    _memory(key, in_baseline, new_runs, settings, result)
    for side, runs, clean in (("baseline", in_baseline, clean_base), ("new", new_runs, clean_new)):
        if 2 * (len(runs) - len(clean)) > len(runs):
            result.verdict = Verdict.INCONCLUSIVE
            result.notes.append(f"{len(runs) - len(clean)} of {len(runs)} {side} runs were throttled or shared their "
                                "machine: could not tell")
    return result, _figure_inputs(key, compared_base, compared_new, settings, result)


def compare_figure(base_values: Sequence[float], new_values: Sequence[float], base_probe: Sequence[float] | None,
                   new_probe: Sequence[float] | None, settings: GateSettings, mde_alpha: float,
                   min_effect: float) -> TimeComparison:
    """One figure of one row up to its test (not yet adjusted for the other tests of the gate run)."""
    probed = base_probe is not None and new_probe is not None
    test = t_test(base_values, new_values, *((base_probe, new_probe) if probed else ()))
    adjusted = test is not None and test.slope is not None
    spread = baseline_spread(base_values, base_probe if adjusted else None)
    pooled = test.pooled_spread if test else None
    # A few lucky baseline runs must not make the row look steadier than this comparison shows it is; and
    # where the sides ran at different host speeds, the adjusted test is less precise: its MDE says so.
    mde = minimum_detectable_effect(None if spread is None else max(spread, pooled or 0.0), len(base_values),
                                    len(new_values), mde_alpha, settings.power, min_effect,
                                    3 if adjusted else 2, test.error_factor if test else None)
    raw_effect = statistics.median(new_values) / statistics.median(base_values) - 1
    return TimeComparison(
        tuple(base_values), tuple(new_values), tuple(base_probe) if adjusted else None,
        tuple(new_probe) if adjusted else None, math.expm1(test.shift) if test else raw_effect, raw_effect,
        statistics.median(new_probe) / statistics.median(base_probe) - 1 if probed else None,
        test.slope if test else None, spread, pooled, mde,
        test.p_slower if test else None, test.p_faster if test else None,
        standard_error=test.pooled_spread * test.error_factor if test else None, df=test.df if test else None)


def figure_threshold(name: str, figures: Sequence[str], settings: GateSettings) -> float:
    """Device time, and latency on a row without device time, against ``threshold``; host-side figures of
    a row that has device time (its latency, and host time wherever it is compared) against
    ``host_threshold``: they carry the host's noise, the device's work is judged by device time."""
    if name == "device" or (name == "latency" and "device" not in figures):
        return settings.threshold
    return settings.host_threshold


def _settle_row(c: BenchmarkComparison) -> None:
    """The row's verdict, deciding figure and notes from its figures' verdicts."""
    figures = c.figures
    if c.verdict is Verdict.INCONCLUSIVE:  # most runs spoiled: every figure could not tell
        c.figures = {name: dataclasses.replace(f, verdict=Verdict.INCONCLUSIVE) for name, f in figures.items()}
        figures = c.figures
    else:
        holding = {name: f for name, f in figures.items() if name not in SUPPORTING_FIGURES
                   or f.verdict in (Verdict.REGRESSED, Verdict.IMPROVED)}
        c.verdict = next(v for v in ROW_ORDER if any(f.verdict is v for f in holding.values()))
    called = [name for name in PRIMARY_ORDER if name in figures and figures[name].verdict is c.verdict]
    if c.verdict in (Verdict.REGRESSED, Verdict.IMPROVED):
        called.sort(key=lambda name: figures[name].time.p_adjusted)
    c.called_by = called
    c.deciding = called[0] if called else next(name for name in PRIMARY_ORDER if name in figures)
    c.time = figures[c.deciding].time
    several = len(figures) > 1
    notes = [f"{f.label}: {f.note}" if several else f.note for f in figures.values() if f.note]
    c.notes[:0] = notes


def compare_runs(baseline_runs: Sequence[SavedRun], new_runs: Sequence[SavedRun], settings: GateSettings,
                 allow_hardware_mismatch: bool = False, allow_config_mismatch: bool = False) -> GateResult:
    """The gate: every benchmark of either side, compared (see the module docstring)."""
    if not baseline_runs or not new_runs:
        raise InputError("compare: each side needs at least one run")
    hardware_rows = check_hardware(baseline_runs, new_runs, allow_hardware_mismatch)
    keys = list(dict.fromkeys(key for run in [*baseline_runs, *new_runs] for key in run.benchmarks))
    compared = [key for key in keys if any(key in run.benchmarks for run in baseline_runs)
                and all(key in run.benchmarks for run in new_runs)]
    config_rows = check_config(baseline_runs, new_runs, compared, allow_config_mismatch)
    rows = [_compare_one(key, baseline_runs, new_runs, settings) for key in keys]
    comparisons = [c for c, _ in rows]
    family_size = sum(len(inputs) for _, inputs in rows if inputs)
    mde_alpha = settings.alpha / max(family_size, 1)
    for c, inputs in rows:
        if inputs:
            for name, values in inputs.items():
                threshold = figure_threshold(name, list(inputs), settings)
                min_effect = settings.min_effect_for(threshold)
                c.figures[name] = FigureComparison(name, compare_figure(*values, settings, mde_alpha, min_effect),
                                                   threshold, min_effect)
    pending = [c for c in comparisons if c.figures and c.verdict is Verdict.UNCHANGED]
    # One family: every figure test of every row (informational rows included, so that their shown
    # verdicts hold at the same error rate); the two directions are adjusted apart, as each is one-sided.
    tested = [(c, name) for c in pending for name, f in c.figures.items() if f.time.p_slower is not None]
    for direction in ("slower", "faster"):
        adjusted = benjamini_hochberg([getattr(c.figures[name].time, f"p_{direction}") for c, name in tested])
        for (c, name), value in zip(tested, adjusted):
            figure = c.figures[name]
            c.figures[name] = dataclasses.replace(
                figure, time=dataclasses.replace(figure.time, **{f"p_{direction}_adjusted": value}))
    for c in pending:
        for name, figure in c.figures.items():
            verdict, note = decide(figure.time, settings, figure.threshold, figure.min_effect)
            c.figures[name] = dataclasses.replace(figure, verdict=verdict, note=note)
    for c in comparisons:
        if c.figures:
            _settle_row(c)
    before, after = _software(baseline_runs), _software(new_runs)
    changes = [(name, before.get(name, "-"), after.get(name, "-")) for name in dict.fromkeys([*before, *after])
               if before.get(name) != after.get(name)]
    same = {name: version for name, version in before.items() if after.get(name) == version}
    return GateResult(settings, list(baseline_runs), list(new_runs), comparisons, baseline_runs[0].fingerprint,
                      hardware_rows, config_rows, changes, same, _backend_failures(new_runs, settings.require_backends),
                      family_size, physical_gpus=_physical_gpus(baseline_runs, new_runs))


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


def _config_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def check_config(baseline_runs: Sequence[SavedRun], new_runs: Sequence[SavedRun], keys: Sequence[str],
                 allow_mismatch: bool) -> list[tuple[str, str, str, str]]:
    """Rows (field, baseline, new, benchmarks) where a compared benchmark's run configuration differs
    between the sides; fields a run did not record are unknown, not different."""
    differing: dict[tuple[str, str, str], list[str]] = {}
    for key in keys:
        for field in CONFIG_FIELDS:
            sides = [sorted({_config_text(value) for run in runs if key in run.benchmarks
                             and (value := run.benchmarks[key].extra_info.get(field)) is not None})
                     for runs in (baseline_runs, new_runs)]
            if all(sides) and sides[0] != sides[1]:
                differing.setdefault((field, " / ".join(sides[0]), " / ".join(sides[1])), []).append(key)
    rows = []
    for (field, base, new), benchmarks in differing.items():
        names = [key.rsplit("::", 1)[-1] for key in benchmarks]
        rows.append((field, base, new, f"{len(names)}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"))
    if rows and not allow_mismatch:
        widths = [max(len(row[i]) for row in [("field", "baseline", "new", ""), *rows]) for i in range(3)]
        table = "\n".join(f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in
                          [("field", "baseline", "new", "benchmarks"), *rows])
        raise ConfigMismatch("BASELINE and NEW ran with different configurations, so their numbers are not "
                             f"comparable (use --allow-config-mismatch to compare anyway):\n{table}", rows)
    return rows


def _physical_gpus(baseline_runs: Sequence[SavedRun], new_runs: Sequence[SavedRun]) -> list[str]:
    """Notes on the physical GPUs the runs ran on (several cards of one model are one fingerprint)."""
    return physical_gpu_notes([(run.path.name, run.machine_info) for run in baseline_runs],
                              [(run.path.name, run.machine_info) for run in new_runs])
