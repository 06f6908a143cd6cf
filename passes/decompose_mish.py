"""``decompose-mish``: ``mish`` (ONNX opset 18) -> ``x * Tanh(Softplus(x))``, for older opsets and targets without
Mish. Exact; :func:`mish_primitives` is also the NPU legalizer's builder.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import _ReplacementBuilder

from ._decompose_util import _run


def mish_primitives(b: _ReplacementBuilder, node: Node) -> Value:
    return b.mul(node.inputs[0], b.tanh(b.softplus(node.inputs[0])))


@graph_pass("decompose-mish", "mish (ONNX opset 18) -> x * Tanh(Softplus(x))")
def decompose_mish(graph: Graph) -> dict[str, int]:
    return {"mish": _run(graph, "mish", mish_primitives, "decompose-mish")}
