"""Shared pieces of the decomposition passes (``decompose-*``, ``approximate-gelu``, ``gemm-to-matmul``) and the
NPU legalizer (``graphopt.npu.legalize``): node replacement through a builder, constants in the replaced value's
dtype, and the builders that more than one of them uses.

A decomposition rewrites a composite op into primitives, for targets (ONNX opsets, NPUs) that lack it. Each emits the
same primitive sequence the matching ``fuse-*`` pass recognizes, so ``decompose-X`` followed by ``fuse-X``
round-trips. A builder takes a :class:`~graphopt.rewrite._ReplacementBuilder` and returns the replacement value, or
None to decline.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.rewrite import _ReplacementBuilder

from ._util import GELU_TANH_BETA, GELU_TANH_KAPPA


def const_like(b: _ReplacementBuilder, value: float | np.ndarray, like: Value, hint: str = "c") -> Value:
    """A constant in ``like``'s dtype (so float16/float64 graphs stay in their precision)."""
    dt = like.type.dtype.to_numpy() if like.type is not None else np.float32
    return b.const(np.asarray(value, dtype=dt), name=f"{b.hint}_{hint}")


def replace_node(graph: Graph, node: Node, build: Callable[[_ReplacementBuilder], Value | None],
                 rule: str) -> bool:
    """Replace ``node``'s single output by what ``build`` constructs right before it; False if it declines."""
    b = _ReplacementBuilder(graph, node, node.name)
    new = build(b)
    if new is None:
        for n in reversed(b.created):
            if not any(o.uses for o in n.outputs):
                graph.erase_node(n)
        return False
    for n in b.created:
        n.meta.setdefault("provenance", {"rule": rule, "replaced": node.name})
    graph.replace_all_uses(node.outputs[0], new)
    graph.erase_node(node)
    return True


def _run(graph: Graph, op: str, build: Callable[[_ReplacementBuilder, Node], Value | None], rule: str) -> int:
    n = 0
    for node in graph.nodes_by_op().get(op, []):
        if node.graph is graph and replace_node(graph, node, lambda b, nd=node: build(b, nd), rule):
            n += 1
    graph.remove_unused_constants()
    return n


def gelu_tanh(b: _ReplacementBuilder, x: Value) -> Value:
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` with the cube as two Muls (no Pow needed)."""
    cube = b.mul(x, b.mul(x, x))
    inner = b.mul(b.add(x, b.mul(cube, const_like(b, GELU_TANH_KAPPA, x, "kappa"))),
                  const_like(b, GELU_TANH_BETA, x, "beta"))
    return b.mul(b.mul(x, b.add(b.tanh(inner), const_like(b, 1.0, x, "one"))), const_like(b, 0.5, x, "half"))


def hard_sigmoid_primitives(b: _ReplacementBuilder, x: Value, alpha: float, beta: float) -> Value:
    return b.clip(b.add(b.mul(x, const_like(b, alpha, x, "alpha")), const_like(b, beta, x, "beta")),
                  const_like(b, 0.0, x, "lo"), const_like(b, 1.0, x, "hi"))


def instance_norm_primitives(b: _ReplacementBuilder, node: Node, div: bool = True) -> Value | None:
    """``instance_norm``: per sample and channel, normalize over the spatial axes; per-channel scale and bias.
    (Wav2Vec2's feature extractor: ``GroupNorm(C, C)`` exports as InstanceNormalization.)"""
    x, scale, bias = node.inputs[:3]
    if x is None or x.type is None or x.type.shape is None or len(x.type.shape) < 3:
        return None
    r = len(x.type.shape)
    axes = b.const(np.arange(2, r, dtype=np.int64), name=f"{b.hint}_axes")
    d = b.sub(x, b.reduce_mean(x, axes, keepdims=1))
    var = b.reduce_mean(b.mul(d, d), axes, keepdims=1)
    std = b.sqrt(b.add(var, const_like(b, float(node.attrs.get("epsilon", 1e-5)), x, "eps")))
    y = b.div(d, std) if div else b.mul(d, b.reciprocal(std))
    per_channel = [-1] + [1] * (r - 2)
    for v, fn, hint in ((scale, b.mul, "scale"), (bias, b.add, "bias")):
        if v is None:
            continue
        if v.const is not None:
            y = fn(y, b.const(np.asarray(v.const).reshape(per_channel), v.kind, name=f"{b.hint}_{hint}"))
        else:
            y = fn(y, b.reshape(v, b.const(np.asarray(per_channel, dtype=np.int64), name=f"{b.hint}_{hint}_shape")))
    return y
