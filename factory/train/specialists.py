"""Plans for several teachers (MST-KD, seed 001): which identities each teacher of ``teacher.specialists`` sees.

A plan is registered by its ``teacher.specialists`` name and turns the world's group names into the teachers to
train, in the order their embeddings are later concatenated (MST-KD's adaptor input). Every plan deals out the
identities one teacher would train on (``teacher.identities_per_group`` of every group of the ``teacher`` split):

- ``per_group``: one specialist per group, on all of that group's identities and nothing else (the paper's teachers:
  four, each on one ethnicity's 7k identities of BUPT-Balancedface).
- ``balanced``: ``teacher.count`` teachers (default one per group), each on an equal share of every group's
  identities, the shares disjoint (the paper's baseline: the identities split at random into four ethnicity-balanced
  subsets).

So with one teacher per group both plans train the same number of teachers, each on the same number of identities
(``identities_per_group``) for the same ``teacher.train.steps``: the comparison is at equal total budget, and only
how the identities are dealt differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from factory.data.world.seeding import stable_seed
from factory.data.world.splits import IdentityShard
from factory.recipe import TeacherConfig
from factory.registry import Registry


@dataclass(frozen=True)
class TeacherPlan:
    """One teacher of several: its artifact name, the identities it trains on and its seed.

    Attributes:
        name: the artifact (``teacher_<group>`` or ``teacher_<i>``); its checkpoint is ``<name>.pt``.
        shard: its part of the teacher split's identities.
        seed: seeds its initial weights and margin draws (torch's generator), derived from the recipe's seed.
    """

    name: str
    shard: IdentityShard
    seed: int

    @property
    def file(self) -> str:
        """The teacher's checkpoint, in the stage's folder."""
        return f"{self.name}.pt"


Plan = Callable[[TeacherConfig, Sequence[str], int], list[TeacherPlan]]
SPECIALISTS: Registry[Plan] = Registry("teacher specialists")


def _plan(name: str, shard: IdentityShard, seed: int) -> TeacherPlan:
    # Each teacher its own seed: teachers that started from the same weights would be less different than the paper's.
    return TeacherPlan(name, shard, stable_seed(seed, "teacher", name))


@SPECIALISTS.register("per_group")
def per_group(cfg: TeacherConfig, groups: Sequence[str], seed: int) -> list[TeacherPlan]:
    """One specialist per group, in the world's group order, each on its group's identities only."""
    del cfg  # every identity of the group: nothing to choose
    names = [f"teacher_{group}" for group in groups]
    return [_plan(name, IdentityShard(name, groups=(g,)), seed) for g, name in enumerate(names)]


@SPECIALISTS.register("balanced")
def balanced(cfg: TeacherConfig, groups: Sequence[str], seed: int) -> list[TeacherPlan]:
    """``cfg.count`` teachers (null: one per group), teacher i on every group's identities i, i + count, ..."""
    count = cfg.count or len(groups)
    return [_plan(f"teacher_{i}", IdentityShard(f"teacher_{i}", part=i, parts=count), seed) for i in range(count)]


def teacher_plans(cfg: TeacherConfig, groups: Sequence[str], seed: int) -> list[TeacherPlan]:
    """The teachers ``cfg.specialists`` asks for, in their recorded order."""
    return SPECIALISTS.get(cfg.specialists)(cfg, groups, seed)
