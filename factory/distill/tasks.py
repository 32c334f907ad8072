"""Distillation tasks for the shared training loop."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from factory.distill.losses import KD_LOSSES
from factory.train.task import ModuleTask, TaskOutput
from factory.train.tasks import TASKS, model_input


@TASKS.register("feature_kd")
class FeatureDistillTask(ModuleTask):
    """Label-free feature KD (SynthDistill): a KD loss between student and frozen-teacher embeddings of one image.

    Each model sees the image through its own contract, so a teacher with another normalisation is still fed right.
    """

    def __init__(self, teacher: nn.Module, loss: str = "mse", normalize: bool = False) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.modules = {"teacher": self.teacher}  # moved to the device with the task; frozen, so not resumed
        self.loss = KD_LOSSES.get(loss)
        self.normalize = normalize

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> TaskOutput:
        """KD loss(student, teacher), plus the mean cosine between them as a readable agreement figure."""
        with torch.no_grad():
            target = self.teacher(model_input(self.teacher, batch["pixels"]))
        student = model(model_input(model, batch["pixels"]))
        if self.normalize:
            target, student = F.normalize(target), F.normalize(student)
        loss = self.loss(student, target)
        cosine = F.cosine_similarity(student.detach(), target, dim=1)
        # Per-sample agreement: what a re-sampling source (SynthDistill step 2) reads through its feedback hook.
        return TaskOutput(loss, {"cos": cosine.mean().item()}, per_sample={"agreement": cosine})
