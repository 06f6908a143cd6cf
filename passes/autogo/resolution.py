"""Resolution propagation: fit a segment to new boundary shapes with an integer program (scipy/HiGHS).

AutoGO lets a database segment replace a source segment whose boundary shapes differ, by choosing new
per-node resolutions. Variables are the channel count C and spatial size H, W of every tensor in the segment
(NCHW; batch excluded). Constraints, following the paper:

* segment inputs are fixed to the predecessor's output shapes, segment outputs to what the successors expect;
* shape-preserving ops (activations, normalizations, unary math, dropout, identity) pass C, H, W through;
* ``conv`` / ``max_pool`` / ``avg_pool``: ``H_out, W_out`` in ``{H_in, H_in/2, H_in/4}`` (one stride
  ``s`` in {1, 2, 4} per node shared by H and W; ``s*H_out - H_in`` in ``[0, s-1]``, i.e. ceil division, so
  odd sizes work with SAME-style padding); pooling and depthwise convs keep channels, other convs choose
  ``C_out`` in ``{2*C_in, C_in, C_in/2}``;
* global pooling gives H = W = 1; ``concat`` on channels sums C and equates H, W; elementwise ops equate every
  dim except the dims an input broadcasts (size 1 in the segment as mined), which stay 1 (squeeze-excite);
* objective: ``sum_v w_v (|H_v - H0_v| + |W_v - W0_v| + |C_v - C0_v|)`` over node outputs, where ``H0`` etc.
  are the resolutions the segment was mined with and ``w_v = 1 + (number of descendants of v in the
  segment)``: a change early in the segment reshapes everything after it, so it costs more. Ratio choices
  are linearized with big-M constraints.

The solution fixes strides as ``in/out`` (ceil), padding is recomputed for any kernel and stride (explicit
SAME-style pads: the source segment's own padding mode does not matter), and :func:`instantiate` rebuilds
the segment with fresh weights of the new shapes. Segments containing other ops (reshape, matmul, ...) are
only used where their boundary shapes match exactly.

**Token sequences** (our extension; the paper's segments are all CNN feature maps). A segment whose inputs
are static rank-3 tensors is read as ``(N, L, C)`` tokens, the layout of transformer and Mamba blocks: each
tensor is ``C`` channels over an ``L x 1`` grid, so the same program applies with ``H = L`` and ``W = 1``.
Supported ops: linear layers (``matmul`` by a constant ``(C_in, C_out)`` weight, or by the ``[1, 0]``
transpose of a constant ``(C_out, C_in)`` one, as ``torch.nn.Linear`` lowers) choose ``C_out`` in
``{2*C_in, C_in, C_in/2}`` and keep ``L``; ``layer_norm`` over the last axis, activations and unary math pass
shapes through; elementwise ops with per-channel constants on the last axis and ``concat`` on the last axis
as above. ``L`` never changes (no op here strides tokens). Attention (reshape/transpose into heads, softmax)
is not supported, so a fitted token segment is an MLP-like block: the search can widen or narrow a
transformer's MLP with a segment mined from another model. Which tensors of a *parent* graph are tokens is
decided by :func:`nlc_values`, as :func:`nchw_values` does for feature maps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.registry import get_op
from graphopt.ir.types import TensorType

PASS_OPS = {"batch_norm", "instance_norm", "dropout", "identity", "lrn", "prelu", "clip"}
PASS_CATEGORIES = {"activation", "math"}
ELEMENTWISE_OPS = {"add", "sub", "mul", "div", "sum", "max", "min", "mean"}
STRIDED_OPS = {"conv", "max_pool", "avg_pool"}
GLOBAL_POOL_OPS = {"global_avg_pool", "global_max_pool"}
#: channel-axis-1 ops that are not shape-preserving "pass" ops on (N, L, C) tokens
SEQ_EXCLUDED = {"batch_norm", "instance_norm", "lrn", "prelu"}
STRIDES = (1, 2, 4)
CHANNEL_RATIOS = ((2, 1), (1, 1), (1, 2))  # C_out * den == C_in * num


@dataclass
class Infeasible:
    """No assignment exists (or the segment is unsupported); falsy, ``reason`` says why."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass
