"""Recognize decomposed GELU, LayerNorm and Softmax sequences and fuse them into one op.

Exporters (TorchScript ONNX before opset 20, TF converters, hand-written models) emit these as chains of
primitives; one fused node is faster in the PyTorch backend, easier for targets that have the op, and shorter.
Each variant an exporter is known to produce is one pattern (onnxscript-rewriter style); constant values such as
``sqrt(2)`` are matched with a tolerance by the rule's check, not by exact equality.

Note on ONNX opsets: ``Gelu`` exists from opset 20 and ``LayerNormalization`` from 17; ``convert-opset`` turns them
back into primitives for older targets, so the default fp32 export pipeline only fuses what its opset has.
"""

from __future__ import annotations

import math

import numpy as np

from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import Match, RewriteRule, apply_rules

from ._util import is_scalar, rank_of, scalar_of, weight_kind

SQRT2 = math.sqrt(2.0)
GELU_TANH_BETA = math.sqrt(2.0 / math.pi)
GELU_TANH_KAPPA = 0.044715

# ----------------------------------------------------------------------------------------------------- GELU


def _erf_arg(op, x, s, div: bool):
    return op.erf(op.div(x, s)) if div else op.erf(op.mul(x, s))


def _outer(op, x, one_plus, form: int):
    if form == 0:
        return op.mul(op.mul(x, one_plus), 0.5)  # TorchScript exporter: (x * (1 + erf)) * 0.5
    if form == 1:
        return op.mul(op.mul(x, 0.5), one_plus)
    return op.mul(x, op.mul(one_plus, 0.5))


def _gelu_erf_pattern(div: bool, form: int):
    # A closure, not default arguments: the rewriter makes one pattern variable per parameter.
    def pattern(op, x, s):
        return _outer(op, x, op.add(_erf_arg(op, x, s, div), 1.0), form)

    return pattern


def _gelu_erf_rules() -> list[RewriteRule]:
    rules = []
    for div in (True, False):
        want = SQRT2 if div else 1.0 / SQRT2
        for form in range(3):
            def check(match: Match, x: Value, s: Value, _want=want) -> bool:
                return _is_float(x) and is_scalar(s, _want, rtol=1e-5)

            rules.append(RewriteRule(_gelu_erf_pattern(div, form), lambda op, x: op.gelu(x, approximate="none"),
                                     check, name=f"gelu-erf-{'div' if div else 'mul'}-{form}"))
    return rules


def _gelu_tanh_pattern(cube_pow: bool, form: int):
    def pattern(op, x, k, b):
        cube = op.pow(x, 3.0) if cube_pow else op.mul(x, op.mul(x, x))
        inner = op.mul(op.add(x, op.mul(cube, k)), b)
        return _outer(op, x, op.add(op.tanh(inner), 1.0), form)

    return pattern


def _gelu_tanh_check(match: Match, x: Value, k: Value, b: Value) -> bool:
    return _is_float(x) and is_scalar(k, GELU_TANH_KAPPA, rtol=1e-4) and is_scalar(b, GELU_TANH_BETA, rtol=1e-5)


def _gelu_tanh_rules() -> list[RewriteRule]:
    return [RewriteRule(_gelu_tanh_pattern(cube_pow, form), lambda op, x: op.gelu(x, approximate="tanh"),
                        _gelu_tanh_check, name=f"gelu-tanh-{'pow' if cube_pow else 'mul'}-{form}")
            for cube_pow in (True, False) for form in range(3)]


def _is_float(v: Value) -> bool:
    return v.type is not None and v.type.dtype.is_float


GELU_RULES = _gelu_erf_rules() + _gelu_tanh_rules()


def _silu_pattern(op, x):
    return op.mul(x, op.sigmoid(x))  # torch.onnx's SiLU (there is no ONNX op for it)


def _mish_pattern(op, x):
    return op.mul(x, op.tanh(op.softplus(x)))  # torch.onnx's Mish before opset 18


def _float_check(match: Match, x: Value) -> bool:
    return _is_float(x)


ACTIVATION_RULES: dict[str, list[RewriteRule]] = {
    "gelu": GELU_RULES,
    "silu": [RewriteRule(_silu_pattern, lambda op, x: op.silu(x), _float_check, name="silu")],
    "mish": [RewriteRule(_mish_pattern, lambda op, x: op.mish(x), _float_check, name="mish")],
}
"""The decomposed forms exporters write for activations that have no ONNX op at the model's opset, by op."""


def decomposed_activations(graph: Graph) -> list[tuple[str, Match]]:
    """``(op, match)`` for every activation written as primitives (``match.bindings["x"]`` is its input), without
    changing the graph: analyses such as NASWOT need the activation's input, which no single node carries."""
    found, seen = [], set()
    for act, rules in ACTIVATION_RULES.items():
        for rule in rules:
            for m in rule.matches(graph):
                if id(m.root) not in seen:
                    seen.add(id(m.root))
                    found.append((act, m))
    return found


@graph_pass("fuse-gelu", "Fuse the erf and tanh GELU formulas into one gelu op (ONNX Gelu, opset 20)")
def fuse_gelu(graph: Graph) -> dict[str, int]:
    return apply_rules(graph, GELU_RULES)


# ------------------------------------------------------------------------------------------------ LayerNorm
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


# -------------------------------------------------------------------------------------------------- Softmax
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

