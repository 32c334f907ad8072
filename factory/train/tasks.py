"""Training tasks for the shared loop, registered by name: each turns (model, batch) into a loss and named terms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from factory.data.preprocess import to_model_input
from factory.registry import Registry
from factory.train.task import ModuleTask, Task, TaskOutput

TASKS: Registry[Callable[..., Task]] = Registry("task")


def model_input(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → this model's normalised input (its own contract), in channels_last for faster CPU convs."""
    return to_model_input(pixels, model.contract).contiguous(memory_format=torch.channels_last)


@TASKS.register("margin_classification")
class MarginClassificationTask(ModuleTask):
    """Identity classification through a margin head (ArcFace/CosFace): how teachers are trained."""

    trainable = ("head",)

    def __init__(self, head: nn.Module) -> None:
        self.head = head
        self.modules = {"head": head}

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> TaskOutput:
        """Cross-entropy over margin logits."""
        embeddings = model(self.inputs(model, batch))
        logits = self.head(embeddings, batch["labels"])
        loss = F.cross_entropy(logits, batch["labels"])
        with torch.no_grad():
            # Plain (margin-free) accuracy: how well identities are separated, a readable progress signal.
            cos = F.linear(F.normalize(embeddings), F.normalize(self.head.weight))
            acc = (cos.argmax(1) == batch["labels"]).float().mean().item()
        return TaskOutput(loss, {"acc": acc})

    def inputs(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """What ``model`` embeds: the batch's pixels in its own input convention."""
        return model_input(model, batch["pixels"])
