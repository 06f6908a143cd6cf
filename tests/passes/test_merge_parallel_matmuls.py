"""The ``merge-parallel-matmuls`` pass (passes/merge_parallel_matmuls.py) merges the Q/K/V and the SwiGLU gate/up
projections of one input into one MatMul + Split. The modules are exported with torch.onnx (TorchScript exporter,
opset 17, as users do); the result, re-exported at opset 18, is compared with onnxruntime on the exported file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _helpers import PREP_PIPELINE as PREP
from _helpers import assert_same_at_opset18 as same
from _helpers import export_torchscript_seeded as export
from _helpers import op_counts as ops
from _helpers import run_passes_on_file as run
from torch import nn


def test_merge_parallel_matmuls_qkv(attn_onnx):
    g = run(attn_onnx, f"{PREP},fold-head-split,merge-parallel-matmuls,dce")
    assert ops(g)["split"] == 1 and ops(g)["matmul"] == 4  # Q/K/V -> one; scores, P@V, output projection
    same(attn_onnx, g)


class GatedMLP(nn.Module):
    """SwiGLU-style gate/up projections of one input (no biases) -> merged into one MatMul + Split."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.gate, self.up = nn.Linear(16, 24, bias=False), nn.Linear(16, 40, bias=False)
        self.down = nn.Linear(24, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x)[..., :24])


def test_merge_parallel_matmuls_unequal_widths(tmp_path):
    path = export(GatedMLP(), (torch.randn(3, 5, 16),), tmp_path / "mlp.onnx")
    g = run(path, f"{PREP},merge-parallel-matmuls,dce")
    assert ops(g)["matmul"] == 2 and ops(g)["split"] == 1
    same(path, g)
