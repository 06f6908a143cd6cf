"""The ``fuse-gelu`` pass (passes/fuse_gelu.py): the Erf and Tanh forms of GELU exported by torch.onnx fuse into
``gelu`` and round-trip through ``decompose-gelu``; compared with onnxruntime on the exported file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _helpers import assert_same as same
from _helpers import export_torchscript as export
from _helpers import op_counts as ops
from _helpers import run_passes as run
from torch import nn

from graphopt.frontends.onnx import load_onnx


class _Gelus(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(8, 16)

    def forward(self, x):
        return F.gelu(self.a(x)) + F.gelu(self.b(x), approximate="tanh")


def test_gelu_erf_and_tanh_forms_fuse_and_round_trip(tmp):
    path = export(_Gelus(), (torch.randn(2, 8),), tmp / "gelus.onnx")
    g = load_onnx(path)
    assert "erf" in ops(g) and "tanh" in ops(g)
    fused = run(g, "fuse-gelu,dce")
    assert ops(fused)["gelu"] == 2 and "erf" not in ops(fused) and "tanh" not in ops(fused)
    assert sorted(n.attrs["approximate"] for n in fused.nodes if n.op == "gelu") == ["none", "tanh"]
    same(path, fused)
    dec = run(fused, "decompose-gelu")
    assert "gelu" not in ops(dec)
    same(path, dec)
    assert ops(run(dec, "fuse-gelu,dce"))["gelu"] == 2  # the decomposition is the form fuse-gelu recognizes
