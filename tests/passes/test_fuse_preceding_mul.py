"""The ``fuse-preceding-mul`` pass (passes/fuse_preceding_mul.py) folds a Mul into the following MatMul and grouped
conv, on a module exported with torch.onnx (TorchScript exporter, opset 17, as users do); the result is compared with
onnxruntime on the exported file."""

from __future__ import annotations

import torch
from _helpers import assert_same as same
from _helpers import export_torchscript as export
from _helpers import op_counts as ops
from _helpers import run_passes as run
from torch import nn

from graphopt.frontends.onnx import load_onnx


class _PreMul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.rand(8) + 0.5)
        self.w = nn.Parameter(torch.randn(8, 5))
        self.cin = nn.Parameter(torch.randn(1, 4, 1, 1))
        self.conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)

    def forward(self, x, img):
        return (x * self.g) @ self.w, self.conv(img * self.cin)


def test_fuse_preceding_mul_into_matmul_and_grouped_conv(tmp):
    path = export(_PreMul(), (torch.randn(2, 3, 8), torch.randn(1, 4, 6, 6)), tmp / "premul.onnx")
    g = load_onnx(path)
    f = run(g, "fuse-preceding-mul,dce")
    assert "mul" not in ops(f)
    same(path, f)
