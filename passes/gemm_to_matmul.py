"""``gemm-to-matmul``: ``gemm`` -> ``MatMul`` (+ ``Mul`` by alpha/beta when not 1) (+ ``Add`` of C).

For targets with MatMul but no Gemm (or a Gemm limited to constant B). ``transB`` of a constant weight is folded
into the weight; otherwise it (and ``transA``) becomes a Transpose. :func:`gemm_primitives` is also the NPU
legalizer's builder.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import _ReplacementBuilder

from ._decompose_util import _run, const_like


def gemm_primitives(b: _ReplacementBuilder, node: Node) -> Value:
    a, w = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    at = node.attrs
    if at.get("transA"):
        a = b.transpose(a, perm=[1, 0])
    if at.get("transB"):
        w = b.const(np.ascontiguousarray(w.const.T), w.kind, name=f"{b.hint}_wT") if w.const is not None else \
            b.transpose(w, perm=[1, 0])
    y = b.matmul(a, w)
    if float(at.get("alpha", 1.0)) != 1.0:
        y = b.mul(y, const_like(b, float(at["alpha"]), y, "alpha"))
    if c is not None:
        beta = float(at.get("beta", 1.0))
        if beta != 1.0:
            c = b.mul(c, const_like(b, beta, c, "beta"))
        y = b.add(y, c)
    return y


@graph_pass("gemm-to-matmul", "gemm -> MatMul (+ Add), transposes folded into constant weights")
def gemm_to_matmul(graph: Graph) -> dict[str, int]:
    """For targets with MatMul but no Gemm (or a Gemm limited to constant B)."""
    return {"gemm": _run(graph, "gemm", gemm_primitives, "gemm-to-matmul")}
