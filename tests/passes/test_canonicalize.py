"""The ``canonicalize`` pass (passes/canonicalize.py) drops zero biases and unit gains but keeps a broadcast that
changes a shape, on a module exported with torch.onnx (TorchScript exporter, opset 17, as users do); the result,
re-exported at opset 18, is compared with onnxruntime on the exported file."""

from __future__ import annotations

import torch
from _helpers import assert_same_at_opset18 as same
from _helpers import export_torchscript_seeded as export
from _helpers import op_counts as ops
from _helpers import run_passes_on_file as run
from torch import nn


class ZeroBias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.lin = nn.Linear(16, 16)
        nn.init.zeros_(self.lin.bias)
        self.gain = nn.Parameter(torch.ones(16))
        self.zeros = nn.Parameter(torch.zeros(4, 16))  # broadcasts: x + zeros enlarges (1, 16) -> (4, 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.lin(x) * self.gain
        return y, y + self.zeros


def test_canonicalize_drops_zero_bias_and_unit_gain_but_not_broadcasts(tmp_path):
    path = export(ZeroBias(), (torch.randn(1, 16),), tmp_path / "zb.onnx")
    g = run(path, "canonicalize,dce")
    c = ops(g)
    assert c["mul"] == 0  # * ones(16) dropped
    assert c["add"] == 1  # the zero bias is gone; the broadcasting + zeros(4, 16) must stay (it changes shape)
    assert [tuple(v.type.shape) for v in g.outputs] == [(1, 16), (4, 16)]
    same(path, g)