class Assignment:
    """A solution: ``shapes[value name] = (C, H, W)`` for every tensor, ``strides[node name]``."""

    shapes: dict[str, tuple[int, int, int]]
    strides: dict[str, int]
    objective: float
    solve_s: float
    info: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return True


def _kind(node: Node) -> str | None:
    op = node.op
    if op in STRIDED_OPS:
        return "strided"
    if op in GLOBAL_POOL_OPS:
        return "gpool"
    if op == "concat":
        return "concat"
    if op in ELEMENTWISE_OPS:
        return "elementwise"
    if op in PASS_OPS or get_op(op).category in PASS_CATEGORIES:
        return "pass"
    return None


def _chw(v: Value) -> tuple[int, int, int] | None:
    s = v.shape
    if s is None or len(s) != 4 or not all(isinstance(d, int) for d in s[1:]):
        return None
    return int(s[1]), int(s[2]), int(s[3])


def _lc(v: Value) -> tuple[int, int, int] | None:
    """A static ``(N, L, C)`` token tensor as ``(C, L, 1)``: channels over an L x 1 grid."""
    s = v.shape
    if s is None or len(s) != 3 or not all(isinstance(d, int) for d in s[1:]):
        return None
    return int(s[2]), int(s[1]), 1


def is_token_segment(g: Graph) -> bool:
    """A segment whose inputs are all static rank-3 tensors is propagated in the (N, L, C) token layout."""
    return bool(g.inputs) and all(_lc(v) is not None for v in g.inputs)


def weight_transpose(n: Node) -> bool:
    """``transpose(W, perm=[1, 0])`` of a constant 2-D weight used only as the right operand of matmuls (how
    ``torch.nn.Linear`` lowers): part of a linear layer, not an activation."""
    if n.op != "transpose" or list(n.attrs.get("perm") or []) != [1, 0] or len(n.inputs) != 1:
        return False
    w = n.inputs[0]
    if w is None or not w.is_const or w.shape is None or len(w.shape) != 2 or len(n.outputs) != 1:
        return False
    uses = n.outputs[0].uses
    return bool(uses) and all(u.node.op == "matmul" and u.index == 1 for u in uses)


def linear_weight(n: Node) -> Value | None:
    """The constant weight of a linear layer ``matmul(x, W)`` (``W`` ``(C_in, C_out)`` or the transpose node's
    ``(C_out, C_in)`` input), else ``None``."""
    if n.op != "matmul" or len(n.inputs) != 2 or n.inputs[0] is None or n.inputs[0].is_const:
        return None
    b = n.inputs[1]
    if b is None:
        return None
    if b.is_const:
        return b if b.shape is not None and len(b.shape) == 2 else None
    p = b.producer
    return p.inputs[0] if p is not None and weight_transpose(p) else None


def _seq_kind(node: Node) -> str | None:
    op = node.op
    if linear_weight(node) is not None:
        return "linear"
    if op == "concat":
        return "concat" if node.attrs.get("axis") in (2, -1) else None
    if op in ELEMENTWISE_OPS:
        return "elementwise"
    if op == "layer_norm":
        return "pass" if node.attrs.get("axis", -1) in (2, -1) else None
    if op in SEQ_EXCLUDED:
        return None
    if op in PASS_OPS or get_op(op).category in PASS_CATEGORIES:
        return "pass"
    return None


def _propagatable_tokens(g: Graph) -> bool | str:
    for n in g.nodes:
        if weight_transpose(n):
            continue  # checked as part of its linear layer
        k = _seq_kind(n)
        if k is None:
            return f"op {n.op} (node {n.name}) is not supported by resolution propagation on tokens"
        if len(n.outputs) != 1 or _lc(n.outputs[0]) is None:
            return f"node {n.name} ({n.op}) does not produce one static (N, L, C) tensor"
        c0 = _lc(n.outputs[0])[0]  # type: ignore[index]
        for j, v in enumerate(n.inputs):
            if v is None or (k == "linear" and j == 1):
                continue
            if not v.is_const:
                if _lc(v) is None:
                    return f"node {n.name} ({n.op}): input %{v.name} is not a static (N, L, C) tensor"
                continue
            if n.op == "layer_norm" and j > 0:
                continue
            if v.const.size == 1:
                continue
            sh = v.shape or ()
            if len(sh) > 3 or any(d != 1 for d in sh[:-1]) or sh[-1] != c0:
                return f"node {n.name} ({n.op}): constant %{v.name} {v.type} is not per-channel"
            if v.kind == "const" and np.unique(v.const).size > 1:
                return f"node {n.name} ({n.op}): literal %{v.name} varies per channel"
    return True


