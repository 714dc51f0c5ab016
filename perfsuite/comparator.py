"""Parity of a backend's outputs against the reference (no timing here, see ``timing``).

All statistics are computed in float64 on the CPU. For each output:

- max absolute error, and relative error normalized by max |reference| (see ``tolerances``);
- cosine similarity of each sample's vector (the worst sample is reported);
- top-1 agreement, counted only on samples whose reference top-1 margin is wider than twice the
  allowed absolute error (each of the two logits may move by that much, so a narrower margin may
  legitimately swap);
- top-5 agreement: every reference top-5 class that leads the 6th by more than that band must be in
  the candidate's top-5;
- NaN/Inf counts: any non-finite value fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from perfsuite.tolerances import Tolerance


@dataclasses.dataclass(frozen=True)
class OutputParity:
    """Statistics of one output and the verdict under its tolerance."""

    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float
    min_cosine: float
    top1_agreement: float  # fraction of decisive samples whose top-1 matches
    top1_decisive: int  # samples whose margin was wide enough to count
    top5_agreement: float
    nonfinite: int
    tolerance: Tolerance
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tolerance"] = dataclasses.asdict(self.tolerance)
        data["passed"] = self.passed
        data["failures"] = list(self.failures)
        data["shape"] = list(self.shape)
        return data


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
            verdict = "PASS" if o.passed else "FAIL"
            lines.append(
                f"{o.name} {verdict}: rel {o.max_rel_error:.3g} (tol {o.tolerance.rel:.3g}), "
                f"abs {o.max_abs_error:.3g}, cosine {o.min_cosine:.8f} (min {o.tolerance.min_cosine}), "
                f"top-1 {o.top1_agreement:.0%} of {o.top1_decisive} decisive, top-5 {o.top5_agreement:.0%}"
                + (f", non-finite {o.nonfinite}" if o.nonfinite else "")
            )
            lines.extend(f"  - {f}" for f in o.failures)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "outputs": {o.name: o.as_dict() for o in self.outputs}}


def _as_2d(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().to("cpu", torch.float64)
    return tensor.reshape(1, -1) if tensor.ndim < 2 else tensor.reshape(tensor.shape[0], -1)


def compare_output(
    reference: torch.Tensor, candidate: torch.Tensor, tolerance: Tolerance, name: str = "output"
) -> OutputParity:
    """Compare one output (samples along the first dimension) and judge it."""
    failures: list[str] = []
    if tuple(reference.shape) != tuple(candidate.shape):
        nan = float("nan")
        return OutputParity(name, tuple(candidate.shape), nan, nan, nan, 0.0, 0, 0.0, 0, tolerance,
                            (f"shape {tuple(candidate.shape)} differs from the reference's {tuple(reference.shape)}",))
    ref, cand = _as_2d(reference), _as_2d(candidate)
    if not torch.isfinite(ref).all():
        failures.append("the reference itself has NaN or Inf values")
    nonfinite = int((~torch.isfinite(cand)).sum())
    if nonfinite:
        failures.append(f"{nonfinite} NaN/Inf values in the output")

    finite_cand = torch.nan_to_num(cand, nan=0.0, posinf=0.0, neginf=0.0)
    diff = (finite_cand - ref).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    if max_rel > tolerance.rel:
        failures.append(f"relative error {max_rel:.3g} exceeds the tolerance {tolerance.rel:.3g}")

    cosine = torch.nn.functional.cosine_similarity(finite_cand, ref, dim=1, eps=1e-30)
    min_cos = float(cosine.min()) if cosine.numel() else 1.0
    if min_cos < tolerance.min_cosine:
        worst = int(cosine.argmin())
        failures.append(f"cosine similarity {min_cos:.8f} of sample {worst} is below {tolerance.min_cosine}")

    # Ranking checks: only meaningful for vectors with enough entries (classifier logits).
    band = 2.0 * tolerance.rel * scale  # how far apart two logits may drift in opposite directions
    top1_ok = decisive = top5_ok = 0
    samples = ref.shape[0]
    if ref.shape[1] >= 6:
        ref_sorted, ref_order = ref.sort(dim=1, descending=True)
        cand_top5 = finite_cand.topk(5, dim=1).indices
        for i in range(samples):
            if ref_sorted[i, 0] - ref_sorted[i, 1] > band:
                decisive += 1
                top1_ok += int(cand_top5[i, 0] == ref_order[i, 0])
            sixth = ref_sorted[i, 5]
            required = {int(c) for c, v in zip(ref_order[i, :5], ref_sorted[i, :5]) if v - sixth > band}
            top5_ok += int(required <= {int(c) for c in cand_top5[i]})
        top1 = top1_ok / decisive if decisive else 1.0
        top5 = top5_ok / samples
        if top1 < 1.0:
            failures.append(f"top-1 class differs on {decisive - top1_ok} of {decisive} decisive samples")
        if top5 < 1.0:
            failures.append(f"top-5 classes differ on {samples - top5_ok} of {samples} samples")
    else:
        top1 = top5 = 1.0
    return OutputParity(
        name=name,
        shape=tuple(candidate.shape),
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        min_cosine=min_cos,
        top1_agreement=top1,
        top1_decisive=decisive,
        top5_agreement=top5,
        nonfinite=nonfinite,
        tolerance=tolerance,
        failures=tuple(failures),
    )


def compare(
    reference: torch.Tensor | Mapping[str, torch.Tensor],
    candidate: torch.Tensor | Mapping[str, torch.Tensor],
    tolerance: Tolerance | Mapping[str, Tolerance],
) -> ParityReport:
    """Compare every output; ``tolerance`` may be one for all outputs or one per output name."""
    refs = {"logits": reference} if isinstance(reference, torch.Tensor) else dict(reference)
    cands = {"logits": candidate} if isinstance(candidate, torch.Tensor) else dict(candidate)
    results = []
    for name, ref in refs.items():
        tol = tolerance if isinstance(tolerance, Tolerance) else tolerance[name]
        if name not in cands:
            results.append(OutputParity(name, (), float("nan"), float("nan"), float("nan"), 0.0, 0, 0.0, 0,
                                        tol, ("output missing from the candidate",)))
            continue
        results.append(compare_output(ref, cands[name], tol, name))
    return ParityReport(tuple(results))
