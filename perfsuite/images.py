"""Images in, normalized input batch out.

The default preprocessing is the lab report's, exactly: ``Resize((224, 224))`` (which squashes the
aspect ratio), ``ToTensor()``, ``Normalize`` with ImageNet's mean and std. ``eval`` is torchvision's
standard evaluation transform (``Resize(256)``, ``CenterCrop(224)``, then the same two steps).

Before either transform, :func:`decode_with_pil` turns the image upright: a photo whose EXIF
orientation says it was stored sideways or mirrored is transposed with ``ImageOps.exif_transpose``,
so the model sees what the camera saw, whichever transform follows (torchvision's transforms and
PIL's ``Image.open`` ignore the tag). The decoded image records what was done in
``image.info["exif_orientation"]`` and ``perfsuite predict`` prints it (:func:`orientation_note`).
The fixture images carry no rotation (dog.jpg: orientation 1, cat.jpg: none), so benchmarks and
goldens are unaffected. The e2e ``torchvision`` pipeline decodes with nvJPEG, which cannot apply the
tag; it only ever reads the fixtures.

Files are checked before they are read (:func:`read_image_file`): a regular file (a FIFO, device or
socket is refused without opening it for a blocking read; a dangling symlink and a symlink loop are
named as such), not empty, at most :data:`MAX_IMAGE_BYTES` bytes, a format Pillow recognizes from
its header, and at most :data:`MAX_IMAGE_PIXELS` pixels. Only then is the file read.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from perfsuite.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORMS = ("report", "eval")
FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_IMAGES = ("dog.jpg", "cat.jpg")
#: Images above this many pixels are refused, not decoded: Pillow's own default limit
#: (``Image.MAX_IMAGE_PIXELS``, 89.5 megapixels), above which Pillow only warns of a possible
#: decompression bomb. Refusing, with the file's name, rather than warning: the model sees 224 x 224
#: pixels, so downscaling first loses nothing, while decoding 100 megapixels costs seconds and
#: gigabytes inside a benchmark or CI job, and a warning scrolls by unread in a CI log.
MAX_IMAGE_PIXELS = 89_478_485
#: Larger files are refused before they are read: 1 GiB is what an uncompressed 3-channel float32
#: TIFF of MAX_IMAGE_PIXELS takes (12 bytes per pixel), so no image within the pixel limit is larger.
MAX_IMAGE_BYTES = 1 << 30
#: What each EXIF orientation (2-8) makes ImageOps.exif_transpose do to the stored pixels.
ORIENTATIONS = {2: "flipped left to right", 3: "turned 180°", 4: "flipped top to bottom",
                5: "flipped about the main diagonal", 6: "turned 90° clockwise",
                7: "flipped about the anti-diagonal", 8: "turned 90° counter-clockwise"}


class ImageError(InputError):
    """An image file that cannot be used; the message names the file."""


def fixture_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or FIXTURES_DIR
    return [folder / name for name in FIXTURE_IMAGES]


def _to_rgb(image: Image.Image, path: str | Path) -> Image.Image:
    """Any PIL mode -> 8-bit RGB.

    Transparent images are composited onto white (dropping alpha would expose whatever colour
    the encoder left under transparent pixels). 16-bit and 32-bit integer and float greyscale is
    rescaled from its full range, since PIL's own conversion clips it to 0..255; float pixels that
    are NaN or infinite have no colour and are refused, and so are negative pixels or 32-bit integers
    above 65535 (no mapping to colour would be more than a guess).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise ImageError(f"image {path}: {bad} of {array.size} float pixels are NaN or infinite; refusing to "
                             "classify an image without defined values")
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if low < 0 or (image.mode == "I" and high > 65535):
            # Any mapping to 0..255 (clipping, shifting, stretching) would be a guess about what they mean.
            kind = "float" if image.mode == "F" else "32-bit integer"
            allowed = "0 or more" if image.mode == "F" else "0..65535 (8- or 16-bit greyscale)"
            raise ImageError(f"image {path}: {kind} pixels range from {low:g} to {high:g}, outside {allowed}; "
                             "refusing to guess how they map to colour: rescale it to 8 or 16 bits first")
        full_scale = 65535.0 if image.mode.startswith("I;16") or high > 255 else 255.0
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


