"""``decompose-softmax``: ``softmax`` -> ``Exp(x - ReduceMax) / ReduceSum`` (the numerically stable form), for targets
without a softmax op; with ``log`` (the default) also ``log_softmax`` -> ``x - max - Log(ReduceSum(Exp))``.

``decompose-softmax[div=false]`` uses ``Reciprocal`` + ``Mul`` instead of ``Div``. ``fuse-softmax`` recognizes the
result; :func:`softmax_primitives` and :func:`log_softmax_primitives` are also the NPU legalizer's builders.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import _ReplacementBuilder

from ._decompose_util import _run


def softmax_primitives(b: _ReplacementBuilder, node: Node, div: bool = True) -> Value | None:
    x = node.inputs[0]
    if x is None or x.type is None or x.type.shape is None:
        return None
    r = len(x.type.shape)
    axes = b.const(np.asarray([int(node.attrs.get("axis", -1)) % r], dtype=np.int64), name=f"{b.hint}_axes")
    e = b.exp(b.sub(x, b.reduce_max(x, axes, keepdims=1)))
    s = b.reduce_sum(e, axes, keepdims=1)
    return b.div(e, s) if div else b.mul(e, b.reciprocal(s))


def log_softmax_primitives(b: _ReplacementBuilder, node: Node) -> Value | None:
    x = node.inputs[0]
    if x is None or x.type is None or x.type.shape is None:
        return None
    r = len(x.type.shape)
    axes = b.const(np.asarray([int(node.attrs.get("axis", -1)) % r], dtype=np.int64), name=f"{b.hint}_axes")
    z = b.sub(x, b.reduce_max(x, axes, keepdims=1))
    return b.sub(z, b.log(b.reduce_sum(b.exp(z), axes, keepdims=1)))


@graph_pass("decompose-softmax", "softmax -> Exp(x - ReduceMax) / ReduceSum (numerically stable form)")
def decompose_softmax(graph: Graph, div: bool = True, log: bool = True) -> dict[str, int]:
    """``div=false`` uses ``Reciprocal`` + ``Mul``; ``log`` also decomposes log_softmax (x - max - log(sum exp))."""
    out = {"softmax": _run(graph, "softmax", lambda b, n: softmax_primitives(b, n, bool(div)), "decompose-softmax")}
    if log:
        out["log_softmax"] = _run(graph, "log_softmax", log_softmax_primitives, "decompose-softmax")
    return out
