"""Upgrade drills: simulated upgrades against the committed golden (alexnet, deterministic random
weights, the report transform). Rounding-level noise must pass; a real change must fail with a
report that points at it; NaN must fail with a clear message.

Each drill changes one thing on the CPU reference (the weights, the preprocessing) and runs the
same check as ``perfsuite golden check`` does for the reference (``check_reference``).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torchvision import transforms

from perfsuite.backends import RunSpec, get_runner_class
from perfsuite.golden import GoldenMissing, check_reference, compare_with_golden, find_golden, inputs_for
from perfsuite.images import IMAGENET_MEAN, IMAGENET_STD
from perfsuite.models import LoadedModel, load_model, state_dict_fingerprint
from perfsuite.tolerances import tolerance_for

FP32 = tolerance_for("fp32")


@pytest.fixture(scope="module")
def model(loaded_model) -> LoadedModel:
    """The committed golden's weights: the deterministic random ones."""
    if (loaded_model.name, loaded_model.weights) == ("alexnet", "random"):
        return loaded_model
    return load_model("alexnet", "random")


@pytest.fixture(scope="module")
def golden(model, golden_dir):
    return find_golden(model, "report", golden_dir)


@pytest.fixture(scope="module")
def inputs(golden):
    return inputs_for(golden)


def edited(model: LoadedModel, edit) -> LoadedModel:
    """A copy of ``model`` whose state_dict ``edit`` changed in place, with its own fingerprint."""
    module = copy.deepcopy(model.module)
    state = module.state_dict()
    with torch.no_grad():
        edit(state)
    return dataclasses.replace(model, module=module, fingerprint=state_dict_fingerprint(module.state_dict()))


def one_ulp_everywhere(state: dict[str, torch.Tensor]) -> None:
    """Move every weight and bias by one unit in the last place, up or down at random: the
    difference between two correct roundings of the same number."""
    generator = torch.Generator().manual_seed(7)
    for tensor in state.values():
        up = torch.rand(tensor.shape, generator=generator) < 0.5
        tensor.copy_(torch.nextafter(tensor, torch.where(up, torch.inf, -torch.inf)))


@pytest.fixture(scope="module")
def perturbed(model) -> LoadedModel:
    return edited(model, one_ulp_everywhere)


def test_unchanged_model_matches_to_fp32_rounding(model, golden, inputs):
    """Control: without an edit, the drill machinery reports no departure, and the logits equal the
    golden's up to the order of fp32 sums. That order depends on the CPU (oneDNN picks its kernels by
    instruction set): bit-identical on the Intel Xeon that recorded the golden, 1.6e-5 absolute
    (1e-6 scaled) on an AMD EPYC. On one machine the check is deterministic."""
    comparison, _ = check_reference(model, golden, FP32, inputs)
    assert comparison.passed and comparison.first_departure is None
    logits = comparison.parity.outputs[0]
    assert logits.max_scaled_error < FP32.rel / 10
    again, _ = check_reference(model, golden, FP32, inputs)
    assert again.parity.outputs[0].max_abs_error == logits.max_abs_error


def test_rounding_level_weight_perturbation_passes(perturbed, golden, inputs):
    comparison, _ = check_reference(perturbed, golden, FP32, inputs)
    logits = comparison.parity.outputs[0]
    assert comparison.passed, comparison.report()
    assert 0 < logits.max_scaled_error < FP32.rel / 10  # measured 7e-7: noise, two decades under the tolerance
    assert comparison.first_departure is None
    assert any(c.startswith("weights fingerprint") for c in comparison.changes)


def test_perturbed_weights_have_no_golden_of_their_own(perturbed, golden_dir):
    """A golden is found by fingerprint only: even rounding-level edits fail clearly, not silently."""
    with pytest.raises(GoldenMissing, match=f"weights fingerprint {perturbed.fingerprint[:12]}"):
        find_golden(perturbed, "report", golden_dir)


