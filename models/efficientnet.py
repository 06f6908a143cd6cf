"""EfficientNet-B0-style network (Tan & Le 2019): MBConv blocks with SiLU and squeeze-excitation.

B0 stage table (expand, kernel, stride, out channels, repeats); ``width_mult`` scales channels (rounded to a
multiple of 8) and ``depth_mult`` scales repeats (ceil), exactly as the compound-scaling rule. SE squeezes to
``0.25 * block input channels``. Stochastic depth (drop-connect) is omitted on purpose: it is random in train
mode, and the zoo promises deterministic train-mode outputs; ``dropout`` (default 0.0) sits before the head.

``cifar_stem=True`` uses stride 1 in the stem so 32x32 inputs end at 2x2 instead of 1x1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .mobilenetv2 import make_divisible

__all__ = ["EfficientNet", "MBConv", "SqueezeExcitation", "efficientnet_b0"]

# (expand ratio, kernel, first stride, output channels, repeats)
_B0: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def _conv_bn_silu(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.SiLU(),
    )


class SqueezeExcitation(nn.Module):
    """Global average pool -> 1x1 reduce -> SiLU -> 1x1 expand -> sigmoid gate."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.fc2(F.silu(self.fc1(s))))
        return x * s


class MBConv(nn.Module):
    """1x1 expand (skipped for ratio 1) -> kxk depthwise -> SE -> 1x1 linear projection (+ residual)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, se_ratio: float) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_silu(cin, hidden, 1, 1))
        layers.append(_conv_bn_silu(hidden, hidden, kernel, stride, groups=hidden))
        if se_ratio > 0:
            layers.append(SqueezeExcitation(hidden, max(1, int(cin * se_ratio))))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_res else out


class EfficientNet(nn.Module):
    """EfficientNet with the B0 table scaled by ``width_mult`` / ``depth_mult``."""

    def __init__(
        self,
        num_classes: int = 10,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        cifar_stem: bool = True,
        se_ratio: float = 0.25,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width_mult <= 0 or depth_mult <= 0:
            raise ValueError(f"EfficientNet: width_mult={width_mult}, depth_mult={depth_mult} must be > 0")
        cin = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [_conv_bn_silu(3, cin, 3, 1 if cifar_stem else 2)]
        for expand, k, s, c, n in _B0:
            cout = make_divisible(c * width_mult)
            for i in range(int(math.ceil(n * depth_mult))):
                layers.append(MBConv(cin, cout, k, s if i == 0 else 1, expand, se_ratio))
                cin = cout
        head = make_divisible(1280 * width_mult)
        layers.append(_conv_bn_silu(cin, head, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -1 / math.sqrt(m.out_features), 1 / math.sqrt(m.out_features))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def efficientnet_b0(
    num_classes: int = 10,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    cifar_stem: bool = True,
    dropout: float = 0.0,
) -> EfficientNet:
    """EfficientNet-B0 (4.0M parameters at 1.0/1.0 with 10 classes); shrink with the multipliers."""
    return EfficientNet(num_classes, width_mult, depth_mult, cifar_stem, dropout=dropout)
