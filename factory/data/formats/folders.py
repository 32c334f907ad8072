"""Labelled image folders and lists.

Layouts: BUPT-style ``<group>/<identity>/<image>``, ImageFolder ``<identity>/<image>``, and CSV/TSV lists of
``path, identity[, group]``.

Readers return a :class:`LabelledImages` index (paths and labels only); images are decoded when used, so a million-
image folder is indexed in seconds.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from factory.data.formats.text import read_lines
from factory.data.images import IMAGE_SUFFIXES

NO_GROUP = "all"


@dataclass
class LabelledImages:
    """An index of labelled face images.

    Attributes:
        paths: image files.
        identities: identity name of every image.
        groups: demographic group of every image (``"all"`` where the source has none).
        source: where the index came from (shown in messages and composition tables).
    """

    paths: list[Path]
    identities: list[str]
    groups: list[str]
    source: str = ""
    group_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if not (len(self.paths) == len(self.identities) == len(self.groups)):
            raise ValueError(f"{self.source}: paths, identities and groups differ in length")
        self.group_names = sorted(set(self.groups))

    def __len__(self) -> int:
        return len(self.paths)

    def identity_count(self) -> int:
        """Distinct identities."""
        return len(set(self.identities))

    def with_groups(self, mapping: dict[str, str]) -> LabelledImages:
        """Groups taken from an identity -> group mapping (a user's mapping file); unmapped identities are an error."""
        missing = sorted({i for i in self.identities if i not in mapping})
        if missing:
            raise ValueError(
                f"{self.source}: {len(missing)} identities have no group in the mapping, e.g. {missing[:3]}"
            )
        return LabelledImages(self.paths, self.identities, [mapping[i] for i in self.identities], self.source)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(root: str | os.PathLike[str], layout: str = "auto") -> LabelledImages:
    """Index ``root`` as ``group/identity/image`` (BUPT) or ``identity/image`` (ImageFolder).

    ``layout="auto"`` picks BUPT when the first-level folders hold folders rather than images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected <group>/<identity>/<image> or <identity>/<image>)")
    top = sorted(p for p in root.iterdir() if p.is_dir())
    if not top:
        raise ValueError(f"{root}: no sub-folders (expected <group>/<identity>/<image> or <identity>/<image>)")
    if layout == "auto":
        layout = "bupt" if any(p.is_dir() for p in top[0].iterdir()) else "imagefolder"
    paths, identities, groups = [], [], []
    if layout == "bupt":
        for group in top:
            for identity in sorted(p for p in group.iterdir() if p.is_dir()):
                for image in _images_in(identity):
                    paths.append(image)
                    identities.append(identity.name)
                    groups.append(group.name)
    elif layout == "imagefolder":
        for identity in top:
            for image in _images_in(identity):
                paths.append(image)
                identities.append(identity.name)
                groups.append(NO_GROUP)
    else:
        raise ValueError(f"unknown folder layout {layout!r} (expected auto, bupt or imagefolder)")
    if not paths:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return LabelledImages(paths, identities, groups, source=str(root))


def read_image_list(path: str | os.PathLike[str]) -> LabelledImages:
    """Index a CSV/TSV list with columns ``path, identity[, group]`` (a header row naming them is optional).

    Relative image paths are relative to the list's folder; a missing image is an error naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image list")
    lines = read_lines(path, "path,identity[,group] lines")
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path}: empty image list (expected path,identity[,group] lines)")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in lines[0] else ","
    paths, identities, groups = [], [], []
    for number, row in enumerate(csv.reader(lines, delimiter=delimiter), 1):
        if (
            not row
            or row[0].startswith("#")
            or (number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "identity"])
        ):
            continue
        if len(row) not in (2, 3):
            raise ValueError(
                f"{path}:{number}: expected path{delimiter}identity[{delimiter}group], got {len(row)} fields"
            )
        image = Path(row[0].strip())
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise FileNotFoundError(f"{path}:{number}: {image} does not exist")
        paths.append(image)
        identities.append(row[1].strip())
        groups.append(row[2].strip() if len(row) == 3 else NO_GROUP)
    if not paths:
        raise ValueError(f"{path}: no entries")
    return LabelledImages(paths, identities, groups, source=str(path))


def read_group_mapping(path: str | os.PathLike[str]) -> dict[str, str]:
    """``identity,group`` lines (CSV or TSV) -> mapping, for sources without group labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such group mapping file (expected identity,group lines)")
    mapping = {}
    for number, line in enumerate(read_lines(path, "identity,group lines"), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.replace("\t", ",").split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path}:{number}: expected 'identity,group', got {line!r}")
        mapping[parts[0]] = parts[1]
    return mapping
