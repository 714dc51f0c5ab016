"""Helpers shared by the unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perfsuite.models import LoadedModel, load_model


@pytest.fixture(scope="session")
def alexnet() -> LoadedModel:
    """AlexNet with the deterministic offline weights, built once for all unit tests (do not mutate it)."""
    return load_model("alexnet", "random")


@pytest.fixture(scope="session")
def golden_dir(request: pytest.FixtureRequest) -> Path:
    """The goldens of the project under test: fixtures/golden below pytest's rootdir."""
    from perfsuite.golden import project_golden_dir

    return project_golden_dir(request.config.rootpath)


@pytest.fixture(scope="session")
def odd_images(tmp_path_factory) -> dict[str, Path]:
    """Real image files in every awkward mode and size, written with PIL."""
    folder = tmp_path_factory.mktemp("odd_images")
    rng = np.random.RandomState(0)
    rgb = Image.fromarray(rng.randint(0, 256, (120, 160, 3), dtype=np.uint8), "RGB")
    files = {
        "grayscale.png": rgb.convert("L"),
        "rgba.png": rgb.convert("RGBA"),
        "palette.gif": rgb.convert("P"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "gray16.png": Image.fromarray(rng.randint(0, 65536, (90, 70), dtype=np.uint16)),
        "tiny.png": Image.new("RGB", (1, 1), (200, 10, 10)),
        "large.jpg": rgb.resize((6000, 4500)),
    }
    paths = {}
    for name, image in files.items():
        path = folder / name
        image.save(path)
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def broken_images(tmp_path_factory) -> dict[str, Path]:
    """Files that are not usable images, each broken in its own way."""
    folder = tmp_path_factory.mktemp("broken_images")
    dog = (Path(__file__).resolve().parent.parent / "fixtures" / "dog.jpg").read_bytes()
    paths = {
        "empty.jpg": b"",
        "truncated.jpg": dog[: len(dog) // 3],
        "text.jpg": b"this is not an image\n" * 20,
    }
    result = {}
    for name, content in paths.items():
        (folder / name).write_bytes(content)
        result[name] = folder / name
    result["missing.jpg"] = folder / "missing.jpg"
    return result


@pytest.fixture(scope="session")
def hostile_images(tmp_path_factory) -> dict[str, Path]:
    """Files that must be refused without being read (or waited on): a sparse 100 GB file that starts like
    a JPEG, a FIFO, a symlink loop, a dangling symlink, a 10000 x 10000 PNG, a float TIFF with a NaN."""
    folder = tmp_path_factory.mktemp("hostile_images")
    dog = (Path(__file__).resolve().parent.parent / "fixtures" / "dog.jpg").read_bytes()
    sparse = folder / "sparse-100GB.jpg"
    sparse.write_bytes(dog[:4096])
    os.truncate(sparse, 100 * 2**30)  # sparse: no disk space used
    os.mkfifo(folder / "fifo.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop-back.jpg")
    (folder / "loop-back.jpg").symlink_to(folder / "loop.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    Image.new("L", (10_000, 10_000)).save(folder / "10000x10000.png")
    pixels = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(20, 30)
    pixels[3, 4] = np.nan
    Image.fromarray(pixels, mode="F").save(folder / "nan.tif")
    return {path.name: path for path in folder.iterdir()}