def propagatable(g: Graph) -> bool | str:
    """True if :func:`solve_resolution` supports every node of ``g``, else the reason (a string)."""
    if is_token_segment(g):
        return _propagatable_tokens(g)
    for v in g.inputs:
        if _chw(v) is None:
            return f"input %{v.name} is not a static NCHW tensor ({v.type})"
    for n in g.nodes:
        k = _kind(n)
        if k is None:
            return f"op {n.op} (node {n.name}) is not supported by resolution propagation"
        if len(n.outputs) != 1 or _chw(n.outputs[0]) is None:
            return f"node {n.name} ({n.op}) does not produce one static NCHW tensor"
        if k == "strided":
            if n.inputs[0] is None or n.inputs[0].is_const:
                return f"node {n.name} ({n.op}) has no activation input"
            if n.op == "conv":
                w = n.inputs[1]
                if w is None or not w.is_const or w.shape is None or len(w.shape) != 4:
                    return f"conv {n.name} has no constant 4-D weight"
                g_ = int(n.attrs.get("group") or 1)
                cin = _chw(n.inputs[0])[0]  # type: ignore[index]
                if g_ != 1 and g_ != cin:
                    return f"conv {n.name} is grouped (group={g_}); only group 1 and depthwise are supported"
        elif k == "concat":
            if int(n.attrs.get("axis")) not in (1, -3):
                return f"concat {n.name} is not on the channel axis"
        for j, v in enumerate(n.inputs):
            if v is None or (v.is_const and k in ("strided",)):
                continue
            if v.is_const:
                if k == "pass" and n.op in ("batch_norm", "instance_norm", "prelu") and j > 0:
                    continue
                if k == "pass" and n.op == "clip":
                    continue
                if v.const.size == 1:
                    continue
                c0 = _chw(n.outputs[0])[0]  # type: ignore[index]
                s = v.shape or ()
                if len(s) > 4 or any(d != 1 for d in s[:-3]) or any(d != 1 for d in s[-2:]) or (
                        len(s) >= 3 and s[-3] != c0):
                    return f"node {n.name} ({n.op}): constant %{v.name} {v.type} is not per-channel"
                if v.kind == "const" and np.unique(v.const).size > 1:
                    return f"node {n.name} ({n.op}): literal %{v.name} varies per channel"
            elif _chw(v) is None:
                return f"node {n.name} ({n.op}): input %{v.name} is not a static NCHW tensor"
    return True


LAYOUT_OPS = {"conv", "conv_transpose", "max_pool", "avg_pool", "global_avg_pool", "global_max_pool", "batch_norm",
              "instance_norm", "resize", "lrn"}
"""Ops whose data input and output are NCHW by definition (ONNX semantics)."""


