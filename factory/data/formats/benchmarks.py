"""Users' verification benchmarks as :class:`~factory.data.benchmark.PairBenchmark`.

A verification ``.bin``, an RFW root, a benchmark ``.npz`` or a pairs list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from factory.data.benchmark import PairBenchmark
from factory.data.formats.text import read_lines
from factory.data.images import decode_aligned


def load_real_benchmark(path: str) -> PairBenchmark:
    """A user's benchmark as pairs with groups.

    A verification ``.bin`` is one group named after the file; an RFW root has a group per race.
    """
    from factory.data.formats.rfw import load_rfw
    from factory.data.formats.verification_bin import VerificationBin

    source = Path(path)
    if source.is_dir():
        return load_rfw(source)
    if source.suffix == ".npz":
        return PairBenchmark.load(source)
    if source.suffix in (".csv", ".txt", ".tsv"):
        return load_pairs_list(source)
    data = VerificationBin.load(source)
    images = np.stack([decode_aligned(b, f"{source}: entry {i}") for i, b in enumerate(data.images)])
    return PairBenchmark(
        images=images,
        issame=data.issame,
        groups=np.zeros(len(data.issame), dtype=np.int64),
        subjects=np.arange(len(images)),  # a .bin has no identities: every image its own subject
        group_names=(source.stem.removesuffix("_test"),),
    )


def load_pairs_list(path: Path) -> PairBenchmark:
    """A pairs list: ``image1,image2,issame[,group]`` per line (TAB also accepted), aligned 112×112 images.

    Image paths are relative to the list's folder and must stay inside it: a list is often someone else's file,
    and an absolute path or a ``..`` that climbs out would make it read any image on the machine.
    """
    images, issame, groups, names = [], [], [], {}
    expected = "image1,image2,issame(0/1)[,group]"
    for number, line in enumerate(read_lines(path, f"{expected} lines"), 1):
        fields = [f.strip() for f in line.replace("\t", ",").split(",")]
        if not line.strip() or line.startswith("#"):
            continue
        if len(fields) not in (3, 4) or fields[2].lower() not in ("0", "1", "true", "false"):
            raise ValueError(f"{path}:{number}: expected {expected}, got {line!r}")
        for name in fields[:2]:
            image = _inside(path, number, name)
            if not image.is_file():
                raise FileNotFoundError(f"{path}:{number}: {image} does not exist")
            images.append(decode_aligned(image, f"{path}:{number}: {image}"))
        issame.append(fields[2].lower() in ("1", "true"))
        groups.append(names.setdefault(fields[3] if len(fields) == 4 else "all", len(names)))
    if not issame:
        raise ValueError(f"{path}: no pairs")
    return PairBenchmark(
        images=np.stack(images),
        issame=np.array(issame),
        groups=np.array(groups),
        subjects=np.arange(len(images)),
        group_names=tuple(names),
    )


def _inside(listing: Path, number: int, name: str) -> Path:
    """``name`` from line ``number`` of ``listing`` as a path under the list's folder; leaving the folder is an error.

    The check is on the written path (``..`` folded away), not on symlinks: a dataset folder linked in stays usable.
    """
    root = Path(os.path.normpath(listing.parent))
    image = Path(os.path.normpath(root / name))
    if Path(name).is_absolute() or not image.is_relative_to(root):
        raise ValueError(
            f"{listing}:{number}: {name} leaves the list's folder {root} (expected a path relative to it, "
            "without a leading / or .. above it)"
        )
    return image


def load_benchmark(source: str) -> PairBenchmark:
    """What ``factory eval`` takes: the word ``procedural`` (the built-in world's default benchmark) or a user's file.

    Anything else goes to :func:`load_real_benchmark`.
    """
    if source == "procedural":
        from factory.data.benchmark import build_benchmark
        from factory.data.world.renderer import ProceduralFaceWorld

        return build_benchmark(ProceduralFaceWorld(seed=0), pairs_per_group=600, seed=0)
    return load_real_benchmark(source)
