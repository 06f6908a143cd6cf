"""``decompose-layernorm``: ``layer_norm`` -> ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div, then Mul by the scale and
Add of the bias, for ONNX below opset 17 and targets without LayerNormalization.

``decompose-layernorm[div=false]`` normalizes with ``Reciprocal`` + ``Mul`` instead (targets without Div). A scale of
ones and an all-zero bias are left out. ``fuse-layernorm`` recognizes the result; :func:`layer_norm_primitives` is
also the NPU legalizer's builder.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import _ReplacementBuilder

from ._decompose_util import _run, const_like


def layer_norm_primitives(b: _ReplacementBuilder, node: Node, div: bool = True) -> Value | None:
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if x is None or x.type is None or x.type.shape is None:
        return None
    r = len(x.type.shape)
    axis = int(node.attrs.get("axis", -1)) % r
    axes = b.const(np.arange(axis, r, dtype=np.int64), name=f"{b.hint}_axes")
    d = b.sub(x, b.reduce_mean(x, axes, keepdims=1))
    var = b.reduce_mean(b.mul(d, d), axes, keepdims=1)
    std = b.sqrt(b.add(var, const_like(b, float(node.attrs.get("epsilon", 1e-5)), x, "eps")))
    y = b.div(d, std) if div else b.mul(d, b.reciprocal(std))
    if not (scale is not None and scale.const is not None and np.all(scale.const == 1)):
        y = b.mul(y, scale)
    if bias is not None and not (bias.const is not None and not np.any(bias.const)):
        y = b.add(y, bias)
    return y


@graph_pass("decompose-layernorm", "layer_norm -> ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div/Mul/Add")
def decompose_layernorm(graph: Graph, div: bool = True) -> dict[str, int]:
    """``div=false`` normalizes with ``Reciprocal`` + ``Mul`` (targets without Div)."""
    return {"layer_norm": _run(graph, "layer_norm", lambda b, n: layer_norm_primitives(b, n, bool(div)),
                               "decompose-layernorm")}
