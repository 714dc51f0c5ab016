"""The cudagraph and channels-last rungs: availability, capture, replay on new inputs, parity."""

from __future__ import annotations

import pytest
import torch

from perfsuite.backends import get_runner_class, unavailable_reason
from perfsuite.backends.base import RunSpec
from perfsuite.backends.cudagraph import CAPTURE_IMAGE_SHAPE, capture_input
from perfsuite.backends.eager import reference_logits
from perfsuite.comparator import compare
from perfsuite.environment import tf32_in_effect
from perfsuite.errors import BackendUnavailable, InputError
from perfsuite.images import fixture_paths, load_batch, tile_batch
from perfsuite.tolerances import tolerance_for


@pytest.fixture(scope="module")
def fixture_batch():
    return load_batch(fixture_paths())


@pytest.mark.parametrize("name,channels_last", [
    ("cudagraph", False), ("cudagraph-channels-last", True), ("eager-channels-last", True), ("eager", False),
])
def test_registry_names_choose_the_memory_format(name, channels_last):
    runner_class = get_runner_class(name)
    assert runner_class.name == name
    assert runner_class.config_class().channels_last is channels_last


@pytest.mark.parametrize("name", ["cudagraph", "cudagraph-channels-last"])
def test_cuda_graphs_on_the_cpu_are_refused_with_the_reason(name, alexnet):
    spec = RunSpec("fp32", 1, "cpu")
    assert unavailable_reason(name, spec) == f"{name}: CUDA graphs need a CUDA GPU (--device cuda)"
    with pytest.raises(BackendUnavailable, match="need a CUDA GPU"):
        get_runner_class(name)(alexnet, spec).build()


def test_capture_input_is_seeded_noise_of_the_image_shape():
    first, second = capture_input(2, torch.float16, "cpu"), capture_input(2, torch.float16, "cpu")
    assert first.shape == (2, *CAPTURE_IMAGE_SHAPE) and first.dtype == torch.float16
    assert torch.equal(first, second)
    # standard-normal like normalized pixels, so capture sees realistic magnitudes
    assert abs(float(first.float().mean())) < 0.01 and 0.98 < float(first.float().std()) < 1.02
    channels_last = capture_input(2, torch.float32, "cpu", torch.channels_last)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)


def test_eager_channels_last_matches_eager_on_the_cpu(alexnet, fixture_batch):
    """NHWC changes the convolution algorithms, not the result: fp32 parity on real images."""
    spec = RunSpec("fp32", 2, "cpu")
    with get_runner_class("eager-channels-last")(alexnet, spec) as runner:
        prepared = runner.prepare(fixture_batch)
        assert prepared.is_contiguous(memory_format=torch.channels_last)
        report = compare(reference_logits(alexnet, fixture_batch, "cpu"), runner.to_tensor(runner.infer(prepared)),
                         tolerance_for("fp32"))
    assert report.passed, report.summary()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cudagraph", "cudagraph-channels-last"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_replays_compute_on_new_inputs(name, precision, alexnet, fixture_batch):
    """Parity on images the capture never saw, in two different batches replayed in turn:
    a graph that returned what it computed at capture would fail both."""
    spec = RunSpec(precision, 2, "cuda")
    reference = reference_logits(alexnet, fixture_batch, "cuda")
    swapped = fixture_batch.flip(0)  # cat first, then dog
    tolerance = tolerance_for(precision, tf32_in_effect("cuda"))
    with get_runner_class(name)(alexnet, spec) as runner:
        first = runner.to_tensor(runner.infer(runner.prepare(fixture_batch)))
        second = runner.to_tensor(runner.infer(runner.prepare(swapped)))
        third = runner.to_tensor(runner.infer(runner.prepare(fixture_batch)))
    for output, expected in ((first, reference), (second, reference.flip(0)), (third, reference)):
        report = compare(expected, output, tolerance)
        assert report.passed, report.summary()


@pytest.mark.gpu
def test_output_is_the_static_buffer_and_a_wrong_shape_is_refused(alexnet, fixture_batch):
    with get_runner_class("cudagraph")(alexnet, RunSpec("fp16", 2, "cuda")) as runner:
        first = runner.infer(runner.prepare(fixture_batch))
        kept = first.clone()
        second = runner.infer(runner.prepare(fixture_batch.flip(0)))
        assert second.data_ptr() == first.data_ptr()  # the next replay overwrites the previous output
        assert not torch.equal(kept, second)
        with pytest.raises(InputError, match=r"captured for \(2, 3, 224, 224\)"):
            runner.infer(runner.prepare(tile_batch(fixture_batch, 3)))
