"""``approximate-gelu``: exact (erf) GELU -> its tanh or sigmoid approximation, for targets without Erf.

``form=tanh`` (max abs error ~5e-4 vs exact GELU) or ``form=sigmoid`` (``x * sigmoid(1.702 x)``, ~2e-2, needs only
Sigmoid and Mul; :func:`gelu_sigmoid` is also the NPU legalizer's builder). The pass changes numerics slightly, so it
is registered ``semantics_preserving=False``: numeric verification does not hold it to the original.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import PassError, graph_pass
from graphopt.rewrite import _ReplacementBuilder

from ._decompose_util import const_like, gelu_tanh, replace_node


def gelu_sigmoid(b: _ReplacementBuilder, x: Value) -> Value:
    """``x * sigmoid(1.702 x)`` (Hendrycks & Gimpel's sigmoid approximation; max abs error ~0.02)."""
    return b.mul(x, b.sigmoid(b.mul(x, const_like(b, 1.702, x, "k"))))


@graph_pass("approximate-gelu", "Exact (erf) gelu -> tanh or sigmoid approximation, for targets without Erf "
                                "(changes numerics slightly)", semantics_preserving=False)
def approximate_gelu(graph: Graph, form: str = "tanh") -> dict[str, int]:
    """``form``: ``tanh`` (max abs error ~5e-4 vs exact GELU) or ``sigmoid`` (~2e-2, needs only Sigmoid/Mul)."""
    if form not in ("tanh", "sigmoid"):
        raise PassError(f"approximate-gelu: form must be 'tanh' or 'sigmoid', got {form!r}")
    fn = gelu_tanh if form == "tanh" else gelu_sigmoid
    n = 0
    for node in graph.nodes_by_op().get("gelu", []):
        if replace_node(graph, node, lambda b, nd=node: fn(b, nd.inputs[0]), "approximate-gelu"):
            n += 1
    graph.remove_unused_constants()
    return {"gelu": n}
