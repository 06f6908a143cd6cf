"""``fuse-layernorm``: a LayerNorm written as primitives -> one ``layer_norm`` (ONNX ``LayerNormalization``, opset 17).

Exporters before opset 17 write ``(x - mean) / sqrt(var + eps)`` as ReduceMean/Sub/Pow (or Mul)/ReduceMean/Add/
Sqrt/Div (or Reciprocal + Mul) over trailing axes; each variant is one pattern. A constant gain (``Mul``) or bias
(``Add``) after the fused op that varies only along the normalized axes is then folded into its scale and bias.
One fused node is faster in the PyTorch backend and shorter; ``convert-opset`` decomposes it again below opset 17.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import Match, RewriteRule, apply_rules

from ._util import _is_float, rank_of, scalar_of, weight_kind


def _ln_axes(v: Value, rank: int) -> list[int] | None:
    if v is None or v.const is None:
        return None
    return sorted(int(a) % rank for a in v.const.reshape(-1))


def _ln_pattern(square: str, norm: str):
    def pattern(op, x, a1, a2, eps):
        d = op.sub(x, op.reduce_mean(x, a1, keepdims=1))
        sq = op.pow(d, 2.0) if square == "pow" else op.mul(d, d)
        std = op.sqrt(op.add(op.reduce_mean(sq, a2, keepdims=1), eps))
        return op.div(d, std) if norm == "div" else op.mul(d, op.reciprocal(std))

    return pattern


def _ln_rules() -> list[RewriteRule]:
    return [RewriteRule(_ln_pattern(square, norm), _ln_replace, _ln_check, name=f"layernorm-{square}-{norm}")
            for square in ("pow", "mul") for norm in ("div", "rsqrt")]


def _ln_check(match: Match, x: Value, a1: Value, a2: Value, eps: Value) -> bool:
    r = rank_of(x)
    if r is None or not _is_float(x):
        return False
    ax1, ax2 = _ln_axes(a1, r), _ln_axes(a2, r)
    if ax1 is None or ax1 != ax2 or ax1 != list(range(r - len(ax1), r)):
        return False  # LayerNormalization normalizes over trailing axes only
    e = scalar_of(eps)
    if e is None or not 0 <= e < 1:
        return False
    shape = x.type.shape  # type: ignore[union-attr]
    return all(isinstance(d, int) for d in shape[ax1[0]:])


def _ln_replace(op, x: Value, a1: Value, eps: Value):
    r = rank_of(x)
    assert r is not None and x.type is not None and x.type.shape is not None
    axes = _ln_axes(a1, r)
    assert axes is not None
    norm_shape = tuple(int(d) for d in x.type.shape[axes[0]:])
    ones = op.const(np.ones(norm_shape, dtype=x.type.dtype.to_numpy()), name=f"{op.hint}_scale")
    return op.layer_norm(x, ones, axis=axes[0] - r, epsilon=float(scalar_of(eps)))


def _affine_into_norm(c: np.ndarray, out_shape: tuple, axis: int) -> np.ndarray | None:
    """``c`` as an array of the normalized shape, if it broadcasts against the output only over those axes."""
    r = len(out_shape)
    a = axis % r
    norm = tuple(int(d) for d in out_shape[a:])
    if c.ndim > r:
        return None
    full = (1,) * (r - c.ndim) + tuple(c.shape)
    if any(d != 1 for d in full[:a]):
        return None
    try:
        return np.broadcast_to(c.reshape(full[a:]), norm).copy()
    except ValueError:
        return None


def _ln_affine_check(match: Match, x: Value, s: Value, g: Value, b: Value | None = None) -> bool:
    ln = match.node_for("layer_norm")
    out = ln.outputs[0].type
    if out is None or not out.is_static or s.const is None or g.const is None or (b is not None and b.const is None):
        return False
    return _affine_into_norm(g.const, out.shape, int(ln.attrs["axis"])) is not None  # type: ignore[arg-type]


def _ln_mul(op, x, s, g):
    return op.mul(op.layer_norm(x, s), g)


def _ln_mul_b(op, x, s, b, g):
    return op.mul(op.layer_norm(x, s, b), g)


def _ln_add(op, x, s, g):
    return op.add(op.layer_norm(x, s), g)


def _ln_add_b(op, x, s, b, g):
    return op.add(op.layer_norm(x, s, b), g)


def _ln_replace_affine(op, x, s, g, match: Match, b=None, *, mul: bool):
    ln = match.node_for("layer_norm")
    out = ln.outputs[0].type
    axis = int(ln.attrs["axis"])
    gv = _affine_into_norm(g.const, out.shape, axis).astype(np.float64)
    norm = gv.shape
    sv = np.broadcast_to(s.const.astype(np.float64), norm)
    bv = np.broadcast_to(b.const.astype(np.float64), norm) if b is not None else None
    dt = x.type.dtype.to_numpy()
    if mul:
        s_new, b_new = sv * gv, (bv * gv if bv is not None else None)
    else:
        s_new, b_new = sv, (bv + gv if bv is not None else gv)
    kind = weight_kind(s, g, b)
    s_c = op.const(s_new.astype(dt), kind, name=f"{ln.name}_scale")
    args = [x, s_c] if b_new is None else [x, s_c, op.const(b_new.astype(dt), kind, name=f"{ln.name}_bias")]
    return op.layer_norm(*args, **ln.attrs)


LN_AFFINE_RULES = [
    RewriteRule(_ln_mul, lambda op, x, s, g, match: _ln_replace_affine(op, x, s, g, match, mul=True),
                _ln_affine_check, name="layernorm-scale"),
    RewriteRule(_ln_mul_b, lambda op, x, s, b, g, match: _ln_replace_affine(op, x, s, g, match, b, mul=True),
                _ln_affine_check, name="layernorm-scale-b"),
    RewriteRule(_ln_add, lambda op, x, s, g, match: _ln_replace_affine(op, x, s, g, match, mul=False),
                _ln_affine_check, name="layernorm-bias"),
    RewriteRule(_ln_add_b, lambda op, x, s, b, g, match: _ln_replace_affine(op, x, s, g, match, b, mul=False),
                _ln_affine_check, name="layernorm-bias-b"),
]


LN_RULES = _ln_rules()


@graph_pass("fuse-layernorm", "Fuse ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div(/Mul/Add) into layer_norm "
                              "(ONNX LayerNormalization, opset 17)")
def fuse_layernorm(graph: Graph) -> dict[str, int]:
    out = apply_rules(graph, LN_RULES)
    for k, v in apply_rules(graph, LN_AFFINE_RULES).items():
        out[k] = out.get(k, 0) + v
    graph.remove_unused_constants()
    return out
