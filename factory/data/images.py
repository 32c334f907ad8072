"""Reading face images from files and bytes: the one decoder every reader, dataset, preview and command uses.

Faces must arrive aligned at the model's input size, or with 5 landmarks to align them: the factory never resizes
silently, because a resized unaligned photo gives confident, wrong embeddings.

Every failure is a ``ValueError`` naming where the image came from (a path, a record, a list line): undecodable or
truncated data, and images whose header announces more pixels than any face photo has. Such a header is how a
decompression bomb (a few kilobytes that decode to gigabytes) looks, so it is refused before a pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from factory.data.alignment import align_face

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# 50 Mpx is above any camera's photo of a face, and its RGB decode (150 MB) still fits a worker; PIL's own limit
# (89 Mpx warns, 179 Mpx raises) is looser and only a warning below 179 Mpx.
MAX_PIXELS = 50_000_000
_EXPECTED = f"a JPEG, PNG, BMP or WebP face image of at most {MAX_PIXELS:,} pixels"


@contextlib.contextmanager
def open_image(data: bytes | str | os.PathLike[str], where: str) -> Iterator[Image.Image]:
    """The PIL image of encoded bytes or a file, header read and checked, pixels not yet decoded.

    Raises:
        ValueError: not an image, or a decompression bomb; the message names ``where``.
    """
    with warnings.catch_warnings():
        # PIL warns (to stderr) between its two limits; the size check below refuses those images in one line.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        except Image.DecompressionBombError as e:
            pixels = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{int(pixels[1]):,} pixels" if pixels else str(e)
            raise ValueError(f"{where}: refused as a decompression bomb ({size}) (expected {_EXPECTED})") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{where}: cannot decode image ({e}) (expected {_EXPECTED})") from None
    with img:
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise ValueError(
                f"{where}: refused as a decompression bomb ({width}×{height} = {width * height:,} pixels) "
                f"(expected {_EXPECTED})"
            )
        yield img


def read_rgb(data: bytes | str | os.PathLike[str], where: str, size: int | None = None) -> np.ndarray:
    """``H×W×3`` uint8 RGB pixels of encoded bytes or a file; with ``size``, only an aligned ``size×size`` crop.

    The size is checked on the header, before decoding: an unaligned photo is refused without being decoded.
    """
    with open_image(data, where) as img:
        if size is not None and img.size != (size, size):
            raise ValueError(
                f"{where}: image is {img.size[0]}×{img.size[1]}, not an aligned {size}×{size} face crop "
                "(align it with its 5 landmarks first; the factory never resizes)"
            )
        try:
            return np.asarray(img.convert("RGB"))
        # PIL's decoders report broken data as any of these (truncated streams are OSError, bad chunks SyntaxError).
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ValueError(f"{where}: cannot decode image ({e}) (expected {_EXPECTED})") from None


def decode_aligned(
    data: bytes | str | os.PathLike[str], where: str, size: int = 112, landmarks: np.ndarray | None = None
) -> np.ndarray:
    """``3×size×size`` uint8 RGB from encoded bytes or a file: already aligned, or aligned with ``landmarks``.

    Errors name ``where`` (a path, a record, a list line) and say what was expected.
    """
    rgb = read_rgb(data, where, size if landmarks is None else None)
    if landmarks is not None:
        rgb = align_face(rgb, landmarks, size)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def image_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every image under ``root`` (recursively), sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
