"""Optimisers and learning-rate schedules built from a :class:`~factory.recipe.TrainConfig`."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

import torch

from factory.recipe import TrainConfig

# Each decaying schedule's factor when the recipe leaves `gamma` null: "step" has always halved (SynthDistill's code
# halves Adam's lr every 10 epochs); "multistep" is the papers' x0.1 at fixed epochs.
DEFAULT_GAMMA = {"step": 0.5, "multistep": 0.1}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, weight decay), Adam or AdamW as the recipe says."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def gamma(cfg: TrainConfig) -> float:
    """The factor of each decay of a "step" or "multistep" schedule (the recipe's, or the schedule's own)."""
    return cfg.gamma if cfg.gamma is not None else DEFAULT_GAMMA[cfg.schedule]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warm-up, then cosine, constant, step or multistep.

    Decay points (``step_every`` multiples, ``milestones``) count from step 0, not from the end of the warm-up, so a
    milestone means the same step whatever the warm-up; during the warm-up the ramp alone applies.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return gamma(cfg) ** (step // cfg.step_every)
    if cfg.schedule == "multistep":
        return gamma(cfg) ** bisect.bisect_right(cfg.milestones, step)  # milestones at or before `step`
    span = max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over :func:`lr_factor` (its state is part of every resumable checkpoint)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
