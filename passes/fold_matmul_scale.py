"""``fold-matmul-scale``: a scalar ``Mul``/``Div`` after a MatMul chain -> folded into a constant weight upstream
(attention's ``1/sqrt(d)`` scaling).

A scalar commutes with MatMul, layout ops and a constant bias (scaled with it), so one node goes. Exact when the
factor is a power of two; otherwise equal up to one rounding of the folded weight.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass

from ._util import _float_const, _single_use, new_const, scalar_of, weight_kind


def _scale_sites(graph: Graph, v: Value | None, consumer: Node, depth: int = 0) -> list[tuple[Node, int]] | None:
    """Constant inputs that must all be multiplied by ``c`` so that ``v`` becomes ``c * v`` (or None): through
    MatMul (linear in each operand), layout ops, and Add/Sub of a constant (scaled too)."""
    if depth > 16 or v is None or not _single_use(graph, v, consumer):
        return None
    p = v.producer
    if p.op == "matmul":
        for i in (1, 0):
            if _float_const(p.inputs[i]) is not None:
                return [(p, i)]
        for i in (0, 1):
            s = _scale_sites(graph, p.inputs[i], p, depth + 1)
            if s is not None:
                return s
        return None
    if p.op in ("transpose", "reshape", "squeeze", "unsqueeze", "flatten"):
        return _scale_sites(graph, p.inputs[0], p, depth + 1)
    if p.op in ("add", "sub") and len(p.inputs) == 2:
        for i in (0, 1):
            if _float_const(p.inputs[i]) is not None:
                s = _scale_sites(graph, p.inputs[1 - i], p, depth + 1)
                return None if s is None else [*s, (p, i)]
    return None


@graph_pass("fold-matmul-scale", "Fold a scalar Mul/Div after a MatMul chain into a constant weight upstream "
                                 "(attention's 1/sqrt(d) scaling)")
def fold_matmul_scale(graph: Graph) -> dict[str, int]:
    """``(x @ Wq') @ K^T * c -> (x @ (c Wq')) @ K^T``: a scalar commutes with MatMul, layout ops and a constant
    bias (scaled with it), so it can be absorbed by the first constant weight found upstream. Exact when ``c`` is
    a power of two (1/sqrt(64) = 0.125); otherwise equal up to one rounding of the folded weight."""
    n_done = 0
    for node in graph.nodes:
        if node.op not in ("mul", "div") or node.graph is not graph or len(node.inputs) != 2:
            continue
        cands = [(1, 0)] if node.op == "div" else [(1, 0), (0, 1)]
        for ci, xi in cands:
            c = scalar_of(node.inputs[ci]) if _float_const(node.inputs[ci]) is not None else None
            x = node.inputs[xi]
            if c is None or x is None or x.type != node.outputs[0].type or x.type is None \
                    or not x.type.dtype.is_float or (node.op == "div" and c == 0.0):
                continue
            factor = 1.0 / c if node.op == "div" else c
            sites = _scale_sites(graph, x, node)
            if sites is None:
                continue
            for p, i in sites:
                old = p.inputs[i]
                p.set_input(i, new_const(graph, f"{p.name}_scaled", old.const.astype(np.float64) * factor, like=old,
                                         kind=weight_kind(old)))
            graph.replace_all_uses(node.outputs[0], x)
            graph.erase_node(node)
            n_done += 1
            break
    graph.remove_unused_constants()
    return {"scale": n_done}
