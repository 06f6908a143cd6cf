"""The default export pipeline (graphopt.export.default_pipeline) on attention graphs: fewer nodes than the exported
file (the zoo BERT not above onnxsim), same outputs as onnxruntime on the original."""

from __future__ import annotations

import numpy as np
import onnx
from _helpers import assert_same_at_opset18 as same
from _helpers import export_torchscript_seeded as export
from _helpers import op_counts as ops
from _helpers import run_passes_on_file as run

from graphopt.export import default_pipeline


def test_full_pipeline_attention(attn_onnx):
    orig = len(onnx.load(attn_onnx).graph.node)
    g = run(attn_onnx, default_pipeline(18))
    assert len(g) < orig and ops(g)["div"] == 0 and ops(g)["reshape"] == 0
    same(attn_onnx, g)


def test_bert_tiny_default_pipeline_not_above_onnxsim(tmp_path):
    """The zoo BERT (random init, batch 1) had 73 nodes after the default pipeline vs 46 for onnxsim (which fuses
    attention into com.microsoft.Attention); the attention folds (fold-head-split, fold-head-merge,
    fold-matmul-scale, merge-parallel-matmuls) bring it to <= 46 standard ops, same outputs."""
    from graphopt import models
    from graphopt.export import export_model

    net = models.get("bert_tiny", seed=0).eval()
    ex = tuple(models.example_inputs("bert_tiny", batch=1))
    path = export(net, ex, tmp_path / "bert.onnx")
    rep = export_model(path, tmp_path / "bert.opt.onnx", latency_runs=0)
    assert rep.fp32["ok"], rep.fp32
    out = onnx.load(str(tmp_path / "bert.opt.onnx"))
    assert len(out.graph.node) <= 46
    assert all(n.domain in ("", "ai.onnx") for n in out.graph.node)
    feed = {onnx.load(path).graph.input[0].name: np.random.default_rng(0).integers(0, 100, (1, 32)).astype(
        np.int64)}
    import onnxruntime as ort

    a = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    b = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
