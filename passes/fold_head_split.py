"""``fold-head-split``: ``MatMul(x, W) [+ b] -> Reshape(..., H, D) -> Transpose`` (an attention head split) -> one
MatMul with head-major weights [+ a smaller Transpose].

Why: re-laying the constant weight out per head lets MatMul's broadcasting produce ``[.., H, S, D]`` directly, so
the Reshape and usually the Transpose disappear. Leading (batch) dims of ``x`` must be 1; see
:func:`fold_head_split`.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import erase_dead

from ._util import _float_const, _single_use, new_const, per_channel, static_shape, weight_kind


def _linear_with_bias(graph: Graph, y: Value, consumer: Node) -> tuple[Node, Node | None, np.ndarray | None] | None:
    """``y = MatMul(x, W) [+ b]`` with constant 2-D ``W`` and a bias varying only along the last axis, each
    intermediate used only on the way to ``consumer``: (matmul, add node or None, bias vector or None)."""
    if not _single_use(graph, y, consumer):
        return None
    p = y.producer
    add, bias = None, None
    if p.op == "add" and len(p.inputs) == 2:
        for i in (0, 1):
            b = _float_const(p.inputs[i])
            inner = p.inputs[1 - i]
            if b is not None and inner is not None and inner.producer is not None and inner.producer.op == "matmul" \
                    and _single_use(graph, inner, p) and y.type is not None and inner.type == y.type:
                vec = per_channel(b, len(y.type.shape or ()), len(y.type.shape or ()) - 1)
                if vec is not None:
                    add, bias, p = p, vec, inner.producer
                    break
        else:
            return None
    if p.op != "matmul":
        return None
    w = _float_const(p.inputs[1])
    if w is None or w.ndim != 2 or p.inputs[0] is None or p.inputs[0].const is not None:
        return None
    return p, add, bias


@graph_pass("fold-head-split", "MatMul(x, W) [+ b] -> Reshape(..., H, D) -> Transpose (attention head split) "
                               "-> one MatMul with head-major weights [+ a smaller Transpose]")
def fold_head_split(graph: Graph) -> dict[str, int]:
    """Why: attention exports compute ``x @ Wq`` as ``[.., S, H*D]`` and then move heads to the front with a
    Reshape + Transpose. Re-laying the constant weight out as ``[1.., H, K, D]`` lets MatMul's broadcasting
    produce ``[.., H, S, D]`` directly (each output element is the same dot product), so the Reshape and usually
    the Transpose disappear (for K^T a last-two-axes Transpose remains).

    Limitation (documented, checked): the leading (batch) dims of ``x`` must all be 1 -- the batch-1 static
    shapes NPU exports and benchmarks use -- because a batch dim > 1 would broadcast against the new head axis.
    """
    n_done = 0
    for t in graph.nodes:
        if t.op != "transpose" or t.graph is not graph:
            continue
        r_v = t.inputs[0]
        if not _single_use(graph, r_v, t) or r_v.producer.op != "reshape":
            continue
        rs = r_v.producer
        lin = _linear_with_bias(graph, rs.inputs[0], rs)
        if lin is None:
            continue
        mm, add, bias = lin
        x, w = mm.inputs[0], mm.inputs[1].const
        xs, rsh = static_shape(x), static_shape(r_v)
        if xs is None or rsh is None or len(xs) < 2 or any(d != 1 for d in xs[:-2]):
            continue
        nb, (k, n) = len(xs) - 2, w.shape
        if len(rsh) != len(xs) + 1 or tuple(rsh[:-2]) != tuple(xs[:-1]) or rsh[-2] * rsh[-1] != n or xs[-1] != k:
            continue
        h, d = rsh[-2], rsh[-1]
        perm = t.attrs.get("perm") or list(reversed(range(len(rsh))))
        t0 = list(range(nb)) + [nb + 1, nb, nb + 2]  # reshaped axes in the order the new MatMul produces them
        q = [t0.index(int(a)) for a in perm]
        w_new = w.reshape(k, h, d).transpose(1, 0, 2).reshape((1,) * nb + (h, k, d))
        with graph.inserting_before(t):
            wv = new_const(graph, f"{mm.name}_w_heads", w_new, like=mm.inputs[1], kind=weight_kind(mm.inputs[1]))
            out = graph.create_node("matmul", [x, wv], name=mm.name).output
            if add is not None:
                b_arr = bias if bias.size == 1 else bias.reshape((1,) * nb + (h, 1, d))
                bv = new_const(graph, f"{add.name}_b_heads", b_arr, like=mm.inputs[1])
                out = graph.create_node("add", [out, bv], name=add.name).output
            if q != list(range(len(q))):
                out = graph.create_node("transpose", [out], {"perm": q}, name=t.name).output
        if out.type != t.outputs[0].type:  # shape inference disagrees: undo (consumers first)
            created = []
            while out.producer is not None and out.producer is not mm and out is not x:
                created.append(out.producer)
                out = out.producer.inputs[0]
            erase_dead(graph, created)
            continue
        graph.replace_all_uses(t.outputs[0], out)
        erase_dead(graph, [t, rs, *([add] if add is not None else []), mm])
        n_done += 1
    graph.remove_unused_constants()
    return {"head-split": n_done}
