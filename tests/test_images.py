"""Fixture images, the report's preprocessing, odd modes and broken files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from perfsuite.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageError,
    fixture_paths,
    load_batch,
    load_image,
    preprocess,
    tile_batch,
)

FIXTURE_SHA256 = {
    "dog.jpg": "f3f87bb8ab3c26c7ecfd3ac60421d7f32b0503d1d6c5baf8bac42ed93d86351a",
    "cat.jpg": "e8605ae62ddd946bef56bba73435937edcab675f8ef20cdcee29fdbf2d94045f",
}


def test_fixtures_are_the_documented_files():
    for path in fixture_paths():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == FIXTURE_SHA256[path.name], path
    assert "sha256" in (fixture_paths()[0].parent / "SOURCES.md").read_text()


def test_report_transform_is_exactly_the_reports_pipeline():
    image = Image.open(fixture_paths()[0]).convert("RGB")
    report = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    assert torch.equal(preprocess(image, "report"), report(image))


def test_eval_transform_crops_instead_of_squashing():
    image = load_image(fixture_paths()[0])
    report, evaluation = preprocess(image, "report"), preprocess(image, "eval")
    assert report.shape == evaluation.shape == (3, 224, 224)
    assert (report - evaluation).abs().max() > 0.1  # a different view of the photo


def test_batch_is_normalized_real_pixels():
    batch = load_batch(fixture_paths())
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == torch.float32
    # ImageNet normalization of natural photos: roughly zero mean, unit spread, never constant.
    assert abs(float(batch.mean())) < 1.0 and 0.5 < float(batch.std()) < 2.0


def test_tile_batch_repeats_real_images():
    batch = load_batch(fixture_paths())
    tiled = tile_batch(batch, 5)
    assert tiled.shape[0] == 5
    assert torch.equal(tiled[2], batch[0]) and torch.equal(tiled[3], batch[1])


@pytest.mark.parametrize("name", ["grayscale.png", "rgba.png", "palette.gif", "cmyk.jpg", "gray16.png",
                                  "tiny.png", "large.jpg"])
def test_odd_images_become_rgb(odd_images, name):
    image = load_image(odd_images[name])
    assert image.mode == "RGB"
    tensor = preprocess(image)
    assert tensor.shape == (3, 224, 224) and torch.isfinite(tensor).all()


def test_sixteen_bit_greyscale_keeps_its_range(odd_images):
    # PIL's own I;16 -> RGB conversion clips to 255 (almost all white); ours rescales.
    source = np.asarray(Image.open(odd_images["gray16.png"]), dtype=np.float64)
    converted = np.asarray(load_image(odd_images["gray16.png"]))[..., 0].astype(np.float64)
    assert abs(converted.mean() - source.mean() / 65535 * 255) < 1.0


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert np.asarray(load_image(path)).min() == 255


@pytest.mark.parametrize("name,message", [
    ("missing.jpg", "does not exist"),
    ("empty.jpg", "empty"),
    ("truncated.jpg", "truncated or corrupt"),
    ("text.jpg", "not an image"),
])
def test_broken_images_are_refused_by_name(broken_images, name, message):
    with pytest.raises(ImageError, match=message) as info:
        load_image(broken_images[name])
    assert str(broken_images[name]) in str(info.value)


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
