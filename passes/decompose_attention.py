"""``decompose-attention``: ``attention`` -> MatMul/Transpose/Mul(/Add)/Softmax/MatMul, for ONNX below opset 23 and
targets without an attention op.

Grouped-query K/V heads are repeated with a Gather, ``is_causal`` becomes an additive ``-inf`` upper triangle and a
bool mask a Where. Declines ``softcap`` and ``qk_matmul_output_mode``. Needs static shapes.
"""

from __future__ import annotations

import math

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from . import _attention_op  # noqa: F401 - registers the attention op this pass rewrites
from ._decompose_util import _run, const_like


@graph_pass("decompose-attention", "attention -> MatMul/Transpose/Mul(/Add)/Softmax/MatMul",
            requires=("static_shapes",))
def decompose_attention(graph: Graph) -> dict[str, int]:
    def build(b, node):
        q, k, v = node.inputs[:3]
        mask = node.inputs[3] if len(node.inputs) > 3 else None
        a = node.attrs
        if a.get("softcap") or a.get("qk_matmul_output_mode"):
            return None
        qs, ks = [int(d) for d in q.type.shape], [int(d) for d in k.type.shape]
        if ks[1] != qs[1]:
            rep = qs[1] // ks[1]
            idx = b.const(np.repeat(np.arange(ks[1]), rep).astype(np.int64), name=f"{b.hint}_heads")
            k, v = b.gather(k, idx, axis=1), b.gather(v, idx, axis=1)
        scale = a.get("scale")
        scale = 1.0 / math.sqrt(qs[-1]) if scale is None else float(scale)
        scores = b.mul(b.matmul(q, b.transpose(k, perm=[0, 1, 3, 2])), const_like(b, scale, q, "scale"))
        if a.get("is_causal"):
            causal = np.triu(np.full((qs[2], ks[2]), -np.inf), 1)
            scores = b.add(scores, const_like(b, causal, q, "causal"))
        if mask is not None:
            if mask.type is not None and mask.type.dtype.value == "bool":
                scores = b.where(mask, scores, const_like(b, -np.inf, q, "neginf"))
            else:
                scores = b.add(scores, mask)
        return b.matmul(b.softmax(scores, axis=-1), v)

    return {"attention": _run(graph, "attention", build, "decompose-attention")}
