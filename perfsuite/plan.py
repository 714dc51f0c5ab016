"""The plan a benchmark run prints before it starts, and a progress line per benchmark as it finishes.

The estimate is measured, not assumed: before the first benchmark the plugin loads the session's model
(the load the session needs anyway, timed) and times one eager fp32 forward at each planned batch size
(:func:`warm_up_timings`). Each row's cost is then what the suite does for it, in those units
(:func:`row_seconds`): ``measure``'s warm-up calls, the parity call, the timed rounds (at least
``--benchmark-min-rounds``, at least ``--benchmark-max-time``) and the runner's build; a model-load row
is three loads, a cold-start row three runner builds and first calls. Eager at another precision is
costed by one forward at the smallest batch in that precision (a cast copy), relative to fp32; other backends
as eager fp32, and a converted backend adds the load of its artifact, and its export when the cache holds
none yet.

While the run goes, :class:`ProgressLog` prints one line per finished benchmark: what ran, its median, the
time so far and an estimate of what is left (the plan's remaining rows, scaled by how the finished rows
compared with their estimates). ``-q`` silences it.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

#: a runner's build: a fraction of a model load (an ONNX Runtime session parses the same weights)
CONVERTED_LOAD_PER_MODEL_LOAD = 0.6
#: an export in a fresh process (torch import, tracing, serialization), in model loads
EXPORT_PER_MODEL_LOAD = 2.5
MODEL_LOAD_ROUNDS = 3  # benchmarks/test_startup.py's STARTUP_ROUNDS
COLD_START_ROUNDS = 3


@dataclasses.dataclass(frozen=True)
class WarmUp:
    """What the plan measured on this machine, now."""

    model_load_s: float
    forward_s: dict[int, float]  # eager fp32, per batch size
    #: eager at the smallest batch, per other precision, over fp32's time there (bf16 without AVX-512-BF16: ~50)
    precision_factor: dict[str, float] = dataclasses.field(default_factory=dict)

    def forward(self, batch_size: int | None, precision: str | None = None) -> float:
        if not self.forward_s:
            return 0.0
        factor = self.precision_factor.get(precision or "fp32", 1.0)
        if batch_size in self.forward_s:
            return self.forward_s[batch_size] * factor
        nearest = min(self.forward_s, key=lambda n: abs(n - (batch_size or 1)))
        return self.forward_s[nearest] * (batch_size or 1) / nearest * factor  # linear in the batch: a rough guess


def warm_up_timings(module: torch.nn.Module, batch_sizes: Iterable[int], device: str, model_load_s: float,
                    time_call: Callable[[Callable[[], Any]], float], precisions: Iterable[str] = ()) -> WarmUp:
    """One eager fp32 forward per batch size, and one per other precision at the smallest batch (each after
    an untimed call that warms the allocator)."""
    forward: dict[int, float] = {}
    factors: dict[str, float] = {}
    sizes = sorted(set(batch_sizes))
    model = module.to(device).eval()
    with torch.inference_mode():
        for batch_size in sizes:
            images = torch.zeros(batch_size, 3, 224, 224, device=device)
            model(images)
            forward[batch_size] = time_call(lambda images=images: model(images))
        others = [p for p in dict.fromkeys(precisions) if p in _DTYPES and p != "fp32"]
        for precision in others:
            dtype = _DTYPES[precision]
            cast = copy.deepcopy(model).to(dtype)  # as the eager backend runs it
            images = torch.zeros(sizes[0], 3, 224, 224, device=device, dtype=dtype)
            cast(images)
            seconds = time_call(lambda images=images, cast=cast: cast(images))
            del cast
            factors[precision] = seconds / forward[sizes[0]] if forward[sizes[0]] > 0 else 1.0
    return WarmUp(model_load_s, forward, factors)


_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """One benchmark's estimate and what identifies it in a progress line."""

    nodeid: str
    label: str  # 'latency eager-fp32-b1'
    estimate_s: float


