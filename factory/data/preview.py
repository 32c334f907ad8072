"""Preview grids of the procedural world: one PNG per group, a row per identity, a column per sample of it.

The quickest way to see what a taxonomy change does, and what "identity" versus "nuisance" means in this world.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from factory.data.images import read_rgb
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.seeding import make_generator
from factory.data.world.splits import identity_set
from factory.files import atomic_path

PREVIEW_SPLIT = "preview"
_GAP = 2  # pixels between tiles


def preview_grid(images: np.ndarray, rows: int, cols: int, gap: int = _GAP) -> np.ndarray:
    """Tile uint8 images ``(rows*cols)×3×H×W`` (row-major) into one ``H'×W'×3`` array with white gaps."""
    if images.shape[0] != rows * cols:
        raise ValueError(f"expected {rows * cols} images for a {rows}×{cols} grid, got {images.shape[0]}")
    _, _, h, w = images.shape
    grid = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, dtype=np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = img.transpose(1, 2, 0)
    return grid


def write_previews(
    world: ProceduralFaceWorld,
    out_dir: str | os.PathLike[str],
    identities: int = 8,
    samples: int = 6,
    seed: int = 0,
) -> list[Path]:
    """Write ``<out_dir>/<group>.png`` for every group of ``world``.

    Args:
        world: the procedural world.
        out_dir: directory to write into (created if missing).
        identities: rows per grid, one identity each (from the ``preview`` split, so no training identity shows).
        samples: columns per grid, independent nuisance draws of the row's identity.
        seed: seed of the identities and nuisances (same seed, same pictures).

    Returns:
        The paths written, in group order.
    """
    if identities < 1 or samples < 1:
        raise ValueError(f"identities and samples must be >= 1, got {identities} and {samples}")
    out_dir = Path(out_dir)
    ids = identity_set(world, PREVIEW_SPLIT, per_group=identities, seed=seed)
    gen = make_generator("preview-nuisance", seed)
    paths = []
    for g, name in enumerate(world.group_names):
        rows = torch.nonzero(ids.group == g).flatten()
        w = world.mapping(ids.z[rows], ids.group[rows]).repeat_interleave(samples, dim=0)
        images = world.synthesis(w, gen).numpy()
        path = out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(preview_grid(images, identities, samples)).save(tmp, format="PNG")
        paths.append(path)
    return paths


def write_dataset_preview(source: str | os.PathLike[str], path: str | os.PathLike[str], per_row: int = 6) -> Path:
    """One PNG grid of a dataset: a row per group with its first ``per_row`` images, shown at 112×112."""
    from factory.data.formats.convert import sample_images

    rows = sample_images(source, per_row)
    tiles = []
    for images in rows.values():
        for k in range(per_row):
            if k < len(images):
                where, data = images[k]
                rgb = Image.fromarray(read_rgb(data, where))
                tile = np.asarray(rgb.resize((112, 112), Image.Resampling.BILINEAR))
            else:
                tile = np.full((112, 112, 3), 255, np.uint8)
            tiles.append(tile.transpose(2, 0, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(preview_grid(np.stack(tiles), len(rows), per_row)).save(tmp, format="PNG")
    return path
