"""``canonicalize``: remove no-ops and fold transpose/reshape chains.

No-ops: identity, zero-ratio Dropout, Reshape/Cast/Expand/Squeeze/Unsqueeze/Flatten/Slice/Pad/Tile/identity
Transpose whose output type equals its input's, a one-input Concat, and ``x * 1``, ``x + 0``, ``x - 0``, ``x / 1``
with a constant of any shape (exporters emit all-zero biases). A node is only forwarded when the kept value has
exactly its output type. Two Transposes compose into one (or none); a Reshape of a reshape-like op with a static
result becomes one Reshape. Safe before training: a non-zero-ratio Dropout stays (``strip-dropout`` removes it).
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.pass_api import graph_pass
from graphopt.rewrite import erase_dead


def _same_type(a, b) -> bool:
    return a is not None and b is not None and a == b


def _forward(graph: Graph, n: Node, src) -> bool:
    """Replace ``n``'s single output by ``src`` if types agree exactly; erase ``n``."""
    if not _same_type(n.outputs[0].type, src.type):
        return False
    if any(src is o for o in graph.outputs) and any(n.outputs[0] is o for o in graph.outputs):
        return False
    graph.replace_all_uses(n.outputs[0], src)
    erase_dead(graph, [n])
    return True


def _const_scalar(v, value: float) -> bool:
    return v is not None and v.const is not None and v.const.size == 1 and float(v.const.reshape(-1)[0]) == value


@graph_pass("canonicalize", "Remove no-ops (identity, zero dropout, same-shape reshape/cast/expand, x*1, x+0) "
                            "and fold transpose/reshape chains")
def canonicalize(graph: Graph) -> dict[str, int]:
    c = {"noop": 0, "transpose-chain": 0, "reshape-chain": 0}
    for n in graph.nodes:
        if n.graph is not graph or not n.outputs:
            continue
        x = n.inputs[0] if n.inputs else None
        if x is None:
            continue
        op = n.op
        if op == "identity" or (op == "dropout" and float(n.attrs.get("ratio", 0.5)) == 0.0) or \
                op in ("reshape", "cast", "expand", "squeeze", "unsqueeze", "flatten", "transpose", "slice",
                       "pad", "tile") and _same_type(n.outputs[0].type, x.type) and _is_noop_movement(n) or \
                op == "concat" and len(n.inputs) == 1 or \
                op == "mul" and (_const_scalar(n.inputs[1], 1.0)) or \
                op in ("add", "sub") and _const_scalar(n.inputs[1], 0.0) or \
                op == "div" and _const_scalar(n.inputs[1], 1.0):
            if _forward(graph, n, x):
                c["noop"] += 1
            continue
        if op in ("add", "sub", "mul", "div") and len(n.inputs) == 2:
            kept = _identity_operand(n)
            if kept is not None and _forward(graph, n, kept):
                c["noop"] += 1
                continue
        if op == "transpose" and x.producer is not None and x.producer.op == "transpose":
            inner = x.producer
            rank = len(n.outputs[0].type.shape) if n.outputs[0].type and n.outputs[0].type.shape else None
            if rank is None:
                continue
            p1 = inner.attrs.get("perm") or list(reversed(range(rank)))
            p2 = n.attrs.get("perm") or list(reversed(range(rank)))
            composed = [p1[i] for i in p2]
            with graph.inserting_before(n):
                if composed == list(range(rank)):
                    new = inner.inputs[0]
                else:
                    new = graph.create_node("transpose", [inner.inputs[0]], {"perm": composed},
                                            name=n.name).output
            graph.replace_all_uses(n.outputs[0], new)
            erase_dead(graph, [n, inner])
            c["transpose-chain"] += 1
        elif op == "reshape" and x.producer is not None and x.producer.op in ("reshape", "flatten", "squeeze",
                                                                             "unsqueeze") \
                and n.outputs[0].type is not None and n.outputs[0].type.is_static:
            inner = x.producer
            target = graph.add_const(f"{n.name}_shape", np.asarray(n.outputs[0].type.shape, dtype=np.int64))
            with graph.inserting_before(n):
                new = graph.create_node("reshape", [inner.inputs[0], target], name=n.name).output
            graph.replace_all_uses(n.outputs[0], new)
            erase_dead(graph, [n, inner])
            c["reshape-chain"] += 1
    graph.remove_unused_constants()
    return c


def _filled_with(v, value: float) -> bool:
    """``v`` is a float constant (any shape) whose every element equals ``value`` (e.g. an all-zero bias)."""
    a = None if v is None else v.const
    return a is not None and a.size > 0 and a.dtype.kind == "f" and bool(np.all(a == value))


def _identity_operand(n: Node):
    """The operand an elementwise node returns unchanged: ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x``,
    ``x / 1`` with a constant of any shape (a zero bias vector, a ones gain); None otherwise.

    Why: exporters emit Linear/LayerNorm biases even when they are all zero, and the scalar-only rule above
    misses them. ``_forward`` only accepts the rewrite when the output type equals the kept operand's type, so
    a constant that would broadcast (enlarge) or promote the result is never dropped. (The one bit-level change
    is ``-0.0 + 0.0 = +0.0``; the signs of zeros do not change any later comparison or product magnitude.)
    """
    a, b = n.inputs
    unit = 0.0 if n.op in ("add", "sub") else 1.0
    if _filled_with(b, unit):
        return a
    if n.op in ("add", "mul") and _filled_with(a, unit):
        return b
    return None


def _is_noop_movement(n: Node) -> bool:
    if n.op == "transpose":
        perm = n.attrs.get("perm")
        return perm is not None and list(perm) == list(range(len(perm)))
    if n.op in ("slice", "pad", "tile"):
        # same type means same shape; for slice that implies full range only with positive steps
        if n.op == "slice":
            steps = n.inputs[4] if len(n.inputs) > 4 else None
            return steps is None or (steps.const is not None and bool(np.all(steps.const > 0)))
        if n.op == "pad":
            pads = n.inputs[1]
            return pads is not None and pads.const is not None and not np.any(pads.const)
        return True
    return True
