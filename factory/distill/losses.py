"""Knowledge-distillation losses between a student's and a teacher's embeddings, registered by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from factory.registry import Registry

KDLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KD_LOSSES: Registry[KDLoss] = Registry("KD loss")


@KD_LOSSES.register("mse")
def mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every embedding component (SynthDistill's feature loss)."""
    return F.mse_loss(student, teacher)
