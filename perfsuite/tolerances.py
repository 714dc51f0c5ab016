"""How far each precision may stray from the reference, and why.

The reference is eager fp32 with TF32 off. Errors are measured as

    relative error = max |candidate - reference| / max |reference|

over a whole output (normalizing by the reference's largest magnitude, because per-element
relative error explodes on logits near zero), plus the cosine similarity of each sample's logits.

Reasoning per precision (u = unit roundoff of the narrowest format the backend computes in):

``fp32``  u = 2^-24 = 6e-8. Two correct fp32 implementations differ only by summation order and
          algorithm (Winograd/FFT convolutions, blocked GEMMs). AlexNet's longest dot product is
          9216 terms (fc6); the worst-case bound sqrt(K)*u*depth is ~5e-5, and measured differences
          are ~1e-6. Tolerance 1e-4 leaves room for FFT/Winograd kernels and stays far below any
          real change (a 1% weight change moves logits ~1e-2).
``tf32``  TF32 keeps 10 mantissa bits: u = 2^-11 = 4.9e-4 on every multiply's inputs, fp32
          accumulation. Across 8 layers the errors add roughly in quadrature; measured
          max-normalized errors are a few 1e-3. Tolerance 1e-2.
``fp16``  Same 10-bit mantissa as TF32 but activations are also *stored* in fp16 between layers
          (one more rounding per layer), accumulation in fp32 on GPUs. Tolerance 1.5e-2.
``bf16``  8 mantissa bits: u = 2^-8 = 3.9e-3, eight times fp16's; storage and inputs rounded at
          every layer. Measured errors are ~1e-2 to 3e-2. Tolerance 6e-2.

Cosine similarity catches a wrong direction that a small max error can hide (e.g. a zeroed
channel): its floor is set to 1 - (rel tol)^2 / 2 or tighter, the value a uniform error of the
tolerated size would give. Top-1/top-5 agreement is required wherever the reference's margin is
wider than what the tolerance allows to swap (see ``comparator``).

Overrides: ``[tool.perfsuite.tolerances]`` in pyproject.toml, e.g. ``fp16 = {rel = 0.02}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from perfsuite.errors import InputError


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Allowed deviation of one output from the reference."""

    rel: float  # max |cand - ref| / max |ref|
    min_cosine: float  # smallest acceptable per-sample cosine similarity
    name: str = ""

    def __post_init__(self) -> None:
        if not (0 < self.rel < 1):
            raise InputError(f"tolerance {self.name or '?'}: rel must be in (0, 1), got {self.rel}")
        if not (0 < self.min_cosine <= 1):
            raise InputError(f"tolerance {self.name or '?'}: min_cosine must be in (0, 1], got {self.min_cosine}")


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rel=1e-4, min_cosine=0.999999, name="fp32"),
    "tf32": Tolerance(rel=1e-2, min_cosine=0.9999, name="tf32"),
    "fp16": Tolerance(rel=1.5e-2, min_cosine=0.9999, name="fp16"),
    "bf16": Tolerance(rel=6e-2, min_cosine=0.998, name="bf16"),
}


def numeric_mode(precision: str, tf32: bool) -> str:
    """The tolerance class of a run: fp32 with TF32 on is judged as tf32."""
    return "tf32" if precision == "fp32" and tf32 else precision


def tolerance_for(precision: str, tf32: bool = False, overrides: Mapping[str, Any] | None = None) -> Tolerance:
    """The tolerance of ``precision`` (``tf32``: fp32 run with TF32 math in effect)."""
    mode = numeric_mode(precision, tf32)
    if mode not in DEFAULT_TOLERANCES:
        raise InputError(f"no tolerance for precision {precision!r}; known: {', '.join(DEFAULT_TOLERANCES)}")
    tolerance = DEFAULT_TOLERANCES[mode]
    override = (overrides or {}).get(mode)
    if override:
        unknown = set(override) - {"rel", "min_cosine"}
        if unknown:
            raise InputError(f"[tool.perfsuite.tolerances] {mode}: unknown keys {sorted(unknown)}")
        tolerance = dataclasses.replace(tolerance, **{k: float(v) for k, v in override.items()})
    return tolerance
