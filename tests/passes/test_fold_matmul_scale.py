"""The ``fold-matmul-scale`` pass (passes/fold_matmul_scale.py) folds attention's 1/sqrt(d) Div into a weight. A
BERT-style attention is exported with torch.onnx (TorchScript exporter, opset 17, as users do); the result,
re-exported at opset 18, is compared with onnxruntime on the exported file."""

from __future__ import annotations

from _helpers import PREP_PIPELINE as PREP
from _helpers import assert_same_at_opset18 as same
from _helpers import op_counts as ops
from _helpers import run_passes_on_file as run


def test_fold_matmul_scale_div(attn_onnx):
    g = run(attn_onnx, f"{PREP},fold-head-split,fold-matmul-scale,dce")
    assert ops(g)["div"] == 0 and ops(run(attn_onnx, PREP))["div"] == 1
    same(attn_onnx, g)  # 1/sqrt(8) is not a power of two: the folded weight is rounded once
