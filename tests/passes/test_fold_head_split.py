"""The ``fold-head-split`` pass (passes/fold_head_split.py) folds an attention head split into the Q/K/V weights
(biases kept), and leaves a batch above one alone. A BERT-style attention is exported with torch.onnx (TorchScript
exporter, opset 17, as users do); the result, re-exported at opset 18, is compared with onnxruntime on the exported
file."""

from __future__ import annotations

import torch
from _helpers import PREP_PIPELINE as PREP
from _helpers import Attention
from _helpers import assert_same_at_opset18 as same
from _helpers import export_torchscript_seeded as export
from _helpers import op_counts as ops
from _helpers import run_passes_on_file as run


def test_fold_head_split_with_bias(attn_onnx):
    before = ops(run(attn_onnx, PREP))
    g = run(attn_onnx, f"{PREP},fold-head-split,dce")
    after = ops(g)
    assert before["reshape"] - after["reshape"] == 3  # Q, K, V head splits gone (the merge Reshape stays)
    assert before["transpose"] - after["transpose"] == 2  # Q and V need none; K keeps a last-two-axes Transpose
    assert after["add"] == before["add"]  # biases kept, re-laid out per head
    same(attn_onnx, g)


def test_head_split_skips_batch_above_one(tmp_path):
    """A batch dim > 1 would broadcast against the new head axis: the rewrite must not fire, output unchanged."""
    path = export(Attention(), (torch.randn(2, 8, 32),), tmp_path / "attn_b2.onnx")
    g = run(path, f"{PREP},fold-head-split,dce")
    assert ops(g) == ops(run(path, PREP))
    same(path, g)
