"""The comparator's statistics on constructed tensors whose answers are computed by hand, the
tolerance policy and its overrides, and the negative control: what must fail does fail."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from perfsuite.comparator import HISTOGRAM_EDGES, compare, compare_output, suggested_tolerance
from perfsuite.errors import InputError
from perfsuite.results import clean_json
from perfsuite.tolerances import (
    DEFAULT_TOLERANCES,
    Tolerance,
    check_overrides,
    merge_overrides,
    numeric_mode,
    parse_tolerance_options,
    tolerance_for,
)

# Tests of the scaled, cosine and ranking checks give allclose a band their errors never reach.
WIDE = dict(atol=10.0, rtol=0.0)
LOOSE = Tolerance(rel=1e-3, min_cosine=0.9999, **WIDE, name="test")


@pytest.fixture
def ramp():
    """One sample of 101 values: reference 100 at index 0 and 0 elsewhere; the candidate adds
    k/1024 at index k (exact in binary), so the absolute errors are 0, 1/1024, ..., 100/1024."""
    reference = torch.zeros(1, 101, dtype=torch.float64)
    reference[0, 0] = 100.0
    candidate = reference + torch.arange(101, dtype=torch.float64) / 1024
    return reference, candidate


def test_error_statistics_by_hand(ramp):
    reference, candidate = ramp
    out = compare_output(reference, candidate, LOOSE)
    assert out.scale == 100.0
    assert out.max_abs_error == 100 / 1024
    assert out.mean_abs_error == pytest.approx(50 / 1024, rel=1e-15)  # sum(0..100) / 101 = 50
    assert out.median_abs_error == 50 / 1024
    assert out.p99_abs_error == pytest.approx(99 / 1024, rel=1e-15)  # rank 0.99 * 100 = 99 exactly
    assert out.max_scaled_error == pytest.approx(100 / 1024 / 100, rel=1e-15)
    assert out.mean_scaled_error == pytest.approx(50 / 1024 / 100, rel=1e-15)
    assert out.median_scaled_error == pytest.approx(50 / 1024 / 100, rel=1e-15)
    assert out.p99_scaled_error == pytest.approx(99 / 1024 / 100, rel=1e-15)
    # cosine = <r, c> / (|r| |c|) = 100 * 100 / (100 * sqrt(100^2 + sum k^2 / 1024^2)), sum_1^100 k^2 = 338350
    assert out.min_cosine == pytest.approx(100 / math.sqrt(100**2 + 338350 / 1024**2), rel=1e-12)
    assert out.top1_decisive == 1 and out.top1_agreement == 1.0 and out.top5_agreement == 1.0
    assert out.passed, out.report()


def test_histogram_by_hand(ramp):
    reference, candidate = ramp
    out = compare_output(reference, candidate, LOOSE)
    counts = {b.label: b.count for b in out.histogram if b.count}
    # rel = k / 102400: k = 0 exact; k = 1 -> 9.8e-6; k = 2..10 -> [1e-5, 1e-4); k = 11..100 -> [1e-4, 1e-3)
    assert counts == {"0 (exact)": 1, "[1e-06, 1e-05)": 1, "[1e-05, 1e-04)": 9, "[1e-04, 1e-03)": 90}
    assert sum(b.count for b in out.histogram) == 101
    assert len(out.histogram) == len(HISTOGRAM_EDGES)  # the exact-zero bin plus one per interval


def test_worst_elements_with_indices_and_class_names(ramp):
    reference, candidate = ramp
    names = [f"class-{i}" for i in range(101)]
    out = compare_output(reference, candidate, LOOSE, categories=names, sample_names=["dog.jpg"], worst=3)
    assert [w.index for w in out.worst] == [(0, 100), (0, 99), (0, 98)]
    assert [w.label for w in out.worst] == ["class-100", "class-99", "class-98"]
    assert all(w.sample == "dog.jpg" for w in out.worst)
    assert out.worst[0].reference == 0.0 and out.worst[0].candidate == 100 / 1024
    assert out.worst[0].abs_error == 100 / 1024 and out.worst[0].scaled_error == pytest.approx(100 / 1024 / 100)


def test_smallest_passing_tolerance_is_exactly_the_boundary(ramp):
    reference, candidate = ramp
    strict = Tolerance(rel=1e-4, min_cosine=0.999999, **WIDE, name="fp32")
    out = compare_output(reference, candidate, strict)
    assert not out.passed
    assert out.passing_rel == out.max_scaled_error
    assert out.passing_min_cosine == out.min_cosine
    at_boundary = Tolerance(rel=out.passing_rel, min_cosine=out.passing_min_cosine, **WIDE)
    assert compare_output(reference, candidate, at_boundary).passed
    just_tighter = Tolerance(rel=out.passing_rel * 0.999, min_cosine=out.passing_min_cosine, **WIDE)
    assert not compare_output(reference, candidate, just_tighter).passed


def test_report_suggests_an_override_that_passes(ramp):
    reference, candidate = ramp
    tolerance = tolerance_for("fp32")
    report = compare(reference, candidate, tolerance)
    text = report.report()
    assert "scaled error histogram" in text and "worst" in text and "smallest tolerance" in text
    assert "atol=" in text  # the ramp's errors (up to 0.098) also exceed fp32's allclose atol 1e-3
    option = re.search(r"--tolerance (\S+)", text).group(1)
    overrides = parse_tolerance_options([option])
    assert compare(reference, candidate, tolerance_for("fp32", overrides=overrides)).passed
    assert not report.passed


def test_cosine_by_hand():
    # [3, 4] against [4, 3]: cosine 24/25; errors 1 and 1 against max |reference| 4: rel 0.25.
    out = compare_output(torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]]),
                         Tolerance(rel=0.5, min_cosine=0.99, **WIDE))
    assert out.min_cosine == pytest.approx(0.96, abs=1e-15)
    assert out.max_scaled_error == 0.25
    assert out.failures == ("cosine similarity 0.96000000 of sample 0 is below 0.99",)
    assert out.passing_min_cosine == pytest.approx(0.96, abs=1e-15)


def test_cosine_catches_a_zeroed_channel_that_a_loose_max_error_hides():
    reference = torch.tensor([[1.0, 0.5, 0.5, 0.5]])
    candidate = torch.tensor([[1.0, 0.0, 0.5, 0.5]])  # max error 0.5 of max 1: allowed by rel 0.6
    out = compare_output(reference, candidate, Tolerance(rel=0.6, min_cosine=0.99, **WIDE))
    assert not out.passed and out.failures[0].startswith("cosine similarity")


def test_top1_counts_only_decisive_samples():
    reference = torch.tensor([[10.0, 9.0, 0, 0, 0, 0, 0], [10.0, 9.99, 0, 0, 0, 0, 0]])
    swapped = reference[:, [1, 0, 2, 3, 4, 5, 6]]
    # band = 2 * 0.06 * 10 = 1.2: sample 0's margin 1.0 is not decisive; with rel 0.01 (band 0.2) it is
    loose = compare_output(reference, swapped, Tolerance(rel=0.06, min_cosine=0.5, **WIDE))
    assert loose.top1_decisive == 0 and loose.top1_agreement == 1.0
    tight = compare_output(reference, swapped, Tolerance(rel=0.01, min_cosine=0.5, **WIDE))
    assert tight.top1_decisive == 1 and tight.top1_agreement == 0.0
    assert "top-1 class differs on 1 of 1 decisive samples" in tight.failures


def test_top5_requires_classes_that_lead_the_sixth():
    reference = torch.tensor([[10.0, 9.0, 8.0, 7.0, 6.0, 1.0, 0.0, 0.0]])
    candidate = reference.clone()
    candidate[0, 4], candidate[0, 6] = 0.0, 6.0  # class 4 leaves the top-5, class 6 enters
    out = compare_output(reference, candidate, Tolerance(rel=0.01, min_cosine=0.5, **WIDE))
    assert out.top5_agreement == 0.0
    assert "top-5 classes differ on 1 of 1 samples" in out.failures


def test_nonfinite_values_fail_and_are_named():
    reference = torch.ones(2, 8)
    candidate = reference.clone()
    candidate[0, 5] = math.inf
    candidate[1, 3] = math.nan
    out = compare_output(reference, candidate, DEFAULT_TOLERANCES["bf16"], sample_names=["a", "b"])
    assert out.nonfinite == 2
    assert out.failures[0] == ("2 of 16 values are not finite (1 NaN, 1 Inf; first at index (0, 5)): "
                               "no tolerance accepts them")
    assert out.passing_rel is None and "non-finite" in out.passing_note
    assert [w.index for w in out.worst[:2]] == [(0, 5), (1, 3)]
    assert out.max_abs_error == 0.0  # the statistics cover the finite elements, which are exact
    assert "no tolerance would have passed: non-finite values" in out.report()


def test_reference_with_nan_fails():
    reference = torch.tensor([[1.0, math.nan]])
    out = compare_output(reference, torch.tensor([[1.0, 2.0]]), LOOSE)
    assert "the reference itself has NaN or Inf values" in out.failures
    assert out.passing_rel is None


def test_shape_mismatch_and_missing_output_fail():
    out = compare_output(torch.zeros(2, 10), torch.zeros(2, 11), LOOSE, "logits")
    assert not out.passed and "shape (2, 11) differs" in out.failures[0]
    report = compare({"logits": torch.zeros(1, 3), "aux": torch.zeros(1, 3)}, {"logits": torch.zeros(1, 3)},
                     {"logits": LOOSE, "aux": LOOSE})
    assert not report.passed and report.failures == ["aux: output missing from the candidate"]


def test_scale_fit_tells_systematic_from_noise(ramp):
    reference = torch.linspace(-10, 10, 2000, dtype=torch.float64).reshape(2, 1000)
    scaled = compare_output(reference, reference * 1.01, LOOSE)
    assert scaled.fit_scale == pytest.approx(1.01, rel=1e-12) and scaled.fit_explained == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    noisy = compare_output(reference, reference + 1e-3 * torch.randn(2, 1000, generator=generator,
                                                                     dtype=torch.float64), LOOSE)
    assert noisy.fit_explained < 0.01
    assert "systematic scale change" in compare_output(reference, reference * 1.01, tolerance_for("fp32")).report()


def test_negative_control():
    """Identical outputs pass with all statistics zero; the same outputs pushed past the
    tolerance by one element fail, and by less than the tolerance pass."""
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn(2, 1000, generator=generator)
    tolerance = tolerance_for("fp16")
    same = compare(reference, reference.clone(), tolerance)
    assert same.passed
    logits = same.outputs[0]
    assert (logits.max_abs_error, logits.mean_abs_error, logits.p99_scaled_error) == (0, 0, 0)
    assert logits.min_cosine == 1.0  # identical samples agree exactly
    scale = float(reference.abs().max())
    for factor, passes in ((0.9, True), (1.1, False)):
        candidate = reference.clone()
        candidate[1, 500] += factor * tolerance.rel * scale
        assert compare(reference, candidate, tolerance).passed is passes


def test_as_dict_is_json():
    reference = torch.ones(1, 10)
    candidate = reference.clone()
    candidate[0, 2] = math.nan
    data = clean_json(compare(reference, candidate, LOOSE, categories=[str(i) for i in range(10)]).as_dict())
    text = json.dumps(data, allow_nan=False)
    logits = json.loads(text)["outputs"]["logits"]
    assert logits["worst"][0]["index"] == [0, 2] and logits["worst"][0]["label"] == "2"
    assert {"mean_scaled_error", "median_scaled_error", "p99_scaled_error", "max_elementwise_rel_error",
            "allclose_violations", "histogram", "passing_rel"} <= set(logits)


def test_suggested_tolerance_rounds_outward():
    # rel: 3 significant digits, rounded up; cosine: the gap 1 - cos to 2 digits, rounded up
    assert suggested_tolerance(1.234e-3, 0.999873) == (pytest.approx(1.24e-3), pytest.approx(0.99987))
    rel, cosine = suggested_tolerance(0.009993, 0.9999999943)
    assert rel >= 0.009993 and rel == pytest.approx(0.01) and cosine <= 0.9999999943


# -- tolerances ---------------------------------------------------------------------------------


def test_policy_per_precision():
    assert set(DEFAULT_TOLERANCES) == {"fp32", "tf32", "fp16", "bf16", "int8"}
    rels = [DEFAULT_TOLERANCES[m].rel for m in ("fp32", "tf32", "fp16", "bf16", "int8")]
    assert rels == sorted(rels), "a narrower format must not get a tighter tolerance"
    for mode, tolerance in DEFAULT_TOLERANCES.items():  # the cosine floors of the tolerances docstring
        bound = 1 - 4.5 * tolerance.rel**2  # a uniform error of the tolerated size, logits' max/rms = 3
        assert (tolerance.min_cosine < bound) if mode == "fp32" else (tolerance.min_cosine > bound), mode
    assert numeric_mode("fp32", tf32=True) == "tf32" and numeric_mode("fp16", tf32=True) == "fp16"
    assert tolerance_for("fp32", tf32=True) is DEFAULT_TOLERANCES["tf32"]


def test_overrides_from_config_and_command_line():
    config = {"fp16": {"rel": 0.02}, "bf16": {"min_cosine": 0.99}}
    command_line = parse_tolerance_options(["fp16:rel=0.03,min_cosine=0.9995", "int8:rel=0.2"])
    merged = merge_overrides(config, command_line)
    assert merged == {"fp16": {"rel": 0.03, "min_cosine": 0.9995}, "bf16": {"min_cosine": 0.99},
                      "int8": {"rel": 0.2}}
    fp16 = DEFAULT_TOLERANCES["fp16"]
    assert tolerance_for("fp16", overrides=merged) == Tolerance(rel=0.03, min_cosine=0.9995, atol=fp16.atol,
                                                                rtol=fp16.rtol, name="fp16")
    assert tolerance_for("fp32", overrides=parse_tolerance_options(["fp32:atol=0.01,rtol=0"])).atol == 0.01
    assert tolerance_for("bf16", overrides=merged).rel == DEFAULT_TOLERANCES["bf16"].rel


@pytest.mark.parametrize(("overrides", "message"), [
    ({"fp61": {"rel": 0.1}}, "unknown precision 'fp61'"),
    ({"fp16": {"abs": 0.1}}, "unknown keys ['abs']"),
    ({"fp16": {"rel": "a lot"}}, "'a lot' is not a number"),
    ({"fp16": {"rel": 2.0}}, "rel must be in (0, 1)"),
    ({"fp16": {"min_cosine": 0}}, "min_cosine must be in (0, 1]"),
    ({"fp16": {"atol": -1}}, "need atol >= 0 and 0 <= rtol < 1"),
    ({"fp16": {"atol": 0, "rtol": 0}}, "not both 0"),
    ({"fp16": {"rtol": "nan"}}, "need atol >= 0"),
    ({"fp16": 0.02}, "expected a table"),
])
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check_overrides(overrides)
    with pytest.raises(InputError, match=re.escape(message)):
        tolerance_for("fp32", overrides=overrides)


@pytest.mark.parametrize("option", ["fp16", "fp16:", "fp16:rel", "fp16:rel=", ":rel=0.1", "fp16:=0.1"])
def test_bad_tolerance_option_syntax(option):
    with pytest.raises(InputError, match="--tolerance"):
        parse_tolerance_options([option])


# -- element-wise relative error and allclose ----------------------------------------------------------


def test_elementwise_relative_error_and_allclose_by_hand():
    """reference (1, 64, -0.5, 0), candidate + 1/128 everywhere (exact in binary): element-wise relative
    errors 1/128, 1/8192, 1/64 and inf (an error on a zero); scaled error (1/128) / 64 = 1/8192."""
    reference = torch.tensor([[1.0, 64.0, -0.5, 0.0]], dtype=torch.float64)
    candidate = reference + 1 / 128
    at = {"rel": 0.5, "min_cosine": 0.5}
    out = compare_output(reference, candidate, Tolerance(**at, atol=1 / 128, rtol=0.0))
    assert out.max_abs_error == 1 / 128 and out.max_scaled_error == 1 / 8192
    assert out.max_elementwise_rel_error == math.inf
    by_index = sorted(out.worst, key=lambda w: w.index)
    assert [w.elementwise_rel_error for w in by_index] == [1 / 128, 1 / 8192, 1 / 64, math.inf]
    assert out.allclose_violations == 0 and out.passed  # |Δ| = atol is inside, as np.allclose counts it
    # atol just under 1/128: only the large logit stays inside, by rtol * 64 = 6.4e-5
    tight = compare_output(reference, candidate, Tolerance(**at, atol=0.0078, rtol=1e-6))
    assert tight.allclose_violations == 3 and not tight.passed
    assert tight.failures[-1] == ("3 of 4 elements outside |Δ| <= atol + rtol·|reference| (atol 0.0078, rtol 1e-06; "
                                  "first at index (0, 0))")
    assert tight.passing_atol == 1 / 128  # what the zero logit needs
    assert compare_output(reference, candidate, Tolerance(**at, atol=tight.passing_atol, rtol=1e-6)).passed
    inside = torch.isclose(candidate, reference, rtol=1e-6, atol=0.0078)  # torch's own allclose agrees
    assert tight.allclose_violations == int((~inside).sum())


def test_allclose_catches_a_wrong_small_logit_that_the_scaled_check_allows():
    """A logit near zero that doubles: far inside the scaled budget of fp16, outside its allclose band."""
    reference = torch.linspace(-16, 16, 1000, dtype=torch.float64).reshape(1, 1000)
    candidate = reference.clone()
    candidate[0, 500] = reference[0, 500] + 0.21  # |Δ| 0.21 = 1.3e-2 of max 16: passes rel 1.5e-2
    out = compare_output(reference, candidate, tolerance_for("fp16"))
    assert out.max_scaled_error < tolerance_for("fp16").rel
    assert out.allclose_violations == 1 and not out.passed


def test_allclose_tolerances_follow_their_rule():
    """atol = rel x 16 rounded down (a factor under 2), rtol = 8 x the format's unit roundoff, as the
    tolerances docstring derives them; both tighten with the format."""
    roundoff = {"fp32": 2**-24, "tf32": 2**-11, "fp16": 2**-11, "bf16": 2**-8, "int8": 1 / 254}
    for mode, tolerance in DEFAULT_TOLERANCES.items():
        assert tolerance.rel * 16 / 2 <= tolerance.atol <= tolerance.rel * 16, mode
        assert 8 * roundoff[mode] / 1.1 <= tolerance.rtol <= 8 * roundoff[mode] * 1.1, mode


def test_saved_runs_from_before_the_rename_still_read():
    """Runs saved before max_scaled_error had its name carry max_rel_error (the same figure)."""
    from perfsuite.report import parity_cell

    old = {"passed": True, "outputs": {"logits": {"max_rel_error": 8.45e-7, "top1_agreement": 1.0}}}
    new = {"passed": True, "outputs": {"logits": {"max_scaled_error": 8.45e-7, "top1_agreement": 1.0}}}
    assert parity_cell(old) == parity_cell(new) and "8.4e-07" in parity_cell(old)
