"""The candidate block of the DPS multi-path supernet (``graphopt.search.dps.DPSHRNet``), with an elastic width.

A model, not a search detail: the DPS candidate-expansion pass (``graphopt.passes.expand.dps``) builds the same
block into the IR with the same parameter names, so it imports it from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, c: int) -> torch.Tensor:
    rm = bn.running_mean[:c] if bn.running_mean is not None else None  # type: ignore[index]
    rv = bn.running_var[:c] if bn.running_var is not None else None  # type: ignore[index]
    return F.batch_norm(x, rm, rv, bn.weight[:c], bn.bias[:c], bn.training, 0.1, bn.eps)


class CandidateBlock(nn.Module):
    """Residual block ``relu(x + BN(conv_b(relu(BN(conv_a(x))))))`` with an elastic inner width.

    conv: ``conv_a`` k x k (C -> inner), ``conv_b`` 1 x 1 (inner -> C); dw: depthwise k x k on C, then 1x1
    C -> inner, then 1x1 inner -> C. Width choices take the leading ``inner`` channels.
    """

    def __init__(self, C: int, op: str) -> None:
        super().__init__()
        self.kind, self.k = op[:-1], int(op[-1])
        self.C = C
        if self.kind == "dw":
            self.dw = nn.Conv2d(C, C, self.k, padding=self.k // 2, groups=C, bias=False)
            self.conv_a = nn.Conv2d(C, C, 1, bias=False)
        else:
            self.conv_a = nn.Conv2d(C, C, self.k, padding=self.k // 2, bias=False)
        self.bn_a = nn.BatchNorm2d(C)
        self.conv_b = nn.Conv2d(C, C, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(C)

    def forward(self, x: torch.Tensor, width: float) -> torch.Tensor:
        c = max(1, int(round(width * self.C)))
        h = x
        if self.kind == "dw":
            h = self.dw(h)
        h = F.conv2d(h, self.conv_a.weight[:c], padding=self.conv_a.padding)
        h = F.relu(_bn(h, self.bn_a, c))
        h = _bn(F.conv2d(h, self.conv_b.weight[:, :c]), self.bn_b, self.C)
        return F.relu(x + h)

    def path_weights(self, width: float) -> list[torch.Tensor]:
        c = max(1, int(round(width * self.C)))
        ws = [self.dw.weight] if self.kind == "dw" else []
        return ws + [self.conv_a.weight[:c], self.conv_b.weight[:, :c]]
