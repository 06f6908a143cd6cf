"""``merge-parallel-matmuls``: MatMuls of one input by constant weights (Q/K/V, gate/up projections) -> one MatMul
with the weights concatenated + a Split.

Why: one wider MatMul reads the input once and keeps the MAC array busier than several narrow ones; each output
column is the same dot product as before, so the results are unchanged.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.pass_api import graph_pass
from graphopt.rewrite import erase_dead

from ._util import _float_const, new_const, static_shape, weight_kind


@graph_pass("merge-parallel-matmuls", "MatMuls of one input by constant weights (Q/K/V, gate/up projections) -> "
                                      "one MatMul with concatenated weights + Split")
def merge_parallel_matmuls(graph: Graph) -> dict[str, int]:
    """Why: one wider MatMul reads the input once and keeps the MAC array busier than several narrow ones; each
    output column is the same dot product as before, so the results are unchanged. Weights must have the same
    shape except the last (output) axis."""
    groups: dict[tuple, list[Node]] = {}
    for n in graph.nodes:
        if n.op != "matmul" or n.graph is not graph or n.inputs[0] is None or n.inputs[0].const is not None:
            continue
        w = _float_const(n.inputs[1])
        if w is None or w.ndim < 2 or static_shape(n.outputs[0]) is None:
            continue
        groups.setdefault((id(n.inputs[0]), w.shape[:-1], w.dtype.str), []).append(n)
    merged = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        ws = [m.inputs[1].const for m in members]
        sizes = [int(w.shape[-1]) for w in ws]
        first = members[0]  # graph.nodes is topological: the earliest member
        rank = len(static_shape(first.outputs[0]))  # type: ignore[arg-type]
        with graph.inserting_before(first):
            wv = new_const(graph, f"{first.name}_w_merged", np.concatenate(ws, axis=-1), like=first.inputs[1],
                           kind=weight_kind(*[m.inputs[1] for m in members]))
            out = graph.create_node("matmul", [first.inputs[0], wv], name=f"{first.name}_merged").output
            split = graph.add_const(f"{first.name}_split", np.asarray(sizes, dtype=np.int64))
            sp = graph.create_node("split", [out, split], {"axis": rank - 1, "num_outputs": len(members)},
                                   name=f"{first.name}_split")
        if any(o.type != m.outputs[0].type for o, m in zip(sp.outputs, members, strict=True)):
            erase_dead(graph, [sp, out.producer])
            continue
        for o, m in zip(sp.outputs, members, strict=True):
            graph.replace_all_uses(m.outputs[0], o)
        erase_dead(graph, members)
        merged += len(members)
    graph.remove_unused_constants()
    return {"matmuls": merged}
