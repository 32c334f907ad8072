"""Embeddings of aligned face images from any model or artifact, written as ``.npz`` (``factory embed``).

Images are read in sorted path order, must already be aligned at the model's input size (the factory never resizes
silently: a wrong size means unaligned input), and go through the model's own contract. Output rows are
L2-normalised; with ``flip``, each is the insightface fusion of the image and its mirror.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from factory.evaluate.benchmark_eval import embed_images
from factory.files import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(sources: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image paths, sorted and without duplicates.

    Sources are folders (searched recursively), image files, and ``.txt``/``.lst`` lists with one path a line,
    relative to the list's folder.
    """
    found: set[Path] = set()
    for source in map(Path, sources):
        if source.is_dir():
            found.update(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif source.suffix.lower() in (".txt", ".lst"):
            if not source.is_file():
                raise FileNotFoundError(f"{source}: no such image list")
            for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
                entry = line.strip()
                if entry and not entry.startswith("#"):
                    path = (source.parent / entry) if not Path(entry).is_absolute() else Path(entry)
                    if not path.is_file():
                        raise FileNotFoundError(f"{source}:{number}: {path} does not exist (expected an image)")
                    found.add(path)
        elif source.is_file():
            found.add(source)
        else:
            raise FileNotFoundError(f"{source}: no such image, folder or list")
    if not found:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(map(str, sources))}")
    return sorted(found)


def read_aligned(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB ``N×3×H×W`` from image files that are already ``size`` (height, width)."""
    out = np.empty((len(paths), 3, *size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: cannot decode image ({e})") from None
        if rgb.shape[:2] != tuple(size):
            raise ValueError(
                f"{path}: image is {rgb.shape[1]}×{rgb.shape[0]}, the model takes aligned {size[1]}×{size[0]} faces "
                "(align and crop first; the factory does not resize)"
            )
        out[i] = rgb.transpose(2, 0, 1)
    return out


def embed_files(
    embed: Callable[[np.ndarray], np.ndarray],
    paths: list[Path],
    size: tuple[int, int],
    batch_size: int = 64,
    flip: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Unit embeddings ``N×D`` float32 of ``paths``, decoded a batch at a time (memory stays flat)."""
    chunks = []
    with tqdm(total=len(paths), desc="embed", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            images = read_aligned(paths[start : start + batch_size], size)
            chunks.append(embed_images(embed, images, batch_size=batch_size, flip=flip))
            bar.update(len(images))
    return np.concatenate(chunks)


def write_embeddings(out: str | os.PathLike[str], embeddings: np.ndarray, paths: list[Path]) -> Path:
    """``.npz`` with ``embeddings`` (N×D float32) and ``paths`` (N strings), written atomically."""
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, embeddings=embeddings.astype(np.float32), paths=np.array([str(p) for p in paths]))
    return Path(out)
