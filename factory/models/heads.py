"""Margin heads for identity classification (REFERENCE.md §4): logits = s·cos with a margin on the target class.

Plain heads (``cosface``, ``arcface``) put one fixed margin m on every sample. Elastic heads (ElasticFace:
``elastic_cosface``, ``elastic_arcface``) draw a fresh margin mᵢ ~ N(m, σ) per sample and per forward; their "+"
variants (``elastic_cosface_plus``, ``elastic_arcface_plus``) hand the batch's smallest margins to the samples
closest to their class centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from factory.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head")

# The elastic heads' spread: ElasticFace's training configs use σ = 0.05; its constructor default of 0.0125 is not
# what the paper trained with (REFERENCE.md §4).
ELASTIC_MARGIN_STD = 0.05


def cosface_target(cos: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """CosFace's target cosine cos θ − m, ``margin`` broadcast against ``cos`` (one value or one per sample)."""
    return cos - margin


def arcface_target(cos: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """ArcFace's target cosine cos(θ + m), ``margin`` broadcast against ``cos`` (one value or one per sample).

    Computed as cos·cos m − sin·sin m, which avoids acos's infinite gradient at cos = ±1. Past θ = π − m,
    cos(θ + m) would rise again and reward a worse angle; there the monotone continuation cos θ − m·sin m
    (insightface's ``cos θ − mm``) is used instead. With cos(π − m) = −cos m the threshold needs no second cosine.
    """
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-9))
    cos_m, sin_m = torch.cos(margin), torch.sin(margin)
    phi = cos * cos_m - sin * sin_m
    return torch.where(cos > -cos_m, phi, cos - sin_m * margin)


class MarginHead(nn.Module):
    """Class centres ``weight`` (classes × dim, N(0, 0.01)); subclasses put the margin on the target cosine.

    ``margin_range`` is ``[low, high)``, the margins a head can train with (``factory check`` refuses others). With
    many classes the non-target cosines sit around 0, so a margin that keeps the target logit at or below 0 even at
    θ = 0 leaves the target class no way to win: that is each head's upper end. ``elastic`` says whether the head
    draws its margins around ``margin`` (and so takes a ``margin_std``).
    """

    margin_range: tuple[float, float] = (0.0, math.inf)
    elastic: bool = False

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
        # The same tensor arithmetic as the elastic head, so that σ = 0 reproduces this head bit for bit.
        return cosface_target(cos, torch.full_like(cos, self.margin))


@HEADS.register("arcface")
class ArcFace(MarginHead):
    """ArcFace: target s·cos(θ + m), m = 0.5."""

    margin_range = (0.0, math.pi / 2)  # cos(θ + m) <= 0 for every θ >= 0 once m >= π/2

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5) -> None:
        super().__init__(embedding_dim, num_classes, scale, margin)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """cos(θ + m) with its monotone continuation past θ = π − m (see :func:`arcface_target`)."""
        return arcface_target(cos, torch.full_like(cos, self.margin))


class ElasticMarginHead(MarginHead):
    """ElasticFace: the margin of each sample is drawn afresh at every forward, mᵢ ~ N(m, σ).

    Randomness comes from torch's global RNG (on the embeddings' device), so a training loop that saves and
    restores the RNG state resumes the same draws; set ``generator`` (here or as an attribute) for draws that
    depend on nothing else, e.g. in tests. The draws are not clipped: with m well inside ``margin_range`` and a
    small σ a sample outside it is many σ away.

    With ``plus`` (the "+" variants) the drawn margins are assigned by rank: sorted ascending, the k-th smallest
    goes to the sample with the k-th largest target cosine (ties in the order of the batch), so the samples
    closest to their class centre get the smallest margins.

    In eval mode every sample gets the mean margin m: evaluation (a validation loss) should not be noisy, and m is
    the margin the draws are centred on.

    ``last_margins`` holds the per-sample margins (``N×1``, detached) of the latest forward.
    """

    elastic = True
    plus = False  # the "+" variants assign the drawn margins by rank
    default_margin: float  # each head's paper value of m
    target_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        scale: float = 64.0,
        margin: float | None = None,
        margin_std: float = ELASTIC_MARGIN_STD,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(embedding_dim, num_classes, scale, self.default_margin if margin is None else margin)
        margin_std = float(margin_std)
        if not (math.isfinite(margin_std) and margin_std >= 0):
            raise ValueError(f"margin_std must be a finite number >= 0, got {margin_std!r}")
        self.margin_std, self.generator = margin_std, generator
        self.last_margins: torch.Tensor | None = None

    def draw_margins(self, cos: torch.Tensor) -> torch.Tensor:
        """Per-sample margins (shaped like ``cos``, the ``N×1`` target cosines) for one forward."""
        if not self.training:
            return torch.full_like(cos, self.margin)
        if self.generator is None:
            noise = torch.randn(cos.shape, device=cos.device)
        else:
            # A generator draws on its own device only; the margins then follow the embeddings.
            noise = torch.randn(cos.shape, generator=self.generator, device=self.generator.device).to(cos.device)
        margins = (noise * self.margin_std + self.margin).to(cos.dtype)
        if self.plus:
            ascending = margins.flatten().sort().values
            # Stable, so equal cosines keep the batch order: the same input always gets the same margins.
            closest_first = cos.detach().flatten().sort(descending=True, stable=True).indices
            margins = torch.empty_like(ascending).scatter_(0, closest_first, ascending).view_as(cos)
        return margins

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """The target cosine after this forward's margins (each call draws new ones in training mode)."""
        margins = self.draw_margins(cos)
        self.last_margins = margins.detach()
        return self.target_fn(cos, margins)


@HEADS.register("elastic_cosface")
class ElasticCosFace(ElasticMarginHead):
    """ElasticCosFace: target s·(cos θ − mᵢ), mᵢ ~ N(0.35, 0.05)."""

    margin_range = CosFace.margin_range
    default_margin = 0.35
    target_fn = staticmethod(cosface_target)


@HEADS.register("elastic_arcface")
class ElasticArcFace(ElasticMarginHead):
    """ElasticArcFace: target s·cos(θ + mᵢ), mᵢ ~ N(0.5, 0.05), with ArcFace's continuation past θ = π − mᵢ."""

    margin_range = ArcFace.margin_range
    default_margin = 0.5
    target_fn = staticmethod(arcface_target)


@HEADS.register("elastic_cosface_plus")
class ElasticCosFacePlus(ElasticCosFace):
    """ElasticCosFace+: the batch's margins assigned by rank, smallest to the highest target cosine."""

    plus = True


@HEADS.register("elastic_arcface_plus")
class ElasticArcFacePlus(ElasticArcFace):
    """ElasticArcFace+: the batch's margins assigned by rank, smallest to the highest target cosine."""

    plus = True


def create_head(name: str, embedding_dim: int, num_classes: int, **kw: Any) -> nn.Module:
    """Build a registered margin head; ``scale``/``margin`` override the defaults.

    ``margin_std`` (σ) is for the elastic heads only; None means the head's default (0.05). An elastic head also
    takes ``generator`` (a :class:`torch.Generator` for its margin draws).
    """
    cls = HEADS.get(name)
    if kw.get("margin_std", 0.0) is None:
        del kw["margin_std"]
    if "margin_std" in kw and not getattr(cls, "elastic", False):
        elastic = ", ".join(n for n in HEADS.names() if getattr(HEADS.get(n), "elastic", False))
        raise ValueError(f"head {name!r} has a fixed margin: margin_std is for the elastic heads ({elastic})")
    return cls(embedding_dim, num_classes, **kw)
