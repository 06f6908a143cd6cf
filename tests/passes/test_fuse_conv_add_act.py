"""The ``fuse-conv-add-act`` pass (passes/fuse_conv_add_act.py): conv + residual + activation become onnxruntime's
FusedConv, on a module exported with torch.onnx (TorchScript exporter, opset 17, as users do); the result is compared
with onnxruntime on the exported file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _helpers import assert_same as same
from _helpers import export_torchscript as export
from _helpers import run_passes as run
from torch import nn

from graphopt.backends.onnx import to_onnx
from graphopt.frontends.onnx import load_onnx


class _ConvActs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = torch.relu(self.a(x) + x)  # conv + residual + relu
        y = F.relu6(self.b(y))  # conv + clip
        return torch.sigmoid(self.c(y)), y


def test_fuse_conv_add_act_exports_as_onnxruntime_fusedconv(tmp):
    path = export(_ConvActs(), (torch.randn(1, 4, 6, 6),), tmp / "convacts.onnx")
    g = run(load_onnx(path), "canonicalize,dce")
    f = run(g, "fuse-conv-add-act,dce")
    fused = [n for n in f.nodes if n.op == "fused_conv"]
    assert sorted(n.attrs["activation"] for n in fused) == ["Clip", "Relu", "Sigmoid"]
    assert len(f) == 3 and fused[0].inputs[3] is not None  # the residual rides along as Z
    same(path, f)
    m = to_onnx(f, opset=18)
    assert {(n.domain, n.op_type) for n in m.graph.node} == {("com.microsoft", "FusedConv")}
    same(path, m)
