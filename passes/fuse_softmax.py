"""``fuse-softmax``: ``Exp(x - ReduceMax(x)) / ReduceSum(...)`` (the numerically stable form) or
``Exp(x) / ReduceSum(Exp(x))`` over one axis -> one ``softmax``.

Exporters and hand-written models spell softmax out this way; one node is one kernel in the PyTorch backend and the
op that targets' softmax units take.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import Match, RewriteRule, apply_rules

from ._util import _is_float, rank_of


def _softmax_max(op, x, a1, a2):
    e = op.exp(op.sub(x, op.reduce_max(x, a1, keepdims=1)))
    return op.div(e, op.reduce_sum(e, a2, keepdims=1))


def _softmax_plain(op, x, a2):
    e = op.exp(x)
    return op.div(e, op.reduce_sum(e, a2, keepdims=1))


def _single_axis(v: Value | None, r: int) -> int | None:
    if v is None or v.const is None or v.const.size != 1:
        return None
    return int(v.const.reshape(-1)[0]) % r


def _softmax_check(match: Match, x: Value, a2: Value, a1: Value | None = None) -> bool:
    r = rank_of(x)
    if r is None or not _is_float(x):
        return False
    ax = _single_axis(a2, r)
    return ax is not None and (a1 is None or _single_axis(a1, r) == ax)


def _softmax_replace(op, x, a2):
    r = rank_of(x)
    return op.softmax(x, axis=_single_axis(a2, r) - r)


SOFTMAX_RULES = [
    RewriteRule(_softmax_max, _softmax_replace, _softmax_check, name="softmax-stable"),
    RewriteRule(_softmax_plain, _softmax_replace, _softmax_check, name="softmax-plain"),
]


@graph_pass("fuse-softmax", "Fuse Exp(x - ReduceMax) / ReduceSum(Exp) into one softmax")
def fuse_softmax(graph: Graph) -> dict[str, int]:
    return apply_rules(graph, SOFTMAX_RULES)
