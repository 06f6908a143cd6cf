"""The ``fuse-attention`` pass (passes/fuse_attention.py): the zoo BERT (exported with torch.onnx) round-trips through
LayerNorm, Softmax and attention decomposition/fusion and ONNX Attention-23, each step compared with onnxruntime."""

from __future__ import annotations

from _helpers import assert_same as same
from _helpers import op_counts as ops
from _helpers import run_passes as run

from graphopt.backends.onnx import to_onnx
from graphopt.frontends.onnx import load_onnx


def test_bert_layernorm_softmax_attention_round_trips(bert_onnx):
    g = load_onnx(bert_onnx)
    base = ops(g)
    assert base["layer_norm"] == 5 and base["softmax"] == 2
    ln = run(g, "decompose-layernorm")
    assert "layer_norm" not in ops(ln) and ops(ln)["reduce_mean"] == 10
    same(bert_onnx, ln)
    back = run(ln, "fuse-layernorm,dce")
    assert ops(back)["layer_norm"] == 5 and "reduce_mean" not in ops(back)
    same(bert_onnx, back)
    sm = run(g, "decompose-softmax")
    assert "softmax" not in ops(sm) and ops(sm)["exp"] == 2
    same(bert_onnx, sm)
    assert ops(run(sm, "fuse-softmax,dce"))["softmax"] == 2
    att = run(g, "canonicalize,fuse-attention,dce")
    assert ops(att)["attention"] == 2 and "softmax" not in ops(att) and len(att) < len(g)
    same(bert_onnx, att)
    m23 = to_onnx(att, opset=23)  # ONNX Attention-23 in onnxruntime
    assert sum(n.op_type == "Attention" for n in m23.graph.node) == 2
    same(bert_onnx, m23)
    dec = run(att, "decompose-attention")
    assert "attention" not in ops(dec)
    same(bert_onnx, dec)
