"""Small helpers shared by the built-in passes (constant access, shape checks, safe node removal).

Kept in one place so every pass answers "is this a scalar constant?", "is this value used only here?" and
"what is its static shape?" the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.rewrite import erase_dead


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
