"""MobileFaceNet with insightface arcface_torch's layout and state_dict key names.

``mobilefacenet`` is the papers' student (blocks 1,4,6,2 at scale 1: 1.2 M parameters, ~442 MFLOPs); ``mbf`` is
arcface_torch's default (scale 2) and ``mbf_large`` its large variant, so insightface checkpoints load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from factory.models.catalog import register_model


class ConvBlock(nn.Module):
    """Conv (no bias) → BN → PReLU."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(num_features=out_c),
            nn.PReLU(num_parameters=out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv (no bias) → BN, no activation."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(num_features=out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.layers(x)


class DepthWise(nn.Module):
    """1×1 expand → k×k depthwise (with stride) → 1×1 project, with an optional residual connection."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        residual: bool = False,
        kernel: int = 3,
        stride: int = 2,
        padding: int = 1,
        groups: int = 1,
    ):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, groups, kernel=1),
            ConvBlock(groups, groups, kernel=kernel, stride=stride, padding=padding, groups=groups),
            LinearBlock(groups, out_c, kernel=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``num_block`` residual depthwise blocks at constant width."""

    def __init__(self, c: int, num_block: int, groups: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, True, kernel, stride, padding, groups) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the blocks."""
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv head: 7×7 depthwise LinearBlock → flatten → Linear (no bias) → BatchNorm1d."""

    def __init__(self, embedding_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, kernel=7, groups=512),
            nn.Flatten(),
            nn.Linear(512, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the head."""
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """arcface_torch's MobileFaceNet; the depthwise group widths (128/256/512) do not scale, as in insightface."""

    def __init__(self, blocks: tuple[int, ...] = (1, 4, 6, 2), scale: int = 1, embedding_dim: int = 512):
        super().__init__()
        self.layers = nn.ModuleList([ConvBlock(3, 64 * scale, kernel=3, stride=2, padding=1)])
        if blocks[0] == 1:
            self.layers.append(ConvBlock(64 * scale, 64 * scale, kernel=3, stride=1, padding=1, groups=64))
        else:
            self.layers.append(Residual(64 * scale, blocks[0], groups=128))
        self.layers.extend(
            [
                DepthWise(64 * scale, 64 * scale, kernel=3, stride=2, padding=1, groups=128),
                Residual(64 * scale, blocks[1], groups=128),
                DepthWise(64 * scale, 128 * scale, kernel=3, stride=2, padding=1, groups=256),
                Residual(128 * scale, blocks[2], groups=256),
                DepthWise(128 * scale, 128 * scale, kernel=3, stride=2, padding=1, groups=512),
                Residual(128 * scale, blocks[3], groups=256),
            ]
        )
        self.conv_sep = ConvBlock(128 * scale, 512, kernel=1)
        self.features = GDC(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised embeddings ``N×embedding_dim``."""
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


@register_model("mobilefacenet")
def mobilefacenet(**kw: int) -> nn.Module:
    """The papers' MobileFaceNet (QUD, QuantFace): blocks (1,4,6,2), scale 1, ~1.2 M parameters."""
    return MobileFaceNet(blocks=(1, 4, 6, 2), scale=1, **kw)


@register_model("mbf")
def mbf(**kw: int) -> nn.Module:
    """Insightface ``mbf``: blocks (1,4,6,2), scale 2, 2,059,520 parameters."""
    return MobileFaceNet(blocks=(1, 4, 6, 2), scale=2, **kw)


@register_model("mbf_large")
def mbf_large(**kw: int) -> nn.Module:
    """Insightface ``mbf_large``: blocks (2,8,12,4), scale 4."""
    return MobileFaceNet(blocks=(2, 8, 12, 4), scale=4, **kw)
