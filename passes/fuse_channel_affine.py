"""``fuse-channel-affine``: a per-channel ``Mul``/``Add``/``Sub``/``Div`` by a constant after Conv, Gemm, MatMul or an
inference BatchNorm is folded into that node's weights.

Why: Caffe2/TF exports scale BN outputs with separate Mul/Add nodes (``BN -> Mul -> Add`` scale layers), and
layer-scale constants multiply conv or linear outputs; both are free once folded into the producer. Exact up to
float rounding of the folded weights (formed in float64 and cast back).
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.pass_api import graph_pass

from ._util import _as_affine, new_const, only_used_by, per_channel, weight_kind


def _fold_into_conv(graph: Graph, p: Node, vec: np.ndarray, kind: str) -> bool:
    w, b = p.inputs[1], p.inputs[2] if len(p.inputs) > 2 else None
    if w is None or w.const is None or (b is not None and b.const is None):
        return False
    cout = w.const.shape[0]
    if vec.size not in (1, cout):
        return False
    v = np.broadcast_to(vec.astype(np.float64), (cout,))
    b0 = b.const.astype(np.float64) if b is not None else np.zeros(cout)
    if kind == "mul":
        w_new = w.const.astype(np.float64) * v.reshape(-1, *([1] * (w.const.ndim - 1)))
        b_new = b0 * v
        p.set_input(1, new_const(graph, f"{p.name}_w_scaled", w_new, like=w, kind=weight_kind(w)))
    else:
        b_new = b0 + v
    bias = new_const(graph, f"{p.name}_b_folded", b_new, like=w, kind=weight_kind(w, b))
    if len(p.inputs) < 3:
        p.inputs.append(None)
    p.set_input(2, bias)
    return True


def _fold_into_bn(graph: Graph, p: Node, vec: np.ndarray, kind: str) -> bool:
    scale, bias = p.inputs[1], p.inputs[2]
    if scale is None or bias is None or scale.const is None or bias.const is None:
        return False
    c = scale.const.shape[0]
    if vec.size not in (1, c):
        return False
    v = np.broadcast_to(vec.astype(np.float64), (c,))
    if kind == "mul":
        p.set_input(1, new_const(graph, f"{p.name}_scale_folded", scale.const * v, like=scale,
                                 kind=weight_kind(scale)))
        p.set_input(2, new_const(graph, f"{p.name}_bias_folded", bias.const * v, like=bias, kind=weight_kind(bias)))
    else:
        p.set_input(2, new_const(graph, f"{p.name}_bias_folded", bias.const + v, like=bias, kind=weight_kind(bias)))
    return True


def _fold_into_gemm(graph: Graph, p: Node, vec: np.ndarray, kind: str) -> bool:
    a = p.attrs
    if a.get("transA") or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
        return False
    w = p.inputs[1]
    c = p.inputs[2] if len(p.inputs) > 2 else None
    out = p.outputs[0].type
    if w is None or w.const is None or (c is not None and c.const is None) or out is None or not out.is_static:
        return False
    n = int(out.shape[1])  # type: ignore[index]
    if vec.size not in (1, n):
        return False
    v = np.broadcast_to(vec.astype(np.float64), (n,))
    c0 = c.const.astype(np.float64) if c is not None else np.zeros(n)
    if kind == "mul":
        wf = w.const.astype(np.float64) * (v.reshape(-1, 1) if a.get("transB") else v.reshape(1, -1))
        p.set_input(1, new_const(graph, f"{p.name}_w_scaled", wf, like=w, kind=weight_kind(w)))
        c_new = c0 * v
    else:
        c_new = c0 + v
    if len(p.inputs) < 3:
        p.inputs.append(None)
    p.set_input(2, new_const(graph, f"{p.name}_c_folded", c_new, like=w, kind=weight_kind(w, c)))
    return True


def _fold_into_matmul(graph: Graph, p: Node, vec: np.ndarray, kind: str) -> bool:
    w = p.inputs[1]
    if kind != "mul" or w is None or w.const is None or w.const.ndim != 2:
        return False
    n = w.const.shape[1]
    if vec.size not in (1, n):
        return False
    wf = w.const.astype(np.float64) * np.broadcast_to(vec.astype(np.float64), (n,)).reshape(1, -1)
    p.set_input(1, new_const(graph, f"{p.name}_w_scaled", wf, like=w, kind=weight_kind(w)))
    return True


@graph_pass("fuse-channel-affine", "Fold per-channel Mul/Add/Sub/Div constants into the preceding Conv, Gemm, "
                                   "MatMul or BatchNorm")
def fuse_channel_affine(graph: Graph) -> dict[str, int]:
    """Why: Caffe2/TF exports scale BN outputs with separate Mul/Add nodes, and layer-scale parameters multiply conv
    or linear outputs; both are free once folded into the producer's weights."""
    count = {"conv": 0, "batch_norm": 0, "gemm": 0, "matmul": 0}
    for node in graph.nodes:
        if node.graph is not graph:
            continue
        aff = _as_affine(node)
        if aff is None:
            continue
        x, c, kind = aff
        p = x.producer
        if p is None or p.op not in count or not only_used_by(graph, x, node) or len(p.outputs) != 1:
            continue
        out_t = node.outputs[0].type
        if out_t is None or not out_t.dtype.is_float or out_t.shape is None or x.type is None \
                or x.type.shape is None or len(out_t.shape) != len(x.type.shape):
            continue
        r = len(out_t.shape)
        axis = r - 1 if p.op in ("gemm", "matmul") else 1
        vec = per_channel(np.asarray(c), r, axis)
        if vec is None:
            continue
        fold = {"conv": _fold_into_conv, "batch_norm": _fold_into_bn, "gemm": _fold_into_gemm,
                "matmul": _fold_into_matmul}[p.op]
        if p.op == "batch_norm" and p.attrs.get("training"):
            continue
        if not fold(graph, p, vec, kind):
            continue
        graph.replace_all_uses(node.outputs[0], x)
        graph.erase_node(node)
        count[p.op] += 1
    graph.remove_unused_constants()
    return count
