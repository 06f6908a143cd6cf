"""``fold-head-merge``: ``Transpose -> Reshape`` (an attention head merge) ``-> MatMul(W)`` -> MatMul with per-head
weights + ReduceSum over heads.

Why: ``concat_h(Y_h) @ W = sum_h Y_h @ W_h``, so the merge's layout nodes go (one node fewer); equal up to float
rounding. Emits ReduceSum, so a target pipeline leaves it out where ReduceSum is not accepted.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass
from graphopt.rewrite import erase_dead

from ._util import _float_const, _single_use, new_const, static_shape, weight_kind


@graph_pass("fold-head-merge", "Transpose -> Reshape (attention head merge) -> MatMul(W) -> MatMul with per-head "
                               "weights + ReduceSum over heads", emits=("MatMul", "ReduceSum"))
def fold_head_merge(graph: Graph) -> dict[str, int]:
    """Why: the attention output ``[.., H, S, D]`` is merged back to ``[.., S, H*D]`` by Transpose + Reshape only
    to be multiplied by the output projection ``W [H*D, N]``. Since ``concat_h(Y_h) @ W = sum_h Y_h @ W_h``, a
    MatMul with the weight viewed as ``[H, D, N]`` followed by ReduceSum over the head axis computes the same
    result with one node fewer (sums are re-associated: equal up to float rounding).
    """
    n_done = 0
    for mm in graph.nodes:
        if mm.op != "matmul" or mm.graph is not graph:
            continue
        w = _float_const(mm.inputs[1])
        v = mm.inputs[0]
        if w is None or w.ndim != 2 or not _single_use(graph, v, mm) or v.producer.op != "reshape":
            continue
        rs = v.producer
        u = rs.inputs[0]
        if not _single_use(graph, u, rs) or u.producer.op != "transpose":
            continue
        tr = u.producer
        y = tr.inputs[0]
        ys, vs = static_shape(y), static_shape(v)
        if ys is None or vs is None or len(ys) < 3:
            continue
        rk = len(ys)
        perm = [int(a) for a in (tr.attrs.get("perm") or list(reversed(range(rk))))]
        h, s, d = ys[-3], ys[-2], ys[-1]
        if perm != list(range(rk - 3)) + [rk - 2, rk - 3, rk - 1] or tuple(vs) != tuple(ys[:-3]) + (s, h * d) \
                or w.shape[0] != h * d:
            continue
        with graph.inserting_before(mm):
            wv = new_const(graph, f"{mm.name}_w_heads", w.reshape(h, d, w.shape[1]), like=mm.inputs[1],
                           kind=weight_kind(mm.inputs[1]))
            prod = graph.create_node("matmul", [y, wv], name=mm.name).output
            axes = graph.add_const(f"{mm.name}_head_axis", np.asarray([rk - 3], dtype=np.int64))
            out = graph.create_node("reduce_sum", [prod, axes], {"keepdims": 0}, name=f"{mm.name}_sum_heads").output
        if out.type != mm.outputs[0].type:
            erase_dead(graph, [out.producer, prod.producer])
            continue
        graph.replace_all_uses(mm.outputs[0], out)
        erase_dead(graph, [mm, rs, tr])
        n_done += 1
    graph.remove_unused_constants()
    return {"head-merge": n_done}
