"""Pair benchmarks (RFW-like): the images of every pair, genuine/impostor labels, groups and subjects.

Layout, as insightface ``.bin`` files: pair ``k`` is images ``2k`` and ``2k+1``. Each group's pairs are contiguous
and consist of 10 folds; each fold holds ``n/2`` genuine then ``n/2`` impostor pairs of identities no other fold uses
(subject-disjoint folds, like RFW), so the protocol's contiguous 10-fold split is balanced and honest per group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from factory.data.formats.npz import read_npz
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.seeding import make_generator
from factory.data.world.splits import identity_set
from factory.files import atomic_path

BENCHMARK_SPLIT = "benchmark"
# Pairs are laid out in insightface's 10 folds (factory.evaluate.verification.N_FOLDS; a test keeps them equal): data
# sits below evaluation, so the layout does not import the protocol.
N_FOLDS = 10
_ARRAYS = ("images", "issame", "groups", "subjects", "group_names")


class BenchmarkFormatError(ValueError):
    """A benchmark file that is not what :meth:`PairBenchmark.save` writes."""


@dataclass
class PairBenchmark:
    """Verification pairs with their demographic group.

    Attributes:
        images: uint8 ``2P×3×112×112`` RGB; rows ``2k`` and ``2k+1`` form pair ``k``.
        issame: bool ``P``, genuine (same identity) or impostor.
        groups: int ``P``, index into ``group_names`` of the pair's group.
        subjects: int ``2P``, identity of every image (for subject-level statistics).
        group_names: group names in benchmark order.
    """

    images: np.ndarray
    issame: np.ndarray
    groups: np.ndarray
    subjects: np.ndarray
    group_names: tuple[str, ...]

    def __post_init__(self) -> None:
        pairs = len(self.issame)
        if self.images.ndim != 4 or len(self.images) != 2 * pairs:
            raise BenchmarkFormatError(f"images {self.images.shape} do not hold 2×{pairs} pair images")
        if self.groups.shape != (pairs,) or self.subjects.shape != (2 * pairs,):
            raise BenchmarkFormatError(
                f"groups {self.groups.shape} / subjects {self.subjects.shape} do not match {pairs} pairs"
            )
        if pairs and (self.groups.min() < 0 or self.groups.max() >= len(self.group_names)):
            raise BenchmarkFormatError(f"group indices outside 0..{len(self.group_names) - 1}")

    def group_indices(self, name: str) -> np.ndarray:
        """Indices of the pairs of group ``name``, in file order."""
        if name not in self.group_names:
            raise KeyError(f"no group {name!r} in benchmark (groups: {', '.join(self.group_names)})")
        return np.flatnonzero(self.groups == self.group_names.index(name))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an uncompressed ``.npz`` atomically (images are already compact uint8; compression is slow)."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                images=self.images,
                issame=self.issame,
                groups=self.groups,
                subjects=self.subjects,
                group_names=np.array(self.group_names, dtype=str),
            )

    @staticmethod
    def save_labels(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
        """Copy a saved benchmark's pair labels, groups and subjects, not its images, to ``path``.

        A release ships them: two releases on the same benchmark are compared pair by pair without the images.
        """
        with np.load(source, allow_pickle=False) as data:  # members load lazily: the images are not read
            arrays = {k: data[k] for k in _ARRAYS if k != "images"}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PairBenchmark:
        """Read a file written by :meth:`save`; never unpickles."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: benchmark file not found (expected a .npz written by `factory build`)")
        try:
            data = read_npz(path, f"a pair benchmark: arrays {', '.join(_ARRAYS)}")
        except ValueError as exc:
            raise BenchmarkFormatError(str(exc)) from None
        missing = [k for k in _ARRAYS if k not in data]
        if missing:
            raise BenchmarkFormatError(f"{path}: missing arrays {missing} (expected {list(_ARRAYS)})")
        try:
            return cls(
                images=data["images"],
                issame=data["issame"].astype(bool),
                groups=data["groups"],
                subjects=data["subjects"],
                group_names=tuple(str(g) for g in data["group_names"]),
            )
        except BenchmarkFormatError as exc:
            raise BenchmarkFormatError(f"{path}: {exc}") from None


