"""Helpers shared by the test modules."""

from __future__ import annotations

import torch
from torch import nn


def randomise_stats(model: nn.Module, seed: int = 0, prelu_max: float = 0.5) -> None:
    """Non-trivial BatchNorm statistics and PReLU slopes, as after training (fresh ones make BN an identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * prelu_max)
