"""TensorRT on a GPU: the runtime path where it can run, the reason from a real attempt where not.

On the H100/H200 here (compute capability 9.0) the TensorRT-RTX runtime has no kernels: the skip
reason must come from a real ``deserialize_cuda_engine`` attempt and name the capabilities that
are supported; ``perfsuite doctor`` must show the same. Where a runtime works (full TensorRT, or
RTX on a supported GPU), AlexNet runs through execute_async_v3 and matches the eager reference,
and one dynamic-batch engine serves two batch sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perfsuite.backends.base import RunSpec
from perfsuite.backends.tensorrt import (
    TENSORRT_RTX,
    TensorRTConfig,
    TensorRTRtxRunner,
    TensorRTRunner,
    probe_runtime,
    supported_compute_capabilities,
)
from perfsuite.comparator import compare
from perfsuite.engine_cache import EngineCache
from perfsuite.environment import tf32_in_effect
from perfsuite.tolerances import tolerance_for

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rtx_capability() -> tuple[str, tuple[str, ...]]:
    pytest.importorskip(TENSORRT_RTX.module_name, reason="TensorRT-RTX not installed (pip install 'perfsuite[rtx]')")
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}", supported_compute_capabilities(TENSORRT_RTX)


def test_rtx_reason_on_an_unsupported_gpu_comes_from_a_real_deserialization(rtx_capability):
    capability, supported = rtx_capability
    if capability in supported:
        pytest.skip(f"compute capability {capability} is supported by TensorRT-RTX: nothing to refuse")
    probe = probe_runtime(TENSORRT_RTX, "cuda")
    assert not probe.ok
    assert probe.step == "deserialize_cuda_engine", probe  # the engine built; the runtime refused it
    assert any("[ERROR]" in line for line in probe.log), probe.log  # TensorRT's own words
    reason = TensorRTRtxRunner.unavailable_reason(RunSpec("fp16", 1, "cuda"))
    assert reason == probe.reason
    assert f"compute capability {capability}" in reason and "deserialize_cuda_engine failed" in reason
    assert f"builds engines for compute capabilities {', '.join(supported)}" in reason


def test_doctor_shows_the_rtx_reason(rtx_capability):
    capability, supported = rtx_capability
    if capability in supported:
        pytest.skip(f"compute capability {capability} is supported by TensorRT-RTX")
    result = subprocess.run([sys.executable, "-m", "perfsuite", "doctor", "--json", "--device", "cuda"],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [r for r in json.loads(result.stdout)["backends"] if r["backend"] == "tensorrt-rtx"]
    assert rows and all(not r["runs"] and "deserialize_cuda_engine failed" in r["reason"] for r in rows), rows


@pytest.mark.parametrize("runner_class", [TensorRTRunner, TensorRTRtxRunner], ids=["tensorrt", "tensorrt-rtx"])
def test_alexnet_runs_and_matches_eager(runner_class, loaded_model, fixture_images, reference_outputs, tmp_path,
                                        monkeypatch):
    spec = RunSpec("fp16", fixture_images.shape[0], "cuda")
    reason = runner_class.unavailable_reason(spec)
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("PERFSUITE_CACHE_DIR", str(tmp_path))
    config = TensorRTConfig(dynamic_batch=True)
    with runner_class(loaded_model, spec, config) as runner:
        outputs = runner.run(fixture_images)
        metrics = runner.metrics()
    parity = compare(reference_outputs, outputs, tolerance_for("fp16", tf32_in_effect("cuda")))
    assert parity.passed, parity.summary()
    assert metrics["engine_cache"] == "miss" and metrics["engine_bytes"] > 0 and metrics["engine_layers"] > 0
    assert metrics["layer_precisions"] and "FP16" in metrics["layer_precisions"], metrics

    # The same dynamic-batch engine serves batch 1: a cache hit, no second build.
    with runner_class(loaded_model, RunSpec("fp16", 1, "cuda"), config) as runner:
        single = runner.run(fixture_images[:1])
        assert runner.metrics()["engine_cache"] == "hit"
    assert torch.allclose(single, outputs[:1], rtol=0, atol=1e-2 * outputs.abs().max().item())
    assert len(EngineCache(tmp_path / "engines").build_log()) == 1
