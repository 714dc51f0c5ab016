"""Images in, normalized input batch out.

The default preprocessing is the lab report's, exactly: ``Resize((224, 224))`` (which squashes the
aspect ratio), ``ToTensor()``, ``Normalize`` with ImageNet's mean and std. ``eval`` is torchvision's
standard evaluation transform (``Resize(256)``, ``CenterCrop(224)``, then the same two steps).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from perfsuite.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORMS = ("report", "eval")
FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_IMAGES = ("dog.jpg", "cat.jpg")


class ImageError(InputError):
    """An image file that cannot be used; the message names the file."""


def fixture_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or FIXTURES_DIR
    return [folder / name for name in FIXTURE_IMAGES]


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB.

    Transparent images are composited onto white (dropping alpha would expose whatever colour
    the encoder left under transparent pixels). 16-bit and 32-bit integer and float greyscale is
    rescaled from its full range, since PIL's own conversion clips it to 0..255.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        full_scale = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if image.mode == "F":
            full_scale = max(float(array.max(initial=0)), 1.0)
        array = np.clip(array / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_image_file(path: str | Path) -> bytearray:
    """The file's bytes, with a clear :class:`ImageError` for a missing, empty or non-file path."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image {path}: file does not exist")
    if path.is_dir():
        raise ImageError(f"image {path}: is a directory, not an image file")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"image {path}: file is empty (0 bytes)")
    data = bytearray(size)
    with open(path, "rb") as handle:
        handle.readinto(data)
    return data


def decode_with_pil(data: bytes | bytearray, path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Bytes -> RGB ``Image`` (optionally DCT-scaled toward ``draft``), errors naming the file."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if draft is not None:
                opened.draft("RGB", draft)
            opened.load()  # decode now: truncation shows up here, not later in a transform
            return _to_rgb(opened)
    except UnidentifiedImageError as exc:
        raise ImageError(f"image {path}: not an image format PIL can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {path}: refused as a decompression bomb ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image {path}: truncated or corrupt ({exc})") from exc


def load_image(path: str | Path) -> Image.Image:
    """Read, fully decode and convert to RGB; a clear :class:`ImageError` for anything unusable."""
    return decode_with_pil(read_image_file(path), path)


def build_transform(kind: str = "report"):
    from torchvision import transforms

    if kind == "report":
        resize = [transforms.Resize((224, 224))]
    elif kind == "eval":
        resize = [transforms.Resize(256), transforms.CenterCrop(224)]
    else:
        raise InputError(f"--transform {kind!r}: choose from {', '.join(TRANSFORMS)}")
    return transforms.Compose(
        [*resize, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def preprocess(image: Image.Image, kind: str = "report") -> torch.Tensor:
    """One RGB image -> a (3, 224, 224) float32 tensor."""
    return build_transform(kind)(image)


def load_batch(paths: Sequence[str | Path], kind: str = "report") -> torch.Tensor:
    """Files -> an (N, 3, 224, 224) float32 batch on the CPU."""
    if not paths:
        raise InputError("no image given")
    transform = build_transform(kind)
    return torch.stack([transform(load_image(p)) for p in paths])


def tile_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Repeat real images to fill a batch of any size (benchmarks time real pixels, never zeros)."""
    repeats = -(-batch_size // images.shape[0])
    return images.repeat(repeats, 1, 1, 1)[:batch_size].contiguous()
