"""Margin heads for identity classification (REFERENCE.md §4): logits = s·cos with a margin on the target class."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from factory.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head")


class MarginHead(nn.Module):
    """Class centres ``weight`` (classes × dim, N(0, 0.01)); subclasses put the margin on the target cosine.

    ``margin_range`` is ``[low, high)``, the margins a head can train with (``factory check`` refuses others). With
    many classes the non-target cosines sit around 0, so a margin that keeps the target logit at or below 0 even at
    θ = 0 leaves the target class no way to win: that is each head's upper end.
    """

    margin_range: tuple[float, float] = (0.0, math.inf)

    def __init__(self, embedding_dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim).normal_(0.0, 0.01))
        self.scale, self.margin = float(scale), float(margin)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """The target class's cosine after the margin."""
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits ``N×classes`` for cross-entropy."""
        cos = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1.0, 1.0)
        target = cos.gather(1, labels[:, None])
        return self.scale * cos.scatter(1, labels[:, None], self.target_logit(target))


@HEADS.register("cosface")
class CosFace(MarginHead):
    """CosFace: target s·(cos θ − m); m = 0.35 as ElasticFace (insightface uses 0.40)."""

    margin_range = (0.0, 1.0)  # cos θ − m <= 0 for every θ once m >= 1

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(embedding_dim, num_classes, scale, margin)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """Cos θ − m."""
        return cos - self.margin


@HEADS.register("arcface")
class ArcFace(MarginHead):
    """ArcFace: target s·cos(θ + m), m = 0.5."""

    margin_range = (0.0, math.pi / 2)  # cos(θ + m) <= 0 for every θ >= 0 once m >= π/2

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5) -> None:
        super().__init__(embedding_dim, num_classes, scale, margin)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """cos(θ + m) via cos·cos m − sin·sin m, which avoids acos's infinite gradient at cos = ±1.

        Past θ = π − m, cos(θ + m) would rise again and reward a worse angle; there the monotone
        continuation cos θ − m·sin(m)·... (insightface's ``cos θ − mm``) is used instead.
        """
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-9))
        phi = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        threshold = math.cos(math.pi - self.margin)
        return torch.where(cos > threshold, phi, cos - math.sin(math.pi - self.margin) * self.margin)


def create_head(name: str, embedding_dim: int, num_classes: int, **kw: float) -> nn.Module:
    """Build a registered margin head (``arcface``, ``cosface``); ``scale``/``margin`` override the defaults."""
    return HEADS.get(name)(embedding_dim, num_classes, **kw)
