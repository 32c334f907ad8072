"""Identity splits and batches of the procedural world: what training, distillation and evaluation draw from it.

Batches are pure functions of ``(seed, split, step)`` through :func:`~factory.data.world.seeding.stable_seed`, so
training resumes exactly and different splits (teacher, distill, calibration, benchmark) never share an identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.seeding import make_generator


@dataclass
class IdentitySet:
    """A fixed set of identities of one split.

    Attributes:
        z: identity latents ``N×z_dim``.
        group: group id per identity ``N``.
        keys: ``"<split>/<group>/<index>"`` per identity, unique within the split and across splits.
    """

    z: Tensor
    group: Tensor
    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)


def identity_set(world: ProceduralFaceWorld, split: str, per_group: int, seed: int) -> IdentitySet:
    """``per_group`` identities of every group for ``split``, grouped in group order.

    The latents come from a generator seeded with :func:`~factory.data.world.seeding.stable_seed` of
    ``(seed, split)``, so the same arguments give the same identities in any process, and different split names give
    different identities by construction.
    """
    if per_group < 1:
        raise ValueError(f"per_group must be >= 1, got {per_group}")
    if not split or "/" in split:
        raise ValueError(f"split must be a non-empty name without '/', got {split!r}")
    gen = make_generator("identities", seed, split)
    groups = len(world.group_names)
    z = world.sample_z(groups * per_group, gen)
    group = torch.arange(groups).repeat_interleave(per_group)
    keys = [f"{split}/{name}/{i:05d}" for name in world.group_names for i in range(per_group)]
    return IdentitySet(z=z, group=group, keys=keys)


@dataclass(frozen=True)
class IdentityShard:
    """The part of a split's identities that one of several teachers trains on (MST-KD's teachers).

    Identities are kept whole: a shard never splits one person's images between two teachers, so the union of the
    shards of a split is its identity set and two shards of one plan share no identity.

    Attributes:
        name: the teacher's name; it also names the shard's own batch stream, so teachers draw independent batches.
        groups: the group ids kept (None: every group).
        part: which share of each kept group's identities (index within the group ≡ ``part`` mod ``parts``).
        parts: into how many shares each group's identities are dealt (1: all of them).
    """

    name: str
    groups: tuple[int, ...] | None = None
    part: int = 0
    parts: int = 1

    def __post_init__(self) -> None:
        if self.parts < 1 or not 0 <= self.part < self.parts:
            raise ValueError(f"shard {self.name!r}: part {self.part} of {self.parts} (expected 0 <= part < parts)")

    def select(self, ids: IdentitySet) -> IdentitySet:
        """The identities of ``ids`` in this shard, in their order (labels are indices into the result).

        Raises:
            ValueError: the shard keeps no identity (more shares than a group has identities).
        """
        index_in_group = torch.empty_like(ids.group)
        for g in ids.group.unique():
            members = (ids.group == g).nonzero().flatten()
            index_in_group[members] = torch.arange(len(members))
        keep = index_in_group % self.parts == self.part
        if self.groups is not None:
            keep &= torch.isin(ids.group, torch.tensor(self.groups, dtype=ids.group.dtype))
        rows = keep.nonzero().flatten()
        if len(rows) == 0:
            raise ValueError(f"shard {self.name!r} keeps no identity of the split (parts {self.parts})")
        return IdentitySet(z=ids.z[rows], group=ids.group[rows], keys=[ids.keys[int(i)] for i in rows])


def labelled_batch(
    world: ProceduralFaceWorld, ids: IdentitySet, batch_size: int, step: int, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """A training batch of labelled faces: a pure function of ``(seed, step)`` for a given identity set.

    Identities are drawn uniformly with replacement; every image has its own nuisance draw, so an identity seen
    twice looks different each time. The same step gives the same batch, so an interrupted run resumes exactly.

    Returns:
        ``(images uint8 N×3×112×112, labels N (index into ids), group N)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = make_generator("labelled", seed, step)
    labels = torch.randint(0, len(ids.keys), (batch_size,), generator=gen)
    group = ids.group[labels]
    images = world.synthesis(world.mapping(ids.z[labels], group), gen)
    return images, labels, group


def unlabelled_batch(
    world: ProceduralFaceWorld,
    batch_size: int,
    step: int,
    seed: int,
    split: str = "distill",
    shares: Tensor | None = None,
) -> dict[str, Tensor]:
    """A batch of fresh identities (online, label-free distillation), balanced over groups.

    A pure function of ``(seed, split, step)`` and ``shares``. Groups are dealt round-robin from a random first
    group then shuffled, so every group has ``batch_size // groups`` or one more images. ``shares`` (one positive
    weight per group, e.g. a fairness-adaptive balance) sets each group's count instead: see :func:`group_counts`.
    Equal shares give the same batch as none, draw for draw.

    Returns:
        ``{"images": uint8 N×3×112×112, "z": N×z_dim, "w": N×w_dim, "group": N}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = make_generator("unlabelled", seed, split, step)
    groups = len(world.group_names)
    offset = int(torch.randint(0, groups, (1,), generator=gen))
    if shares is None:
        group = (torch.arange(batch_size) + offset) % groups
    else:
        group = deal(group_counts(shares, batch_size, first=offset), first=offset)
    group = group[torch.randperm(batch_size, generator=gen)]
    z = world.sample_z(batch_size, gen)
    w = world.mapping(z, group)
    return {"images": world.synthesis(w, gen), "z": z, "w": w, "group": group}


def group_counts(shares: Tensor, total: int, first: int = 0) -> Tensor:
    """``total`` images split by ``shares`` (normalised) with the largest-remainder rule: sums to ``total`` exactly.

    Equal remainders go to groups in round-robin order from ``first``, so equal shares give exactly the counts of
    dealing ``total`` round-robin from ``first`` (the default batch's), and no group is favoured by its index.
    """
    shares = torch.as_tensor(shares, dtype=torch.float64)
    if shares.ndim != 1 or len(shares) == 0 or not bool((shares >= 0).all()) or float(shares.sum()) <= 0:
        raise ValueError(f"shares must be one weight >= 0 per group, not all 0, got {shares.tolist()}")
    exact = shares / shares.sum() * total
    counts = exact.floor().long()
    order = (torch.arange(len(shares)) + first) % len(shares)  # the tie order: round-robin from `first`
    ranked = order[torch.sort(exact[order] - counts[order], descending=True, stable=True).indices]
    counts[ranked[: total - int(counts.sum())]] += 1
    return counts


def deal(counts: Tensor, first: int = 0) -> Tensor:
    """Group ids dealt round-robin from group ``first``, each group until its count is used up.

    With the counts of a plain round-robin deal this is that deal, id for id (what keeps equal shares bit-identical
    to the default batch).
    """
    left = [int(c) for c in counts]
    total, out = sum(left), []
    g = first % len(left)
    while len(out) < total:
        if left[g] > 0:
            out.append(g)
            left[g] -= 1
        g = (g + 1) % len(left)
    return torch.tensor(out, dtype=torch.long)
