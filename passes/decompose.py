"""Decompositions: rewrite a composite op into primitives, for targets (ONNX opsets, NPUs) that lack it.

Each decomposition emits the same primitive sequence the matching ``fuse-*`` pass recognizes, so
``decompose-X`` followed by ``fuse-X`` round-trips. All are exact (up to float rounding) except
``approximate-gelu``, which swaps the erf GELU for its tanh (or sigmoid) approximation and is marked
``semantics_preserving=False`` so numeric verification does not hold it to the original.

Options choose the primitive set, so a legalizer can pick the form a target supports:
``decompose-layernorm[div=false]`` uses ``Reciprocal`` + ``Mul`` instead of ``Div``;
``decompose-hard-swish[form=clip]`` uses ``Clip`` instead of ``HardSigmoid``; ``decompose-softmax[div=false]``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import PassError, graph_pass
from graphopt.rewrite import _ReplacementBuilder

from .fuse_patterns import GELU_TANH_BETA, GELU_TANH_KAPPA, SQRT2


def _c(b: _ReplacementBuilder, value: float | np.ndarray, like: Value, hint: str = "c") -> Value:
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


# ------------------------------------------------------------------------------------------------------ GELU
def gelu_erf(b: _ReplacementBuilder, x: Value) -> Value:
    """``x * (1 + erf(x / sqrt 2)) * 0.5`` (the TorchScript exporter's form)."""
    e = b.erf(b.div(x, _c(b, SQRT2, x, "sqrt2")))
    return b.mul(b.mul(x, b.add(e, _c(b, 1.0, x, "one"))), _c(b, 0.5, x, "half"))


def gelu_tanh(b: _ReplacementBuilder, x: Value) -> Value:
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` with the cube as two Muls (no Pow needed)."""
    cube = b.mul(x, b.mul(x, x))
    inner = b.mul(b.add(x, b.mul(cube, _c(b, GELU_TANH_KAPPA, x, "kappa"))), _c(b, GELU_TANH_BETA, x, "beta"))
    return b.mul(b.mul(x, b.add(b.tanh(inner), _c(b, 1.0, x, "one"))), _c(b, 0.5, x, "half"))


def gelu_sigmoid(b: _ReplacementBuilder, x: Value) -> Value:
    """``x * sigmoid(1.702 x)`` (Hendrycks & Gimpel's sigmoid approximation; max abs error ~0.02)."""
    return b.mul(x, b.sigmoid(b.mul(x, _c(b, 1.702, x, "k"))))


@graph_pass("decompose-gelu", "gelu -> Erf/Div/Mul/Add (exact) or the Tanh formula for approximate='tanh'")
def decompose_gelu(graph: Graph) -> dict[str, int]:
    def build(b, node):
        x = node.inputs[0]
        return gelu_tanh(b, x) if node.attrs.get("approximate") == "tanh" else gelu_erf(b, x)

    return {"gelu": _run(graph, "gelu", build, "decompose-gelu")}


@graph_pass("approximate-gelu", "Exact (erf) gelu -> tanh or sigmoid approximation, for targets without Erf "
                                "(changes numerics slightly)", semantics_preserving=False)
def approximate_gelu(graph: Graph, form: str = "tanh") -> dict[str, int]:
    """``form``: ``tanh`` (max abs error ~5e-4 vs exact GELU) or ``sigmoid`` (~2e-2, needs only Sigmoid/Mul)."""
    if form not in ("tanh", "sigmoid"):
        raise PassError(f"approximate-gelu: form must be 'tanh' or 'sigmoid', got {form!r}")
    fn = gelu_tanh if form == "tanh" else gelu_sigmoid
    n = 0
    for node in graph.nodes_by_op().get("gelu", []):
        if replace_node(graph, node, lambda b, nd=node: fn(b, nd.inputs[0]), "approximate-gelu"):
            n += 1
    graph.remove_unused_constants()
    return {"gelu": n}


# ------------------------------------------------------------------------------------------------- LayerNorm
def layer_norm_primitives(b: _ReplacementBuilder, node: Node, div: bool = True) -> Value | None:
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if x is None or x.type is None or x.type.shape is None:
        return None
    r = len(x.type.shape)
    axis = int(node.attrs.get("axis", -1)) % r
    axes = b.const(np.arange(axis, r, dtype=np.int64), name=f"{b.hint}_axes")
    d = b.sub(x, b.reduce_mean(x, axes, keepdims=1))
    var = b.reduce_mean(b.mul(d, d), axes, keepdims=1)
    std = b.sqrt(b.add(var, _c(b, float(node.attrs.get("epsilon", 1e-5)), x, "eps")))
    y = b.div(d, std) if div else b.mul(d, b.reciprocal(std))
    if not (scale is not None and scale.const is not None and np.all(scale.const == 1)):
        y = b.mul(y, scale)
    if bias is not None and not (bias.const is not None and not np.any(bias.const)):
        y = b.add(y, bias)
    return y


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
    std = b.sqrt(b.add(var, _c(b, float(node.attrs.get("epsilon", 1e-5)), x, "eps")))
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


@graph_pass("decompose-layernorm", "layer_norm -> ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div/Mul/Add")
def decompose_layernorm(graph: Graph, div: bool = True) -> dict[str, int]:
    """``div=false`` normalizes with ``Reciprocal`` + ``Mul`` (targets without Div)."""
    return {"layer_norm": _run(graph, "layer_norm", lambda b, n: layer_norm_primitives(b, n, bool(div)),
                               "decompose-layernorm")}


@graph_pass("decompose-group-norm", "group_norm (ONNX opset 21) -> Reshape + mean/variance primitives",
            requires=("static_shapes",))
def decompose_group_norm(graph: Graph) -> dict[str, int]:
    def build(b, node):
        x, scale, bias = node.inputs[:3]
        shape = [int(d) for d in x.type.shape]
        g = int(node.attrs["num_groups"])
        y = b.reshape(x, b.const(np.asarray([shape[0], g, -1], dtype=np.int64), name=f"{b.hint}_gshape"))
        axes = b.const(np.asarray([2], dtype=np.int64), name=f"{b.hint}_axes")
        d = b.sub(y, b.reduce_mean(y, axes, keepdims=1))
        var = b.reduce_mean(b.mul(d, d), axes, keepdims=1)
        n = b.div(d, b.sqrt(b.add(var, _c(b, float(node.attrs.get("epsilon", 1e-5)), x, "eps"))))
        n = b.reshape(n, b.const(np.asarray(shape, dtype=np.int64), name=f"{b.hint}_shape"))
        cshape = np.asarray([-1] + [1] * (len(shape) - 2), dtype=np.int64)
        s = b.reshape(scale, b.const(cshape, name=f"{b.hint}_cshape"))
        bb = b.reshape(bias, b.const(cshape, name=f"{b.hint}_cshape"))
        return b.add(b.mul(n, s), bb)

    return {"group_norm": _run(graph, "group_norm", build, "decompose-group-norm")}


# --------------------------------------------------------------------------------------------------- Softmax
def softmax_primitives(b: _ReplacementBuilder, node: Node, div: bool = True) -> Value | None:
    x = node.inputs[0]
    if x is None or x.type is None or x.type.shape is None:
        return None
    r = len(x.type.shape)
    axes = b.const(np.asarray([int(node.attrs.get("axis", -1)) % r], dtype=np.int64), name=f"{b.hint}_axes")
    e = b.exp(b.sub(x, b.reduce_max(x, axes, keepdims=1)))
    s = b.reduce_sum(e, axes, keepdims=1)
    return b.div(e, s) if div else b.mul(e, b.reciprocal(s))


def log_softmax_primitives(b: _ReplacementBuilder, node: Node) -> Value | None:
    x = node.inputs[0]
    if x is None or x.type is None or x.type.shape is None:
        return None
    r = len(x.type.shape)
    axes = b.const(np.asarray([int(node.attrs.get("axis", -1)) % r], dtype=np.int64), name=f"{b.hint}_axes")
    z = b.sub(x, b.reduce_max(x, axes, keepdims=1))
    return b.sub(z, b.log(b.reduce_sum(b.exp(z), axes, keepdims=1)))


@graph_pass("decompose-softmax", "softmax -> Exp(x - ReduceMax) / ReduceSum (numerically stable form)")
def decompose_softmax(graph: Graph, div: bool = True, log: bool = True) -> dict[str, int]:
    """``div=false`` uses ``Reciprocal`` + ``Mul``; ``log`` also decomposes log_softmax (x - max - log(sum exp))."""
    out = {"softmax": _run(graph, "softmax", lambda b, n: softmax_primitives(b, n, bool(div)), "decompose-softmax")}
    if log:
        out["log_softmax"] = _run(graph, "log_softmax", log_softmax_primitives, "decompose-softmax")
    return out


# ------------------------------------------------------------------------------------ HardSwish / HardSigmoid
@graph_pass("decompose-hard-swish", "hard_swish -> x * HardSigmoid(x) (form=hard_sigmoid) or x * Clip(x/6 + 0.5, "
                                    "0, 1) (form=clip)")
def decompose_hard_swish(graph: Graph, form: str = "hard_sigmoid") -> dict[str, int]:
    if form not in ("hard_sigmoid", "clip"):
        raise PassError(f"decompose-hard-swish: form must be 'hard_sigmoid' or 'clip', got {form!r}")

    def build(b, node):
        x = node.inputs[0]
        if form == "hard_sigmoid":
            return b.mul(x, b.hard_sigmoid(x, alpha=1.0 / 6.0, beta=0.5))
        return b.mul(x, hard_sigmoid_primitives(b, x, 1.0 / 6.0, 0.5))

    return {"hard_swish": _run(graph, "hard_swish", build, "decompose-hard-swish")}


def hard_sigmoid_primitives(b: _ReplacementBuilder, x: Value, alpha: float, beta: float) -> Value:
    return b.clip(b.add(b.mul(x, _c(b, alpha, x, "alpha")), _c(b, beta, x, "beta")), _c(b, 0.0, x, "lo"),
                  _c(b, 1.0, x, "hi"))


@graph_pass("decompose-hard-sigmoid", "hard_sigmoid -> Clip(alpha*x + beta, 0, 1)")
def decompose_hard_sigmoid(graph: Graph) -> dict[str, int]:
    def build(b, node):
        return hard_sigmoid_primitives(b, node.inputs[0], float(node.attrs.get("alpha", 0.2)),
                                       float(node.attrs.get("beta", 0.5)))

    return {"hard_sigmoid": _run(graph, "hard_sigmoid", build, "decompose-hard-sigmoid")}


def mish_primitives(b: _ReplacementBuilder, node: Node) -> Value:
    return b.mul(node.inputs[0], b.tanh(b.softplus(node.inputs[0])))


@graph_pass("decompose-mish", "mish (ONNX opset 18) -> x * Tanh(Softplus(x))")
def decompose_mish(graph: Graph) -> dict[str, int]:
    return {"mish": _run(graph, "mish", mish_primitives, "decompose-mish")}


# -------------------------------------------------------------------------------------------------- BatchNorm
def batchnorm_primitives(b: _ReplacementBuilder, node: Node) -> Value | None:
    x = node.inputs[0]
    consts = [v.const if v is not None else None for v in node.inputs[1:5]]
    if x.type is None or x.type.shape is None or any(c is None for c in consts):
        return None
    scale, bias, mean, var = (c.astype(np.float64) for c in consts)  # type: ignore[union-attr]
    k = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    shift = bias - mean * k
    shape = (-1,) + (1,) * (len(x.type.shape) - 2)
    return b.add(b.mul(x, _c(b, k.reshape(shape), x, "scale")), _c(b, shift.reshape(shape), x, "shift"))


@graph_pass("decompose-batchnorm", "Inference batch_norm with constant statistics -> per-channel Mul + Add")
def decompose_batchnorm(graph: Graph) -> dict[str, int]:
    """For BatchNorms that no Conv/Gemm absorbed (pre-activation BN), on targets without BatchNormalization."""
    return {"batch_norm": _run(graph, "batch_norm", batchnorm_primitives, "decompose-batchnorm")}


def gemm_primitives(b: _ReplacementBuilder, node: Node) -> Value:
    a, w = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    at = node.attrs
    if at.get("transA"):
        a = b.transpose(a, perm=[1, 0])
    if at.get("transB"):
        w = b.const(np.ascontiguousarray(w.const.T), w.kind, name=f"{b.hint}_wT") if w.const is not None else \
            b.transpose(w, perm=[1, 0])
    y = b.matmul(a, w)
    if float(at.get("alpha", 1.0)) != 1.0:
        y = b.mul(y, _c(b, float(at["alpha"]), y, "alpha"))
    if c is not None:
        beta = float(at.get("beta", 1.0))
        if beta != 1.0:
            c = b.mul(c, _c(b, beta, c, "beta"))
        y = b.add(y, c)
    return y


@graph_pass("gemm-to-matmul", "gemm -> MatMul (+ Add), transposes folded into constant weights")
def gemm_to_matmul(graph: Graph) -> dict[str, int]:
    """For targets with MatMul but no Gemm (or a Gemm limited to constant B)."""
    return {"gemm": _run(graph, "gemm", gemm_primitives, "gemm-to-matmul")}


# ---------------------------------------------------------------------------------------------------- Col2Im
@graph_pass("decompose-col2im", "col2im of non-overlapping blocks (strides = block, no dilation or pads) -> "
                                "Reshape, Transpose, Reshape (opsets before 18 have no Col2Im)")
def decompose_col2im(graph: Graph) -> dict[str, int]:
    """Folding blocks that tile the image only moves elements: ``[N, C*kh*kw, Hb*Wb]`` -> ``[N, C, kh, kw, Hb, Wb]``
    -> ``[N, C, Hb, kh, Wb, kw]`` -> ``[N, C, H, W]`` (Hugging Face MobileViTV2's patch folding, for targets whose
    opset stops at 17). Overlapping or dilated blocks, which sum, are left alone."""

    def ints(v, n: int, default: int) -> list[int]:  # noqa: ANN001
        return [int(x) for x in v] if v is not None else [default] * n

    def build(b, node):
        x, img, blk = node.inputs[0], node.inputs[1], node.inputs[2]
        if img is None or blk is None or not (img.is_const and blk.is_const) or x.type is None \
                or x.type.shape is None or len(x.type.shape) != 3:
            return None
        size = [int(v) for v in np.asarray(img.const).reshape(-1)]
        k = [int(v) for v in np.asarray(blk.const).reshape(-1)]
        if len(size) != 2 or len(k) != 2 or ints(node.attrs.get("strides"), 2, 1) != k \
                or ints(node.attrs.get("dilations"), 2, 1) != [1, 1] or any(ints(node.attrs.get("pads"), 4, 0)) \
                or size[0] % k[0] or size[1] % k[1]:
            return None
        hb, wb = size[0] // k[0], size[1] // k[1]
        _, ck, cols = x.type.shape
        if not isinstance(ck, int) or ck % (k[0] * k[1]) or not isinstance(cols, int) or cols != hb * wb:
            return None
        c = ck // (k[0] * k[1])
        blocks = b.reshape(x, b.const(np.asarray([0, c, k[0], k[1], hb, wb], np.int64), name=f"{b.hint}_blocks"))
        tiled = b.transpose(blocks, perm=[0, 1, 4, 2, 5, 3])
        return b.reshape(tiled, b.const(np.asarray([0, c, size[0], size[1]], np.int64), name=f"{b.hint}_image"))

    return {"col2im": _run(graph, "col2im", build, "decompose-col2im")}
