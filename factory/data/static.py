"""Static image sets: a finite set of images, drawn by index, each draw flipped or not, and keyed.

A static set is what a real dataset is (:class:`FileImages`: a labelled folder, list or RecordIO pack) and what its
procedural stand-in is (:class:`RenderedSet`: a fixed set of labelled identities of their own split, each with a
fixed number of images, rendered once). Unlike online synthetic faces its images come back every epoch, so every
sample of its batches carries a key, ``2·index + flip`` (int64, unique within the set), by which the teacher's
embedding of it is computed once per run (:mod:`factory.distill.teacher_cache`); a batch that draws from two sets
offsets the second set's keys past the first's (a real/synthetic mix's fixed synthetic part). A sample that is never
repeated (a fresh synthetic face) has the key :data:`NO_KEY`.

Flips are drawn by the batch from the step's generator, never inside a dataset's ``__getitem__`` (whose draws from
the global generator no key could name). Groups are the world's group indices: a real set whose images have no
group, or a group the world does not have, is refused with its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from factory.data.benchmark import BENCHMARK_SPLIT
from factory.data.formats.folders import NO_GROUP, read_group_mapping, read_image_folder, read_image_list
from factory.data.formats.recordio import RecordIOReader
from factory.data.mixing import LabelledImageDataset, RecordIODataset
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.seeding import make_generator
from factory.data.world.splits import IdentitySet, IdentityShard, identity_set

NO_KEY = -1  # the key of a sample that is never drawn again: nothing to cache
_NO_GROUPS_EXPECTED = (
    "expected a BUPT <group>/<identity>/<image> folder, a path,identity,group list, or group_mapping: an "
    "identity,group file"
)


class StaticImages(Protocol):
    """A finite set of images, read by index."""

    def __len__(self) -> int: ...

    def image(self, index: int) -> Tensor:
        """The uint8 ``3×H×W`` image at ``index``, unflipped."""
        ...


class GroupedImages(StaticImages, Protocol):
    """A static set whose every image has a group of the world (what a real/synthetic mix draws its parts from).

    Attributes:
        groups: the world group index of every image (int64).
        source: where the images come from, for messages and reports.
    """

    groups: Tensor
    source: str


def keyed_batch(images: StaticImages, indices: Tensor, flips: Tensor) -> dict[str, Tensor]:
    """The images at ``indices``, mirrored where ``flips``, with their keys ``2·index + flip``."""
    pixels = torch.stack([images.image(int(i)) for i in indices])
    pixels = torch.where(flips.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
    return {"pixels": pixels, "keys": indices.long() * 2 + flips.long()}


def members_by_group(images: GroupedImages, group_names: list[str]) -> list[Tensor]:
    """The indices of each world group's images; a group without any is refused (its part could not be filled)."""
    members = [torch.nonzero(images.groups == g).flatten() for g in range(len(group_names))]
    empty = [name for name, m in zip(group_names, members, strict=True) if len(m) == 0]
    if empty:
        raise ValueError(
            f"{images.source}: no images of group {', '.join(repr(n) for n in empty)} (the world's groups: "
            f"{', '.join(group_names)}; every group's part of a batch is drawn from that group's images)"
        )
    return members


def draw_by_group(
    images: GroupedImages, members: list[Tensor], counts: Tensor, generator: torch.Generator
) -> tuple[dict[str, Tensor], Tensor]:
    """``counts[g]`` images of every group ``g``, uniform with replacement inside the group, each flipped with p ½.

    Returns:
        The batch (``pixels``, ``keys``, ``groups``; in group order) and the drawn indices.
    """
    picks = [m[torch.randint(len(m), (int(n),), generator=generator)] for m, n in zip(members, counts, strict=True)]
    indices = torch.cat(picks)
    flips = torch.rand(len(indices), generator=generator) < 0.5
    batch = keyed_batch(images, indices, flips)
    batch["groups"] = images.groups[indices]
    return batch, indices


def world_groups(names: list[str], group_names: list[str], where: str) -> Tensor:
    """Group names of images as the world's group indices; images without a group or with a foreign one are refused."""
    ungrouped = sum(n == NO_GROUP for n in names)
    if ungrouped:
        some = "its images have" if ungrouped == len(names) else f"{ungrouped} of its {len(names)} images have"
        raise ValueError(f"{where}: {some} no group ({_NO_GROUPS_EXPECTED})")
    index = {name: i for i, name in enumerate(group_names)}
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise ValueError(
            f"{where}: group {', '.join(repr(n) for n in unknown)} is not one of the world's groups (expected "
            f"{', '.join(group_names)}: name the folders or the list's groups after the taxonomy's, or rename them "
            "with group_mapping: <group>,<world group> lines)"
        )
    return torch.tensor([index[n] for n in names], dtype=torch.long)


