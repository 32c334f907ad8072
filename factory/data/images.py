"""Reading face images from files and bytes: the one decoder every reader, dataset and command uses.

Faces must arrive aligned at the model's input size, or with 5 landmarks to align them: the factory never resizes
silently, because a resized unaligned photo gives confident, wrong embeddings.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from factory.data.alignment import align_face

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def decode_aligned(
    data: bytes | str | os.PathLike[str], where: str, size: int = 112, landmarks: np.ndarray | None = None
) -> np.ndarray:
    """``3×size×size`` uint8 RGB from encoded bytes or a file: already aligned, or aligned with ``landmarks``.

    Errors name ``where`` (a path, a record, a list line) and say what was expected.
    """
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{where}: cannot decode image ({e})") from None
    if landmarks is not None:
        rgb = align_face(rgb, landmarks, size)
    elif rgb.shape[:2] != (size, size):
        raise ValueError(
            f"{where}: image is {rgb.shape[1]}×{rgb.shape[0]}, not an aligned {size}×{size} face crop "
            "(align it with its 5 landmarks first; the factory never resizes)"
        )
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def image_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every image under ``root`` (recursively), sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
