"""Helpers shared by the unit tests."""

from __future__ import annotations

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