_NOT_REGULAR = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def _refuse_unless_regular(mode: int, path: Path) -> None:
    for test, kind in _NOT_REGULAR:
        if test(mode):
            raise ImageError(f"image {path}: is a {kind}, not a regular file")
    if not stat.S_ISREG(mode):
        raise ImageError(f"image {path}: not a regular file")


def _open_regular_file(path: Path) -> BinaryIO:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageError(f"image {path}: a symlink to {os.readlink(path)}, which does not exist") from None
        raise ImageError(f"image {path}: file does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"image {path}: a symlink loop (following the links never reaches a file)") from None
        raise ImageError(f"image {path}: cannot be read ({exc.strerror or exc})") from None
    _refuse_unless_regular(status.st_mode, path)
    try:
        # O_NONBLOCK: should a FIFO replace the file after the check, opening it must not wait for a writer.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ImageError(f"image {path}: cannot be opened ({exc.strerror or exc})") from None
    handle = os.fdopen(descriptor, "rb")
    try:
        _refuse_unless_regular(os.fstat(descriptor).st_mode, path)
    except ImageError:
        handle.close()
        raise
    return handle


def _open_image(source: BinaryIO, path: str | Path) -> Image.Image:
    """``Image.open`` (which reads only the header) under the suite's pixel limit instead of Pillow's warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # replaced by the check below
        try:
            image = Image.open(source)
        except UnidentifiedImageError as exc:
            raise ImageError(f"image {path}: not an image format PIL can read") from exc
        except Image.DecompressionBombError as exc:
            raise ImageError(f"image {path}: refused, more than the {MAX_IMAGE_PIXELS:,} pixels perfsuite "
                             f"decodes ({exc}); downscale it first") from exc
    if image.width * image.height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageError(f"image {path}: {image.width}x{image.height} is {image.width * image.height:,} pixels, "
                         f"more than the {MAX_IMAGE_PIXELS:,} perfsuite decodes (a possible decompression bomb); "
                         "downscale it first")
    return image


def read_image_file(path: str | Path) -> bytearray:
    """The bytes of an image file, checked before they are read (see the module docstring); an
    :class:`ImageError` naming the file for anything unusable."""
    path = Path(path)
    with _open_regular_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise ImageError(f"image {path}: file is empty (0 bytes)")
        # The size first: it costs nothing, while a header parser may scan a long run of junk byte by byte.
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"image {path}: the file is {size / 2**30:.1f} GiB, more than the "
                             f"{MAX_IMAGE_BYTES / 2**30:.0f} GiB an image within {MAX_IMAGE_PIXELS:,} pixels can take")
        try:
            with os.fdopen(os.dup(handle.fileno()), "rb") as header:  # Image.close closes the file it read
                _open_image(header, path).close()
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"image {path}: truncated or corrupt header ({exc})") from exc
        handle.seek(0)
        data = bytearray(size)
        if handle.readinto(data) != size:
            raise ImageError(f"image {path}: the file shrank while it was read")
    return data


def decode_with_pil(data: bytes | bytearray, path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Bytes -> upright RGB ``Image`` (optionally DCT-scaled toward ``draft``), errors naming the file.
    An EXIF orientation other than 1 is applied (``ImageOps.exif_transpose``) and kept in
    ``image.info["exif_orientation"]``."""
    try:
        with _open_image(io.BytesIO(data), path) as opened:
            if draft is not None:
                opened.draft("RGB", draft)
            opened.load()  # decode now: truncation shows up here, not later in a transform
            orientation = opened.getexif().get(ExifTags.Base.Orientation)
            upright = ImageOps.exif_transpose(opened) if orientation in ORIENTATIONS else opened
            image = _to_rgb(upright, path)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image {path}: truncated or corrupt ({exc})") from exc
    if orientation not in (None, 1):
        image.info["exif_orientation"] = orientation
    return image


def orientation_note(image: Image.Image) -> str | None:
    """What was done to an image :func:`decode_with_pil` returned because of its EXIF orientation, or None."""
    orientation = image.info.get("exif_orientation")
    if orientation is None:
        return None
    if orientation not in ORIENTATIONS:
        return f"EXIF orientation {orientation!r} is not a valid value (1 to 8): ignored, pixels used as stored"
    return f"EXIF orientation {orientation}: {ORIENTATIONS[orientation]} to stand upright (ImageOps.exif_transpose)"


def load_image(path: str | Path) -> Image.Image:
    """Read, fully decode and convert to upright RGB; a clear :class:`ImageError` for anything unusable."""
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