def pair_layout(pairs_per_group: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Identity indices (within one group) of both images of every pair, and the genuine flags.

    Each fold uses its own ``n/2`` identities: genuine pair ``j`` shows identity ``j`` twice, impostor pair ``j``
    shows identity ``j`` and another identity of the same fold, so every identity appears in both kinds of pairs.
    """
    if pairs_per_group % (2 * N_FOLDS):
        raise ValueError(f"pairs_per_group must be a multiple of {2 * N_FOLDS}, got {pairs_per_group}")
    half = pairs_per_group // (2 * N_FOLDS)  # identities per fold, genuine pairs per fold
    if half < 2:
        raise ValueError(f"pairs_per_group must be at least {4 * N_FOLDS} to form impostor pairs")
    left, right, same = [], [], []
    for fold in range(N_FOLDS):
        ids = fold * half + np.arange(half)
        partner = (np.arange(half) + rng.integers(1, half, size=half)) % half
        left += [ids, ids]
        right += [ids, ids[partner]]
        same += [np.ones(half, bool), np.zeros(half, bool)]
    return np.stack([np.concatenate(left), np.concatenate(right)], axis=1), np.concatenate(same)


def build_benchmark(
    world: ProceduralFaceWorld,
    pairs_per_group: int,
    seed: int,
    split: str = BENCHMARK_SPLIT,
    progress: bool = False,
    batch_size: int = 256,
) -> PairBenchmark:
    """Render an RFW-like benchmark of identities from ``split`` (disjoint from every training split).

    Every image is its own capture (own nuisance draw), so a genuine pair is two different photos of one person.
    """
    rng = np.random.default_rng(seed)
    layout, same = pair_layout(pairs_per_group, rng)
    per_group = int(layout.max()) + 1
    ids = identity_set(world, split, per_group=per_group, seed=seed)
    n_groups = len(world.group_names)
    # Identity index in ids of every image: group-major, pairs in layout order, both images of a pair adjacent.
    offsets = np.arange(n_groups)[:, None] * per_group
    image_ids = (layout.reshape(1, -1) + offsets).reshape(-1)
    gen = make_generator("benchmark-images", seed, split)
    chunks = []
    for start in tqdm(range(0, len(image_ids), batch_size), desc="benchmark", unit="batch", disable=not progress):
        idx = torch.from_numpy(image_ids[start : start + batch_size])
        chunks.append(world.synthesis(world.mapping(ids.z[idx], ids.group[idx]), gen))
    images = torch.cat(chunks).numpy()
    return PairBenchmark(
        images=images,
        issame=np.tile(same, n_groups),
        groups=np.repeat(np.arange(n_groups), pairs_per_group),
        subjects=image_ids.astype(np.int64),
        group_names=tuple(world.group_names),
    )


@dataclass
class CrossGroupImpostors:
    """Impostor pairs whose two people belong to different groups, for the cross-group FMR heatmap.

    The pairs are drawn among the benchmark's own images, so the validate stage embeds no face for them: each image
    is embedded once and serves its own pair and these.

    Attributes:
        pairs: int ``M×2``, the rows of the benchmark's images that form each pair.
        cells: int ``M×2``, the (group of the first, group of the second image) of every pair.
        group_names: group names (indices of ``cells``).
    """

    pairs: np.ndarray
    cells: np.ndarray
    group_names: tuple[str, ...]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an uncompressed ``.npz`` atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, pairs=self.pairs, cells=self.cells, group_names=np.array(self.group_names, dtype=str))

    @classmethod
    def load(cls, path: str | os.PathLike[str], bench: PairBenchmark) -> CrossGroupImpostors:
        """Read a file written by :meth:`save` for ``bench``; never unpickles.

        Raises:
            BenchmarkFormatError: a missing array, or pairs that do not fit ``bench`` (rows outside its images,
                groups other than its groups, cells other than its images' groups), naming the file.
        """
        expected = "cross-group impostors: arrays pairs, cells, group_names"
        try:
            data = read_npz(path, expected)
            cross = cls(data["pairs"], data["cells"], tuple(str(g) for g in data["group_names"]))
        except KeyError as e:
            raise BenchmarkFormatError(f"{path}: missing array {e} (expected {expected})") from None
        except ValueError as e:
            raise BenchmarkFormatError(str(e)) from None
        rows, cells, n_images = cross.pairs, cross.cells, len(bench.images)
        shaped = rows.ndim == 2 and rows.shape[1:] == (2,) and cells.shape == rows.shape
        if not shaped or not all(np.issubdtype(a.dtype, np.integer) for a in (rows, cells)):
            raise BenchmarkFormatError(
                f"{path}: pairs {rows.shape} {rows.dtype} and cells {cells.shape} {cells.dtype} (expected both M×2 int)"
            )
        if len(rows) and (rows.min() < 0 or rows.max() >= n_images):
            raise BenchmarkFormatError(f"{path}: pair rows outside the benchmark's {n_images} images")
        if cross.group_names != bench.group_names:
            raise BenchmarkFormatError(
                f"{path}: groups {list(cross.group_names)} are not the benchmark's {list(bench.group_names)}"
            )
        if not np.array_equal(np.repeat(bench.groups, 2)[rows], cells):
            raise BenchmarkFormatError(f"{path}: cells that are not the groups of their pairs' images")
        return cross


def draw_cross_impostors(bench: PairBenchmark, pairs_per_cell: int, seed: int) -> CrossGroupImpostors:
    """``pairs_per_cell`` impostor pairs for every pair of different groups, among the benchmark's images.

    Raises:
        ValueError: a drawn pair shows one subject twice (a benchmark whose groups share people).
    """
    n_groups = len(bench.group_names)
    image_groups = np.repeat(bench.groups, 2)
    rows_of = [np.flatnonzero(image_groups == g) for g in range(n_groups)]
    cells = np.array(
        [(a, b) for a in range(n_groups) for b in range(a + 1, n_groups) for _ in range(pairs_per_cell)], dtype=np.int64
    ).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    pairs = np.zeros_like(cells)
    for a in range(n_groups):
        for b in range(a + 1, n_groups):
            at = np.flatnonzero((cells[:, 0] == a) & (cells[:, 1] == b))
            pairs[at, 0] = rng.choice(rows_of[a], len(at))
            pairs[at, 1] = rng.choice(rows_of[b], len(at))
    if np.any(bench.subjects[pairs[:, 0]] == bench.subjects[pairs[:, 1]]):
        raise ValueError("a cross-group pair shows one subject twice: the benchmark's groups share people")
    return CrossGroupImpostors(pairs, cells, tuple(bench.group_names))
