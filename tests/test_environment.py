"""Device resolution, TF32 settings and the machine summary."""

from __future__ import annotations

import pytest
import torch

from perfsuite import environment
from perfsuite.errors import InputError


def test_tf32_disabled_sets_ieee_and_restores():
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    before = environment.tf32_settings()
    assert before["cudnn_conv"] == "tf32"
    with environment.tf32_disabled():
        assert environment.tf32_settings() == {"cudnn_conv": "ieee", "cuda_matmul": "ieee"}
    assert environment.tf32_settings() == before


def test_tf32_is_only_in_effect_on_a_gpu():
    assert environment.tf32_in_effect("cpu") is False


@pytest.mark.parametrize("option", ["gpu", "cuda:x", "tpu"])
def test_bad_device_names_are_refused(option):
    with pytest.raises(InputError, match="--device"):
        environment.resolve_device(option)


def test_auto_device_matches_what_torch_sees():
    assert environment.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert environment.resolve_device("cpu") == "cpu"


def test_machine_summary_names_versions():
    summary = environment.machine_summary("cpu")
    assert summary["torch"] == torch.__version__
    assert summary["cpu_count"] >= 1
    assert set(summary["tf32"]) == {"cudnn_conv", "cuda_matmul"}


@pytest.mark.gpu
def test_gpu_summary_has_the_hardware():
    info = environment.gpu_info("cuda")
    assert info["gpu_name"] and info["compute_capability"].count(".") == 1
    assert info["gpu_memory_bytes"] > 1 << 30
    assert info["driver"], "driver version readable through NVML or nvidia-smi"
