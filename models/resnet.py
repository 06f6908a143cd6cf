"""ResNet-18 with the ImageNet layout (conv7x7/2, maxpool, 4 stages 64-128-256-512, adaptive avgpool, fc).

The adaptive pool makes it run on 32x32 (layer4 is 1x1) or 64x64 inputs unchanged. ``small_input=True``
swaps the stem for conv3x3/1 without maxpool (the usual CIFAR adaptation); ``base_width`` scales all stages so
tests and searches can use a slimmer copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ResNet", "resnet18"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; 1x1 conv-BN projection shortcut when the shape changes (torchvision style)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet(nn.Module):
    """BasicBlock ResNet; ``layers`` gives the number of blocks per stage ((2, 2, 2, 2) = ResNet-18)."""

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        num_classes: int = 1000,
        base_width: int = 64,
        small_input: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"ResNet: layers={layers} must be 4 positive block counts")
        if small_input:
            self.conv1 = nn.Conv2d(3, base_width, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(base_width)
        in_planes = base_width
        stages = []
        for i, n in enumerate(layers):
            planes = base_width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


def resnet18(
    num_classes: int = 10, base_width: int = 64, small_input: bool = False, dropout: float = 0.0
) -> ResNet:
    """ResNet-18 (11.2M parameters at base_width 64, num_classes 10)."""
    return ResNet((2, 2, 2, 2), num_classes, base_width, small_input, dropout)
