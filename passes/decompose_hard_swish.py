"""``decompose-hard-swish``: ``hard_swish`` (ONNX opset 14) -> ``x * HardSigmoid(x)`` (``form=hard_sigmoid``) or
``x * Clip(x/6 + 0.5, 0, 1)`` (``form=clip``, for targets without HardSigmoid). Exact.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.pass_api import PassError, graph_pass

from ._decompose_util import _run, hard_sigmoid_primitives


@graph_pass("decompose-hard-swish", "hard_swish -> x * HardSigmoid(x) (form=hard_sigmoid) or x * Clip(x/6 + 0.5, "
                                    "0, 1) (form=clip)")
def decompose_hard_swish(graph: Graph, form: str = "hard_sigmoid") -> dict[str, int]:
    if form not in ("hard_sigmoid", "clip"):
        raise PassError(f"decompose-hard-swish: form must be 'hard_sigmoid' or 'clip', got {form!r}")

    def build(b, node):
        x = node.inputs[0]
        if form == "hard_sigmoid":
            return b.mul(x, b.hard_sigmoid(x, alpha=1.0 / 6.0, beta=0.5))
        return b.mul(x, hard_sigmoid_primitives(b, x, 1.0 / 6.0, 0.5))

    return {"hard_swish": _run(graph, "hard_swish", build, "decompose-hard-swish")}
