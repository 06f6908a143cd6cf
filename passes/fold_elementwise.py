"""``fold-elementwise``: merge chains of Add/Sub or Mul/Div by constants into one node.

``(x * c1) * c2 -> x * (c1*c2)``, ``(x + c1) - c2 -> x + (c1-c2)``, ``(x / c1) * c2 -> x * (c2/c1)``; the inner node
must have no other users. Float constants are combined in float64 and cast back, so the result is exact up to that
rounding.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._util import _as_affine, new_const, only_used_by


@graph_pass("fold-elementwise", "Merge chains of Add/Sub or Mul/Div by constants into one node")
def fold_elementwise(graph: Graph) -> dict[str, int]:
    """``(x*c1)*c2 -> x*(c1*c2)`` and ``(x+c1)-c2 -> x+(c1-c2)``; the inner node must have no other users.

    Why only same-kind chains: ``(x+c1)*c2 -> x*c2 + c1*c2`` keeps the node count and changes rounding.
    """
    count = {"mul-chain": 0, "add-chain": 0}
    for node in graph.nodes:
        if node.graph is not graph:
            continue
        outer = _as_affine(node)
        if outer is None:
            continue
        y, c2, kind = outer
        inner_node = y.producer
        if inner_node is None or not only_used_by(graph, y, node):
            continue
        inner = _as_affine(inner_node)
        if inner is None or inner[2] != kind:
            continue
        x, c1, _ = inner
        dt = node.outputs[0].type.dtype.to_numpy()  # type: ignore[union-attr]
        if np.issubdtype(dt, np.floating):
            c = (c1.astype(np.float64) * c2.astype(np.float64)) if kind == "mul" else (
                c1.astype(np.float64) + c2.astype(np.float64))
        else:
            c = c1 * c2 if kind == "mul" else c1 + c2
        cv = new_const(graph, f"{node.name}_c", np.asarray(c).astype(dt))
        node.op = kind  # rewritten in place: keeps the node's name and output value
        node.set_input(0, x)
        node.set_input(1, cv)
        graph.erase_node(inner_node)
        count[f"{kind}-chain"] += 1
    graph.remove_unused_constants()
    return count
