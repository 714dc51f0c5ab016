"""TensorRT on a GPU: the runtime path where it can run, the reason from a real attempt where not.

On the H100/H200 here (compute capability 9.0) the TensorRT-RTX runtime has no kernels: loading
the suite's engine must skip with the reason TensorRT logged on the real ``deserialize_cuda_engine``
(no probe engine), the refusal must be remembered so later specs skip at once, and ``perfsuite
doctor --build`` must show it. Where a runtime works (full TensorRT, or RTX on a supported GPU),
AlexNet runs through execute_async_v3 on the session's own stream, matches the eager reference,
also when torch's current stream is not the default one, and one dynamic-batch engine serves two
batch sizes. None of this runs on the CPU machines: the lead runs it on the GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perfsuite.backends.base import RunSpec
from perfsuite.backends.tensorrt import TENSORRT_RTX, TensorRTConfig, TensorRTRtxRunner, TensorRTRunner
from perfsuite.comparator import compare
from perfsuite.engine_cache import EngineCache
from perfsuite.environment import tf32_in_effect
from perfsuite.errors import BackendUnavailable
from perfsuite.tolerances import tolerance_for

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def unsupported_capability() -> str:
    trt = pytest.importorskip(TENSORRT_RTX.module_name,
                              reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")
    major, minor = torch.cuda.get_device_capability()
    if f"SM{major}{minor}" in trt.ComputeCapability.__members__:
        pytest.skip(f"compute capability {major}.{minor} is supported by TensorRT-RTX: nothing to refuse")
    return f"{major}.{minor}"


def test_rtx_reason_on_an_unsupported_gpu_comes_from_the_real_deserialization(unsupported_capability, alexnet,
                                                                              tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSUITE_CACHE_DIR", str(tmp_path))
    spec = RunSpec("fp16", 1, "cuda")
    assert TensorRTRtxRunner.unavailable_reason(spec) is None  # the availability check builds and runs nothing
    runner = TensorRTRtxRunner(alexnet, spec, TensorRTConfig())
    with pytest.raises(BackendUnavailable) as caught:
        runner.load()
    reason = str(caught.value)
    assert reason.startswith(f"tensorrt-rtx: the TensorRT-RTX {TENSORRT_RTX.version()} runtime cannot run on ")
    assert f"compute capability {unsupported_capability}" in reason, reason  # TensorRT's own words
    assert TensorRTRtxRunner.unavailable_reason(RunSpec("fp32", 8, "cuda")) == reason  # remembered: no second build


def test_doctor_build_shows_the_rtx_reason(unsupported_capability, tmp_path):
    result = subprocess.run([sys.executable, "-m", "perfsuite", "doctor", "--json", "--device", "cuda", "--build",
                             "--backends", "tensorrt-rtx", "--weights", "random"],
                            capture_output=True, text=True, timeout=900, cwd=REPO,
                            env={**os.environ, "PERFSUITE_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [r for r in json.loads(result.stdout)["backends"] if r["backend"] == "tensorrt-rtx"]
    assert rows and all(not r["runs"] and "cannot run on" in r["reason"] and unsupported_capability in r["reason"]
                        for r in rows), rows


@pytest.mark.parametrize("runner_class", [TensorRTRunner, TensorRTRtxRunner], ids=["tensorrt", "tensorrt-rtx"])
def test_alexnet_runs_and_matches_eager(runner_class, alexnet, fixture_images, tmp_path, monkeypatch):
    from perfsuite.backends.eager import reference_logits

    spec = RunSpec("fp16", fixture_images.shape[0], "cuda")
    reason = runner_class.unavailable_reason(spec)
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("PERFSUITE_CACHE_DIR", str(tmp_path))
    reference = reference_logits(alexnet, fixture_images, "cuda")
    config = TensorRTConfig(dynamic_batch=True)
    runner = runner_class(alexnet, spec, config)
    try:
        runner.load()
    except BackendUnavailable as exc:  # e.g. RTX on a GPU it has no kernels for: a real attempt said so
        pytest.skip(str(exc))
    with runner:
        outputs = runner.run(fixture_images)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):  # torch's current stream is not the default one: the events order it
            prepared = runner.prepare(fixture_images)
            on_side = runner.to_tensor(runner.infer(prepared))
        metrics = runner.metrics()
    parity = compare(reference, outputs, tolerance_for("fp16", tf32_in_effect("cuda")))
    assert parity.passed, parity.summary()
    assert torch.equal(on_side, outputs)
    assert metrics["artifact_cache"] == "miss" and metrics["engine_bytes"] > 0 and metrics["engine_layers"] > 0
    assert metrics["engine_device_memory_bytes"] > 0 and metrics["conversion_s"] > metrics["engine_build_s"] > 0

    # The same dynamic-batch engine serves batch 1: a cache hit, no second build.
    with runner_class(alexnet, RunSpec("fp16", 1, "cuda"), config) as runner:
        single = runner.run(fixture_images[:1])
        assert runner.metrics()["artifact_cache"] == "hit"
    assert torch.allclose(single, outputs[:1], rtol=0, atol=1e-2 * outputs.abs().max().item())
    assert [r["kind"] for r in EngineCache(tmp_path / "engines").build_log()] == ["onnx", "engine"]
