"""MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks and ReLU6.

Standard (t, c, n, s) table, first conv 32/2, last conv 1280. ``width_mult`` scales channels (rounded to a
multiple of 8, as in the reference); the last conv keeps 1280 unless width_mult > 1.

``cifar_stem=True`` (documented choice for 32x32 inputs): the first conv has stride 1 *and* the first
stride-2 stage (c=24) uses stride 1, so a 32x32 input ends at 4x4 instead of 1x1 (the common CIFAR port).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InvertedResidual", "MobileNetV2", "make_divisible", "mobilenetv2"]

# (expansion t, output channels c, repeats n, first stride s)
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (reference rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn_relu6(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=False),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t=1) -> 3x3 depthwise -> 1x1 linear projection; residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier; see module docstring for ``width_mult`` and ``cifar_stem``."""

    def __init__(
        self,
        num_classes: int = 10,
        width_mult: float = 1.0,
        cifar_stem: bool = True,
        dropout: float = 0.0,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"MobileNetV2: width_mult={width_mult} must be > 0")
        cin = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [_conv_bn_relu6(3, cin, 3, 1 if cifar_stem else 2)]
        for idx, (t, c, n, s) in enumerate(_SETTINGS):
            cout = make_divisible(c * width_mult, round_nearest)
            stride = 1 if (cifar_stem and idx == 1) else s
            for i in range(n):
                features.append(InvertedResidual(cin, cout, stride if i == 0 else 1, t))
                cin = cout
        features.append(_conv_bn_relu6(cin, self.last_channel, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def mobilenetv2(
    num_classes: int = 10, width_mult: float = 1.0, cifar_stem: bool = True, dropout: float = 0.0
) -> MobileNetV2:
    """MobileNetV2 (2.24M parameters at width 1.0, 10 classes)."""
    return MobileNetV2(num_classes, width_mult, cifar_stem, dropout)
