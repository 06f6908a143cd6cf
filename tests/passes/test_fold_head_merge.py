"""The ``fold-head-merge`` pass (passes/fold_head_merge.py) folds the head merge into the output projection. A
BERT-style attention is exported with torch.onnx (TorchScript exporter, opset 17, as users do); the result,
re-exported at opset 18, is compared with onnxruntime on the exported file."""

from __future__ import annotations

from _helpers import PREP_PIPELINE as PREP
from _helpers import assert_same_at_opset18 as same
from _helpers import op_counts as ops
from _helpers import run_passes_on_file as run


def test_fold_head_merge(attn_onnx):
    base = run(attn_onnx, PREP)
    g = run(attn_onnx, f"{PREP},fold-head-merge,dce")
    assert ops(g)["reduce_sum"] == 1 and len(g) == len(base) - 1
    same(attn_onnx, g)
