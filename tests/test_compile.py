"""The torch.compile rungs: mode choice, the on-disk cache (cold, then warm), parity.

On the CPU a tiny model keeps compilation short (Inductor compiles C++ there: ~15 s cold on a
2-core machine, well under a second warm); AlexNet is compiled on the GPU only.
"""

from __future__ import annotations

import pytest
import torch

from perfsuite.backends import get_runner_class
from perfsuite.backends.base import RunSpec
from perfsuite.backends.compile import (
    COMPILE_MODES,
    CompileConfig,
    CompileRunner,
    _cpp_compiler,
    cache_state,
    inductor_cache_dir,
)
from perfsuite.backends.cudagraph import CAPTURE_IMAGE_SHAPE
from perfsuite.backends.eager import reference_logits
from perfsuite.comparator import compare
from perfsuite.environment import tf32_in_effect
from perfsuite.errors import InputError
from perfsuite.images import fixture_paths, load_batch
from perfsuite.models import LoadedModel, load_model, state_dict_fingerprint
from perfsuite.tolerances import tolerance_for


def tiny_model() -> LoadedModel:
    """A real convolutional classifier small enough to compile quickly, with seeded weights."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, kernel_size=7, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 10),
    ).eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(name="tiny", module=module, weights="random", weights_source="torch.manual_seed(0)",
                       fingerprint=state_dict_fingerprint(module.state_dict()), categories=())


@pytest.mark.parametrize("name,mode,channels_last,captured", [
    ("compile", "default", False, False),
    ("compile-reduce-overhead", "reduce-overhead", False, False),
    ("compile-max-autotune", "max-autotune", False, False),
    ("compile-max-autotune-channels-last", "max-autotune", True, False),
    ("compile-max-autotune-cudagraph", "max-autotune-no-cudagraphs", False, True),
])
def test_registry_names_choose_the_mode(name, mode, channels_last, captured):
    runner_class = get_runner_class(name)
    assert issubclass(runner_class, CompileRunner) and runner_class.name == name
    config = runner_class.config_class()
    assert (config.mode, config.channels_last, config.capture_cuda_graph) == (mode, channels_last, captured)
    assert mode in COMPILE_MODES


needs_cpp = pytest.mark.skipif(_cpp_compiler() is None, reason="Inductor on the CPU needs a C++ compiler (g++)")


def test_a_captured_graph_needs_a_gpu():
    reason = get_runner_class("compile-max-autotune-cudagraph").unavailable_reason(RunSpec("fp16", 1, "cpu"))
    assert reason == "compile-max-autotune-cudagraph: CUDA graphs need a CUDA GPU (--device cuda)"


def test_the_cpu_needs_a_cpp_compiler(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    reason = get_runner_class("compile").unavailable_reason(RunSpec("fp32", 1, "cpu"))
    assert reason == "compile: Inductor on the CPU needs a C++ compiler (g++ or clang++ on PATH, or $CXX)"


def test_an_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(InputError, match=r"mode 'fastest'.*max-autotune"):
        CompileConfig(mode="fastest")


@pytest.mark.parametrize("hits,misses,state", [(1, 0, "warm"), (0, 2, "cold"), (1, 1, "partial"), (0, 0, "unused")])
def test_cache_state(hits, misses, state):
    assert cache_state(hits, misses) == state


def test_the_cache_folder_follows_perfsuite_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PERFSUITE_CACHE_DIR", str(tmp_path))
    assert inductor_cache_dir() == (tmp_path / "inductor").resolve()


@pytest.mark.slow  # compiles twice with Inductor: 20-70 s; compile rows are opt-in
@needs_cpp
def test_cold_then_warm_compile_with_parity_on_new_inputs(monkeypatch, tmp_path):
    """An empty cache folder compiles (FX graph cache miss); a second runner, after TorchDynamo's
    in-memory state is reset by its build, loads the compiled graph from that folder (hit).
    Both compute on inputs other than the one compiled with."""
    monkeypatch.setenv("PERFSUITE_CACHE_DIR", str(tmp_path))
    model = tiny_model()
    images = torch.randn((3, *CAPTURE_IMAGE_SHAPE), generator=torch.Generator().manual_seed(1))
    reference = reference_logits(model, images, "cpu")
    facts = []
    for _ in range(2):
        with CompileRunner(model, RunSpec("fp32", 3, "cpu")) as runner:
            report = compare(reference, runner.run(images), tolerance_for("fp32"))
            assert report.passed, report.summary()
            facts.append(runner.metrics())
    cold, warm = facts
    assert (cold["compile_cache"], cold["fxgraph_cache_misses"]) == ("cold", 1), cold
    assert (warm["compile_cache"], warm["fxgraph_cache_hits"]) == ("warm", 1), warm
    assert cold["inductor_cache_dir"] == str((tmp_path / "inductor").resolve())
    assert any((tmp_path / "inductor").iterdir())
    assert cold["build_s"] >= cold["compile_s"] > 0


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("name,graphs", [("compile", None), ("compile-reduce-overhead", "inductor trees")])
def test_alexnet_fp16_parity_on_the_gpu(name, graphs):
    """Default kernels, and the CUDA-graph replay path (reduce-overhead), on the fixture images and
    on the swapped batch in turn: replays must compute on each new input."""
    model = load_model("alexnet", "random")
    images = load_batch(fixture_paths())
    reference = reference_logits(model, images, "cuda")
    tolerance = tolerance_for("fp16", tf32_in_effect("cuda"))
    with get_runner_class(name)(model, RunSpec("fp16", 2, "cuda")) as runner:
        for batch, expected in ((images, reference), (images.flip(0), reference.flip(0)), (images, reference)):
            report = compare(expected, runner.run(batch), tolerance)
            assert report.passed, report.summary()
        assert runner.metrics()["cuda_graphs"] == graphs


@pytest.mark.gpu
@pytest.mark.slow
def test_a_compiled_call_captured_in_one_cuda_graph():
    """perfsuite's capture of Inductor kernels (mode default here, to keep compilation short;
    the registry's max-autotune variant differs only in the kernels chosen)."""
    from perfsuite.backends.compile import CompileConfig

    model = load_model("alexnet", "random")
    images = load_batch(fixture_paths())
    reference = reference_logits(model, images, "cuda")
    tolerance = tolerance_for("fp16", tf32_in_effect("cuda"))
    runner = CompileRunner(model, RunSpec("fp16", 2, "cuda"), CompileConfig(capture_cuda_graph=True))
    with runner:
        for batch, expected in ((images, reference), (images.flip(0), reference.flip(0))):
            report = compare(expected, runner.run(batch), tolerance)
            assert report.passed, report.summary()
        assert runner.metrics()["cuda_graphs"] == "perfsuite capture"