def nchw_values(graph: Graph) -> set[int]:
    """Ids of the rank-4 values that are known to be NCHW feature maps.

    Shapes alone cannot tell an image ``(N, C, H, W)`` from attention scores ``(N, heads, L, L)`` or an NHWC
    tensor, and resolution propagation (strides over H/W, channel ratios on C) only makes sense for the
    former. Seeds: inputs/outputs of conv, pooling, batch/instance norm, resize; then propagated to a fixed
    point through ops that preserve the layout (activations, unary math, elementwise arithmetic, channel
    concat), in both directions.
    """
    marked: set[int] = set()
    nodes = graph.nodes

    def r4(v: Value | None) -> bool:
        return v is not None and not v.is_const and v.shape is not None and len(v.shape) == 4

    for n in nodes:
        if n.op in LAYOUT_OPS:
            if r4(n.inputs[0]):
                marked.add(id(n.inputs[0]))
            marked.update(id(o) for o in n.outputs if r4(o))
    through = [n for n in nodes if _kind(n) in ("pass", "elementwise") or (
        n.op == "concat" and n.attrs.get("axis") in (1, -3))]
    changed = True
    while changed:
        changed = False
        for n in through:
            vals = [v for v in (*n.inputs, *n.outputs) if r4(v)]
            if any(id(v) in marked for v in vals) and not all(id(v) in marked for v in vals):
                marked.update(id(v) for v in vals)
                changed = True
    return marked


def nlc_values(graph: Graph) -> set[int]:
    """Ids of the rank-3 values that are known to be ``(N, L, C)`` token tensors.

    Seeds: the input and output of a linear layer (:func:`linear_weight`) and of ``layer_norm`` over the last
    axis; propagated to a fixed point through activations, unary math, elementwise arithmetic and last-axis
    concat, in both directions. A value that also enters or leaves a channel-axis-1 op (conv1d, batch norm)
    is ``(N, C, L)`` and is never marked.
    """
    def r3(v: Value | None) -> bool:
        return v is not None and not v.is_const and _lc(v) is not None

    marked: set[int] = set()
    for n in graph.nodes:
        if linear_weight(n) is not None or (n.op == "layer_norm" and n.attrs.get("axis", -1) in (2, -1)):
            marked.update(id(v) for v in (n.inputs[0], *n.outputs) if r3(v))
    excluded = {id(v) for n in graph.nodes if n.op in LAYOUT_OPS | SEQ_EXCLUDED for v in (*n.inputs, *n.outputs)
                if r3(v)}
    marked -= excluded
    through = [n for n in graph.nodes if _seq_kind(n) in ("pass", "elementwise", "concat") and n.op != "layer_norm"]
    changed = True
    while changed:
        changed = False
        for n in through:
            vals = [v for v in (*n.inputs, *n.outputs) if r3(v) and id(v) not in excluded]
            if any(id(v) in marked for v in vals) and not all(id(v) in marked for v in vals):
                marked.update(id(v) for v in vals)
                changed = True
    return marked


def _as_res(shapes, tokens: bool = False) -> list[tuple[int, int, int]]:
    out = []
    for s in shapes:
        if tokens:  # (L, C) per sample or (N, L, C)
            s = tuple(int(d) for d in (s[1:] if len(s) == 3 else s))
            if len(s) != 2:
                raise ValueError(f"solve_resolution: shape {s} is not (L, C) or (N, L, C)")
            out.append((s[1], s[0], 1))
            continue
        s = tuple(int(d) for d in (s[1:] if len(s) == 4 else s))
        if len(s) != 3:
            raise ValueError(f"solve_resolution: shape {s} is not (C, H, W) or (N, C, H, W)")
        out.append(s)
    return out


