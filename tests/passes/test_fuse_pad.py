"""The ``fuse-pad`` pass (passes/fuse_pad.py) folds Pads into convolutions and pools only when exact, on a module
exported with torch.onnx (TorchScript exporter, opset 17, as users do); the result is compared with onnxruntime on the
exported file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _helpers import assert_same as same
from _helpers import export_torchscript as export
from _helpers import op_counts as ops
from _helpers import run_passes as run
from torch import nn

from graphopt.frontends.onnx import load_onnx


class _Pads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    def forward(self, x):
        a = self.c1(F.pad(x, (1, 2, 0, 1)))  # zero pad -> conv pads
        b = F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 1)  # zero pad counted by the pool
        c = F.max_pool2d(F.pad(torch.relu(x), (1, 1, 1, 1)), 3, 1)  # zero pad of a non-negative input
        d = F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 1)
        e = self.c2(F.pad(x, (1, 1, 1, 1), value=1.0))  # non-zero pad value: must stay
        return a.sum() + b.sum() + c.sum() + d.sum() + e.sum() + b + c + d


def test_fuse_pad_into_conv_and_pools_only_when_exact(tmp):
    path = export(_Pads(), (torch.randn(1, 3, 8, 8),), tmp / "pads.onnx")
    g = load_onnx(path)
    assert ops(g)["pad"] == 5
    f = run(g, "fuse-pad,dce")
    assert ops(f)["pad"] == 1, "only the pad with value 1.0 may stay"
    assert [n for n in f.nodes if n.op == "pad"][0].users()[0].op == "conv"
    same(path, f)
