"""The decomposed forms exporters write for activations that have no ONNX op at the model's opset, as rewrite rules.

GELU (the erf form dividing by ``sqrt 2`` or multiplying by ``1/sqrt 2``, the tanh form with the cube as ``Pow`` or
two ``Mul``, each in the three association orders of ``x * (1 + ...) * 0.5``), SiLU (``x * sigmoid(x)``, which has
no ONNX op) and Mish (``x * tanh(softplus(x))``, before opset 18). Constants such as ``sqrt(2)`` are matched with a
tolerance by the rule's check, not by exact equality. ``fuse-gelu`` applies :data:`GELU_RULES`;
:func:`decomposed_activations` finds them all without changing the graph.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph, Value
from graphopt.rewrite import Match, RewriteRule

from ._util import GELU_TANH_BETA, GELU_TANH_KAPPA, SQRT2, _is_float, is_scalar


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
