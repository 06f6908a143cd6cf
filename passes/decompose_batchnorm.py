"""``decompose-batchnorm``: an inference ``batch_norm`` with constant statistics -> per-channel ``Mul`` + ``Add``.

For BatchNorms that no Conv/Gemm absorbed (pre-activation BN), on targets without BatchNormalization. The scale and
shift are formed in float64 and cast to the input's dtype; :func:`batchnorm_primitives` is also the NPU legalizer's
builder.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import _ReplacementBuilder

from ._decompose_util import _run, const_like


def batchnorm_primitives(b: _ReplacementBuilder, node: Node) -> Value | None:
    x = node.inputs[0]
    consts = [v.const if v is not None else None for v in node.inputs[1:5]]
    if x.type is None or x.type.shape is None or any(c is None for c in consts):
        return None
    scale, bias, mean, var = (c.astype(np.float64) for c in consts)  # type: ignore[union-attr]
    k = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    shift = bias - mean * k
    shape = (-1,) + (1,) * (len(x.type.shape) - 2)
    return b.add(b.mul(x, const_like(b, k.reshape(shape), x, "scale")), const_like(b, shift.reshape(shape), x, "shift"))


@graph_pass("decompose-batchnorm", "Inference batch_norm with constant statistics -> per-channel Mul + Add")
def decompose_batchnorm(graph: Graph) -> dict[str, int]:
    """For BatchNorms that no Conv/Gemm absorbed (pre-activation BN), on targets without BatchNormalization."""
    return {"batch_norm": _run(graph, "batch_norm", batchnorm_primitives, "decompose-batchnorm")}
