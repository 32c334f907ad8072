"""The distillation-method family: what ``distill.method: {kind: ...}`` names in a recipe.

A method is a config dataclass registered by ``kind`` (checked by the recipe loader like any tagged section) whose
``build`` returns the :class:`~factory.train.task.Task` the one training loop runs: feature KD, QUD, MST-KD, a margin
baseline. A new method is one more registered file in this package (imported by its ``__init__``). A method that
needs the teacher's embeddings calls the teacher through :class:`~factory.distill.teacher_cache.TeacherEmbeddings`
(static data is then embedded once per image and flip).

A method that trains on identity labels declares the class attribute ``labelled = True`` (and may have an
``identities_per_group`` field): the distill stage then opens its source labelled and passes ``num_classes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from factory.distill.teacher_cache import DEFAULT_CAPACITY_MB
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
    """

    teacher: nn.Module
    student: nn.Module
    seed: int
    work_dir: Path | None = None
    num_classes: int | None = None
    teacher_cache_mb: float = DEFAULT_CAPACITY_MB


def embedding_dim(model: nn.Module) -> int:
    """Size of a model's embedding, from its contract."""
    return int(model.contract.embedding_dim)


def describe_method(method: Any) -> dict[str, Any]:
    """The method's recipe section as plain data, for metrics and reports."""
    import dataclasses

    return dataclasses.asdict(method)
