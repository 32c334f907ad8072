"""Real and synthetic faces at one ratio inside every group: the batches of ``distill.source: {kind: real_synthetic}``.

Mixed data (seed 000) merges real and synthetic sources per group so that every group keeps its share; the paper's
best mix is 70 % real, 30 % synthetic. A global ratio (``kind: mix``) would let the real set's own group imbalance
through; here every batch is planned group by group:

1. Each group's part of the batch: equal (round-robin from a random first group, as a procedural batch), or, when
   the synthetic section balances groups adaptively, its :class:`~factory.data.sources.GroupBalancer`'s shares
   (learnt from the synthetic faces' agreement only: they are its samples).
2. The batch's real images: ``real_share`` of the batch by the largest-remainder rule, dealt over the groups in
   proportion to their parts, again by largest remainder. A group of 10 at 0.7 gets 7 real and 3 synthetic images,
   and no group is ever more than one image from its exact share.
3. Each group's real images are drawn from the real set's images of that group (uniform, with replacement, each
   flipped with p ½, keyed for the teacher cache). Its synthetic faces are either rendered by the synthetic source
   with exactly the planned group counts (``procedural``: :class:`PlannedGroups`), or drawn from a fixed synthetic
   set with groups as the real ones are (``files``, ``procedural_set``: :class:`FixedSyntheticSet`, e.g. DCFace
   with an ethnicity mapping), keyed after the real set's keys so that the two never share one.

A batch is its real images (in group order), then its synthetic ones. Feedback goes to the synthetic part only, as
the slice of its own samples, so dynamic re-sampling and an adaptive balance learn from what they rendered; a fixed
synthetic set learns nothing (its images are what they are). A re-sampled synthetic step re-renders the previous
step's faces in their groups, so it keeps the previous step's plan too. The last plan, the synthetic part's state
and the images each group has received (the composition the distill stage reports) are the source's state: a
resumed run draws the batches an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from factory.data.group_balance import GroupBalancer
from factory.data.source_context import SourceContext
from factory.data.static import NO_KEY, GroupedImages, draw_by_group, members_by_group
from factory.data.world.seeding import make_generator
from factory.data.world.splits import group_counts

STATE_KEYS = ("plan", "seen", "synthetic")


def fixed_set_context(ctx: SourceContext) -> SourceContext:
    """The context a fixed synthetic set is opened in: a split of its own.

    A ``procedural_set`` as the synthetic part then renders identities the real part's stand-in (split
    ``<split>-set``) never has, and its draws never repeat the real part's.
    """
    return dataclasses.replace(ctx, split=f"{ctx.split}-synthetic")


def real_count(batch_size: int, real_share: float) -> int:
    """Real images of a batch: ``real_share · batch_size`` by the largest-remainder rule."""
    return int(group_counts(torch.tensor([real_share, 1.0 - real_share]), batch_size)[0])


def plan_counts(shares: Tensor, batch_size: int, real_total: int, first: int) -> tuple[Tensor, Tensor]:
    """Real and synthetic images of every group: the groups' parts by ``shares``, ``real_total`` dealt over them.

    Both steps use the largest-remainder rule with ties dealt round-robin from group ``first``, so no group is
    favoured by its index; every group's real count is within one image of ``part · real_total / batch_size``.
    """
    parts = group_counts(shares, batch_size, first=first)
    real = group_counts(parts.double(), real_total, first=first) if real_total else torch.zeros_like(parts)
    return real, parts - real


class PlannedGroups:
    """The group counts a group-planned synthetic source deals, and the balance it learns.

    The mix sets :attr:`counts` before each step; the synthetic faces read them through :meth:`shares` (as they
    would read a balancer's) and render exactly that many faces of each group. An adaptive ``balancer`` (the
    synthetic section's) gets the synthetic part's feedback and proposes the groups' shares of the next batch
    (:meth:`target_shares`); without one every group gets an equal part.
    """

    def __init__(self, groups: int, balancer: GroupBalancer | None = None) -> None:
        self.groups, self.balancer = groups, balancer
        self.counts: Tensor | None = None

    def target_shares(self) -> Tensor:
        """The groups' shares of the next batch (real and synthetic images alike)."""
        if self.balancer is None:
            return torch.ones(self.groups, dtype=torch.float64)
        return self.balancer.shares()

    def shares(self) -> Tensor:
        """This step's synthetic faces per group (integer counts: the faces deal exactly these)."""
        if self.counts is None:
            raise RuntimeError("a group-planned synthetic source was asked for a batch before the mix planned it")
        return self.counts.double()

    def feedback(self, batch: dict[str, Any], per_sample: dict[str, Tensor]) -> None:
        """The adaptive balance, if any, learns from the synthetic part's samples."""
        if self.balancer is not None:
            self.balancer.feedback(batch, per_sample)

    def state_dict(self) -> dict[str, Any]:
        """The adaptive balance's state (none for equal parts)."""
        return {} if self.balancer is None else self.balancer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if self.balancer is not None:
            self.balancer.load_state_dict(state)
        elif state:
            raise ValueError(f"equal group parts have no state, got {sorted(state)}")


class FixedSyntheticSet:
    """A fixed synthetic set with groups as the synthetic part of a mix: drawn per group, exactly as the real part.

    Each step draws the :class:`PlannedGroups` counts the mix set (equal parts: a fixed set has no adaptive
    balance), uniform with replacement inside each group, each image flipped with p ½, from a generator of its own.
    Every key is offset by ``key_offset`` (the real set's key count, ``2·len(real)``): real keys are ``2·index +
    flip`` of the real set and synthetic ones of this set, and without the offset the teacher cache would serve the
    real image ``i``'s embedding for synthetic image ``i``. Nothing is fed back (no re-sampling: the images are
    fixed) and nothing is kept, so a step's batch is a function of the step alone.

    Args:
        images: the set (:meth:`grouped` of a ``files`` or ``procedural_set`` section).
        group_names: the world's groups.
        planned: where the mix sets each step's counts.
        key_offset: added to every key.
        ctx: the synthetic part's context (its own split: :func:`fixed_set_context`).
    """

    def __init__(
        self,
        images: GroupedImages,
        group_names: list[str],
        planned: PlannedGroups,
        key_offset: int,
        ctx: SourceContext,
    ) -> None:
        self.images, self.planned, self.key_offset, self.ctx = images, planned, key_offset, ctx
        self.members = members_by_group(images, group_names)

    def batch(self, step: int) -> dict[str, Any]:
        """The planned count of every group's images, keyed after the real set's keys."""
        gen = make_generator("real-synthetic-set", self.ctx.seed, self.ctx.split, step)
        batch, _ = draw_by_group(self.images, self.members, self.planned.shares().long(), gen)
        batch["keys"] = batch["keys"] + self.key_offset
        return batch

    def feedback(self, step: int, batch: dict[str, Any], per_sample: dict[str, Tensor]) -> None:
        """A fixed set does not adapt."""
        del step, batch, per_sample

    def state_dict(self) -> dict[str, Any]:
        """No state: the draws depend on the step alone."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore; a state with something in it belongs to another synthetic part."""
        if state:
            raise ValueError(f"a fixed synthetic set has no state, got {sorted(state)}")


class RealSyntheticBatches:
    """Every group's part of a batch filled ``real_share`` from the real set's images of that group, the rest synthetic.

    Args:
        cfg: the ``real_synthetic`` section (``real`` opens with ``grouped(ctx)``, ``synthetic`` with
            ``open_by_group(ctx)`` where it renders faces, else with ``grouped(ctx)``; the recipe check refuses kinds
            that can do neither).
        ctx: the stage's source context (label-free).
    """

    def __init__(self, cfg: Any, ctx: SourceContext) -> None:
        self.ctx, self.real_share = ctx, float(cfg.real_share)
        self.group_names = list(ctx.world.group_names)
        self.real = cfg.real.grouped(ctx)
        self.members = members_by_group(self.real, self.group_names)
        self.real_total = real_count(ctx.batch_size, self.real_share)
        synthetic_total = ctx.batch_size - self.real_total
        if self.real_share < 1 and (self.real_total == 0 or synthetic_total == 0):
            raise ValueError(
                f"real_share {self.real_share:g} of a batch of {ctx.batch_size} is {self.real_total} real and "
                f"{synthetic_total} synthetic images (expected at least one of each: a larger batch, or real_share 1 "
                "for real images only)"
            )
        self.synthetic: Any = None
        self.planned = PlannedGroups(len(self.group_names))
        if synthetic_total and hasattr(cfg.synthetic, "open_by_group"):
            self.synthetic, self.planned = cfg.synthetic.open_by_group(
                dataclasses.replace(ctx, batch_size=synthetic_total)
            )
        elif synthetic_total:
            part = fixed_set_context(dataclasses.replace(ctx, batch_size=synthetic_total))
            images = cfg.synthetic.grouped(part)
            self.synthetic = FixedSyntheticSet(images, self.group_names, self.planned, 2 * len(self.real), part)
        self._plan: Tensor | None = None  # (real, synthetic) per group of the last step: a re-sampled step keeps it
        self._synthetic_batch: dict[str, Any] | None = None
        self.seen = torch.zeros(len(self.group_names), 2, dtype=torch.long)  # real, synthetic images per group

    def batch(self, step: int) -> dict[str, Any]:
        """The real images of every group, then the synthetic ones.

        Rendered synthetic faces are never repeated (``keys`` −1); a fixed synthetic set's keys follow the real set's.
        """
        gen = make_generator("real-synthetic", self.ctx.seed, self.ctx.split, step)
        first = int(torch.randint(0, len(self.group_names), (1,), generator=gen))
        real, synthetic = plan_counts(self.planned.target_shares(), self.ctx.batch_size, self.real_total, first)
        parts = []
        if self.synthetic is not None:
            self.planned.counts = synthetic
            made = self.synthetic.batch(step)
            if "resampled" in made and bool(made["resampled"].all()):
                if self._plan is None:
                    raise RuntimeError(f"step {step} re-samples faces of a step whose plan this source never made")
                real, synthetic = self._plan.unbind(1)
            dealt = torch.bincount(made["groups"], minlength=len(self.group_names))
            if not torch.equal(dealt, synthetic):
                raise RuntimeError(
                    f"step {step}: the synthetic part dealt {dealt.tolist()}, planned {synthetic.tolist()}"
                )
            self._synthetic_batch = made
            keys = made["keys"] if "keys" in made else torch.full_like(made["groups"], NO_KEY)
            parts.append({"pixels": made["pixels"], "groups": made["groups"], "keys": keys})
        self._plan = torch.stack([real, synthetic], dim=1)
        drawn, _ = draw_by_group(self.real, self.members, real, gen)
        parts.insert(0, drawn)
        self.seen += self._plan
        return {key: torch.cat([p[key] for p in parts]) for key in ("pixels", "groups", "keys")}

    def feedback(self, step: int, batch: dict[str, Any], per_sample: dict[str, Tensor]) -> None:
        """The synthetic part gets the slice of the per-sample values that belongs to its faces."""
        del batch  # the concatenation: the synthetic part gets back the batch it made
        if self.synthetic is None:
            return
        own = {key: value[self.real_total :] for key, value in per_sample.items()}
        self.synthetic.feedback(step, self._synthetic_batch, own)

    def state_dict(self) -> dict[str, Any]:
        """The last plan, the images each group has received, and the synthetic part's state."""
        return {
            "plan": None if self._plan is None else self._plan.clone(),
            "seen": self.seen.clone(),
            "synthetic": {} if self.synthetic is None else self.synthetic.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; another number of groups belongs to another world and is refused."""
        if set(state) != set(STATE_KEYS):
            raise ValueError(f"real/synthetic source state holds {sorted(state)}, expected {sorted(STATE_KEYS)}")
        if tuple(state["seen"].shape) != tuple(self.seen.shape):
            raise ValueError(
                f"real/synthetic source state is for {len(state['seen'])} groups, this world has {len(self.seen)}"
            )
        if self.synthetic is not None:
            self.synthetic.load_state_dict(state["synthetic"])
        elif state["synthetic"]:
            raise ValueError("real/synthetic state holds a synthetic part's state, and this mix has real images only")
        self._plan = None if state["plan"] is None else state["plan"].clone()
        self.seen = state["seen"].clone()

    def report(self) -> dict[str, Any]:
        """The composition actually trained on: real and synthetic images per group and the real share of each."""
        groups = {}
        for name, (real, synthetic) in zip(self.group_names, self.seen.tolist(), strict=True):
            total = real + synthetic
            groups[name] = {"real": real, "synthetic": synthetic, "real_share": real / total if total else 0.0}
        real, synthetic = (int(x) for x in self.seen.sum(dim=0))
        return {
            "composition": {
                "real_share": self.real_share,
                "real": real,
                "synthetic": synthetic,
                "groups": groups,
            }
        }
