"""Distillation tasks for the shared training loop."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from factory.train.loop import TaskOutput
from factory.train.tasks import model_input


class FeatureDistillTask:
    """Label-free feature KD (SynthDistill): MSE between student and frozen-teacher embeddings of the same image.

    Each model sees the image through its own contract, so a teacher with another normalisation is still fed right.
    """

    def __init__(self, teacher: nn.Module, normalize: bool = False) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.normalize = normalize

    def parameters(self) -> list[nn.Parameter]:
        """Nothing of the task's own is trained."""
        return []

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> TaskOutput:
        """MSE(student, teacher), plus the mean cosine between them as a readable agreement figure."""
        with torch.no_grad():
            target = self.teacher(model_input(self.teacher, batch["pixels"]))
        student = model(model_input(model, batch["pixels"]))
        if self.normalize:
            target, student = F.normalize(target), F.normalize(student)
        loss = F.mse_loss(student, target)
        cosine = F.cosine_similarity(student.detach(), target, dim=1)
        batch["agreement"] = cosine  # per-sample, for latent re-sampling (SynthDistill step 2) downstream
        return TaskOutput(loss, {"cos": cosine.mean().item()})
