"""Small helpers shared by the built-in passes (constant access, shape checks, safe node removal).

Kept in one place so every pass answers "is this a scalar constant?", "is this value used only here?" and
"what is its static shape?" the same way. Also the pieces that several passes (or a pass and the NPU legalizer)
read the same way: the GELU constants, a constant Pad's or Slice's parameters, ``x (+|*) c`` as an affine map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.rewrite import erase_dead

SQRT2 = math.sqrt(2.0)
GELU_TANH_BETA = math.sqrt(2.0 / math.pi)
GELU_TANH_KAPPA = 0.044715
"""GELU's constants: ``erf(x / sqrt 2)`` and the tanh form ``tanh(sqrt(2/pi) (x + 0.044715 x^3))``."""


def const_of(v: Value | None) -> np.ndarray | None:
    """The array a value holds if it is a graph constant (not a propagated shape value)."""
    return None if v is None else v.const


def scalar_of(v: Value | None) -> float | None:
    """The single value of a constant whose elements are all equal (a scalar, or a broadcast literal)."""
    a = const_of(v)
    if a is None or a.size == 0:
        return None
    flat = a.reshape(-1)
    first = flat[0]
    if a.size > 1 and not np.all(flat == first):
        return None
    try:
        return float(first)
    except (TypeError, ValueError):
        return None


def is_scalar(v: Value | None, value: float, rtol: float = 1e-6, atol: float = 0.0) -> bool:
    s = scalar_of(v)
    return s is not None and abs(s - value) <= atol + rtol * abs(value)


def static_shape(v: Value | None) -> tuple[int, ...] | None:
    if v is None or v.type is None or not v.type.is_static:
        return None
    return tuple(int(d) for d in v.type.shape)  # type: ignore[union-attr]


def rank_of(v: Value | None) -> int | None:
    if v is None or v.type is None or v.type.shape is None:
        return None
    return len(v.type.shape)


def is_graph_output(graph: Graph, v: Value) -> bool:
    return any(v is o for o in graph.outputs)


def only_used_by(graph: Graph, v: Value, node: Node) -> bool:
    """True if ``node`` is the only consumer of ``v`` and ``v`` is not a graph output (safe to fuse away)."""
    return not is_graph_output(graph, v) and all(u.node is node for u in v.uses)


def new_const(graph: Graph, hint: str, array: np.ndarray, like: Value | None = None, kind: str = "const") -> Value:
    """Add a constant, cast to ``like``'s dtype when given (so fused weights keep the graph's precision)."""
    arr = np.asarray(array)
    if like is not None and like.type is not None:
        arr = arr.astype(like.type.dtype.to_numpy())
    # Dots would make the name a module path in the PyTorch backend (and could clash with a parameter).
    return graph.add_const(hint.replace(".", "_"), arr, kind)


def weight_kind(*vals: Value | None) -> str:
    """``param`` if any source is a trainable parameter (fused weights stay trainable), else ``const``."""
    return "param" if any(v is not None and v.kind == "param" for v in vals) else "const"


def replace_value(graph: Graph, old: Value, new: Value, dead: Iterable[Node] = ()) -> None:
    """Point every use of ``old`` at ``new`` and erase the nodes in ``dead`` that became unused."""
    graph.replace_all_uses(old, new)
    erase_dead(graph, list(dead))


def per_channel(arr: np.ndarray, out_rank: int, axis: int = 1) -> np.ndarray | None:
    """A constant that broadcasts against a rank-``out_rank`` tensor only along ``axis``, as a 1-D vector.

    Returns None when it varies along another axis or would enlarge the output (then it cannot be folded
    into per-output-channel weights). A scalar gives a length-1 vector (broadcast by the caller).
    """
    if arr.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - arr.ndim) + tuple(arr.shape)
    for i, d in enumerate(shape):
        if i != axis and d != 1:
            return None
    return arr.reshape(-1)


def spatial_pads(node: Node, nd: int) -> list[int]:
    pads = node.attrs.get("pads")
    return [0] * (2 * nd) if pads is None else [int(p) for p in pads]


def _is_float(v: Value) -> bool:
    return v.type is not None and v.type.dtype.is_float


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


def pad_spec(pad: Node, rank: int) -> tuple[list[int], float] | None:
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


def slice_params(node: Node, rank: int) -> dict[int, tuple[int, int, int]] | None:
    """``{axis: (start, end, step)}`` of a Slice whose parameters are constants (axes taken modulo ``rank``), or
    None when one is not constant or an axis repeats."""
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


def _single_use(graph: Graph, v: Value | None, node: Node) -> bool:
    return v is not None and v.producer is not None and len(v.uses) == 1 and only_used_by(graph, v, node)


def _float_const(v: Value | None) -> np.ndarray | None:
    a = None if v is None else v.const
    return a if a is not None and a.dtype.kind == "f" else None
