"""``fuse-attention``: ``MatMul(Q, K^T) * scale (+ mask) -> Softmax -> MatMul(V)`` -> one ``attention`` op (ONNX
``Attention``, opset 23; see :mod:`._attention_op` for its semantics).

Why fuse: the PyTorch backend then runs ``F.scaled_dot_product_attention`` (one fused kernel) and targets with an
attention unit see one op. The scale may be a ``Mul``, a ``Div`` or absent, the mask additive and float; K^T is any
Transpose that swaps K's last two axes. ONNX exports below opset 23 get MatMul/Softmax back through ``convert-opset``
(``decompose-attention``).
"""

from __future__ import annotations

import inspect

from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import Match, RewriteRule

from . import _attention_op  # noqa: F401 - registers the attention op the rules build
from ._util import rank_of, scalar_of


def _kt(op, k):
    return op.transpose(k)  # any perm: the check requires that it swaps the last two axes of some K


def _attention_pattern(scale: str, mask: bool):
    def pattern(op, q, k, v, s, m):
        scores = op.matmul(q, _kt(op, k))
        if scale == "mul":
            scores = op.mul(scores, s)
        elif scale == "div":
            scores = op.div(scores, s)
        if mask:
            scores = op.add(scores, m)
        return op.matmul(op.softmax(scores, axis=-1), v)

    return pattern


def _rules() -> list[RewriteRule]:
    rules = []
    for scale in ("mul", "div", "none"):
        for mask in (False, True):
            # The rewriter creates one pattern variable per parameter of the pattern function, so give each
            # variant exactly the variables it binds.
            params = ["q", "k", "v"] + (["s"] if scale != "none" else []) + (["m"] if mask else [])
            rules.append(RewriteRule(_with_params(_attention_pattern(scale, mask), params),
                                     _make_replacement(scale, mask), _check,
                                     name=f"attention-{scale}{'-mask' if mask else ''}"))
    return rules


def _with_params(pattern, params: list[str]):
    def p(op, *args):
        kw = dict(zip(params, args, strict=True))
        return pattern(op, kw["q"], kw["k"], kw["v"], kw.get("s"), kw.get("m"))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    p.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in ["op", *params]])  # type: ignore
    return p


def _k_perm(match: Match) -> list[int] | None:
    """The permutation taking the matched transpose's input to K (so that the transpose is K^T), or None."""
    t = match.node_for("transpose")
    perm = t.attrs.get("perm")
    if perm is None or len(perm) != 4:
        return None
    p = list(perm)
    p[2], p[3] = p[3], p[2]
    return p if p[0] == 0 else None


def _check(match: Match, q: Value, k: Value, v: Value, s: Value | None = None, m: Value | None = None) -> bool:
    if any(rank_of(x) != 4 for x in (q, k, v)) or _k_perm(match) is None:
        return False
    if not all(x.type is not None and x.type.dtype.is_float for x in (q, k, v)):
        return False
    if s is not None and (scalar_of(s) is None or scalar_of(s) == 0):
        return False
    if m is not None:
        if m.type is None or m.type.shape is None or len(m.type.shape) > 4 or not m.type.dtype.is_float:
            return False
    return True


def _make_replacement(scale: str, mask: bool):
    def repl(op, q, k, v, match: Match, s=None, m=None):
        sc = 1.0 if s is None else float(scalar_of(s))
        if scale == "div":
            sc = 1.0 / sc
        p = _k_perm(match)
        kk = k if p == [0, 1, 2, 3] else op.transpose(k, perm=p)
        args = [q, kk, v] + ([m] if mask else [])
        return op.attention(*args, scale=sc)

    return repl


ATTENTION_RULES = _rules()


@graph_pass("fuse-attention", "Fuse MatMul(Q, K^T) * scale (+ mask) -> Softmax -> MatMul(V) into one attention op "
                              "(ONNX Attention, opset 23)")
def fuse_attention(graph: Graph) -> dict[str, int]:
    from graphopt.rewrite import apply_rules

    return apply_rules(graph, ATTENTION_RULES)
