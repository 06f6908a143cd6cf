"""Small ConvNeXt for 32x32 inputs (Liu et al. 2022 block design, CIFAR-sized stages).

Block: depthwise 7x7 conv -> LayerNorm over channels -> Linear(dim, 4 dim) -> GELU -> Linear(4 dim, dim) ->
layer scale (gamma, init ``layer_scale_init``) -> residual. Stem: ``stem_patch`` x ``stem_patch`` patchify
conv + LayerNorm (default patch 2, a documented choice so 32x32 keeps 16/8/4/2 resolutions over the 4 stages;
ImageNet ConvNeXt uses 4). Downsampling between stages: LayerNorm + 2x2/2 conv. Head: global average pool ->
LayerNorm -> Linear. Drop-path is omitted (train-mode determinism); ``dropout`` sits before the head.
Defaults depths (2, 2, 6, 2), dims (32, 64, 128, 256): the ConvNeXt-T depth ratio at CIFAR width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvNeXt", "ConvNeXtBlock", "LayerNorm2d", "convnext_tiny_cifar"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an NCHW tensor (permute -> layer_norm -> permute)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LN -> inverted bottleneck MLP (GELU) -> layer scale -> residual."""

    def __init__(self, dim: int, layer_scale_init: float = 1e-6, kernel_size: int = 7) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma: nn.Parameter | None = (
            nn.Parameter(layer_scale_init * torch.ones(dim)) if layer_scale_init > 0 else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Four-stage ConvNeXt classifier; see module docstring for the CIFAR choices."""

    def __init__(
        self,
        num_classes: int = 10,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        dims: tuple[int, ...] = (32, 64, 128, 256),
        stem_patch: int = 2,
        layer_scale_init: float = 1e-6,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"ConvNeXt: depths={depths} and dims={dims} must be non-empty, same length")
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(3, dims[0], stem_patch, stride=stem_patch), LayerNorm2d(dims[0], eps=1e-6)
            )
        )
        for i in range(1, len(dims)):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dims[i], 2, stride=2)
                )
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(d, layer_scale_init) for _ in range(n)))
            for d, n in zip(dims, depths, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dims[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        x = self.norm(x.mean(dim=(2, 3)))
        return self.head(self.dropout(x))


def convnext_tiny_cifar(
    num_classes: int = 10,
    depths: tuple[int, ...] = (2, 2, 6, 2),
    dims: tuple[int, ...] = (32, 64, 128, 256),
    stem_patch: int = 2,
    layer_scale_init: float = 1e-6,
    dropout: float = 0.0,
) -> ConvNeXt:
    """CIFAR-sized ConvNeXt (2.18M parameters at the defaults)."""
    return ConvNeXt(num_classes, tuple(depths), tuple(dims), stem_patch, layer_scale_init, dropout)
