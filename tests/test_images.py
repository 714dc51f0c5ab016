"""Fixture images, the report's preprocessing, odd modes and broken files."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision import transforms

from perfsuite.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageError,
    fixture_paths,
    load_batch,
    load_image,
    orientation_note,
    preprocess,
    read_image_file,
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


@pytest.mark.parametrize("name,message", [
    ("sparse-100GB.jpg", "the file is 100.0 GiB, more than the 1 GiB"),  # was a MemoryError
    ("fifo.jpg", "is a FIFO (named pipe), not a regular file"),  # was "file is empty (0 bytes)"
    ("loop.jpg", "a symlink loop"),  # was "file does not exist"
    ("dangling.jpg", "a symlink to"),
    ("10000x10000.png", "10000x10000 is 100,000,000 pixels, more than the 89,478,485"),  # was PIL's bare warning
    ("nan.tif", "1 of 600 float pixels are NaN or infinite"),  # was classified silently
])
def test_hostile_files_are_refused_by_name_without_being_read(hostile_images, name, message):
    """issue 9 #6. Each is refused with its name and what is wrong, with no Pillow warning of its own
    and without the file's bytes being allocated (the 100 GB file was allocated whole before)."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a DecompressionBombWarning would fail here
            with pytest.raises(ImageError) as info:
                load_image(hostile_images[name])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"image {hostile_images[name]}: {message}" in str(info.value)
    assert peak < 64 * 2**20  # the 10000 x 10000 image would take 100 MB decoded


def test_a_large_non_image_is_refused_from_its_size_without_reading_it(tmp_path):
    """A 2 GB file that is not an image: 33 s and 5.4 GB of memory before it was refused."""
    path = tmp_path / "two-gigabytes.jpg"
    path.write_bytes(b"not an image at all")
    os.truncate(path, 2 * 2**30)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=f"image {path}: the file is 2.0 GiB"):
            read_image_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_a_small_non_image_is_refused_from_its_header(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(ImageError, match="not an image format PIL can read"):
        read_image_file(path)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied_and_recorded(tmp_path, orientation):
    """issue 9 #6: the orientation was ignored silently by both transforms; the decoder now applies it
    (ImageOps.exif_transpose) before either transform and says so."""
    stored = Image.fromarray(np.random.RandomState(orientation).randint(0, 256, (30, 40, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"orientation-{orientation}.png"  # PNG: lossless, so pixels compare exactly
    stored.save(path, exif=exif)
    image = load_image(path)
    expected = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert image.size == expected.size == ((30, 40) if orientation >= 5 else (40, 30))
    assert np.array_equal(np.asarray(image), np.asarray(expected))
    assert not np.array_equal(np.asarray(image.resize((40, 30))), np.asarray(stored))  # it really moved
    assert image.info["exif_orientation"] == orientation
    assert orientation_note(image).startswith(f"EXIF orientation {orientation}: ")


def test_upright_images_are_left_alone():
    dog, cat = (load_image(path) for path in fixture_paths())
    assert orientation_note(dog) is None and orientation_note(cat) is None
    assert np.array_equal(np.asarray(dog), np.asarray(Image.open(fixture_paths()[0]).convert("RGB")))


def test_finite_float_images_are_still_read(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30), mode="F").save(path)
    assert np.asarray(load_image(path)).max() == 255
