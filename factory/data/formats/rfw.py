"""RFW (Racial Faces in-the-Wild): per-race pairs files and image folders, read as a :class:`PairBenchmark`.

Layout (``../shared/REFERENCE.md`` §2): ``test/txts/<Race>/<Race>_pairs.txt`` with TAB-separated lines, 3 fields
``id n1 n2`` for a genuine pair and 4 fields ``id1 n1 id2 n2`` for an impostor pair; images at
``test/data/<Race>/<id>/<id>_%04d.jpg``. Images are either aligned 112×112 crops, or raw photos aligned here with
the 5 landmarks of ``test/txts/<Race>/<Race>_lmk.txt`` (lines ``<image path> x1 y1 ... x5 y5``, the path relative to
``test/data``; the first field's file name is what is matched).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factory.data.benchmark import PairBenchmark
from factory.data.formats.text import read_lines
from factory.data.images import decode_aligned
from factory.files import atomic_path

RFW_RACES = ("African", "Asian", "Caucasian", "Indian")


@dataclass(frozen=True)
class RFWPair:
    """One pairs-file line: two (identity, image number) references and whether they are the same person."""

    left: tuple[str, int]
    right: tuple[str, int]
    issame: bool


def read_pairs(path: str | os.PathLike[str]) -> list[RFWPair]:
    """Parse an RFW pairs file; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such RFW pairs file (expected test/txts/<Race>/<Race>_pairs.txt)")
    pairs = []
    for number, line in enumerate(read_lines(path, "'id n1 n2' or 'id1 n1 id2 n2' lines"), 1):
        fields = line.strip().split()
        if not fields:
            continue
        for identity in fields[::2] if len(fields) == 4 else fields[:1]:
            # An identity is a folder name under test/data/<Race>/: a path in its place would read files elsewhere.
            if identity in (".", "..") or "/" in identity or "\\" in identity:
                raise ValueError(f"{path}:{number}: identity {identity!r} is a path (expected a folder name)")
        try:
            if len(fields) == 3:
                pairs.append(RFWPair((fields[0], int(fields[1])), (fields[0], int(fields[2])), True))
            elif len(fields) == 4:
                pairs.append(RFWPair((fields[0], int(fields[1])), (fields[2], int(fields[3])), False))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{path}:{number}: expected 'id n1 n2' (genuine) or 'id1 n1 id2 n2' (impostor), got {line.strip()!r}"
            ) from None
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def image_path(root: Path, race: str, identity: str, number: int) -> Path:
    """Where RFW keeps one image."""
    return root / "test" / "data" / race / identity / f"{identity}_{number:04d}.jpg"


def read_landmarks(path: Path) -> dict[str, np.ndarray]:
    """Image file name -> 5×2 landmarks from an RFW ``_lmk.txt``."""
    table = {}
    for number, line in enumerate(read_lines(path, "an image path and 10 coordinates per line"), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 11:
            raise ValueError(f"{path}:{number}: expected an image path and 10 coordinates, got {len(fields)} fields")
        try:
            table[Path(fields[0]).name] = np.array([float(v) for v in fields[1:]]).reshape(5, 2)
        except ValueError:
            raise ValueError(f"{path}:{number}: coordinates must be numbers") from None
    return table


def load_rfw(root: str | os.PathLike[str], races: tuple[str, ...] | None = None, size: int = 112) -> PairBenchmark:
    """Every race's pairs as one benchmark (groups = races, in the given order; pair order as in the files)."""
    root = Path(root)
    races = races or tuple(r for r in RFW_RACES if (root / "test" / "txts" / r).is_dir())
    if not races:
        raise FileNotFoundError(f"{root}: no test/txts/<Race>/ folders (expected an RFW root)")
    images, issame, groups, subjects = [], [], [], []
    identity_ids: dict[tuple[str, str], int] = {}
    for g, race in enumerate(races):
        txts = root / "test" / "txts" / race
        lmk_file = txts / f"{race}_lmk.txt"
        landmarks = read_landmarks(lmk_file) if lmk_file.is_file() else None
        for pair in read_pairs(txts / f"{race}_pairs.txt"):
            for identity, number in (pair.left, pair.right):
                path = image_path(root, race, identity, number)
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: image of a pair in {txts / f'{race}_pairs.txt'} is missing")
                points = None
                if landmarks is not None:
                    if path.name not in landmarks:
                        raise ValueError(f"{lmk_file}: no landmarks for {path.name}")
                    points = landmarks[path.name]
                images.append(decode_aligned(path, str(path), size, points))
                subjects.append(identity_ids.setdefault((race, identity), len(identity_ids)))
            issame.append(pair.issame)
            groups.append(g)
    return PairBenchmark(
        images=np.stack(images),
        issame=np.array(issame),
        groups=np.array(groups),
        subjects=np.array(subjects),
        group_names=tuple(races),
    )


def write_rfw(root: str | os.PathLike[str], race: str, images: list[bytes], issame: np.ndarray) -> Path:
    """Write encoded pair images as an RFW race (bytes unchanged); returns the pairs file.

    Genuine pair ``k`` is identity ``p<k>`` images 1 and 2; an impostor pair is ``p<k>a`` and ``p<k>b``, image 1 each.
    """
    root = Path(root)
    lines = []
    for k, same in enumerate(issame):
        refs = [(f"p{k:05d}", 1), (f"p{k:05d}", 2)] if same else [(f"p{k:05d}a", 1), (f"p{k:05d}b", 1)]
        for (identity, number), data in zip(refs, images[2 * k : 2 * k + 2], strict=True):
            path = image_path(root, race, identity, number)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        lines.append("\t".join([refs[0][0], "1", "2"] if same else [refs[0][0], "1", refs[1][0], "1"]))
    pairs = root / "test" / "txts" / race / f"{race}_pairs.txt"
    pairs.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(pairs) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return pairs


def read_rfw_encoded(root: str | os.PathLike[str], race: str) -> tuple[list[bytes], np.ndarray]:
    """A race's pair images as the encoded bytes on disk (for lossless conversion), and the labels."""
    root = Path(root)
    images, issame = [], []
    pairs_file = root / "test" / "txts" / race / f"{race}_pairs.txt"
    for pair in read_pairs(pairs_file):
        for identity, number in (pair.left, pair.right):
            path = image_path(root, race, identity, number)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: image of a pair in {pairs_file} is missing")
            images.append(path.read_bytes())
        issame.append(pair.issame)
    return images, np.array(issame)
