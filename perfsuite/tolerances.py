"""How far each precision may stray from the reference, and why.

The reference is eager fp32 with TF32 off. Three checks bound the error Δ = candidate - reference:

    scaled error   max |Δ| / max |reference| <= rel          (over a whole output)
    allclose       |Δ| <= atol + rtol * |reference|          (element by element, as np.allclose,
                                                             torch.testing and Polygraphy take it)
    cosine         per-sample cosine similarity >= min_cosine

The scaled error normalizes by the reference's largest magnitude because the element-wise relative
error |Δ| / |reference| explodes on logits near zero (it is reported as ``max_elementwise_rel_error``
but not bounded). ``rel`` below is the bound on the scaled error.

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
``int8``  Post-training quantization (no backend produces it yet; the entry is ready for one).
          A symmetric int8 tensor with scale s = amax/127 rounds every value by up to s/2, i.e.
          u = 1/254 = 3.9e-3 *of the tensor's largest value*: as coarse as bf16 for the largest
          activations and far coarser for small ones, since int8 has no exponent. Calibration
          also clips the rare activations above the calibrated amax. With weights and activations
          quantized at each of AlexNet's 8 layers, published PTQ results keep top-1 within ~1% of
          fp32, which corresponds to max-normalized logit errors of several 1e-2. Tolerance 0.15
          (2.5x bf16's) and cosine 0.99 (far tighter than the 0.90 bound below: quantization noise
          is spread over all logits, a wrong direction is not); tighten both once measured on a
          real int8 engine.

Measured on the CPU (torch 2.14.1, onnxruntime 1.32, AlexNet with the deterministic random
weights, the two fixture images, both transforms), as scaled error: eager fp32 0 (it is the
reference), ONNX Runtime fp32 1.3e-6, eager fp16 7.5e-4, ONNX Runtime fp16 5.8e-4 to 6.5e-4, eager
bf16 6.3e-3 to 6.8e-3; p99 of the per-element scaled error is 4x to 7x below the max. The margins
are 79x (fp32), 20x (fp16) and 9x (bf16), so the values above stand; GPU kernels (cuDNN, TensorRT
tactics) take other summation orders and are what the margin is for.

allclose (``atol``, ``rtol``). An element passes when |Δ| <= atol + rtol·|reference|. The two terms
model the two kinds of error. Rounding inside the dot products gives every logit of a sample an
error of about the same size, set by the magnitudes summed rather than by the logit itself: that
floor is ``atol``. The measured errors are of this kind: on logits near zero the element-wise
relative error reaches 7.6e-4 to 2.9e-3 (ONNX Runtime fp32), 0.55 to 1.6 (fp16) and 5 to 16
(bf16), while the scaled error stays small. So atol is the scaled budget in logit units, rel × 16
rounded down, 16 being AlexNet's largest logit on the fixtures (16.1 with the report transform,
14.8 with eval, the offline weights); a model with much larger logits needs a larger atol
(override it, see below). A rounding that the output carries in proportion to its value, such as
one factor (1 + δ) with |δ| <= u per layer through AlexNet's 8 layers, is at most 8u relative:
that is ``rtol``, with u the unit roundoff of the format activations are rounded to (fp32 6e-8,
tf32 and fp16 4.9e-4, bf16 3.9e-3, int8 1/254). Measured largest |Δ|: ONNX Runtime fp32 2.1e-5
(49x under atol), fp16 9.4e-3 to 1.2e-2 (16x), eager bf16 0.094 to 0.109 (8x). ``polygraphy run
--atol A --rtol R`` checks |Δ| <= A or |Δ| <= R·|reference| per element, up to 2x stricter than
the sum; the two agree exactly when A or R is 0 (``tests/test_polygraphy_crosscheck.py``).

Cosine similarity catches a wrong direction that a small max error can hide (e.g. a zeroed
channel). An error of the tolerated size on every element (|e| = rel * max|r|, orthogonal to r)
gives cos = 1 - (rel * max|r| / rms(r))^2 / 2; AlexNet's logits have max/rms = 3.0 to 3.3
(measured on the fixture images), so that is about 1 - 4.5 rel^2. The floors of tf32, fp16, bf16
and int8 are tighter than that bound (0.9999 against 0.99955, 0.9999 against 0.9990, 0.998
against 0.984, 0.99 against 0.90), so the cosine check adds to the max-error check. fp32's floor
(1 - 1e-6) is looser than its bound (1 - 4.5e-8): there the max error decides. Top-1/top-5
agreement is required wherever the reference's margin is wider than what the tolerance allows to
swap (see ``comparator``); since a swap needs a logit to move by half the margin, it fails only
together with the max-error check, and serves as the readable form of the same failure.

What a tolerance is *for*: a low-precision backend is judged against its own precision's
tolerance, so a 1% change in the model would hide inside fp16's or bf16's band. Changes of the
model, its weights or its preprocessing are caught by the fp32 reference against the golden
outputs (see ``golden`` and docs/parity.md), whose tolerance is 100x tighter than a 1% change.

Overrides: ``[tool.perfsuite.tolerances]`` in pyproject.toml, e.g. ``fp16 = {rel = 0.02}``, and
on the command line ``--tolerance fp16:rel=0.02,min_cosine=0.9995,atol=0.3`` (the command line wins).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from perfsuite.errors import InputError


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Allowed deviation of one output from the reference."""

    rel: float  # bound on the scaled error max |cand - ref| / max |ref|
    min_cosine: float  # smallest acceptable per-sample cosine similarity
    atol: float  # allclose: |cand - ref| <= atol + rtol * |ref| element by element
    rtol: float
    name: str = ""

    def __post_init__(self) -> None:
        if not (0 < self.rel < 1):
            raise InputError(f"tolerance {self.name or '?'}: rel must be in (0, 1), got {self.rel}")
        if not (0 < self.min_cosine <= 1):
            raise InputError(f"tolerance {self.name or '?'}: min_cosine must be in (0, 1], got {self.min_cosine}")
        if not (0 <= self.atol < float("inf") and 0 <= self.rtol < 1) or self.atol == self.rtol == 0:
            raise InputError(f"tolerance {self.name or '?'}: need atol >= 0 and 0 <= rtol < 1, not both 0; got "
                             f"atol {self.atol}, rtol {self.rtol}")


