"""The distillation-method family: what ``distill.method: {kind: ...}`` names in a recipe.

A method is a config dataclass registered by ``kind`` (checked by the recipe loader like any tagged section) whose
``build`` returns the :class:`~factory.train.task.Task` the one training loop runs: feature KD, QUD, MST-KD, a margin
baseline. A new method is one more registered file in this package (imported by its ``__init__``). A method that
needs the teacher's embeddings calls the teacher through :class:`~factory.distill.teacher_cache.TeacherEmbeddings`
(static data is then embedded once per image and flip).

A method that trains on identity labels declares the class attribute ``labelled = True`` (and may have an
``identities_per_group`` field): the distill stage then opens its source labelled and passes ``num_classes``.

A method that distils from every teacher of the build (MST-KD) declares ``multi_teacher = True``: the stage then
loads them all, in the teacher stage's recorded order, into ``teachers``; every other method gets the first teacher
alone as ``teacher``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from factory.distill.teacher_cache import DEFAULT_CAPACITY_MB
from factory.models.heads import HEADS
from factory.registry import Registry

Fail = Callable[[str, str], None]  # (relative key, message): how a section reports a problem at its recipe line

DISTILL_METHODS: Registry[type] = Registry("distill method")


@dataclass(frozen=True)
class MethodContext:
    """What a method builds its task from.

    Attributes:
        teacher: the frozen teacher (its ``contract`` and ``embedding_dim`` describe its output).
        student: the network being trained.
        seed: the recipe's seed (a method's own random state, e.g. QUD's initial queue, derives from it).
        work_dir: the stage's folder, for anything a method writes beside the student.
        num_classes: identities of the source's labels, for a method that trains on them (``labelled = True``:
            the stage then opens a labelled source); None for label-free distillation.
        teacher_cache_mb: memory for the teacher's embeddings of static data, which a method that calls the teacher
            reads through :class:`~factory.distill.teacher_cache.TeacherEmbeddings` (0: none cached).
        teachers: every teacher, in the teacher stage's recorded order, for a method with ``multi_teacher = True``
            (``teacher`` is then the first); empty for the others.
        teacher_names: the teachers' artifact names, in the same order.
        train: the student's training settings, for a method that trains something of its own first (MST-KD's
            adaptor derives its optimiser and schedule from them).
        open_source: opens a fresh source of the stage's data (as the student's is opened), for such a method.
        progress: show progress bars in such a method's own training.
    """

    teacher: nn.Module
    student: nn.Module
    seed: int
    work_dir: Path | None = None
    num_classes: int | None = None
    teacher_cache_mb: float = DEFAULT_CAPACITY_MB
    teachers: tuple[nn.Module, ...] = ()
    teacher_names: tuple[str, ...] = ()
    train: Any = None  # a factory.recipe.TrainConfig
    open_source: Callable[[], Any] | None = None  # -> a factory.data.sources.Source
    progress: bool = False


def embedding_dim(model: nn.Module) -> int:
    """Size of a model's embedding, from its contract."""
    return int(model.contract.embedding_dim)


def check_head(head: str, margin: float | None, margin_std: float | None, fail: Fail) -> None:
    """A margin the head can train with, and a ``margin_std`` only for an elastic head (a method's ``check``)."""
    if head not in HEADS.names():
        return  # the registry field reports an unknown head itself
    cls = HEADS.get(head)
    if margin is not None:
        low, high = cls.margin_range
        if not low <= margin < high:
            fail("margin", f"got {margin!r} (expected a number in [{low:g}, {high:.4g}) for head {head!r})")
    if margin_std is not None and not getattr(cls, "elastic", False):
        elastic = ", ".join(n for n in HEADS.names() if getattr(HEADS.get(n), "elastic", False))
        fail(
            "margin_std",
            f"got {margin_std!r} for head {head!r}, whose margin is fixed "
            f"(expected null, or an elastic head: {elastic})",
        )


def describe_method(method: Any) -> dict[str, Any]:
    """The method's recipe section as plain data, for metrics and reports."""
    import dataclasses

    return dataclasses.asdict(method)
