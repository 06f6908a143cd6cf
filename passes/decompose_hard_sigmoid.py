"""``decompose-hard-sigmoid``: ``hard_sigmoid`` -> ``Clip(alpha * x + beta, 0, 1)``, for targets without HardSigmoid
(``convert-opset`` may leave one behind from ``decompose-hard-swish``). Exact.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._decompose_util import _run, hard_sigmoid_primitives


@graph_pass("decompose-hard-sigmoid", "hard_sigmoid -> Clip(alpha*x + beta, 0, 1)")
def decompose_hard_sigmoid(graph: Graph) -> dict[str, int]:
    def build(b, node):
        return hard_sigmoid_primitives(b, node.inputs[0], float(node.attrs.get("alpha", 0.2)),
                                       float(node.attrs.get("beta", 0.5)))

    return {"hard_sigmoid": _run(graph, "hard_sigmoid", build, "decompose-hard-sigmoid")}
