"""Feature KD (SynthDistill, QuantFace): a loss between the student's and the frozen teacher's embedding of an image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import nn

from factory.distill.losses import KD_LOSSES
from factory.distill.methods.base import DISTILL_METHODS, MethodContext, embedding_dim
from factory.distill.teacher_cache import DEFAULT_CAPACITY_MB, TeacherEmbeddings
from factory.train.task import ModuleTask, TaskOutput
from factory.train.tasks import model_input


class FeatureDistillTask(ModuleTask):
    """Label-free feature KD: a KD loss between student and frozen-teacher embeddings of one image.

    Each model sees the image through its own contract, so a teacher with another normalisation is still fed right.
    """

    def __init__(
        self,
        teacher: nn.Module,
        loss: str = "mse",
        normalize: bool = False,
        cache_mb: float = DEFAULT_CAPACITY_MB,
    ) -> None:
        self.targets = TeacherEmbeddings(teacher, cache_mb)  # the teacher, called once per static image and flip
        self.teacher = self.targets.teacher
        self.modules = {"teacher": self.teacher}  # moved to the device with the task; frozen, so not resumed
        self.loss = KD_LOSSES.get(loss)
        self.normalize = normalize

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> TaskOutput:
        """KD loss(student, teacher), plus the mean cosine between them as a readable agreement figure."""
        target = self.targets(batch)
        student = model(model_input(model, batch["pixels"]))
        if self.normalize:
            target, student = F.normalize(target), F.normalize(student)
        loss = self.loss(student, target)
        cosine = F.cosine_similarity(student.detach(), target, dim=1)
        # Per-sample agreement: what a re-sampling source (SynthDistill's step 2) reads through its feedback hook.
        return TaskOutput(loss, {"cos": cosine.mean().item()}, per_sample={"agreement": cosine})

    def report(self) -> dict[str, Any]:
        """How the teacher's embeddings were obtained (the cache's counts)."""
        return {"teacher_cache": self.targets.report()}


def require_same_dim(ctx: MethodContext, method: str) -> None:
    """Refuse a teacher and student whose embeddings cannot be compared without an adaptor."""
    teacher, student = embedding_dim(ctx.teacher), embedding_dim(ctx.student)
    if teacher != student:
        raise ValueError(
            f"distill.method {method}: the teacher's embedding has {teacher} dimensions, the student's {student}; "
            "they must match (or use an adaptor: {kind: mst_kd})"
        )


@DISTILL_METHODS.register("feature_kd")
@dataclass
class FeatureKD:
    """Feature KD: ``loss`` between the student's and the teacher's embedding of the same image.

    SynthDistill uses the MSE of raw embeddings (``normalize: false``); QuantFace and MST-KD normalise both first.
    """

    needs_same_dim = True  # compares the embeddings directly: `factory check` refuses two sizes

    kind: str = "feature_kd"
    loss: str = field(default="mse", metadata={"registry": "kd_loss"})
    normalize: bool = False

    def build(self, ctx: MethodContext) -> FeatureDistillTask:
        """The task for the training loop."""
        require_same_dim(ctx, self.kind)
        return FeatureDistillTask(ctx.teacher, loss=self.loss, normalize=self.normalize, cache_mb=ctx.teacher_cache_mb)

    def describe(self) -> str:
        """One line for metrics and reports."""
        return f"feature KD ({self.loss}, {'normalised' if self.normalize else 'raw'} embeddings)"