def row_seconds(kind: str, backend: str | None, batch_size: int | None, warm: WarmUp, *, warmup_rounds: int,
                max_time: float, min_rounds: int, first_build: bool, export_cached: bool,
                precision: str | None = None) -> float:
    """The seconds one benchmark is expected to take (see the module docstring)."""
    call = warm.forward(batch_size, precision if backend == "eager" else None)
    converted = backend not in (None, "eager") and not (backend or "").startswith("compile")
    build = 0.0
    if converted and first_build:
        build = warm.model_load_s * (CONVERTED_LOAD_PER_MODEL_LOAD + (0 if export_cached else EXPORT_PER_MODEL_LOAD))
    if kind == "model_load":
        return MODEL_LOAD_ROUNDS * warm.model_load_s
    if kind == "cold_start":
        runner_build = warm.model_load_s * CONVERTED_LOAD_PER_MODEL_LOAD if converted else 0.0
        return COLD_START_ROUNDS * (runner_build + call) + build
    # latency, e2e and the rest: the runner's first call, parity, warm-up, timed rounds
    timed = max(max_time, min_rounds * call) + call
    return build + (2 + max(warmup_rounds, 1)) * call + timed


def export_cached(cache_dir: Path) -> bool:
    """Whether the engine cache holds any ONNX export (a rough test: the same model's export is reused)."""
    try:
        return any(cache_dir.rglob("*.onnx"))
    except OSError:
        return False


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def format_median(seconds: float | None) -> str:
    if seconds is None:
        return "no median"
    return f"median {seconds * 1e3:.3g} ms" if seconds < 1 else f"median {seconds:.3g} s"


class ProgressLog:
    """One line per finished benchmark, from pytest's own terminal reporter (quiet under ``-q``)."""

    def __init__(self, rows: list[RowPlan], reporter: Any) -> None:
        self.rows = {row.nodeid: row for row in rows}
        self.reporter = reporter
        self.started = time.perf_counter()
        self.done: list[RowPlan] = []
        self.medians: dict[str, float | None] = {}

    @property
    def total_estimate_s(self) -> float:
        return sum(row.estimate_s for row in self.rows.values())

    def record_median(self, nodeid: str, median_s: float | None) -> None:
        self.medians[nodeid] = median_s

    def seconds_left(self, elapsed: float) -> float:
        """The unfinished rows' estimates, scaled by how long the finished rows took against theirs."""
        planned_done = sum(row.estimate_s for row in self.done)
        left = sum(row.estimate_s for nodeid, row in self.rows.items() if row not in self.done)
        scale = elapsed / planned_done if planned_done > 0 else 1.0
        return left * min(max(scale, 0.25), 10.0)

    def finished(self, nodeid: str, outcome: str) -> str | None:
        """The line for a benchmark that just finished (None for one that is not in the plan)."""
        row = self.rows.get(nodeid)
        if row is None or row in self.done:
            return None
        self.done.append(row)
        elapsed = time.perf_counter() - self.started
        what = format_median(self.medians.get(nodeid)) if outcome == "passed" else outcome
        ran = len(self.done)
        line = (f"perfsuite: [{ran}/{len(self.rows)}] {row.label}: {what}; {format_seconds(elapsed)} so far, "
                f"about {format_seconds(self.seconds_left(elapsed))} left")
        return line

    def write(self, nodeid: str, outcome: str) -> None:
        line = self.finished(nodeid, outcome)
        if line and self.reporter is not None and self.reporter.config.get_verbosity() >= 0:
            self.reporter.ensure_newline()
            self.reporter.write_line(line)


def median_of(benchmark_fixture: Any) -> float | None:
    """The median pytest-benchmark recorded for a test's ``benchmark`` fixture, if it ran."""
    stats = getattr(getattr(benchmark_fixture, "stats", None), "stats", None)
    data = getattr(stats, "data", None)
    return statistics.median(data) if data else None
