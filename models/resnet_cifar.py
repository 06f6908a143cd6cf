"""CIFAR ResNets (He et al. 2016, section 4.2): ResNet-20 / ResNet-56 (6n+2 layers).

Layout: conv3x3(16) + BN + ReLU, three stages of ``n`` BasicBlocks with 16/32/64 channels (stride 2 at the
start of stages 2 and 3), global average pool, linear classifier. Input 3x32x32, 10 classes by default.

Shortcut choice (documented and selectable): ``shortcut="A"`` (default) is the paper's CIFAR option A, a
parameter-free identity that subsamples spatially (``x[:, :, ::2, ::2]``) and zero-pads the new channels, so
ResNet-20 has the published 0.27M parameters. ``shortcut="B"`` uses a 1x1 strided conv + BN projection when
the shape changes (option B); pick it when a graph pass should see only conv/BN/add primitives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet56"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual shortcut (option A or B, see module docstring)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad_channels = planes - in_planes
        self.shortcut_kind = shortcut
        self.shortcut: nn.Module | None = None
        if (stride != 1 or in_planes != planes) and shortcut == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.needs_projection = stride != 1 or in_planes != planes

    def _option_a(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_channels > 0:
            half = self.pad_channels // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.pad_channels - half))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.needs_projection:
            identity = x
        elif self.shortcut is not None:
            identity = self.shortcut(x)
        else:
            identity = self._option_a(x)
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; ``depth`` must satisfy (depth - 2) % 6 == 0."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        shortcut: str = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CifarResNet: depth={depth} is not 6n+2 (e.g. 20, 32, 44, 56, 110)")
        if shortcut not in ("A", "B"):
            raise ValueError(f"CifarResNet: shortcut={shortcut!r} must be 'A' (pad) or 'B' (1x1 conv)")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        in_planes = widths[0]
        for stage, planes in enumerate(widths):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


def resnet20(num_classes: int = 10, shortcut: str = "A", dropout: float = 0.0) -> CifarResNet:
    """ResNet-20 (n=3), 0.27M parameters with option A."""
    return CifarResNet(20, num_classes=num_classes, shortcut=shortcut, dropout=dropout)


def resnet56(num_classes: int = 10, shortcut: str = "A", dropout: float = 0.0) -> CifarResNet:
    """ResNet-56 (n=9), 0.85M parameters with option A."""
    return CifarResNet(56, num_classes=num_classes, shortcut=shortcut, dropout=dropout)
