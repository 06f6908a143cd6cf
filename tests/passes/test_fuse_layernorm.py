"""The ``fuse-layernorm`` pass (passes/fuse_layernorm.py) absorbs the scale and bias of a hand-written LayerNorm
exported with torch.onnx (TorchScript exporter, opset 17, as users do); the result is compared with onnxruntime on the
exported file."""

from __future__ import annotations

import pytest
import torch
from _helpers import assert_same as same
from _helpers import export_torchscript as export
from _helpers import op_counts as ops
from _helpers import run_passes as run
from torch import nn

from graphopt.frontends.onnx import load_onnx


class _ManualLN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.rand(24) + 0.5)
        self.b = nn.Parameter(torch.randn(24))

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        d = x - mu
        var = d.pow(2).mean(-1, keepdim=True)
        return d / torch.sqrt(var + 1e-5) * self.g + self.b


def test_fuse_layernorm_absorbs_scale_and_bias(tmp):
    path = export(_ManualLN(), (torch.randn(2, 5, 24),), tmp / "ln.onnx")
    g = load_onnx(path)
    assert "pow" in ops(g) and "sqrt" in ops(g)
    f = run(g, "fuse-layernorm,dce")
    assert dict(ops(f)) == {"layer_norm": 1}
    ln = f.nodes[0]
    assert len(ln.inputs) == 3 and ln.inputs[2] is not None and ln.attrs["epsilon"] == pytest.approx(1e-5)
    same(path, f)
