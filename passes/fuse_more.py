"""Inference simplifications that fold work into neighbouring nodes (what onnxsim/onnxoptimizer also do, and more).

* ``strip-dropout``: Dropout is the identity at inference.
* ``fold-elementwise``: ``(x * c1) * c2 -> x * (c1*c2)``, ``(x + c1) - c2 -> x + (c1-c2)``, ``(x / c1) * c2``...
* ``fuse-channel-affine``: a per-channel ``Mul``/``Add``/``Sub``/``Div`` by a constant after Conv, Gemm, MatMul or
  an inference BatchNorm is folded into that node's weights (Caffe2-style ``BN -> Mul -> Add`` scale layers,
  layer-scale constants).
* ``fuse-pad``: an explicit ``Pad`` before Conv / AveragePool / MaxPool becomes the consumer's ``pads``.
* ``fuse-matmul-add``: ``MatMul(A, B) + C`` on 2-D operands becomes one ``Gemm``.

All are exact up to float rounding of the folded constants (the products are formed in float64 and cast back).
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import RewriteRule, erase_dead

from ._util import (
    is_graph_output,
    new_const,
    only_used_by,
    per_channel,
    rank_of,
    scalar_of,
    spatial_pads,
    static_shape,
    weight_kind,
)

# --------------------------------------------------------------------------------------------- strip-dropout


@graph_pass("strip-dropout", "Remove Dropout nodes (the identity at inference)")
def strip_dropout(graph: Graph) -> dict[str, int]:
    """Why a separate pass from canonicalize: canonicalize keeps a non-zero-ratio Dropout because the graph may
    still be trained; export pipelines are inference-only and drop them all."""
    n = 0
    for node in graph.nodes_by_op().get("dropout", []):
        x, out = node.inputs[0], node.outputs[0]
        if x is None or (is_graph_output(graph, out) and (x.producer is None or is_graph_output(graph, x))):
            continue  # the graph output would alias a graph input or another output
        graph.replace_all_uses(out, x)
        graph.erase_node(node)
        n += 1
    return {"dropout": n}


# ------------------------------------------------------------------------------------------ fold-elementwise
def _as_affine(node: Node) -> tuple[Value, np.ndarray, str] | None:
    """``node`` as ``x (+|*) c`` with c constant: returns (x, c, "add"|"mul"), normalizing sub and div."""
    if node.op not in ("add", "sub", "mul", "div") or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is None or b is None:
        return None
    out_t = node.outputs[0].type
    if out_t is None or out_t.dtype is None:
        return None
    is_float = out_t.dtype.is_float
    if node.op in ("add", "mul"):
        if b.is_const and not a.is_const:
            x, c = a, b.const
        elif a.is_const and not b.is_const:
            x, c = b, a.const
        else:
            return None
        return x, np.asarray(c), node.op
    if a.is_const or not b.is_const:
        return None  # c - x and c / x are not affine in x
    c = np.asarray(b.const)
    if node.op == "sub":
        return a, -c.astype(np.float64) if is_float else -c, "add"
    if not is_float or np.any(c == 0):
        return None
    return a, 1.0 / c.astype(np.float64), "mul"


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


# --------------------------------------------------------------------------------------- fuse-channel-affine
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


# ------------------------------------------------------------------------------------------------- fuse-pad
def _pad_spec(pad: Node, rank: int) -> tuple[list[int], float] | None:
    """Full ``[b0..bn, e0..en]`` pads and the pad value of a constant-mode Pad, or None."""
    if pad.attrs.get("mode", "constant") != "constant":
        return None
    pads_v = pad.inputs[1]
    if pads_v is None or pads_v.const is None:
        return None
    pads = [int(p) for p in pads_v.const.reshape(-1)]
    cv = pad.inputs[2] if len(pad.inputs) > 2 else None
    value = 0.0
    if cv is not None:
        s = scalar_of(cv)
        if s is None:
            return None
        value = s
    axes_v = pad.inputs[3] if len(pad.inputs) > 3 else None
    if axes_v is not None:
        if axes_v.const is None:
            return None
        axes = [int(a) % rank for a in axes_v.const.reshape(-1)]
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[a + rank] = pads[i], pads[i + len(axes)]
        pads = full
    if len(pads) != 2 * rank:
        return None
    return pads, value


_NONNEG_PRODUCERS = {"relu", "sigmoid", "softmax", "abs", "exp", "sqrt", "softplus"}


def _nonnegative(v: Value) -> bool:
    p = v.producer
    if p is None:
        return False
    if p.op in _NONNEG_PRODUCERS:
        return True
    if p.op == "clip":
        lo = scalar_of(p.inputs[1]) if len(p.inputs) > 1 and p.inputs[1] is not None else None
        return lo is not None and lo >= 0
    return False


@graph_pass("fuse-pad", "Fold a constant Pad into the pads of the following Conv, AveragePool or MaxPool")
def fuse_pad(graph: Graph) -> dict[str, int]:
    """Exactness conditions: Conv takes zero padding only; AveragePool takes zero padding when it has no pads of its
    own (it then counts the pad, ``count_include_pad=1``, as the explicit Pad did); MaxPool takes ``-inf`` padding,
    or zero padding of a provably non-negative input with every window overlapping real data."""
    count = {"conv": 0, "avg_pool": 0, "max_pool": 0}
    for node in graph.nodes:
        if node.op not in count or node.graph is not graph:
            continue
        x = node.inputs[0]
        pad = x.producer if x is not None else None
        if pad is None or pad.op != "pad" or not only_used_by(graph, x, node):  # type: ignore[arg-type]
            continue
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", None):
            continue
        src = pad.inputs[0]
        rank = rank_of(src)
        if rank is None or rank < 3:
            continue
        spec = _pad_spec(pad, rank)
        if spec is None:
            continue
        pads, value = spec
        nd = rank - 2
        if any(pads[i] != 0 or pads[i + rank] != 0 for i in (0, 1)) or any(p < 0 for p in pads):
            continue
        add = pads[2:rank] + pads[rank + 2:]
        own = spatial_pads(node, nd)
        new_attrs = dict(node.attrs)
        if node.op == "conv":
            if value != 0.0:
                continue
        elif node.op == "avg_pool":
            if value != 0.0 or any(own) and not node.attrs.get("count_include_pad") or node.attrs.get("ceil_mode"):
                continue
            new_attrs["count_include_pad"] = 1
        else:
            k = list(node.attrs.get("kernel_shape") or [])
            dil = node.attrs.get("dilations")
            if value == -np.inf:
                pass
            elif value == 0.0 and _nonnegative(src) and not node.attrs.get("ceil_mode") \
                    and (dil is None or all(int(d) == 1 for d in dil)) \
                    and all(own[i] + add[i] < k[i] and own[i + nd] + add[i + nd] < k[i] for i in range(nd)):
                pass
            else:
                continue
        new_attrs["pads"] = [a + b for a, b in zip(own, add, strict=True)]
        node.attrs = new_attrs  # in place: same output shape, same name
        node.set_input(0, src)
        graph.erase_node(pad)
        count[node.op] += 1
    graph.remove_unused_constants()
    return count


# ------------------------------------------------------------------------------------------ fuse-matmul-add
def _matmul_add(op, a, b, c):
    return op.add(op.matmul(a, b), c)


def _check_matmul_add(match, a, b, c) -> bool:
    if rank_of(a) != 2 or rank_of(b) != 2 or c.type is None or c.type.shape is None:
        return False
    out = match.root.outputs[0].type
    mm = match.node_for("matmul").outputs[0].type
    if out is None or mm is None or out.shape != mm.shape or not out.dtype.is_float:
        return False  # C must broadcast unidirectionally to (M, N) (Gemm's rule)
    return len(c.type.shape) <= 2


def _gemm(op, a, b, c):
    return op.gemm(a, b, c)


MATMUL_ADD = RewriteRule(_matmul_add, _gemm, _check_matmul_add, name="matmul-add")


@graph_pass("fuse-matmul-add", "MatMul + Add on 2-D operands -> Gemm")
def fuse_matmul_add(graph: Graph) -> dict[str, int]:
    return {"gemm": MATMUL_ADD.apply(graph)}



# ------------------------------------------------------------------------------------------- fuse-reshapes
RESHAPE_FAMILY = ("reshape", "flatten", "squeeze", "unsqueeze")


@graph_pass("fuse-reshapes", "Collapse chains of Reshape/Flatten/Squeeze/Unsqueeze with a static result into one "
                             "Reshape")
def fuse_reshapes(graph: Graph) -> dict[str, int]:
    """Why beyond canonicalize's reshape-chain rule: exporters emit ``Unsqueeze(Reshape(x))`` and
    ``Flatten(Squeeze(x))`` too; any two data-preserving shape ops compose into one Reshape to the final shape."""
    n = 0
    for node in graph.nodes:
        if node.graph is not graph or node.op not in RESHAPE_FAMILY:
            continue
        x = node.inputs[0]
        inner = x.producer if x is not None else None
        out = node.outputs[0].type
        if inner is None or inner.op not in RESHAPE_FAMILY or out is None or not out.is_static:
            continue
        shape = [int(d) for d in out.shape]  # type: ignore[union-attr]
        target = graph.add_const(f"{node.name}_shape".replace(".", "_"), np.asarray(shape, dtype=np.int64))
        src = inner.inputs[0]
        node.op = "reshape"  # in place: same output value and name
        for i in range(len(node.inputs)):
            node.set_input(i, None)
        node.inputs = [None, None]
        node.set_input(0, src)
        node.set_input(1, target)
        node.attrs = {"allowzero": 1 if 0 in shape else 0}
        if not inner.outputs[0].uses and not is_graph_output(graph, inner.outputs[0]):
            graph.erase_node(inner)
        n += 1
    graph.remove_unused_constants()
    return {"reshape-chain": n}


# --------------------------------------------------------------------------------------------- fuse-slices
def _slice_params(node: Node, rank: int) -> dict[int, tuple[int, int, int]] | None:
    vals = []
    for i in range(1, 5):
        v = node.inputs[i] if len(node.inputs) > i else None
        if v is None:
            vals.append(None)
        elif v.const is None:
            return None
        else:
            vals.append([int(a) for a in v.const.reshape(-1)])
    starts, ends, axes, steps = vals
    axes = list(range(len(starts))) if axes is None else [a % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if len(set(axes)) != len(axes):
        return None
    return {a: (s, e, st) for a, s, e, st in zip(axes, starts, ends, steps, strict=True)}


@graph_pass("fuse-slices", "Merge a Slice of a Slice on different axes into one Slice")
def fuse_slices(graph: Graph) -> dict[str, int]:
    """``x[:, :, ::2][..., ::2]`` (two exporter Slices) becomes one Slice over both axes."""
    n = 0
    for node in graph.nodes:
        if node.op != "slice" or node.graph is not graph:
            continue
        x = node.inputs[0]
        inner = x.producer if x is not None else None
        r = rank_of(x)
        if inner is None or inner.op != "slice" or r is None or not only_used_by(graph, x, node):
            continue
        p_out, p_in = _slice_params(node, r), _slice_params(inner, r)
        if p_out is None or p_in is None or set(p_out) & set(p_in):
            continue
        merged = {**p_in, **p_out}
        axes = sorted(merged)
        arrs = [np.asarray([merged[a][k] for a in axes], dtype=np.int64) for k in range(3)]
        consts = [graph.add_const(f"{node.name}_{what}".replace(".", "_"), arr)
                  for what, arr in zip(("starts", "ends", "steps"), arrs, strict=True)]
        ax = graph.add_const(f"{node.name}_axes".replace(".", "_"), np.asarray(axes, dtype=np.int64))
        for i in range(len(node.inputs)):
            node.set_input(i, None)
        node.inputs = [None] * 5
        for i, v in enumerate([inner.inputs[0], consts[0], consts[1], ax, consts[2]]):
            node.set_input(i, v)
        graph.erase_node(inner)
        n += 1
    graph.remove_unused_constants()
    return {"slice": n}


# ---------------------------------------------------------------------------------------- fuse-preceding-mul
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


# --------------------------------------------------------------------------------- fold-softmax-flatten
@graph_pass("fold-softmax-flatten", "Reshape(Softmax(Flatten(x))) back to x's shape -> Softmax(x) on the one "
                                    "non-unit axis")
def fold_softmax_flatten(graph: Graph) -> dict[str, int]:
    """Old-opset Softmax (coerced to 2-D) imports as Flatten -> Softmax -> Reshape; on a (N, C, 1, 1) tensor
    it is just a softmax over C."""
    n = 0
    for sm in graph.nodes_by_op().get("softmax", []):
        f = sm.inputs[0].producer if sm.inputs[0] is not None else None
        users = sm.outputs[0].users
        if f is None or f.op != "flatten" or len(users) != 1 or users[0].op != "reshape":
            continue
        rs = users[0]
        x = f.inputs[0]
        xs = x.type.shape if x is not None and x.type is not None else None
        if xs is None or not x.type.is_static or rs.outputs[0].type is None or rs.outputs[0].type.shape != xs:
            continue
        if not only_used_by(graph, f.outputs[0], sm) or is_graph_output(graph, sm.outputs[0]):
            continue
        a = int(f.attrs.get("axis", 1)) % len(xs)
        if int(sm.attrs.get("axis", -1)) % 2 != 1:
            continue
        non_unit = [i for i in range(a, len(xs)) if xs[i] != 1]
        if len(non_unit) > 1:
            continue
        axis = non_unit[0] if non_unit else a
        sm.attrs = {**sm.attrs, "axis": axis - len(xs)}
        sm.set_input(0, x)
        graph.erase_node(f)
        graph.replace_all_uses(rs.outputs[0], sm.outputs[0])
        graph.erase_node(rs)
        from graphopt.ir.infer import infer_node

        infer_node(sm)
        n += 1
    graph.remove_unused_constants()
    return {"softmax": n}


# ------------------------------------------------------------------------------------------ dedup-constants
@graph_pass("dedup-constants", "Merge constants with identical dtype, shape and bytes (weights included), then "
                               "merge the nodes that became identical")
def dedup_constants(graph: Graph) -> dict[str, int]:
    """Why separate from ``cse``: cse merges small literals only; this also merges weights, which ties them, so it
    belongs in inference/export pipelines, not before training."""
    import hashlib

    from .cleanup import cse

    seen: dict[tuple, Value] = {}
    merged = 0
    for v in list(graph.constants.values()):
        if v.const is None or not v.uses:
            continue
        a = np.ascontiguousarray(v.const)  # 1-d even for a scalar: the key takes the true shape below
        key = (a.dtype.str, np.shape(v.const), hashlib.blake2b(a.view(np.uint8).reshape(-1), digest_size=16).digest())
        prev = seen.get(key)
        if prev is None:
            seen[key] = v
            continue
        if not np.array_equal(prev.const, a):
            continue
        graph.replace_all_uses(v, prev)
        if v.kind == "param" or prev.kind == "param":
            prev.kind = "param" if prev.kind == "param" or v.kind == "param" else prev.kind
        merged += 1
    graph.remove_unused_constants()
    nodes = cse(graph).get("nodes", 0) if merged else 0
    return {"constants": merged, "nodes": nodes}


# ------------------------------------------------------------------------------ attention head layout folds
def _single_use(graph: Graph, v: Value | None, node: Node) -> bool:
    return v is not None and v.producer is not None and len(v.uses) == 1 and only_used_by(graph, v, node)


def _float_const(v: Value | None) -> np.ndarray | None:
    a = None if v is None else v.const
    return a if a is not None and a.dtype.kind == "f" else None


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