@pytest.mark.parametrize("layer", ["features.0", "features.3", "classifier.6"])
def test_one_layer_scaled_by_1_01_fails_and_is_located(model, golden, inputs, layer):
    scaled = edited(model, lambda state: state[f"{layer}.weight"].mul_(1.01))
    comparison, _ = check_reference(scaled, golden, FP32, inputs)
    logits = comparison.parity.outputs[0]
    report = comparison.report()
    assert not comparison.passed
    assert 5e-3 < logits.max_scaled_error < 2e-2, report  # a 1% weight change moves the logits ~1%
    assert comparison.first_departure is not None and comparison.first_departure.name == layer, report
    assert f"{layer} " in report and "<- first departure" in report
    assert f"the first layer that departs is {layer}" in report
    # ReLU and max-pool pass a scale through, so the logits are ~1.01x the golden's
    assert logits.fit_scale == pytest.approx(1.01, abs=2e-3) and "systematic scale change" in report
    assert logits.passing_rel == pytest.approx(logits.max_scaled_error)
    assert all(w.label in model.categories and w.sample in ("dog.jpg", "cat.jpg") for w in logits.worst)


@pytest.mark.parametrize("interpolation", [transforms.InterpolationMode.BICUBIC, transforms.InterpolationMode.NEAREST])
def test_resize_interpolation_change_fails_and_points_at_preprocessing(model, golden, interpolation):
    preprocess = transforms.Compose([
        transforms.Resize((224, 224), interpolation=interpolation),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    comparison, _ = check_reference(model, golden, FP32, inputs_for(golden, preprocess))
    report = comparison.report()
    assert not comparison.passed
    assert comparison.parity.outputs[0].max_scaled_error > 1e-2, report  # measured 2.3e-2 (bicubic), 7.9e-2 (nearest)
    assert comparison.first_departure is not None and comparison.first_departure.name == "input", report
    assert "preprocessing changed:" in report and f"interpolation={interpolation.value}" in report
    assert "the preprocessed input already differs from the golden's" in report
    assert "the image files are unchanged and the preprocessing changed" in report


def test_nan_weight_fails_with_a_clear_message(model, golden, inputs):
    poisoned = edited(model, lambda state: state["classifier.4.weight"].__setitem__((0, 0), float("nan")))
    comparison, _ = check_reference(poisoned, golden, FP32, inputs)
    report = comparison.report()
    assert not comparison.passed
    assert comparison.parity.failures[0] == ("logits: 2000 of 2000 values are not finite (2000 NaN, 0 Inf; first "
                                             "at index (0, 0)): no tolerance accepts them")
    assert "no tolerance would have passed: non-finite values fail at any tolerance" in report
    first = comparison.first_departure
    assert first is not None and first.name == "classifier.4" and first.nonfinite
    assert "NaN/Inf first appear in the output of classifier.4 (Linear)" in report


def test_nan_in_a_backend_output_fails_with_its_index(model, golden, inputs):
    runner = get_runner_class("eager")(model, RunSpec("fp16", inputs.batch.shape[0], "cpu"))
    with runner:
        outputs = runner.run(inputs.batch).clone()
    outputs[1, 281] = float("nan")
    report = compare_with_golden(golden, outputs, tolerance_for("fp16"), model.categories)
    logits = report.outputs[0]
    assert not report.passed and logits.nonfinite == 1
    assert "1 NaN, 0 Inf; first at index (1, 281)" in report.failures[0]
    assert (logits.worst[0].index, logits.worst[0].sample, logits.worst[0].label) == (
        (1, 281), "cat.jpg", model.categories[281])


def test_fp16_tolerance_alone_would_not_see_the_scaled_layer(model, golden, inputs):
    """Why the reference is checked at fp32: a 1% change fits inside fp16's band, so an fp16
    backend alone passes while the fp32 reference check fails."""
    scaled = edited(model, lambda state: state["features.3.weight"].mul_(1.01))
    runner = get_runner_class("eager")(scaled, RunSpec("fp16", inputs.batch.shape[0], "cpu"))
    with runner:
        fp16 = compare_with_golden(golden, runner.run(inputs.batch), tolerance_for("fp16"))
    assert fp16.passed, fp16.report()
    comparison, _ = check_reference(scaled, golden, FP32, inputs)
    assert not comparison.passed
