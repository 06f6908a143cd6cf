"""``decompose-group-norm``: ``group_norm`` (ONNX opset 21) -> Reshape to ``[N, groups, -1]``, mean/variance
primitives, Reshape back, per-channel scale and bias; for older opsets and targets without GroupNormalization.

Needs static shapes: the reshape targets are constants.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._decompose_util import _run, const_like


@graph_pass("decompose-group-norm", "group_norm (ONNX opset 21) -> Reshape + mean/variance primitives",
            requires=("static_shapes",))
def decompose_group_norm(graph: Graph) -> dict[str, int]:
    def build(b, node):
        x, scale, bias = node.inputs[:3]
        shape = [int(d) for d in x.type.shape]
        g = int(node.attrs["num_groups"])
        y = b.reshape(x, b.const(np.asarray([shape[0], g, -1], dtype=np.int64), name=f"{b.hint}_gshape"))
        axes = b.const(np.asarray([2], dtype=np.int64), name=f"{b.hint}_axes")
        d = b.sub(y, b.reduce_mean(y, axes, keepdims=1))
        var = b.reduce_mean(b.mul(d, d), axes, keepdims=1)
        n = b.div(d, b.sqrt(b.add(var, const_like(b, float(node.attrs.get("epsilon", 1e-5)), x, "eps"))))
        n = b.reshape(n, b.const(np.asarray(shape, dtype=np.int64), name=f"{b.hint}_shape"))
        cshape = np.asarray([-1] + [1] * (len(shape) - 2), dtype=np.int64)
        s = b.reshape(scale, b.const(cshape, name=f"{b.hint}_cshape"))
        bb = b.reshape(bias, b.const(cshape, name=f"{b.hint}_cshape"))
        return b.add(b.mul(n, s), bb)

    return {"group_norm": _run(graph, "group_norm", build, "decompose-group-norm")}
