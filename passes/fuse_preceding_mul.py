"""``fuse-preceding-mul``: a per-channel ``Mul`` by a constant before a MatMul, Gemm or Conv is folded into its weights.

``(x * g) @ W -> x @ (diag(g) W)``: RMSNorm/LayerNorm gains and input scalings that feed a linear layer. Scalar
factors are left alone (see :func:`fuse_preceding_mul`). Exact up to float rounding of the folded weights.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._util import _as_affine, is_graph_output, new_const, per_channel, weight_kind


@graph_pass("fuse-preceding-mul", "Fold a per-channel Mul by a constant into the following MatMul/Gemm/Conv "
                                  "weights")
def fuse_preceding_mul(graph: Graph) -> dict[str, int]:
    """``(x * g) @ W -> x @ (diag(g) W)``: RMSNorm/LayerNorm gains and input scalings that feed a linear layer.

    For Conv the scale must be per input channel; zero padding commutes with it, so pads are fine. Scalar factors
    are left alone: the common one is GELU's trailing ``* 0.5``, and folding it away hides the GELU pattern from
    runtimes that fuse it (onnxruntime's GeluFusion) for no gain in work.
    """
    count = {"matmul": 0, "gemm": 0, "conv": 0}
    for node in graph.nodes:
        if node.op != "mul" or node.graph is not graph:
            continue
        aff = _as_affine(node)
        if aff is None:
            continue
        x, c, _ = aff
        if np.asarray(c).size == 1:
            continue
        y = node.outputs[0]
        users = y.users
        out_t = y.type
        if len(users) != 1 or is_graph_output(graph, y) or out_t is None or out_t.shape is None \
                or x.type is None or x.type.shape != out_t.shape or not out_t.dtype.is_float:
            continue
        cons = users[0]
        if cons.op not in count or len(y.uses) != 1 or y.uses[0].index != 0:
            continue
        r = len(out_t.shape)
        w = cons.inputs[1]
        if w is None or w.const is None:
            continue
        c = np.asarray(c, dtype=np.float64)
        if cons.op in ("matmul", "gemm"):
            if cons.op == "gemm" and cons.attrs.get("transA"):
                continue
            vec = per_channel(c, r, r - 1)
            if vec is None or w.const.ndim != 2:
                continue
            k = w.const.shape[1] if cons.op == "gemm" and cons.attrs.get("transB") else w.const.shape[0]
            if vec.size not in (1, k):
                continue
            v = np.broadcast_to(vec, (k,))
            wf = w.const.astype(np.float64) * (v.reshape(1, -1) if cons.op == "gemm" and cons.attrs.get("transB")
                                                else v.reshape(-1, 1))
        else:
            vec = per_channel(c, r, 1)
            if vec is None:
                continue
            cout, cin_g = w.const.shape[0], w.const.shape[1]
            g = int(cons.attrs.get("group", 1))
            cin = cin_g * g
            if vec.size not in (1, cin):
                continue
            v = np.broadcast_to(vec, (cin,))
            per_out = cout // g
            scale = np.stack([v[(o // per_out) * cin_g:(o // per_out + 1) * cin_g] for o in range(cout)])
            wf = w.const.astype(np.float64) * scale.reshape(cout, cin_g, *([1] * (w.const.ndim - 2)))
        cons.set_input(1, new_const(graph, f"{cons.name}_w_prescaled", wf, like=w, kind=weight_kind(w)))
        cons.set_input(0, x)
        graph.erase_node(node)
        count[cons.op] += 1
    graph.remove_unused_constants()
    return count
