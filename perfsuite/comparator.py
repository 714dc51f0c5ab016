"""Parity of a backend's outputs against the reference (no timing here, see ``timing``).

All statistics are computed in float64 on the CPU. For each output:

- absolute error |Δ| = |candidate - reference| per element: max, mean, median and 99th percentile
  (linear interpolation between order statistics, numpy's default);
- scaled error: the same four statistics of |Δ| divided by max |reference| (one denominator for
  the whole output, see ``tolerances`` for why), directly comparable with the tolerance ``rel``.
  Runs saved before it had this name call it ``max_rel_error`` (``mean_``, ``median_``, ``p99_``);
- element-wise relative error |Δ| / |reference|, its max (what Polygraphy, ``np.allclose`` and
  ``torch.testing`` call relative error; reported, not bounded: it explodes on logits near zero);
- allclose: elements outside |Δ| <= atol + rtol·|reference| (the tolerance's atol and rtol);
- cosine similarity of each sample's vector (the worst sample is reported);
- top-1 agreement, counted only on samples whose reference top-1 margin is wider than twice the
  allowed absolute error (each of the two logits may move by that much, so a narrower margin may
  legitimately swap);
- top-5 agreement: every reference top-5 class that leads the 6th by more than that band must be in
  the candidate's top-5;
- NaN/Inf counts: any non-finite value fails. The error statistics cover the finite elements.

Alongside the verdict every output carries what a failure report needs: a histogram of the
scaled error by decade, the worst elements (index, class name, both values) and the smallest
tolerance that would have passed. :meth:`ParityReport.report` prints them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from perfsuite.tolerances import Tolerance

WORST_ELEMENTS = 10  # how many of the largest errors a report lists
# Decade edges of the scaled-error histogram: [0], (0, 1e-9), [1e-9, 1e-8), ..., [1e-1, 1), [1, inf).
HISTOGRAM_EDGES = (0.0, *(10.0**e for e in range(-9, 1)), math.inf)


@dataclasses.dataclass(frozen=True)
class HistogramBin:
    """Elements whose scaled error lies in [lower, upper) (``lower == upper == 0``: exactly 0)."""

    lower: float
    upper: float
    count: int

    @property
    def label(self) -> str:
        if self.upper == 0:
            return "0 (exact)"
        if self.lower == 0:
            return f"(0, {self.upper:.0e})"
        return f"[{self.lower:.0e}, {self.upper:.0e})" if math.isfinite(self.upper) else f">= {self.lower:.0e}"


@dataclasses.dataclass(frozen=True)
class ElementError:
    """One element of an output and how far the candidate is from the reference there."""

    index: tuple[int, ...]  # in the output's own shape
    sample: str  # the sample's name (e.g. the image file), or ""
    label: str  # class name of the last index, or ""
    reference: float
    candidate: float
    abs_error: float  # inf where the candidate is NaN or Inf
    scaled_error: float  # abs_error / max |reference| of the output
    elementwise_rel_error: float  # abs_error / |reference| of this element


@dataclasses.dataclass(frozen=True)
class OutputParity:
    """Statistics of one output and the verdict under its tolerance."""

    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    max_scaled_error: float  # max |Δ| / max |reference|: what the tolerance ``rel`` bounds
    min_cosine: float
    top1_agreement: float  # fraction of decisive samples whose top-1 matches
    top1_decisive: int  # samples whose margin was wide enough to count
    top5_agreement: float
    nonfinite: int
    tolerance: Tolerance
    failures: tuple[str, ...]
    mean_abs_error: float = math.nan
    median_abs_error: float = math.nan
    p99_abs_error: float = math.nan
    mean_scaled_error: float = math.nan
    median_scaled_error: float = math.nan
    p99_scaled_error: float = math.nan
    max_elementwise_rel_error: float = math.nan  # max |Δ| / |reference| element by element
    allclose_violations: int = 0  # finite elements with |Δ| > atol + rtol * |reference|
    scale: float = math.nan  # max |reference|, the denominator of every scaled error
    histogram: tuple[HistogramBin, ...] = ()
    worst: tuple[ElementError, ...] = ()
    # The loosest failing check decides: the smallest tolerance under which this output passes.
    # None where no tolerance can pass it (non-finite values, a shape mismatch, rel >= 1).
    passing_rel: float | None = None
    passing_min_cosine: float | None = None
    passing_atol: float | None = None  # the smallest atol under which allclose passes at this rtol
    passing_note: str = ""  # why no tolerance can pass, where passing_rel is None
    # Least-squares fit candidate ~ fit_scale * reference over the finite elements, and the share of
    # the squared error that this one factor explains: near 1 for a systematic scale change (a scaled
    # weight, a changed normalization), near 0 for rounding noise.
    fit_scale: float = math.nan
    fit_explained: float = math.nan

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tolerance"] = dataclasses.asdict(self.tolerance)
        data["passed"] = self.passed
        data["failures"] = list(self.failures)
        data["shape"] = list(self.shape)
        data["histogram"] = [dataclasses.asdict(b) for b in self.histogram]
        data["worst"] = [{**dataclasses.asdict(w), "index": list(w.index)} for w in self.worst]
        return data

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        tol = self.tolerance
        return (
            f"{self.name} {verdict}: max|Δ|/max|ref| {self.max_scaled_error:.3g} (tol rel {tol.rel:.3g}; "
            f"p99 {self.p99_scaled_error:.3g}, median {self.median_scaled_error:.3g}, mean "
            f"{self.mean_scaled_error:.3g}), max|Δ| {self.max_abs_error:.3g}, element-wise rel "
            f"{self.max_elementwise_rel_error:.3g}, allclose(atol {tol.atol:g}, rtol {tol.rtol:g}) "
            f"{self.allclose_violations} outside, cosine {self.min_cosine:.8f} (min {tol.min_cosine}), "
            f"top-1 {self.top1_agreement:.0%} of {self.top1_decisive} decisive, top-5 {self.top5_agreement:.0%}"
            + (f", non-finite {self.nonfinite}" if self.nonfinite else "")
        )

    def report(self) -> str:
        """The summary; on failure also the error table, histogram, worst elements and the
        smallest tolerance that would have passed."""
        lines = [self.summary(), *(f"  - {f}" for f in self.failures)]
        if self.passed or math.isnan(self.scale):
            return "\n".join(lines)
        if math.isfinite(self.max_abs_error):
            lines.append(f"  errors of the finite elements (scaled = absolute / max|reference| = {self.scale:.6g}):")
            lines.append(f"    {'':<9}{'max':>11}{'p99':>11}{'median':>11}{'mean':>11}")
            for kind, label in (("abs", "absolute"), ("scaled", "scaled")):
                values = [getattr(self, f"{stat}_{kind}_error") for stat in ("max", "p99", "median", "mean")]
                lines.append(f"    {label:<9}" + "".join(f"{v:>11.3e}" for v in values))
        if math.isfinite(self.fit_scale) and math.isfinite(self.fit_explained):
            lines.append(f"  best fit: candidate = {self.fit_scale:.6g} x reference, which explains "
                         f"{self.fit_explained:.0%} of the squared error"
                         + (" (a systematic scale change)" if self.fit_explained >= 0.5 else " (not a uniform scale)"))
        lines.extend(self._histogram_lines())
        lines.extend(self._worst_lines())
        lines.extend(self._passing_lines())
        return "\n".join(lines)

    def _histogram_lines(self) -> list[str]:
        counts = [b.count for b in self.histogram]
        if not any(counts):
            return []
        first = next(i for i, c in enumerate(counts) if c)
        last = len(counts) - 1 - next(i for i, c in enumerate(reversed(counts)) if c)
        widest = max(counts)
        lines = [f"  scaled error histogram ({sum(counts)} finite values):"]
        for b in self.histogram[first:last + 1]:
            bar = "#" * (max(1, round(40 * b.count / widest)) if b.count else 0)
            marker = f"  <- tolerance {self.tolerance.rel:.3g}" if b.lower <= self.tolerance.rel < b.upper else ""
            lines.append(f"    {b.label:>18} {b.count:>8} {bar}{marker}")
        return lines

    def _worst_lines(self) -> list[str]:
        if not self.worst:
            return []
        lines = [f"  worst {len(self.worst)} elements:",
                 f"    {'index':<14}{'sample':<12}{'class':<28}{'reference':>12}{'candidate':>12}"
                 f"{'abs error':>11}{'scaled':>11}{'elem. rel':>11}"]
        for w in self.worst:
            index = "(" + ", ".join(map(str, w.index)) + ")"
            lines.append(f"    {index:<14}{w.sample[:11]:<12}{w.label[:27]:<28}{w.reference:>12.5g}"
                         f"{w.candidate:>12.5g}{w.abs_error:>11.3e}{w.scaled_error:>11.3e}"
                         f"{w.elementwise_rel_error:>11.3e}")
        return lines

    def _passing_lines(self) -> list[str]:
        mode = self.tolerance.name or "PRECISION"
        if self.passing_rel is None:
            return [f"  no tolerance would have passed: {self.passing_note}"]
        rel, cosine = suggested_tolerance(self.passing_rel, self.passing_min_cosine)
        settings = [f"rel={rel:.3g}"]
        if cosine is not None and cosine < self.tolerance.min_cosine:
            settings.append(f"min_cosine={cosine:.10g}")
        atol = ""
        if self.passing_atol is not None and self.passing_atol > self.tolerance.atol:
            settings.append(f"atol={suggested_tolerance(self.passing_atol, None)[0]:.3g}")
            atol = f", atol {self.passing_atol:.4g} (now {self.tolerance.atol:g})"
        return [
            f"  smallest tolerance that would have passed: rel {self.passing_rel:.4g} (now {self.tolerance.rel:.3g}), "
            f"min_cosine {self.passing_min_cosine:.10f} (now {self.tolerance.min_cosine}){atol}",
            f"    to accept it deliberately: --tolerance {mode}:{','.join(settings)}  or in pyproject.toml "
            f"[tool.perfsuite.tolerances] {mode} = {{{', '.join(s.replace('=', ' = ') for s in settings)}}}",
        ]


@dataclasses.dataclass(frozen=True)
class ParityReport:
    outputs: tuple[OutputParity, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def failures(self) -> list[str]:
        return [f"{o.name}: {f}" for o in self.outputs for f in o.failures]

    def summary(self) -> str:
        lines = []
        for o in self.outputs:
            lines.append(o.summary())
            lines.extend(f"  - {f}" for f in o.failures)
        return "\n".join(lines)

    def report(self) -> str:
        """Readable on failure: :meth:`OutputParity.report` of every output."""
        return "\n".join(o.report() for o in self.outputs)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "outputs": {o.name: o.as_dict() for o in self.outputs}}


def suggested_tolerance(rel: float, min_cosine: float | None) -> tuple[float, float | None]:
    """Round a passing tolerance outward to 3 significant digits (looser, so it still passes)."""
    step = 10.0 ** (math.floor(math.log10(rel)) - 2) if rel > 0 else 1e-12
    rounded_rel = math.ceil(rel / step) * step
    if rounded_rel < rel:
        rounded_rel += step
    if min_cosine is None:
        return rounded_rel, None
    gap = 1.0 - min_cosine
    if gap <= 0:
        return rounded_rel, 1.0
    gap_step = 10.0 ** (math.floor(math.log10(gap)) - 1)
    rounded_cosine = 1.0 - math.ceil(gap / gap_step) * gap_step
    if rounded_cosine > min_cosine:
        rounded_cosine -= gap_step
    return rounded_rel, (rounded_cosine if rounded_cosine > 0 else None)


def _as_2d(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().to("cpu", torch.float64)
    return tensor.reshape(1, -1) if tensor.ndim < 2 else tensor.reshape(tensor.shape[0], -1)


def _unusable(name: str, shape: tuple[int, ...], tolerance: Tolerance, failure: str) -> OutputParity:
    nan = math.nan
    return OutputParity(name, shape, nan, nan, nan, 0.0, 0, 0.0, 0, tolerance, (failure,), passing_note=failure)


def _statistics(values: np.ndarray) -> tuple[float, float, float, float]:
    """max, mean, median and 99th percentile of a 1-D array (NaN for an empty one)."""
    if values.size == 0:
        return (math.nan,) * 4
    return (float(values.max()), float(values.mean()), float(np.median(values)), float(np.percentile(values, 99)))


def _scale_fit(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float]:
    """(s, explained): s minimizes |cand - s * ref|; explained = 1 - |cand - s ref|^2 / |cand - ref|^2."""
    norm = float(ref @ ref)
    error = float((cand - ref) @ (cand - ref))
    if norm == 0 or error == 0:
        return math.nan, math.nan
    scale = float(ref @ cand) / norm
    residual = float((cand - scale * ref) @ (cand - scale * ref))
    return scale, 1.0 - residual / error


def _histogram(rel: np.ndarray) -> tuple[HistogramBin, ...]:
    bins = [HistogramBin(0.0, 0.0, int((rel == 0).sum()))]
    for lower, upper in itertools.pairwise(HISTOGRAM_EDGES):
        inside = (rel >= lower) & (rel < upper) & (rel > 0)
        bins.append(HistogramBin(lower, upper, int(inside.sum())))
    return tuple(bins)


def _worst(candidate: torch.Tensor, ref: torch.Tensor, cand: torch.Tensor, scale: float, count: int,
           categories: Sequence[str], sample_names: Sequence[str]) -> tuple[ElementError, ...]:
    # Non-finite candidate values rank first (error inf); ties keep the lowest index first.
    error = torch.where(torch.isfinite(cand) & torch.isfinite(ref), (cand - ref).abs(), math.inf).flatten()
    if error.numel() == 0 or count <= 0:
        return ()
    order = np.argsort(-error.numpy(), kind="stable")[:count]
    shape = tuple(candidate.shape) or (1,)
    labelled = len(categories) > 0 and len(shape) >= 1 and shape[-1] == len(categories)
    named = len(sample_names) > 0 and len(shape) >= 2 and shape[0] == len(sample_names)
    ref_flat, cand_flat = ref.flatten(), cand.flatten()
    rows = []
    for flat in order.tolist():
        index = tuple(int(i) for i in np.unravel_index(flat, shape))
        abs_error = float(error[flat])
        rows.append(ElementError(
            index=index,
            sample=str(sample_names[index[0]]) if named else "",
            label=str(categories[index[-1]]) if labelled else "",
            reference=float(ref_flat[flat]),
            candidate=float(cand_flat[flat]),
            abs_error=abs_error,
            scaled_error=abs_error / scale if scale > 0 else math.inf,
            elementwise_rel_error=_ratio(abs_error, abs(float(ref_flat[flat]))),
        ))
    return tuple(rows)


@dataclasses.dataclass(frozen=True)
class _Ranking:
    decisive: int
    top1_ok: int
    top5_ok: int
    samples: int
    band_needed: float  # the smallest band (in logit units) under which every ranking check passes


def _ranking(ref: torch.Tensor, cand: torch.Tensor, band: float) -> _Ranking | None:
    """Top-1/top-5 checks with logits allowed to drift by ``band``; None for outputs under 6 wide."""
    if ref.shape[1] < 6:
        return None
    ref_sorted, ref_order = ref.sort(dim=1, descending=True)
    cand_top5 = cand.topk(5, dim=1).indices
    decisive = top1_ok = top5_ok = 0
    band_needed = 0.0
    for i in range(ref.shape[0]):
        margin = float(ref_sorted[i, 0] - ref_sorted[i, 1])
        swapped = int(cand_top5[i, 0]) != int(ref_order[i, 0])
        if swapped:
            band_needed = max(band_needed, margin)  # passes once the margin no longer counts as decisive
        if margin > band:
            decisive += 1
            top1_ok += int(not swapped)
        sixth = float(ref_sorted[i, 5])
        candidate_top5 = {int(c) for c in cand_top5[i]}
        required = set()
        for c, v in zip(ref_order[i, :5].tolist(), ref_sorted[i, :5].tolist()):
            lead = v - sixth
            if c not in candidate_top5:
                band_needed = max(band_needed, lead)
            if lead > band:
                required.add(c)
        top5_ok += int(required <= candidate_top5)
    return _Ranking(decisive, top1_ok, top5_ok, ref.shape[0], band_needed)


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with 0/0 = 0 and x/0 = inf."""
    return numerator / denominator if denominator > 0 else (0.0 if numerator == 0 else math.inf)


