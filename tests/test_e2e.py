"""End-to-end pipelines: stages, labels, parity between pipelines, errors, cold start."""

from __future__ import annotations

import time

import pytest
import torch

from perfsuite.backends.base import RunSpec
from perfsuite.backends.eager import EagerRunner
from perfsuite.e2e import (
    PIPELINE_TOLERANCES,
    PIPELINES,
    STAGES,
    Pipeline,
    PipelineRun,
    cold_start_in_fresh_process,
    decode_with_pil,
    e2e_paths,
    pipeline_parity,
    read_image_file,
)
from perfsuite.errors import BackendUnavailable, InputError, PerfsuiteError
from perfsuite.images import ImageError, fixture_paths, load_batch


@pytest.fixture(scope="module")
def runner(alexnet):
    with EagerRunner(alexnet, RunSpec("fp32", 2, "cpu")) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def timed_runs(alexnet, runner):
    """Each pipeline once on dog.jpg + cat.jpg, stage-timed, with logits: {kind: (run, wall seconds)}."""
    results = {}
    for kind in PIPELINES:
        started = time.perf_counter()
        run = Pipeline(kind, runner, alexnet.categories).run(e2e_paths(2), stage_times=True, keep_logits=True)
        results[kind] = (run, time.perf_counter() - started)
    return results


@pytest.fixture(scope="module")
def runs(timed_runs):
    return {kind: run for kind, (run, _) in timed_runs.items()}


def test_batch_one_is_the_reports_dog_and_batches_alternate():
    dog, cat = fixture_paths()
    assert e2e_paths(1) == [dog]
    assert e2e_paths(5) == [dog, cat, dog, cat, dog]


def test_the_pil_pipeline_is_the_suites_preprocessing(alexnet, runner, runs):
    """pil = images.load_batch + the runner: the same logits, bit for bit."""
    expected = runner.to_tensor(runner.infer(runner.prepare(load_batch(fixture_paths()))))
    assert torch.equal(runs["pil"].logits, expected)
    labels = [alexnet.categories[int(i)] for i in expected.argmax(dim=1)]
    assert [p.label for p in runs["pil"].predictions] == labels


@pytest.mark.parametrize("kind", PIPELINES)
def test_every_stage_is_timed_and_the_stages_add_up(kind, timed_runs):
    run, wall = timed_runs[kind]
    assert set(run.stage_seconds) == set(STAGES)
    folded = {"h2d"} if kind == "torchvision" else set()  # its copy happens inside decode
    assert {s for s, v in run.stage_seconds.items() if v is None} == folded
    assert all(v > 0 for v in run.stage_seconds.values() if v is not None)
    assert run.total_seconds <= wall  # stages are disjoint slices of the run
    for prediction in run.predictions:
        probabilities = [p for _, _, p in prediction.top]
        assert len(prediction.top) == 5 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1.0 + 1e-6


@pytest.mark.parametrize("kind", ["torchvision", "pil-draft"])
def test_pipelines_agree_with_the_pil_pipeline(kind, runs):
    report = pipeline_parity(kind, runs["pil"], runs[kind])
    assert report.passed, report.summary()
    if kind == "torchvision":  # its tolerance is tight enough to leave both top-1 classes to check
        assert report.outputs[0].top1_decisive == 2


@pytest.mark.parametrize("kind", ["torchvision", "pil-draft"])
def test_a_wrong_channel_order_fails_pipeline_parity(kind, runner, runs):
    """The parity check can fail: BGR pixels through the same runner are rejected."""
    bgr = load_batch(fixture_paths()).flip(1)
    wrong = PipelineRun(runs[kind].predictions, runs[kind].stage_seconds,
                        runner.to_tensor(runner.infer(runner.prepare(bgr))))
    report = pipeline_parity(kind, runs["pil"], wrong)
    assert not report.passed and any("relative error" in f for f in report.failures)


def test_draft_decoding_keeps_at_least_the_resize_target():
    dog = fixture_paths()[0]
    full = decode_with_pil(read_image_file(dog), dog)
    draft = decode_with_pil(read_image_file(dog), dog, draft=(224, 224))
    assert full.size == (1546, 1213)
    assert draft.size == (387, 304)  # 1/4 scale: 1/8 would be 194x152, smaller than 224
    assert draft.mode == "RGB"


def test_bad_files_get_errors_naming_them(tmp_path, runner, alexnet, broken_images):
    png = tmp_path / "picture.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 200, 30)).save(png)
    with pytest.raises(ImageError, match=r"picture\.png: not a JPEG; the torchvision pipeline"):
        Pipeline("torchvision", runner, alexnet.categories).run([png])
    for name, message in (("missing.jpg", "does not exist"), ("empty.jpg", "empty")):
        for kind in PIPELINES:
            with pytest.raises(ImageError, match=f"{name}: .*{message}"):
                Pipeline(kind, runner, alexnet.categories).run([broken_images[name]])
    with pytest.raises(ImageError, match=r"truncated\.jpg"):
        Pipeline("torchvision", runner, alexnet.categories).run([broken_images["truncated.jpg"]] * 2)
    with pytest.raises(ImageError, match=r"text\.jpg: not an image format PIL can read"):
        Pipeline("pil", runner, alexnet.categories).run([broken_images["text.jpg"]])
    with pytest.raises(ImageError, match="is a directory"):
        read_image_file(tmp_path)


def test_bad_choices_are_refused(runner, alexnet, runs):
    with pytest.raises(InputError, match="pipeline 'dali'"):
        Pipeline("dali", runner, alexnet.categories)
    with pytest.raises(InputError, match="--transform 'squash'"):
        Pipeline("torchvision", runner, alexnet.categories, transform="squash")
    with pytest.raises(InputError, match="no image given"):
        Pipeline("pil", runner, alexnet.categories).run([])
    with pytest.raises(InputError, match="keep_logits"):
        pipeline_parity("torchvision", runs["pil"], PipelineRun([], {}, None))
    assert set(PIPELINE_TOLERANCES) == set(PIPELINES) - {"pil"}


def test_cold_start_reasons_and_errors_come_back_from_the_fresh_process(alexnet):
    """Checks made before any model is loaded, so each child costs only its imports."""
    paths = e2e_paths(1)
    with pytest.raises(BackendUnavailable, match="CUDA graphs need a CUDA GPU"):
        cold_start_in_fresh_process("pil", "cudagraph", "alexnet", "random", "fp32", "cpu", paths)
    with pytest.raises(PerfsuiteError, match="pipeline 'dali'"):
        cold_start_in_fresh_process("dali", "eager", "alexnet", "random", "fp32", "cpu", paths)
