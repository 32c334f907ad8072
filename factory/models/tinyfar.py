"""TinyFaR-A/B/C (SynthDistill): timm's TinyNet trunk, globally pooled, then a linear layer to the embedding."""

from __future__ import annotations

import torch
from torch import nn

from factory.models.catalog import register_model


class TinyFaR(nn.Module):
    """``timm.create_model(variant, num_classes=0)`` (1280-d pooled features) + ``Linear(1280, embedding_dim)``."""

    def __init__(self, variant: str, embedding_dim: int = 512) -> None:
        super().__init__()
        import timm

        self.backbone = timm.create_model(variant, num_classes=0, pretrained=False)
        self.fc = nn.Linear(self.backbone.num_features, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised embeddings ``N×embedding_dim``."""
        return self.fc(self.backbone(x))


@register_model("tinyfar_a")
def tinyfar_a(**kw: int) -> nn.Module:
    """TinyFaR-A: 5,562,844 parameters, 253.5 MFLOPs at 112×112."""
    return TinyFaR("tinynet_a", **kw)


@register_model("tinyfar_b")
def tinyfar_b(**kw: int) -> nn.Module:
    """TinyFaR-B: 3,105,434 parameters, 150.9 MFLOPs at 112×112."""
    return TinyFaR("tinynet_b", **kw)


@register_model("tinyfar_c")
def tinyfar_c(**kw: int) -> nn.Module:
    """TinyFaR-C: 1,832,106 parameters, 76.3 MFLOPs at 112×112."""
    return TinyFaR("tinynet_c", **kw)
