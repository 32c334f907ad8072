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
from tqdm import tqdm

from factory.data.formats.text import read_lines
from factory.data.images import IMAGE_SUFFIXES, decode_aligned, image_files
from factory.evaluate.benchmark_eval import embed_images
from factory.files import atomic_path


def list_images(sources: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image paths, sorted and without duplicates.

    Sources are folders (searched recursively), image files, and ``.txt``/``.lst`` lists with one path a line,
    relative to the list's folder.
    """
    found: set[Path] = set()
    for source in map(Path, sources):
        if source.is_dir():
            found.update(image_files(source))
        elif source.suffix.lower() in (".txt", ".lst"):
            if not source.is_file():
                raise FileNotFoundError(f"{source}: no such image list")
            for number, line in enumerate(read_lines(source, "one image path a line"), 1):
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


def embed_files(
    embed: Callable[[np.ndarray], np.ndarray],
    paths: list[Path],
    size: int,
    batch_size: int = 64,
    flip: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Unit embeddings ``N×D`` float32 of ``paths``, decoded a batch at a time (memory stays flat)."""
    chunks = []
    with tqdm(total=len(paths), desc="embed", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            images = np.stack([decode_aligned(p, str(p), size) for p in paths[start : start + batch_size]])
            chunks.append(embed_images(embed, images, batch_size=batch_size, flip=flip))
            bar.update(len(images))
    return np.concatenate(chunks)


def write_embeddings(out: str | os.PathLike[str], embeddings: np.ndarray, paths: list[Path]) -> Path:
    """``.npz`` with ``embeddings`` (N×D float32) and ``paths`` (N strings), written atomically."""
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, embeddings=embeddings.astype(np.float32), paths=np.array([str(p) for p in paths]))
    return Path(out)
