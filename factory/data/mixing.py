"""Group-aware mixing of labelled sources, and the torch datasets that feed training from files.

A mix is, say, 70 % real and 30 % synthetic in every group.

Mixing works group by group: for each demographic group, every source contributes its ratio of that group's budget,
and the budget is the largest one all sources can fill without repeating an image. So the mixture keeps the chosen
real/synthetic split *within* each group, which a global split would not. Selection is by seed, so the same recipe
gives the same mixture.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from factory.data.formats.folders import LabelledImages
from factory.data.formats.recordio import RecordIOReader
from factory.data.images import IMAGE_SUFFIXES, decode_aligned, image_files
from factory.files import atomic_path


@dataclass
class Mixture:
    """The chosen images: parallel lists, plus where each came from."""

    images: LabelledImages
    sources: list[str]
    ratios: dict[str, float]

    def composition(self) -> list[dict[str, object]]:
        """Rows ``{source, group, identities, images}``, one per source and group."""
        rows = []
        for source in self.ratios:
            for group in self.images.group_names:
                picked = [
                    i
                    for i, (s, g) in enumerate(zip(self.sources, self.images.groups, strict=True))
                    if s == source and g == group
                ]
                identities = {self.images.identities[i] for i in picked}
                rows.append({"source": source, "group": group, "identities": len(identities), "images": len(picked)})
        return rows

    def composition_table(self) -> str:
        """The composition as a fixed-width text table, with each source's share of every group."""
        rows = self.composition()
        totals = {g: sum(r["images"] for r in rows if r["group"] == g) for g in self.images.group_names}
        lines = [f"{'source':<16}{'group':<14}{'identities':>11}{'images':>9}{'share':>8}", "-" * 58]
        for r in rows:
            share = r["images"] / totals[r["group"]] if totals[r["group"]] else 0.0
            lines.append(f"{r['source']:<16}{r['group']:<14}{r['identities']:>11}{r['images']:>9}{share:>8.1%}")
        return "\n".join(lines)


def mix_sources(sources: dict[str, LabelledImages], ratios: dict[str, float], seed: int = 0) -> Mixture:
    """Mix labelled sources with ``ratios`` (summing to 1) inside every group they share.

    Identities are namespaced by source (``real/0042``), so two sources never merge two people by accident.
    """
    if set(sources) != set(ratios):
        raise ValueError(f"ratios {sorted(ratios)} must name exactly the sources {sorted(sources)}")
    if any(r <= 0 for r in ratios.values()) or abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be positive and sum to 1, got {ratios}")
    groups = sorted(set.intersection(*(set(s.group_names) for s in sources.values())))
    if not groups:
        raise ValueError("the sources share no group; map their identities to common groups first")
    rng = np.random.default_rng(seed)
    paths, identities, chosen_groups, origin = [], [], [], []
    for group in groups:
        members = {name: [i for i, g in enumerate(src.groups) if g == group] for name, src in sources.items()}
        budget = min(int(len(members[name]) / ratios[name]) for name in sources)
        for name, src in sources.items():
            take = int(round(budget * ratios[name]))
            for i in sorted(rng.choice(members[name], size=min(take, len(members[name])), replace=False)):
                paths.append(src.paths[i])
                identities.append(f"{name}/{src.identities[i]}")
                chosen_groups.append(group)
                origin.append(name)
    images = LabelledImages(paths, identities, chosen_groups, source="mix(" + ", ".join(sources) + ")")
    return Mixture(images=images, sources=origin, ratios=dict(ratios))


def write_image_list(path: str | os.PathLike[str], images: LabelledImages) -> Path:
    """A ``path,identity,group`` CSV (absolute paths) that :func:`read_image_list` reads back."""
    lines = ["path,identity,group"] + [
        f"{p.resolve()},{i},{g}" for p, i, g in zip(images.paths, images.identities, images.groups, strict=True)
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def read_flat_folder(root: str | os.PathLike[str]) -> list[Path]:
    """An unlabelled synthetic dump (e.g. StyleGAN samples): every image under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of images")
    paths = image_files(root)
    if not paths:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return paths


class LabelledImageDataset(torch.utils.data.Dataset):
    """``(uint8 3×H×W, label)`` from a :class:`LabelledImages` index; identities numbered in sorted order."""

    def __init__(self, index: LabelledImages, size: int = 112, flip: bool = False) -> None:
        self.index = index
        self.size = size
        self.flip = flip
        self.labels = {name: i for i, name in enumerate(sorted(set(index.identities)))}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(decode_aligned(self.index.paths[i], str(self.index.paths[i]), self.size))
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.labels[self.index.identities[i]]


class RecordIODataset(torch.utils.data.Dataset):
    """``(uint8 3×H×W, label)`` from a RecordIO pack; each DataLoader worker opens its own file handle."""

    def __init__(self, rec: str | os.PathLike[str], size: int = 112, flip: bool = False) -> None:
        self.rec = Path(rec)
        self.size = size
        self.flip = flip
        with RecordIOReader(self.rec) as reader:
            self.keys = list(reader.image_keys)
        self._reader: RecordIOReader | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._reader is None or self._pid != os.getpid():  # file handles must not cross a fork
            self._reader, self._pid = RecordIOReader(self.rec), os.getpid()
        record = self._reader.record(self.keys[i])
        image = torch.from_numpy(decode_aligned(record.image, f"{self.rec}: record {self.keys[i]}", self.size))
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, int(record.labels[0])


def mix_specs(specs: list[str], group_mapping: str | os.PathLike[str] | None = None, seed: int = 0) -> Mixture:
    """:func:`mix_sources` over ``NAME=PATH:RATIO`` specs (what ``factory data mix`` takes).

    Each PATH is an image folder (BUPT ``<group>/<identity>/`` or ``<identity>/``) or a CSV/TSV list;
    ``group_mapping`` (an ``identity,group`` file) gives groups to sources without group folders.
    """
    from factory.data.formats.folders import read_group_mapping, read_image_folder, read_image_list

    indexes, ratios = {}, {}
    groups = read_group_mapping(group_mapping) if group_mapping else None
    for spec in specs:
        name, sep, rest = spec.partition("=")
        path, _, ratio = rest.rpartition(":")
        if not sep or not path or not ratio:
            raise ValueError(f"expected NAME=PATH:RATIO, got {spec!r}")
        try:
            ratios[name] = float(ratio)
        except ValueError:
            raise ValueError(f"{spec!r}: the ratio {ratio!r} is not a number (expected NAME=PATH:RATIO)") from None
        src = Path(path)
        index = read_image_folder(src) if src.is_dir() else read_image_list(src)
        if groups is not None and index.group_names == ["all"]:
            index = index.with_groups(groups)
        indexes[name] = index
    return mix_sources(indexes, ratios, seed=seed)