class FileImages:
    """A dataset with groups: a labelled folder (BUPT ``<group>/<identity>/``), a list or a RecordIO pack.

    Groups come from the files (BUPT folders, a list's group column) or from ``group_mapping``. For files without
    groups of their own it gives each identity its group (``identity,group`` lines; a RecordIO pack's identities are
    its labels, written as numbers); for files with them it renames those groups to the world's (``group,world
    group`` lines, e.g. BUPT's ``African,alpha``: a real set's groups are named by its makers, the world's by its
    taxonomy). Images are decoded when drawn.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        group_names: list[str],
        size: int = 112,
        group_mapping: str | os.PathLike[str] | None = None,
        flip: bool = False,
    ) -> None:
        path = Path(path)
        self.source = str(path)
        if path.suffix in (".rec", ".idx"):
            pack = RecordIODataset(path.with_suffix(".rec"), size=size, flip=flip)
            with RecordIOReader(pack.rec) as reader:
                identities = [str(reader.label(k)) for k in pack.keys]
            names = [NO_GROUP] * len(identities)
            self._dataset: torch.utils.data.Dataset = pack
        else:
            index = read_image_folder(path) if path.is_dir() else read_image_list(path)
            identities, names = index.identities, index.groups
            self._dataset = LabelledImageDataset(index, size=size, flip=flip)
        if group_mapping is not None:
            mapping = read_group_mapping(group_mapping)
            own = sorted({n for n in names if n != NO_GROUP})
            if own:
                unnamed = [n for n in own if n not in mapping]
                if unnamed:
                    raise ValueError(
                        f"{path}: its group {', '.join(repr(n) for n in unnamed)} has no line in {group_mapping} "
                        "(files with groups of their own have them renamed by group_mapping: expected a "
                        f"<group>,<world group> line for each of {', '.join(own)})"
                    )
                # Images without a group stay without one: world_groups refuses them with its own message.
                names = [n if n == NO_GROUP else mapping[n] for n in names]
            else:
                missing = sorted({i for i in identities if i not in mapping})
                if missing:
                    raise ValueError(
                        f"{path}: {len(missing)} identities have no group in {group_mapping}, e.g. {missing[:3]} "
                        "(expected an identity,group line for every identity)"
                    )
                names = [mapping[i] for i in identities]
        self.groups = world_groups(names, group_names, str(path))
        self.identities = identities  # of every image

    def __len__(self) -> int:
        return len(self.groups)

    def image(self, index: int) -> Tensor:
        """The decoded image (aligned, ``size``×``size``; flipped with p ½ when made with ``flip``)."""
        return self._dataset[index][0]


class ShardImages(torch.utils.data.Dataset):
    """One teacher's share of labelled files with groups (MST-KD's specialists on real faces, e.g. BUPT's races).

    The files' identities, each with its group, in sorted name order, are dealt to the teacher as the procedural
    source deals its own (:meth:`~factory.data.world.splits.IdentityShard.select`: whole identities, a group's or a
    share of every group's); labels index the kept ones. Items are ``(uint8 image, label)``.

    Attributes:
        ids: the kept identities (``keys`` their names, ``group`` their world groups; no latents).
    """

    def __init__(self, images: FileImages, shard: IdentityShard) -> None:
        group_of: dict[str, int] = {}
        for identity, group in zip(images.identities, images.groups.tolist(), strict=True):
            if group_of.setdefault(identity, group) != group:
                raise ValueError(
                    f"{images.source}: identity {identity!r} has images in two groups (expected one group per "
                    "identity: a teacher trains on whole identities)"
                )
        names = sorted(group_of)
        everyone = IdentitySet(torch.zeros(len(names), 0), torch.tensor([group_of[n] for n in names]), names)
        self.ids = shard.select(everyone)
        label = {name: i for i, name in enumerate(self.ids.keys)}
        self.images = images
        self.rows = [i for i, identity in enumerate(images.identities) if identity in label]
        self.labels = [label[images.identities[i]] for i in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images.image(self.rows[index]), self.labels[index]


class RenderedSet:
    """A fixed, finite set of labelled procedural faces: the stand-in for a real dataset.

    ``identities_per_group`` identities of every group of their own ``split`` (never the benchmark's, whose
    identities come from another split name), each with ``images_per_identity`` images. An identity's images are
    rendered the first time one of them is drawn, from a generator of its own (seeded with the identity's key), so
    every image is a pure function of ``(world, seed, split, identity, images_per_identity)``, whatever was drawn
    before, and the set is the same in every epoch and every process.
    """

    def __init__(
        self,
        world: ProceduralFaceWorld,
        split: str,
        identities_per_group: int,
        images_per_identity: int,
        seed: int,
    ) -> None:
        if split == BENCHMARK_SPLIT:
            raise ValueError(f"a procedural set of split {split!r} would train on the benchmark's identities")
        if images_per_identity < 1:
            raise ValueError(f"images_per_identity must be >= 1, got {images_per_identity}")
        self.world, self.seed, self.per_identity = world, seed, images_per_identity
        self.ids = identity_set(world, split, per_group=identities_per_group, seed=seed)
        self.groups = self.ids.group.repeat_interleave(images_per_identity)
        self.labels = torch.arange(len(self.ids)).repeat_interleave(images_per_identity)
        self.source = f"procedural_set:{split}"
        self._rendered: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.ids) * self.per_identity

    @property
    def identities(self) -> int:
        """How many identities the set has (the classes of a margin head)."""
        return len(self.ids)

    def image(self, index: int) -> Tensor:
        """Image ``index % images_per_identity`` of identity ``index // images_per_identity``."""
        identity, which = divmod(index, self.per_identity)
        if identity not in self._rendered:
            n = self.per_identity
            w = self.world.mapping(
                self.ids.z[identity : identity + 1].expand(n, -1), self.ids.group[identity].expand(n)
            )
            self._rendered[identity] = self.world.synthesis(
                w, make_generator("procedural-set", self.seed, self.ids.keys[identity])
            )
        return self._rendered[identity][which]