# atol = rel x 16 (AlexNet's largest logit) rounded down; rtol = 8 layers x the format's unit roundoff.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rel=1e-4, min_cosine=0.999999, atol=1e-3, rtol=5e-7, name="fp32"),
    "tf32": Tolerance(rel=1e-2, min_cosine=0.9999, atol=0.1, rtol=4e-3, name="tf32"),
    "fp16": Tolerance(rel=1.5e-2, min_cosine=0.9999, atol=0.2, rtol=4e-3, name="fp16"),
    "bf16": Tolerance(rel=6e-2, min_cosine=0.998, atol=0.9, rtol=3e-2, name="bf16"),
    "int8": Tolerance(rel=0.15, min_cosine=0.99, atol=2.0, rtol=3e-2, name="int8"),
}
OVERRIDE_KEYS = ("rel", "min_cosine", "atol", "rtol")


def numeric_mode(precision: str, tf32: bool) -> str:
    """The tolerance class of a run: fp32 with TF32 on is judged as tf32."""
    return "tf32" if precision == "fp32" and tf32 else precision


def check_overrides(overrides: Mapping[str, Any] | None, source: str = "[tool.perfsuite.tolerances]"
                    ) -> dict[str, dict[str, float]]:
    """Validate overrides ``{mode: {"rel": x, "min_cosine": y}}``: known modes and keys, numbers in range."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise InputError(f"{source}: expected a table of precisions, got {type(overrides).__name__}")
    checked: dict[str, dict[str, float]] = {}
    for mode, values in overrides.items():
        if mode not in DEFAULT_TOLERANCES:
            raise InputError(f"{source}: unknown precision {mode!r}; known: {', '.join(DEFAULT_TOLERANCES)}")
        if not isinstance(values, Mapping):
            raise InputError(f"{source} {mode}: expected a table like {{rel = 0.02}}, got {values!r}")
        unknown = set(values) - set(OVERRIDE_KEYS)
        if unknown:
            raise InputError(f"{source} {mode}: unknown keys {sorted(unknown)}; known: {', '.join(OVERRIDE_KEYS)}")
        numbers: dict[str, float] = {}
        for key, value in values.items():
            if isinstance(value, bool):
                raise InputError(f"{source} {mode}.{key}: {value!r} is not a number")
            try:
                numbers[key] = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{source} {mode}.{key}: {value!r} is not a number") from None
        try:
            dataclasses.replace(DEFAULT_TOLERANCES[mode], **numbers)  # range checks
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
        checked[mode] = numbers
    return checked


def parse_tolerance_options(items: Iterable[str] | None) -> dict[str, dict[str, float]]:
    """``["fp16:rel=0.02,min_cosine=0.9995", ...]`` (the ``--tolerance`` option) -> overrides."""
    overrides: dict[str, dict[str, float]] = {}
    for item in items or ():
        mode, colon, settings = item.partition(":")
        pairs = [p.partition("=") for p in settings.split(",") if p.strip()]
        if not colon or not pairs or any(not eq or not k.strip() or not v.strip() for k, eq, v in pairs):
            raise InputError(f"--tolerance {item!r}: expected PRECISION:KEY=VALUE[,KEY=VALUE], "
                             "e.g. fp16:rel=0.02,min_cosine=0.9995")
        values = {k.strip(): v.strip() for k, _, v in pairs}
        overrides.setdefault(mode.strip(), {}).update(check_overrides({mode.strip(): values}, "--tolerance")
                                                       [mode.strip()])
    return overrides


def merge_overrides(*sources: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """Overrides from several places, later ones winning key by key (pyproject, then the command line)."""
    merged: dict[str, dict[str, float]] = {}
    for source in sources:
        for mode, values in check_overrides(source).items():
            merged.setdefault(mode, {}).update(values)
    return merged


def tolerance_for(precision: str, tf32: bool = False, overrides: Mapping[str, Any] | None = None) -> Tolerance:
    """The tolerance of ``precision`` (``tf32``: fp32 run with TF32 math in effect)."""
    mode = numeric_mode(precision, tf32)
    if mode not in DEFAULT_TOLERANCES:
        raise InputError(f"no tolerance for precision {precision!r}; known: {', '.join(DEFAULT_TOLERANCES)}")
    override = check_overrides(overrides).get(mode)
    return dataclasses.replace(DEFAULT_TOLERANCES[mode], **override) if override else DEFAULT_TOLERANCES[mode]