def solve_resolution(segment: Graph, in_shapes, out_shapes, *, time_limit: float = 2.0) -> Assignment | Infeasible:
    """Choose C, H, W for every tensor of ``segment`` so its boundary matches ``in_shapes``/``out_shapes``.

    Shapes are ``(C, H, W)`` resolutions or full ``(N, C, H, W)`` shapes, in the order of ``segment.inputs``
    and ``segment.outputs``; for a token segment (:func:`is_token_segment`) ``(L, C)`` or ``(N, L, C)``, and
    the assignment's shapes are then ``(C, L, 1)``. Returns an :class:`Assignment` or a falsy
    :class:`Infeasible` with the reason.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    ok = propagatable(segment)
    if ok is not True:
        return Infeasible(str(ok))
    tokens = is_token_segment(segment)
    res_of, kind_of = (_lc, _seq_kind) if tokens else (_chw, _kind)
    try:
        ins, outs = _as_res(in_shapes, tokens), _as_res(out_shapes, tokens)
    except ValueError as e:
        return Infeasible(str(e))
    if len(ins) != len(segment.inputs) or len(outs) != len(segment.outputs):
        return Infeasible(f"segment has {len(segment.inputs)} inputs/{len(segment.outputs)} outputs, got "
                          f"{len(ins)}/{len(outs)} shapes")
    t0 = time.perf_counter()

    def shown(r: tuple[int, int, int]) -> tuple[int, ...]:  # messages in the caller's terms: (L, C) for tokens
        return (r[1], r[0]) if tokens else r

    nodes = [n for n in segment.nodes if not (tokens and weight_transpose(n))]
    values: list[Value] = list(segment.inputs) + [n.outputs[0] for n in nodes]
    vidx = {id(v): i for i, v in enumerate(values)}
    orig = [res_of(v) for v in values]
    big_hw = 4 * max([max(o[1], o[2]) for o in orig] + [max(s[1], s[2]) for s in ins + outs])
    big_c = 4 * max([o[0] for o in orig] + [s[0] for s in ins + outs])
    # Quick, explainable infeasibility: H/W can only shrink or stay.
    max_in_hw = max(max(s[1], s[2]) for s in ins)
    for s in outs:
        if max(s[1], s[2]) > max_in_hw:
            return Infeasible(f"output resolution {shown(s)} is larger than every input "
                              f"{[shown(i) for i in ins]}: segments cannot upsample")
    nv = len(values)
    ncols = 3 * nv  # C, H, W per value
    lb: list[float] = [1.0] * ncols
    ub: list[float] = [float(big_c), float(big_hw), float(big_hw)] * nv
    integ: list[int] = [1] * ncols
    cost: list[float] = [0.0] * ncols
    rows: list[tuple[dict[int, float], float, float]] = []

    def col(v: Value, d: int) -> int:
        return 3 * vidx[id(v)] + d

    def new_var(lo: float, hi: float, integer: int) -> int:
        lb.append(lo)
        ub.append(hi)
        integ.append(integer)
        cost.append(0.0)
        return len(lb) - 1

    conflicts: list[str] = []

    def fix(c: int, val: float, why: str) -> None:
        lo_, hi_ = max(lb[c], val), min(ub[c], val)
        if lo_ > hi_:
            conflicts.append(why)
        lb[c], ub[c] = lo_, hi_

    def eq(a: int, b: int, ka: float = 1.0, kb: float = 1.0) -> None:  # ka*x_a == kb*x_b
        rows.append(({a: ka, b: -kb} if a != b else {a: ka - kb}, 0.0, 0.0))

    for v, s in zip(segment.inputs, ins, strict=True):
        for d in range(3):
            fix(col(v, d), float(s[d]), f"input %{v.name} is used twice with different shapes")
    for v, s in zip(segment.outputs, outs, strict=True):
        for d in range(3):
            fix(col(v, d), float(s[d]), f"output %{v.name} cannot be both {s} and an input shape")

    M_hw, M_c = 8.0 * big_hw, 8.0 * big_c
    strided_nodes: list[tuple[Node, list[int]]] = []

    def channel_ratio(y: Value, x: Value) -> None:  # C_y * den == C_x * num for one (num, den) of CHANNEL_RATIOS
        cs = [new_var(0, 1, 1) for _ in CHANNEL_RATIOS]
        rows.append(({c: 1.0 for c in cs}, 1.0, 1.0))
        for c, (num, den) in zip(cs, CHANNEL_RATIOS, strict=True):
            rows.append(({col(y, 0): float(den), col(x, 0): -float(num), c: M_c}, -np.inf, M_c))
            rows.append(({col(y, 0): float(den), col(x, 0): -float(num), c: -M_c}, -M_c, np.inf))

    for n in nodes:
        k = kind_of(n)
        y = n.outputs[0]
        acts = [v for v in n.inputs if v is not None and not v.is_const]
        if k == "linear":
            acts = acts[:1]  # the second operand is the weight (through its transpose node)
        x = acts[0]
        if k == "pass":
            for d in range(3):
                eq(col(y, d), col(x, d))
        elif k == "gpool":
            eq(col(y, 0), col(x, 0))
            fix(col(y, 1), 1.0, f"global pooling {n.name} outputs 1x1 but {_fmt_fixed(y, outs, segment)} is required")
            fix(col(y, 2), 1.0, f"global pooling {n.name} outputs 1x1 but {_fmt_fixed(y, outs, segment)} is required")
        elif k == "concat":
            coeffs: dict[int, float] = {col(y, 0): 1.0}
            for u in acts:  # the same tensor may be concatenated twice
                coeffs[col(u, 0)] = coeffs.get(col(u, 0), 0.0) - 1.0
            rows.append((coeffs, 0.0, 0.0))
            for u in acts:
                eq(col(y, 1), col(u, 1))
                eq(col(y, 2), col(u, 2))
        elif k == "elementwise":
            oy = res_of(y)
            for u in acts:
                ou = res_of(u)
                for d in range(3):
                    if ou[d] == oy[d]:
                        eq(col(y, d), col(u, d))
                    elif ou[d] == 1:
                        fix(col(u, d), 1.0, f"node {n.name} ({n.op}) needs %{u.name} to stay broadcast (size 1)")
                    else:
                        return Infeasible(f"node {n.name} ({n.op}) broadcasts %{u.name} in an unsupported way")
        elif k == "strided":
            bs = [new_var(0, 1, 1) for _ in STRIDES]
            rows.append(({b: 1.0 for b in bs}, 1.0, 1.0))
            for b, s in zip(bs, STRIDES, strict=True):
                for d in (1, 2):  # s*y - x in [0, s-1] when b = 1 (big-M relaxed otherwise)
                    rows.append(({col(y, d): float(s), col(x, d): -1.0, b: M_hw}, -np.inf, s - 1.0 + M_hw))
                    rows.append(({col(y, d): float(s), col(x, d): -1.0, b: -M_hw}, -M_hw, np.inf))
            strided_nodes.append((n, bs))
            depthwise = n.op == "conv" and int(n.attrs.get("group") or 1) > 1
            if n.op != "conv" or depthwise:
                ox, oy = _chw(x), _chw(y)
                if oy[0] == ox[0]:
                    eq(col(y, 0), col(x, 0))
                else:  # depthwise with a channel multiplier keeps it
                    eq(col(y, 0), col(x, 0), float(ox[0]), float(oy[0]))
            else:
                channel_ratio(y, x)
        elif k == "linear":  # tokens keep L; the layer chooses its width like a conv
            eq(col(y, 1), col(x, 1))
            eq(col(y, 2), col(x, 2))
            channel_ratio(y, x)
    if conflicts:
        return Infeasible(conflicts[0])
    # Objective: descendant-weighted absolute change of every node output from its mined resolution.
    succ: dict[int, list[Node]] = {id(n): [u.node for u in n.outputs[0].uses] for n in nodes}
    desc: dict[int, int] = {}
    for n in reversed(nodes):
        seen: set[int] = set()
        stack = list(succ[id(n)])
        while stack:
            m = stack.pop()
            if id(m) not in seen:
                seen.add(id(m))
                stack.extend(succ[id(m)])
        desc[id(n)] = len(seen)
    for n in nodes:
        y = n.outputs[0]
        w = 1.0 + desc[id(n)]
        for d in range(3):
            e = new_var(0, np.inf, 0)
            cost[e] = w
            x0 = float(orig[vidx[id(y)]][d])
            rows.append(({e: 1.0, col(y, d): -1.0}, -x0, np.inf))
            rows.append(({e: 1.0, col(y, d): 1.0}, x0, np.inf))
    nvar = len(lb)
    r_i, c_i, data, lo, hi = [], [], [], [], []
    for i, (coeffs, a, b) in enumerate(rows):
        for c, val in coeffs.items():
            r_i.append(i)
            c_i.append(c)
            data.append(val)
        lo.append(a)
        hi.append(b)
    A = coo_array((data, (r_i, c_i)), shape=(len(rows), nvar)).tocsr()
    res = milp(np.asarray(cost), constraints=LinearConstraint(A, lo, hi), integrality=np.asarray(integ),
               bounds=Bounds(lb, ub), options={"time_limit": time_limit})
    dt = time.perf_counter() - t0
    if res.status == 1 and res.x is None:
        return Infeasible(f"HiGHS hit the {time_limit}s time limit without a solution")
    if not res.success or res.x is None:
        what = "L/C" if tokens else "H/W/C"
        return Infeasible(f"no per-node {what} assignment maps inputs {[shown(i) for i in ins]} to outputs "
                          f"{[shown(o) for o in outs]} (HiGHS: {res.message.strip()})")
    xs = np.rint(res.x).astype(int)
    shapes = {v.name: (int(xs[3 * i]), int(xs[3 * i + 1]), int(xs[3 * i + 2])) for i, v in enumerate(values)}
    strides = {n.name: STRIDES[int(np.argmax([res.x[b] for b in bs]))] for n, bs in strided_nodes}
    return Assignment(shapes, strides, float(res.fun), dt, {"variables": nvar, "constraints": len(rows)})


def _fmt_fixed(v: Value, outs, segment: Graph) -> str:
    for o, s in zip(segment.outputs, outs, strict=True):
        if o is v:
            return f"{s}"
    return "another size"


# ------------------------------------------------------------------------------------------ instantiation
def fresh_param(op: str, slot: str, shape: tuple[int, ...], dtype, rng: np.random.Generator,
                attrs: dict[str, Any] | None = None) -> np.ndarray:
    """A new parameter/buffer array: Kaiming-normal (fan_out, ReLU gain) conv weights as in torchvision,
    PyTorch's default uniform for linear weights, identity statistics for normalizations, zero biases,
    ones for multiplicative and zeros for additive elementwise constants, 0.25 for PReLU slopes."""
    dt = np.dtype(dtype)
    if op in ("conv", "conv_transpose") and slot == "W":
        fan_out = shape[0] * int(np.prod(shape[2:]))
        return rng.normal(0.0, math.sqrt(2.0 / max(fan_out, 1)), shape).astype(dt)
    if (op == "gemm" and slot == "B") or (op == "matmul" and slot == "B"):
        trans_b = bool((attrs or {}).get("transB", 0))
        fan_in = shape[1] if (op == "gemm" and trans_b) else shape[-2] if len(shape) > 1 else shape[0]
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        return rng.uniform(-bound, bound, shape).astype(dt)
    if slot in ("scale", "Scale", "input_var") or (op in ("mul", "div") and slot in ("A", "B")):
        return np.ones(shape, dt)
    if op == "prelu":
        return np.full(shape, 0.25, dt)
    return np.zeros(shape, dt)


def _same_pads(in_hw: tuple[int, int], out_hw: tuple[int, int], k: tuple[int, int], s: int,
               d: tuple[int, int]) -> list[int]:
    begins, ends = [], []
    for i in range(2):
        total = max((out_hw[i] - 1) * s + (k[i] - 1) * d[i] + 1 - in_hw[i], 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def instantiate(segment: Graph, assignment: Assignment | None, input_types: list[TensorType],
                rng: np.random.Generator, name: str = "replacement") -> Graph:
    """Rebuild ``segment`` with concrete shapes and freshly initialised weights.

    ``input_types`` are the full types of the tensors that will feed it (their batch dim is used). With an
    ``assignment`` the nodes get the chosen channels and strides (pads recomputed); without one the mined
    attributes are kept (exact-match replacement). Shape inference runs on every node, so an impossible
    instantiation raises ``ShapeInferenceError`` naming the node.
    """
    g = Graph(name)
    vmap: dict[int, Value] = {}
    for v, t in zip(segment.inputs, input_types, strict=True):
        vmap[id(v)] = g.add_input(v.name, t)
    tokens = is_token_segment(segment)
    # token segments: each linear layer's weight gets the shape its new input/output widths need
    lin_shape: dict[int, tuple[int, int]] = {}
    transposed: set[int] = set()  # weights stored (C_out, C_in) behind a transpose node
    if tokens:
        for n in segment.nodes:
            w = linear_weight(n)
            if w is None:
                continue
            if w is not n.inputs[1]:
                transposed.add(id(w))
            if assignment is not None:
                cx, cy = assignment.shapes[n.inputs[0].name][0], assignment.shapes[n.outputs[0].name][0]
                lin_shape[id(w)] = (cy, cx) if id(w) in transposed else (cx, cy)
    for n in segment.nodes:
        opdef = get_op(n.op)
        attrs = dict(n.attrs)
        y = n.outputs[0]
        acts = [v for v in n.inputs if v is not None and not v.is_const]
        new_c = assignment.shapes[y.name][0] if (assignment is not None and len(n.outputs) == 1
                                                 and y.name in assignment.shapes) else None
        if assignment is not None and n.op in STRIDED_OPS:
            x = acts[0]
            cx, hx, wx = assignment.shapes[x.name]
            cy, hy, wy = assignment.shapes[y.name]
            s = assignment.strides[n.name]
            if n.op == "conv":
                k = tuple(int(d) for d in n.inputs[1].shape[2:])
            else:
                k = tuple(int(d) for d in attrs["kernel_shape"])
            dil = tuple(int(d) for d in (attrs.get("dilations") or (1, 1)))
            attrs.update(strides=[s, s], pads=_same_pads((hx, wx), (hy, wy), k, s, dil), auto_pad="NOTSET")
            if n.op != "conv":
                attrs["ceil_mode"] = 0
            elif int(attrs.get("group") or 1) > 1:
                attrs["group"] = cx
            if "kernel_shape" in attrs and attrs["kernel_shape"] is not None:
                attrs["kernel_shape"] = list(k)
        ins: list[Value | None] = []
        for j, v in enumerate(n.inputs):
            if v is None:
                ins.append(None)
            elif not v.is_const:
                ins.append(vmap[id(v)])
            else:
                slot = opdef.input_spec(j).name
                shape = tuple(v.shape or ())
                if id(v) in lin_shape:
                    shape = lin_shape[id(v)]
                elif assignment is not None:
                    shape = _resized_const_shape(n, j, v, shape, assignment, new_c, tokens)
                if v.kind == "const" and shape == tuple(v.shape or ()):
                    arr = v.const
                elif v.kind == "const":
                    arr = np.full(shape, v.const.reshape(-1)[0], dtype=v.const.dtype)
                elif id(v) in transposed:  # a Linear weight (C_out, C_in): PyTorch's default init
                    arr = fresh_param("gemm", "B", shape, v.const.dtype, rng, {"transB": 1})
                else:
                    arr = fresh_param(n.op, slot, shape, v.const.dtype, rng, attrs)
                if id(v) in vmap and tuple(vmap[id(v)].shape or ()) == shape:
                    ins.append(vmap[id(v)])
                else:
                    c = g.add_const(v.name, arr, v.kind)
                    vmap[id(v)] = c
                    ins.append(c)
        new = g.create_node(n.op, ins, attrs, name=n.name, output_names=[o.name for o in n.outputs])
        for o, no in zip(n.outputs, new.outputs, strict=True):
            vmap[id(o)] = no
    g.set_outputs([vmap[id(v)] for v in segment.outputs])
    return g


def _resized_const_shape(n: Node, j: int, v: Value, shape: tuple[int, ...], a: Assignment,
                         new_c: int | None, tokens: bool = False) -> tuple[int, ...]:
    """New shape of a weight when the node's channels change (per-channel constants of token segments are
    on the last axis)."""
    if n.op == "conv" and j == 1:
        x = n.inputs[0]
        cx = a.shapes[x.name][0]
        group = cx if int(n.attrs.get("group") or 1) > 1 else 1
        return (int(new_c), cx // group, *shape[2:])
    if n.op == "conv" and j == 2:
        return (int(new_c),)
    if new_c is None or not shape or int(np.prod(shape)) == 1:
        return shape
    s = list(shape)
    if tokens:
        s[-1] = int(new_c)
        return tuple(s)
    ax = len(s) - 3 if len(s) >= 3 else 0  # channel position when broadcast against NCHW; 1-D = per-channel
    s[ax] = int(new_c)
    return tuple(s)
