"""Roofline context: the model's cost, the measured rates, and the floor arithmetic."""

from __future__ import annotations

import pytest
import torch

from perfsuite.environment import tf32_disabled
from perfsuite.roofline import (
    CACHE_MULTIPLE,
    MAX_CPU_BUFFER_BYTES,
    MIN_BUFFER_BYTES,
    ModelCost,
    bandwidth_buffer_bytes,
    machine_rates,
    measure_bandwidth,
    measure_matmul_rate,
    model_cost,
    roofline,
    roofline_info,
)


def multiply_adds(module: torch.nn.Module) -> int:
    """Multiply-adds of every convolution and linear layer at batch 1, from the layers' own
    shapes and their output sizes (forward hooks), independently of FlopCounterMode."""
    total = 0

    def count(layer, inputs, output):
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            kh, kw = layer.kernel_size
            per_output = layer.in_channels // layer.groups * kh * kw
            total += output.numel() * per_output
        elif isinstance(layer, torch.nn.Linear):
            total += layer.in_features * layer.out_features

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                        torch.nn.Linear))]
    with torch.inference_mode():
        module(torch.zeros(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    return total


def test_alexnet_cost_matches_its_layers(alexnet):
    cost = model_cost(alexnet)
    assert cost.flops_per_image == 2 * multiply_adds(alexnet.module)  # 1.43 GFLOP: torchvision's 0.714 GMACs
    assert cost.parameters == 61_100_840  # AlexNet's published 61.1 M parameters
    assert cost.weight_bytes("fp16") == 2 * cost.parameters
    assert cost.weight_bytes("fp32") == 4 * cost.parameters
    assert model_cost(alexnet) is cost  # counted once per weights


def test_floor_is_the_larger_bound_and_percent_is_floor_over_measured():
    cost = ModelCost(flops_per_image=10**9, parameters=50 * 10**6)  # 100 MB in fp16
    rates = {"bandwidth_bytes_per_s": 1e12, "matmul_flops_per_s": 1e15}
    small = roofline(cost, "fp16", 1, 200e-6, rates)
    assert small["memory_floor_s"] == pytest.approx(100e-6) and small["compute_floor_s"] == pytest.approx(1e-6)
    assert small["bound"] == "memory" and small["floor_s"] == pytest.approx(100e-6)
    assert small["percent_of_floor"] == pytest.approx(50.0)
    assert small["ceiling_images_per_s"] == pytest.approx(10_000)
    large = roofline(cost, "fp16", 256, 1e-3, rates)
    assert large["bound"] == "compute" and large["floor_s"] == pytest.approx(256e-6)
    assert large["ceiling_images_per_s"] == pytest.approx(1e6)
    assert large["percent_of_floor"] == pytest.approx(25.6)
    assert roofline(cost, "fp16", 1, None, rates)["percent_of_floor"] is None


def test_bandwidth_buffer_is_four_times_the_last_level_cache():
    from perfsuite.roofline import _cache_bytes

    cache = _cache_bytes("cpu")
    size = bandwidth_buffer_bytes("cpu")
    expected = min(max(CACHE_MULTIPLE * (cache or 0), MIN_BUFFER_BYTES), MAX_CPU_BUFFER_BYTES)
    assert size == expected and size >= MIN_BUFFER_BYTES


def test_cpu_rates_are_measured():
    bandwidth = measure_bandwidth("cpu", buffer_bytes=MIN_BUFFER_BYTES, repeats=3)
    assert bandwidth["bandwidth_buffer_bytes"] == MIN_BUFFER_BYTES
    # any machine since 2005 copies between 100 MB/s and 10 TB/s
    assert 1e8 < bandwidth["bandwidth_bytes_per_s"] < 1e13
    matmul = measure_matmul_rate("cpu", "fp32", size=256, repeats=3)
    assert matmul["matmul_size"] == 256 and 1e7 < matmul["matmul_flops_per_s"] < 1e14


@pytest.mark.gpu
def test_gpu_rates_and_a_latency_row(alexnet):
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    assert bandwidth_buffer_bytes("cuda") >= CACHE_MULTIPLE * l2
    fp16 = machine_rates("cuda", "fp16")
    # HBM of any data-centre GPU: between 300 GB/s and 20 TB/s
    assert 3e11 < fp16["bandwidth_bytes_per_s"] < 2e13
    with tf32_disabled():
        fp32 = measure_matmul_rate("cuda", "fp32", size=4096, repeats=5)
    assert fp16["matmul_flops_per_s"] > 2 * fp32["matmul_flops_per_s"]  # tensor cores vs IEEE fp32
    row = roofline_info(alexnet, "fp16", 1, "cuda", 200e-6)
    assert row["bound"] == "memory" and 0 < row["percent_of_floor"] < 100

