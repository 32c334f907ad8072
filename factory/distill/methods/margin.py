"""The margin-loss baseline: the student trained from scratch with a margin head on labelled identities, no teacher.

Every distillation result is judged against it: a student of the same architecture, trained for the same steps on
procedural identities of the distill split with an (elastic) margin head, as the teacher itself was trained
(REFERENCE.md §4). The teacher stays the student's recorded parent (so validation compares the two), but the loss
never reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from factory.distill.methods.base import DISTILL_METHODS, Fail, MethodContext, check_head, embedding_dim
from factory.models.heads import create_head
from factory.recipe.schema import between
from factory.train.tasks import MarginClassificationTask


@DISTILL_METHODS.register("margin")
@dataclass
class MarginBaseline:
    """Identity classification of labelled procedural faces through a margin head, without a teacher signal.

    ``margin`` null is the head's own (ArcFace 0.5, CosFace 0.35); ``margin_std`` null the elastic heads' σ 0.05.
    ``scale`` defaults to the teacher's (``teacher.scale``), so the baseline trains the way the teacher did.
    """

    labelled: ClassVar[bool] = True  # the distill stage opens the source labelled and passes num_classes

    kind: str = "margin"
    head: str = field(default="elastic_arcface", metadata={"registry": "head"})
    margin: float | None = None  # its range depends on the head (checked with it)
    scale: float = field(default=32.0, metadata=between(gt=0))
    margin_std: float | None = field(default=None, metadata=between(ge=0))  # elastic heads only
    identities_per_group: int = field(default=100, metadata=between(ge=1))

    def check(self, fail: Fail) -> None:
        """The margin must be one the head can train with, and only an elastic head takes a ``margin_std``."""
        check_head(self.head, self.margin, self.margin_std, fail)

    def build(self, ctx: MethodContext) -> MarginClassificationTask:
        """The margin-classification task over the source's identities (the teacher is not part of it)."""
        if ctx.num_classes is None:
            raise ValueError(
                "distill.method margin trains on identity labels, and the source gave none: use a labelled source "
                "(distill.source: {kind: procedural})"
            )
        overrides = {} if self.margin is None else {"margin": self.margin}
        head = create_head(
            self.head,
            embedding_dim(ctx.student),
            ctx.num_classes,
            scale=self.scale,
            margin_std=self.margin_std,  # None is the head's default; check refuses it on a plain head
            **overrides,
        )
        return MarginClassificationTask(head)

    def describe(self) -> str:
        """One line for metrics and reports."""
        return f"margin baseline ({self.head}, no teacher)"
