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


@pytest.mark.parametrize(("flags", "native"), [
    ({"avx", "avx2", "fma"}, {"fp32"}),  # CI's machine: eager bf16 b1 took 1140 ms there
    ({"avx2", "avx512f", "avx512_bf16"}, {"fp32", "bf16"}),
    ({"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"}, {"fp32", "bf16", "fp16"}),
    ({"amx_bf16", "amx_fp16"}, {"fp32", "bf16", "fp16"}),
    (None, {"fp32", "bf16", "fp16"}),  # flags unknown (not Linux): nothing is left out on a guess
])
def test_the_default_cpu_precisions_are_those_the_cpu_runs_natively(flags, native):
    """issue 17: the default CPU run spent 133 s and 142 s on emulated fp16/bf16 rows of an AVX2-only CPU."""
    from perfsuite.plugin import default_precision_skips

    flags = frozenset(flags) if flags is not None else None
    skips = default_precision_skips(("fp32", "fp16", "bf16"), "cpu", flags) if flags is not None else {
        p: r for p in ("fp32", "fp16", "bf16") if (r := environment.cpu_precision_problem(p, None))}
    assert set(skips) == {"fp32", "fp16", "bf16"} - native
    for precision, reason in skips.items():
        assert f"{precision} is not native on this CPU" in reason and f"--precisions fp32,{precision}" in reason
        assert "AVX-512" in reason or "Arm" in reason
    assert default_precision_skips(("fp32", "fp16", "bf16"), "cuda", frozenset()) == {}
    # where none of the asked precisions is native, the run keeps them rather than run nothing
    assert default_precision_skips(("bf16",), "cpu", frozenset({"avx2"})) == {}


def test_this_machines_default_precisions_follow_its_flags():
    from perfsuite.plugin import default_precision_skips

    flags = environment.cpu_flags()
    skips = default_precision_skips(("fp32", "fp16", "bf16"), "cpu")
    if flags is None:
        assert skips == {}
    else:
        assert ("bf16" in skips) == (not flags & {"avx512_bf16", "amx_bf16", "bf16"})
        assert ("fp16" in skips) == (not flags & {"avx512_fp16", "amx_fp16", "asimdhp"})
        assert "fp32" not in skips
