"""The ``fold-elementwise`` pass (passes/fold_elementwise.py), with ``fuse-channel-affine``, folds per-channel affines
and constant chains away, on a module exported with torch.onnx (TorchScript exporter, opset 17, as users do); the
result is compared with onnxruntime on the exported file."""

from __future__ import annotations

import torch
from _helpers import assert_same as same
from _helpers import export_torchscript as export
from _helpers import op_counts as ops
from _helpers import run_passes as run
from torch import nn

from graphopt.frontends.onnx import load_onnx


class _Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(6, 4)
        self.s = nn.Parameter(torch.randn(1, 6, 1, 1))
        self.t = nn.Parameter(torch.randn(6, 1, 1))
        self.u = nn.Parameter(torch.randn(3, 1, 1))
        self.v = nn.Parameter(torch.randn(4))
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = self.conv(x) * self.s + self.t  # per-channel scale/shift after conv
        z = (self.bn(x) * self.u - self.u) / 2.0  # after a standalone BN (Caffe2 scale layers)
        w = ((x * 2.0) * 3.0 + 1.0) - 4.0  # constant chains
        h = self.fc(y.mean((2, 3))) * self.v
        return y, z, w, h


def test_fold_elementwise_and_channel_affine(tmp):
    path = export(_Affine(), (torch.randn(2, 3, 5, 5),), tmp / "affine.onnx")
    g = load_onnx(path)
    f = run(g, "(fuse-channel-affine,fold-elementwise,dce)*")
    c = ops(f)
    assert c["conv"] == 1 and c["batch_norm"] == 1 and c["gemm"] == 1
    assert c["mul"] == 1 and c["add"] == 1, dict(c)  # only x*6 - 3 remains of all the constant arithmetic
    same(path, f)
