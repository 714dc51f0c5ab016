"""perfsuite's parity figures against Polygraphy's, on the model perfsuite exports.

Polygraphy (NVIDIA's debugging toolkit, a dev dependency) runs the file ``perfsuite export`` writes
with its own ONNX Runtime runner on the CPU, and compares that output with the eager fp32
reference with its own comparator. perfsuite's comparator on the same two tensors must give the
same max absolute error and the same element-wise max relative error, and the same verdict at the
same atol/rtol where the two rules are the same check.

Polygraphy computes in the outputs' dtype (fp32 here) and perfsuite in float64, so the figures
agree to one fp32 rounding (2^-23 relative). Polygraphy passes an element when |Δ| <= atol *or*
|Δ| <= rtol·|ref|; perfsuite's allclose, like np.allclose, when |Δ| <= atol + rtol·|ref|. The two
are the same check when atol or rtol is 0; otherwise Polygraphy's pass implies perfsuite's, and
perfsuite's at half the tolerances implies Polygraphy's (max(a, b) <= a + b <= 2 max(a, b)).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from conftest import put_export
from perfsuite.backends.base import RunSpec
from perfsuite.cli import main
from perfsuite.comparator import compare_output
from perfsuite.engine_cache import EngineCache
from perfsuite.images import FIXTURE_IMAGES
from perfsuite.tolerances import Tolerance, tolerance_for

pytest.importorskip("polygraphy", reason="Polygraphy not installed (pip install 'perfsuite[dev]')")
pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (pip install 'perfsuite[onnx]')")
FP32_ULP = 2.0**-23


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, fixture_images, alexnet, shared_exports):
    """(Polygraphy's ONNX Runtime output on the exported file, the eager fp32 reference, the file)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    from perfsuite.backends.eager import reference_logits

    folder = tmp_path_factory.mktemp("polygraphy")
    path = folder / "alexnet-fp32.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERFSUITE_CACHE_DIR", str(folder / "cache"))
        put_export(EngineCache(), shared_exports, alexnet, "fp32", None)
        assert main(["export", str(path), "--weights", "random", "--model", "alexnet"]) == 0
    with OnnxrtRunner(SessionFromOnnx(str(path))) as runner:
        (candidate,) = runner.infer({"images": fixture_images.numpy()}).values()
    return torch.from_numpy(candidate), reference_logits(alexnet, fixture_images, "cpu"), path


def polygraphy_compare(candidate: torch.Tensor, reference: torch.Tensor, atol: float, rtol: float):
    """Polygraphy's comparator, element-wise, with the reference second (its relative error divides by it)."""
    from polygraphy.comparator import Comparator, IterationResult, RunResults
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    results = RunResults()
    for name, tensor in (("onnxrt", candidate), ("reference", reference)):
        results.append((name, [IterationResult({"logits": tensor.numpy()}, runner_name=name)]))
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        accuracy = Comparator.compare_accuracy(
            results, compare_func=SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat="elemwise"))
    return accuracy[0][("onnxrt", "reference")][0]["logits"]


def perfsuite_compare(candidate: torch.Tensor, reference: torch.Tensor, atol: float, rtol: float):
    return compare_output(reference, candidate, Tolerance(rel=0.5, min_cosine=0.5, atol=atol, rtol=rtol), "logits",
                          sample_names=FIXTURE_IMAGES)


def test_polygraphy_runs_exactly_what_perfsuite_runs(outputs, alexnet, fixture_images):
    from perfsuite.backends.onnxruntime import OnnxRuntimeRunner

    candidate, _, path = outputs
    with OnnxRuntimeRunner(alexnet, RunSpec("fp32", fixture_images.shape[0], "cpu")) as runner:
        assert torch.equal(runner.run(fixture_images), candidate)  # the same bits
        assert runner.metrics()["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # the same file


def test_the_same_errors_as_polygraphy(outputs):
    candidate, reference, _ = outputs
    theirs = polygraphy_compare(candidate, reference, atol=1e-5, rtol=1e-4)
    ours = perfsuite_compare(candidate, reference, atol=1e-5, rtol=1e-4)
    assert ours.max_abs_error == pytest.approx(theirs.max_absdiff, rel=FP32_ULP)
    assert ours.max_elementwise_rel_error == pytest.approx(theirs.max_reldiff, rel=FP32_ULP)
    assert ours.max_abs_error > 0  # a different implementation: not the reference itself
    # measured on the CPU: max |Δ| 2.1e-5, element-wise 7.6e-4; the scaled error is 16x smaller than
    # max |Δ| (max |ref| = 16), which is why perfsuite's former "max_rel_error" read 1.3e-6
    assert ours.max_scaled_error == pytest.approx(ours.max_abs_error / float(reference.abs().max()), rel=1e-12)
    assert ours.max_elementwise_rel_error > 100 * ours.max_scaled_error


@pytest.mark.parametrize("which", ["atol", "rtol"])
@pytest.mark.parametrize("factor", [0.99, 1.01])
def test_the_same_verdict_where_the_rules_coincide(outputs, which, factor):
    """With rtol 0 (or atol 0) both tools apply the same check: the verdicts flip at the same bound."""
    candidate, reference, _ = outputs
    bound = perfsuite_compare(candidate, reference, 1e-5, 1e-4)
    atol, rtol = ((factor * bound.max_abs_error, 0.0) if which == "atol"
                  else (0.0, factor * bound.max_elementwise_rel_error))
    theirs = polygraphy_compare(candidate, reference, atol, rtol)
    assert bool(theirs) is perfsuite_compare(candidate, reference, atol, rtol).passed is (factor > 1)


@pytest.mark.parametrize("atol,rtol", [(1e-5, 1e-4), (3e-6, 1e-5), (1e-5, 1e-3)])
def test_mixed_tolerances_bracket_each_other(outputs, atol, rtol):
    """At mixed atol/rtol (the issue's 1e-5/1e-4 among them) the two rules differ by at most 2x."""
    candidate, reference, _ = outputs
    theirs = bool(polygraphy_compare(candidate, reference, atol, rtol))
    if theirs:
        assert perfsuite_compare(candidate, reference, atol, rtol).passed
    if perfsuite_compare(candidate, reference, atol / 2, rtol / 2).passed:
        assert theirs


def test_perfsuites_fp32_tolerance_passes_in_polygraphy_too(outputs):
    candidate, reference, path = outputs
    fp32 = tolerance_for("fp32")
    assert perfsuite_compare(candidate, reference, fp32.atol, fp32.rtol).passed
    assert polygraphy_compare(candidate, reference, fp32.atol, fp32.rtol)  # polygraphy run PATH --atol .. --rtol ..
    print(f"\npolygraphy run {path} --onnxrt --atol {fp32.atol:g} --rtol {fp32.rtol:g}  (perfsuite's fp32 allclose)")