def _rel_for_band(band: float, scale: float) -> float:
    """The smallest rel whose band 2 * rel * scale (as computed in floating point) reaches ``band``."""
    rel = band / (2.0 * scale)
    while 2.0 * rel * scale < band:
        rel = math.nextafter(rel, math.inf)
    return rel


def compare_output(
    reference: torch.Tensor,
    candidate: torch.Tensor,
    tolerance: Tolerance,
    name: str = "output",
    *,
    categories: Sequence[str] = (),
    sample_names: Sequence[str] = (),
    worst: int = WORST_ELEMENTS,
) -> OutputParity:
    """Compare one output (samples along the first dimension) and judge it.

    ``categories`` names the classes of the last dimension and ``sample_names`` the samples of the
    first, for the worst-elements table.
    """
    if tuple(reference.shape) != tuple(candidate.shape):
        return _unusable(name, tuple(candidate.shape), tolerance,
                         f"shape {tuple(candidate.shape)} differs from the reference's {tuple(reference.shape)}")
    failures: list[str] = []
    ref, cand = _as_2d(reference), _as_2d(candidate)
    if not torch.isfinite(ref).all():
        failures.append("the reference itself has NaN or Inf values")
    finite = torch.isfinite(cand)
    nonfinite = int((~finite).sum())
    if nonfinite:
        nans = int(torch.isnan(cand).sum())
        first = tuple(int(i) for i in np.unravel_index(int((~finite).flatten().nonzero()[0]),
                                                       tuple(candidate.shape) or (1,)))
        failures.append(f"{nonfinite} of {cand.numel()} values are not finite ({nans} NaN, {nonfinite - nans} Inf; "
                        f"first at index {first}): no tolerance accepts them")

    finite_ref = torch.isfinite(ref)
    scale = float(ref.abs()[finite_ref].max()) if finite_ref.any() else 0.0
    both_finite = finite & finite_ref
    abs_errors = (cand - ref).abs()[both_finite].numpy()
    fit_scale, fit_explained = _scale_fit(ref[both_finite].numpy(), cand[both_finite].numpy())
    max_abs, mean_abs, median_abs, p99_abs = _statistics(abs_errors)
    if not abs_errors.size:
        max_abs = mean_abs = median_abs = p99_abs = 0.0 if not nonfinite else math.nan
    scaled_errors = abs_errors / scale if scale > 0 else np.where(abs_errors == 0, 0.0, math.inf)
    max_rel, mean_rel, median_rel, p99_rel = (_ratio(v, scale) for v in (max_abs, mean_abs, median_abs, p99_abs))
    if max_rel > tolerance.rel:
        failures.append(f"scaled relative error (max |Δ| / max |reference|) {max_rel:.3g} exceeds the tolerance "
                        f"rel {tolerance.rel:.3g}")
    ref_abs = ref.abs()[both_finite].numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        elementwise = np.where(abs_errors == 0, 0.0, abs_errors / ref_abs)
    max_elementwise = float(elementwise.max()) if elementwise.size else (0.0 if not nonfinite else math.nan)
    outside = ((cand - ref).abs() > tolerance.atol + tolerance.rtol * ref.abs()) & both_finite
    violations = int(outside.sum())
    if violations:
        first = tuple(int(i) for i in np.unravel_index(int(outside.flatten().nonzero()[0]),
                                                       tuple(candidate.shape) or (1,)))
        failures.append(f"{violations} of {int(both_finite.sum())} elements outside |Δ| <= atol + rtol·|reference| "
                        f"(atol {tolerance.atol:g}, rtol {tolerance.rtol:g}; first at index {first})")

    finite_cand = torch.nan_to_num(cand, nan=0.0, posinf=0.0, neginf=0.0)
    cosine = torch.nn.functional.cosine_similarity(finite_cand, ref, dim=1, eps=1e-30)
    cosine = torch.where((finite_cand == ref).all(dim=1), 1.0, cosine)  # identical (even all-zero) samples agree
    min_cos = float(cosine.min()) if cosine.numel() else 1.0
    if min_cos < tolerance.min_cosine:
        worst_sample = int(cosine.argmin())
        failures.append(f"cosine similarity {min_cos:.8f} of sample {worst_sample} is below {tolerance.min_cosine}")

    # Ranking checks: only meaningful for vectors with enough entries (classifier logits).
    band = 2.0 * tolerance.rel * scale  # how far apart two logits may drift in opposite directions
    ranking = _ranking(ref, finite_cand, band)
    top1 = top5 = 1.0
    if ranking is not None:
        top1 = ranking.top1_ok / ranking.decisive if ranking.decisive else 1.0
        top5 = ranking.top5_ok / ranking.samples
        if top1 < 1.0:
            failures.append(f"top-1 class differs on {ranking.decisive - ranking.top1_ok} of {ranking.decisive} "
                            "decisive samples")
        if top5 < 1.0:
            failures.append(f"top-5 classes differ on {ranking.samples - ranking.top5_ok} of {ranking.samples} samples")

    passing_rel: float | None = None
    passing_cosine: float | None = None
    passing_atol = float(max(0.0, (abs_errors - tolerance.rtol * ref_abs).max())) if abs_errors.size else 0.0
    note = ""
    if nonfinite:
        note = "non-finite values fail at any tolerance"
    elif not bool(finite_ref.all()) or scale == 0:
        note = "the reference is unusable (non-finite or all zero)"
    else:
        needed = max(max_rel, _rel_for_band(ranking.band_needed, scale) if ranking else 0.0)
        if needed >= 1.0:
            note = f"it would need a relative tolerance of {needed:.3g}, and tolerances must be below 1"
        elif min_cos <= 0:
            note = f"the cosine similarity {min_cos:.3g} is not positive"
        else:
            passing_rel, passing_cosine = needed, min_cos
    return OutputParity(
        name=name,
        shape=tuple(candidate.shape),
        max_abs_error=max_abs,
        max_scaled_error=max_rel,
        min_cosine=min_cos,
        top1_agreement=top1,
        top1_decisive=ranking.decisive if ranking else 0,
        top5_agreement=top5,
        nonfinite=nonfinite,
        tolerance=tolerance,
        failures=tuple(failures),
        mean_abs_error=mean_abs,
        median_abs_error=median_abs,
        p99_abs_error=p99_abs,
        mean_scaled_error=mean_rel,
        median_scaled_error=median_rel,
        p99_scaled_error=p99_rel,
        max_elementwise_rel_error=max_elementwise,
        allclose_violations=violations,
        scale=scale,
        histogram=_histogram(scaled_errors),
        worst=_worst(candidate, ref, cand, scale, worst, categories, sample_names),
        passing_rel=passing_rel,
        passing_min_cosine=passing_cosine,
        passing_atol=None if nonfinite else passing_atol,
        passing_note=note,
        fit_scale=fit_scale,
        fit_explained=fit_explained,
    )


def compare(
    reference: torch.Tensor | Mapping[str, torch.Tensor],
    candidate: torch.Tensor | Mapping[str, torch.Tensor],
    tolerance: Tolerance | Mapping[str, Tolerance],
    *,
    categories: Sequence[str] = (),
    sample_names: Sequence[str] = (),
    worst: int = WORST_ELEMENTS,
) -> ParityReport:
    """Compare every output; ``tolerance`` may be one for all outputs or one per output name."""
    refs = {"logits": reference} if isinstance(reference, torch.Tensor) else dict(reference)
    cands = {"logits": candidate} if isinstance(candidate, torch.Tensor) else dict(candidate)
    results = []
    for name, ref in refs.items():
        tol = tolerance if isinstance(tolerance, Tolerance) else tolerance[name]
        if name not in cands:
            results.append(_unusable(name, (), tol, "output missing from the candidate"))
            continue
        results.append(compare_output(ref, cands[name], tol, name, categories=categories,
                                      sample_names=sample_names, worst=worst))
    return ParityReport(tuple(results))
