"""HRNet-lite: a small multi-resolution segmentation network (after Wang et al. 2020, HRNet).

Layout (all choices documented here, sized for 32x32 CIFAR-like inputs):

* stem: conv3x3 (stride ``stem_stride``, default 1) + BN + ReLU to ``widths[0]`` channels;
* stage 1: branch 0 alone; stage s (2..len(widths)): a *transition* adds branch s-1 from the lowest-resolution
  branch with a strided 3x3 conv-BN-ReLU, so branch b runs at 1/2^b of the stem resolution (1, 1/2, 1/4);
* each stage has ``num_modules`` HR modules; a module runs ``num_blocks[b]`` BasicBlocks on every branch b and
  then *fuses*: output i = ReLU(sum_j f_ij(x_j)) with f_ii = identity, f_ij (j > i, coarser) = 1x1 conv +
  BN then interpolate up by 2^(j-i) (``upsample_mode`` 'bilinear' or 'nearest'), f_ij (j < i, finer) = (i - j)
  strided 3x3 conv-BN (ReLU between them, not after the last);
* head: upsample every branch to branch-0 resolution, concat, 1x1 conv-BN-ReLU (``head_width``), dropout, 1x1
  conv to ``num_classes``, and upsample to the input resolution when ``stem_stride`` > 1.

Output: per-pixel logits (B, num_classes, H, W); default 11 classes = 10 CIFAR classes + background.
Branch widths (``widths``) and blocks per branch (``num_blocks``) are constructor arguments so a supernet pass
can vary them. Inputs must have H and W divisible by ``stem_stride * 2**(len(widths) - 1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "FuseLayer", "HRModule", "HRNetLite", "hrnet_lite"]


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity residual (branch channels are constant)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(channels, channels, 3)
        self.conv2 = _conv_bn(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class FuseLayer(nn.Module):
    """Exchange information across all branches (see module docstring); ``fuse[i][j]`` maps branch j -> i."""

    def __init__(self, widths: tuple[int, ...], upsample_mode: str = "bilinear") -> None:
        super().__init__()
        self.upsample_mode = upsample_mode
        self.fuse = nn.ModuleList()
        for i, wi in enumerate(widths):
            row = nn.ModuleList()
            for j, wj in enumerate(widths):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(_conv_bn(wj, wi, 1, relu=False))
                else:
                    steps: list[nn.Module] = []
                    for s in range(i - j):
                        last = s == i - j - 1
                        steps.append(_conv_bn(wj, wi if last else wj, 3, stride=2, relu=not last))
                    row.append(nn.Sequential(*steps))
            self.fuse.append(row)

    def _up(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        if self.upsample_mode == "nearest":
            return F.interpolate(x, scale_factor=float(factor), mode="nearest")
        return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i, row in enumerate(self.fuse):
            acc = xs[i]
            for j, f in enumerate(row):
                if j == i:
                    continue
                y = f(xs[j])
                if j > i:
                    y = self._up(y, 2 ** (j - i))
                acc = acc + y
            outs.append(F.relu(acc))
        return outs


class HRModule(nn.Module):
    """Per-branch BasicBlocks followed by a :class:`FuseLayer` over the active branches."""

    def __init__(self, widths: tuple[int, ...], num_blocks: tuple[int, ...], upsample_mode: str) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(w) for _ in range(n))) for w, n in zip(widths, num_blocks, strict=True)
        )
        self.fuse_layer = FuseLayer(widths, upsample_mode) if len(widths) > 1 else None

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [b(x) for b, x in zip(self.branches, xs, strict=True)]
        return self.fuse_layer(xs) if self.fuse_layer is not None else xs


class HRNetLite(nn.Module):
    """Multi-branch segmentation network; ``forward`` gives per-pixel logits at input resolution."""

    def __init__(
        self,
        num_classes: int = 11,
        widths: tuple[int, ...] = (16, 32, 64),
        num_blocks: tuple[int, ...] = (2, 2, 2),
        num_modules: int = 1,
        stem_stride: int = 1,
        head_width: int | None = None,
        upsample_mode: str = "bilinear",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths, num_blocks = tuple(int(w) for w in widths), tuple(int(n) for n in num_blocks)
        if not 1 <= len(widths) <= 4 or len(num_blocks) != len(widths):
            raise ValueError(
                f"HRNetLite: widths={widths} and num_blocks={num_blocks} must have the same length (1..4)"
            )
        if min(widths) < 1 or min(num_blocks) < 0 or num_modules < 1:
            raise ValueError(
                f"HRNetLite: widths {widths} >= 1, num_blocks {num_blocks} >= 0, num_modules >= 1"
            )
        if upsample_mode not in ("bilinear", "nearest"):
            raise ValueError(f"HRNetLite: upsample_mode={upsample_mode!r} must be 'bilinear' or 'nearest'")
        self.widths, self.num_blocks, self.stem_stride = widths, num_blocks, stem_stride
        self.upsample_mode = upsample_mode
        self.stem = _conv_bn(3, widths[0], 3, stride=stem_stride)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        for s in range(1, len(widths) + 1):
            if s > 1:
                self.transitions.append(_conv_bn(widths[s - 2], widths[s - 1], 3, stride=2))
            self.stages.append(
                nn.Sequential(
                    *(HRModule(widths[:s], num_blocks[:s], upsample_mode) for _ in range(num_modules))
                )
            )
        head_width = head_width or sum(widths)
        self.head = nn.Sequential(
            _conv_bn(sum(widths), head_width, 1), nn.Dropout(dropout), nn.Conv2d(head_width, num_classes, 1)
        )

    def _up(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        if factor == 1:
            return x
        if self.upsample_mode == "nearest":
            return F.interpolate(x, scale_factor=float(factor), mode="nearest")
        return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale branch outputs [(B, widths[b], H / (stem_stride * 2^b), ...)] after the last stage."""
        div = self.stem_stride * 2 ** (len(self.widths) - 1)
        if x.shape[-2] % div or x.shape[-1] % div:
            raise ValueError(f"HRNetLite: input {tuple(x.shape)} needs H and W divisible by {div}")
        xs = [self.stem(x)]
        for s, stage in enumerate(self.stages):
            if s > 0:
                xs = xs + [self.transitions[s - 1](xs[-1])]
            for module in stage:
                xs = module(xs)
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.forward_features(x)
        feats = torch.cat([self._up(f, 2**b) for b, f in enumerate(xs)], dim=1)
        return self._up(self.head(feats), self.stem_stride)


def hrnet_lite(
    num_classes: int = 11,
    widths: tuple[int, ...] = (16, 32, 64),
    num_blocks: tuple[int, ...] = (2, 2, 2),
    num_modules: int = 1,
    stem_stride: int = 1,
    upsample_mode: str = "bilinear",
    dropout: float = 0.0,
) -> HRNetLite:
    """HRNet-lite with three branches at 1, 1/2, 1/4 resolution by default."""
    return HRNetLite(
        num_classes,
        widths,
        num_blocks,
        num_modules,
        stem_stride,
        upsample_mode=upsample_mode,
        dropout=dropout,
    )
