"""IResNet with insightface arcface_torch's structure and state_dict keys (so ``backbone.pth`` loads strictly).

``iresnet_nano`` keeps the layout at a fraction of the width and depth: the teacher the build trains for the
procedural world on a CPU in minutes.
"""

from __future__ import annotations

import torch
from torch import nn

from factory.models.catalog import register_model


def _conv3x3(in_c: int, out_c: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_c, out_c, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """BN → conv3×3 → BN → PReLU → conv3×3 (stride) → BN, plus the shortcut; no activation after the add."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """insightface IResNet: every stage starts with stride 2 (112→56→28→14→7), head BN → FC → BN1d (frozen scale)."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        embedding_dim: int = 512,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1])
        self.layer3 = self._make_layer(widths[2], layers[2])
        self.layer4 = self._make_layer(widths[3], layers[3])
        self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(widths[3] * 7 * 7, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        # insightface fixes the embedding BN's scale at 1 and trains only its shift.
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-5))
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised embeddings ``N×embedding_dim``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


_DEPTHS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}


def _register(name: str, depths: tuple[int, int, int, int]) -> None:
    @register_model(name)
    def build(**kw: float) -> nn.Module:
        return IResNet(depths, **kw)

    build.__doc__ = f"insightface {name}: blocks {depths}."


for _name, _depths in _DEPTHS.items():
    _register(_name, _depths)


@register_model("iresnet_nano")
def iresnet_nano(**kw: float) -> nn.Module:
    """A narrow IResNet (blocks 1,1,1,1; widths 16/32/64/128) for teachers trained by the build on a CPU."""
    return IResNet((1, 1, 1, 1), widths=(16, 32, 64, 128), **kw)
