"""What the one training loop trains with: a task (the loss), with state and a device.

A task turns ``(model, batch)`` into a :class:`TaskOutput`; its batches come from a source
(:class:`factory.data.sources.Source`). Both may carry state that must survive an interruption (a queue of past
teacher features, a latent sampler, an adaptor's BatchNorm statistics): :func:`factory.train.loop.fit` saves
``state_dict()`` of both in its resume checkpoint and restores them before the first resumed step, so a resumed run
is the run that was interrupted. Either may also have ``report() -> dict``, which a stage adds to its metrics (how a
teacher cache served the teacher's embeddings, which images a mix drew).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class TaskOutput:
    """What a task returns for one batch.

    ``loss`` is minimised; ``terms`` are named scalars to log; ``per_sample`` holds detached per-sample values a
    source may use as feedback (e.g. ``agreement``: the student-teacher cosine of each sample).
    """

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    per_sample: dict[str, torch.Tensor] = field(default_factory=dict)


class Task(Protocol):
    """Computes the loss of ``model`` on one batch."""

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> TaskOutput:
        """Loss and logged values of ``model`` on ``batch``."""
        ...

    def parameters(self) -> list[nn.Parameter]:
        """The task's own trainable parameters (a margin head's weights), optimised with the model's."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything of the task that must survive a resume (its parameters included)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...

    def prepare(self, device: torch.device) -> None:
        """Move the task's modules and buffers to ``device`` before training starts."""
        ...


class ModuleTask:
    """Defaults for a task whose state is the modules in :attr:`modules` (the trainable ones are resumed)."""

    modules: dict[str, nn.Module]  # set by each task's __init__
    trainable: tuple[str, ...] = ()  # names in ``modules`` whose parameters are optimised with the model

    def parameters(self) -> list[nn.Parameter]:
        """Parameters of the trainable modules."""
        return [p for name in self.trainable for p in self.modules[name].parameters()]

    def state_dict(self) -> dict[str, Any]:
        """The trainable modules' state dicts."""
        return {name: self.modules[name].state_dict() for name in self.trainable}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the trainable modules, strictly."""
        if set(state) != set(self.trainable):
            raise ValueError(f"task state holds {sorted(state)}, expected {sorted(self.trainable)}")
        for name in self.trainable:
            self.modules[name].load_state_dict(state[name])

    def prepare(self, device: torch.device) -> None:
        """Move every module to ``device``."""
        for module in self.modules.values():
            module.to(device)
