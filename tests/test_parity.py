"""Every available backend x precision against the reference on dog and cat, plus a negative control."""

from __future__ import annotations

import torch

from perfsuite.comparator import compare
from perfsuite.images import FIXTURE_IMAGES


def test_backend_matches_reference(parity_case, runner_pool, fixture_images, reference_outputs, suite_options):
    runner = runner_pool.get(parity_case).runner
    outputs = runner.run(fixture_images)
    report = compare(reference_outputs, outputs, suite_options.tolerance(parity_case.precision),
                     categories=runner.model.categories, sample_names=FIXTURE_IMAGES)
    assert report.passed, f"{parity_case.id}:\n{report.report()}"
    logits = report.outputs[0]
    if (parity_case.backend, parity_case.precision) != ("eager", "fp32") or suite_options.device != "cpu":
        # A different implementation or precision always rounds somewhere: an error of exactly zero
        # would mean the backend returned the reference itself.
        assert logits.max_abs_error > 0, f"{parity_case.id}: bit-identical to the reference"


def test_negative_control_fails_the_same_check(parity_case, runner_pool, fixture_images, reference_outputs,
                                               suite_options):
    """The very output that passed, pushed just past its tolerance, must fail."""
    runner = runner_pool.get(parity_case).runner
    outputs = runner.run(fixture_images)
    tolerance = suite_options.tolerance(parity_case.precision)
    scale = float(reference_outputs.abs().max())
    perturbed = outputs.clone()
    perturbed[0, 0] += 1.5 * tolerance.rel * scale + float((outputs - reference_outputs).abs().max())
    report = compare(reference_outputs, perturbed, tolerance)
    assert not report.passed
    assert any("relative error" in failure for failure in report.failures)


def test_reference_is_eager_fp32(reference_outputs, fixture_images, loaded_model, suite_options):
    assert reference_outputs.shape == (fixture_images.shape[0], 1000)
    assert reference_outputs.dtype == torch.float32
    if suite_options.device == "cpu":
        with torch.inference_mode():
            assert torch.equal(loaded_model.module(fixture_images), reference_outputs)
