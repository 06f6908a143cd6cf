"""Legalization: check a graph against a target profile and rewrite what the target cannot run.

``check(graph, profile)`` lists every :class:`Violation` (node name, ONNX op, rule, detail). ``legalize(graph,
profile)`` rewrites violating nodes with the first candidate rewrite whose emitted ops the profile allows
(``HardSwish -> Mul/Clip``, ``Gelu -> Erf form or tanh approximation``, ``LayerNorm -> ReduceMean/Sub/...``,
``Softplus -> Log(1 + Exp)``, ``Pow -> Mul``, ``CumSum -> MatMul`` by a triangular constant, kernels larger than
the target's maximum split into tiles, channel zero-padding as ``Concat`` with zeros, a spatial strided ``Slice``
as a 1x1 ``AveragePool``...), repeats until nothing changes, and reports what stayed.

Rewrites are exact except the GELU approximations (tanh: max abs error ~5e-4; sigmoid: ~2e-2), which are used
only when the target has no ``Erf`` and are recorded as ``approximate`` in the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.registry import get_op
from .profiles import OpLimits, Profile


@dataclass
class Violation:
    """One reason the target cannot run a node (``node`` is ``input:<name>`` for graph inputs)."""

    node: str
    op: str
    rule: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.rule}: {self.detail}"


@dataclass
class Rewrite:
    node: str
    op: str
    legalizer: str
    approximate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LegalizeResult:
    graph: Graph
    rewrites: list[Rewrite] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def onnx_type(op: str) -> str:
    """The ONNX op type an IR op exports as (its registry name when it has none)."""
    name = get_op(op).onnx
    return name.rpartition(".")[2] if name else op


def accepts(profile: Profile, onnx_op: str) -> bool:
    """Whether ``profile``'s target runs ``onnx_op``: listed, and on targets that refuse host fallbacks also an op
    onnxruntime's quantizer quantizes (others stay float)."""
    if not profile.allows(onnx_op):
        return False
    if profile.quantized and profile.float_fallback == "error":
        from .quantize import quantizer_ops

        return onnx_op in quantizer_ops()
    return True


# -------------------------------------------------------------------------------------------------- checking
def _shape(v: Value | None) -> tuple | None:
    return None if v is None or v.type is None else v.type.shape


def _static(v: Value | None) -> tuple[int, ...] | None:
    s = _shape(v)
    return tuple(int(d) for d in s) if s is not None and all(isinstance(d, int) for d in s) else None


def _kernel(node: Node) -> list[int] | None:
    if node.op in ("conv", "conv_transpose", "fused_conv"):
        w = _static(node.inputs[1])
        return list(w[2:]) if w is not None else None
    k = node.attrs.get("kernel_shape")
    return [int(x) for x in k] if k is not None else None


def _ints(v: Any, n: int, default: int) -> list[int]:
    return [default] * n if v is None else [int(x) for x in v]


def _group_kind(node: Node) -> str:
    g = int(node.attrs.get("group", 1))
    x = _static(node.inputs[0])
    if g == 1:
        return "standard"
    if x is not None and g == x[1]:
        return "depthwise"
    return "grouped"


def _acted_axes(node: Node, rank: int) -> list[int] | None:
    """Axes an op works along (for ``op_axes``), or None when it has no notion of axes."""
    op = node.op
    norm = lambda a: int(a) % rank  # noqa: E731
    if op.startswith("reduce_"):
        ax = node.inputs[1] if len(node.inputs) > 1 else None
        if ax is None:
            return list(range(rank))
        return None if ax.const is None else sorted(norm(a) for a in ax.const.reshape(-1))
    if op in ("global_avg_pool", "global_max_pool"):
        return list(range(2, rank))
    if op == "pad":
        p = node.inputs[1]
        if p is None or p.const is None:
            return None
        pads = [int(x) for x in p.const.reshape(-1)]
        axes_v = node.inputs[3] if len(node.inputs) > 3 else None
        axes = list(range(rank)) if axes_v is None or axes_v.const is None else [
            norm(a) for a in axes_v.const.reshape(-1)]
        k = len(axes)
        return sorted({axes[i] for i in range(k) if pads[i] or pads[i + k]})
    if op == "slice":
        ax = node.inputs[3] if len(node.inputs) > 3 else None
        st = node.inputs[1]
        if ax is None:
            return list(range(len(st.const.reshape(-1)))) if st is not None and st.const is not None else None
        return None if ax.const is None else sorted(norm(a) for a in ax.const.reshape(-1))
    if op == "transpose":
        perm = node.attrs.get("perm") or list(reversed(range(rank)))
        return [i for i, p in enumerate(perm) if p != i]
    if "axis" in node.attrs and node.attrs["axis"] is not None and op not in ("quantize_linear",
                                                                              "dequantize_linear"):
        return [norm(node.attrs["axis"])]
    return None


def _axes_ok(kind: str, axes: list[int], rank: int) -> bool:
    if kind == "any" or not axes:
        return True
    if kind == "spatial":
        return rank >= 3 and all(a >= 2 for a in axes)
    if kind == "last":
        return axes == [rank - 1]
    return 0 not in axes  # non-batch



def _const_like(v: Value) -> bool:
    """A compile-time constant, or the DequantizeLinear of one: the int8 weights of a model quantized
    before it reached us (NPU compilers read the weight and its scale off that pair)."""
    if v.is_const:
        return True
    p = v.producer
    return p is not None and p.op == "dequantize_linear" and all(u is None or u.is_const for u in p.inputs)

def node_violations(node: Node, profile: Profile) -> list[Violation]:
    """Op-level violations of one node (op support and attribute limits)."""
    t = onnx_type(node.op)
    out: list[Violation] = []

    def bad(rule: str, detail: str) -> None:
        out.append(Violation(node.name, t, rule, detail))

    if node.op == "fused_conv":
        t = "FusedConv"
        if not profile.fuse_conv_add_act:
            bad("op-not-supported", f"{profile.name} does not declare fuse_conv_add_act")
            return out
        lim_t = "Conv"
    else:
        lim_t = t
    if node.op != "fused_conv" and not get_op(node.op).onnx:
        bad("op-not-supported", f"IR op {node.op!r} has no single ONNX op (legalization rewrites it if it can)")
        return out
    if not profile.allows(lim_t):
        bad("op-not-supported", f"{profile.name} has no {t}")
        return out
    lim: OpLimits | None = profile.ops.get(lim_t)
    if lim is None:
        return out
    x = node.inputs[0] if node.inputs else None
    rank = len(_shape(x)) if _shape(x) is not None else None
    for i in lim.const_inputs:
        if i < len(node.inputs) and node.inputs[i] is not None and not _const_like(node.inputs[i]):
            bad("const_inputs", f"input {i} (%{node.inputs[i].name}) must be a compile-time constant")
    k = _kernel(node)
    if k is not None:
        nd = len(k)
        dil = _ints(node.attrs.get("dilations"), nd, 1)
        dk = [(kk - 1) * d + 1 for kk, d in zip(k, dil, strict=True)]
        if lim.kernel_max is not None:
            km = list(lim.kernel_max)
            km = km * nd if len(km) == 1 else km[-nd:] if len(km) >= nd else km + [km[-1]] * (nd - len(km))
            if any(a > b for a, b in zip(dk, km, strict=True)):
                bad("kernel_max", f"kernel {k} (dilated {dk}) exceeds {km}")
        if lim.kernel_area_max is not None and math.prod(dk) > lim.kernel_area_max:
            bad("kernel_area_max", f"dilated kernel area {math.prod(dk)} exceeds {lim.kernel_area_max}")
        if lim.stride_max is not None and any(s > lim.stride_max for s in _ints(node.attrs.get("strides"), nd, 1)):
            bad("stride_max", f"strides {_ints(node.attrs.get('strides'), nd, 1)} exceed {lim.stride_max}")
        if lim.dilation_max is not None and any(d > lim.dilation_max for d in dil):
            bad("dilation_max", f"dilations {dil} exceed {lim.dilation_max}")
        pads = _ints(node.attrs.get("pads"), 2 * nd, 0)
        if lim.pad_max is not None and any(p > lim.pad_max for p in pads):
            bad("pad_max", f"pads {pads} exceed {lim.pad_max}")
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", None) and lim.pad_max is not None:
            bad("pad_max", f"auto_pad={node.attrs['auto_pad']} (explicit pads required)")
    if lim.group is not None and node.op in ("conv", "conv_transpose", "fused_conv"):
        kind = _group_kind(node)
        if kind not in lim.group:
            bad("group", f"{kind} convolution (group={node.attrs.get('group', 1)}); allowed: {list(lim.group)}")
    if lim.channels_max is not None and node.op in ("conv", "conv_transpose", "gemm", "matmul"):
        chans = []
        if node.op.startswith("conv"):
            xs, os_ = _static(x), _static(node.outputs[0])
            chans = [xs[1] if xs else 0, os_[1] if os_ else 0]
        else:
            w = _static(node.inputs[1])
            chans = list(w) if w else []
        if any(c > lim.channels_max for c in chans):
            bad("channels_max", f"channels {chans} exceed {lim.channels_max}")
    if lim.axis is not None and "axis" in node.attrs and rank is not None:
        allowed = {a % rank for a in lim.axis}
        if int(node.attrs["axis"]) % rank not in allowed:
            bad("axis", f"axis={node.attrs['axis']} (rank {rank}); allowed {list(lim.axis)}")
    if lim.op_axes != "any" and rank is not None:
        axes = _acted_axes(node, rank)
        if axes is None:
            bad("op_axes", "axes are computed at run time")
        elif not _axes_ok(lim.op_axes, axes, rank):
            bad("op_axes", f"acts on axes {axes} of a rank-{rank} tensor; allowed: {lim.op_axes}")
    if lim.step_max is not None and node.op == "slice":
        st = node.inputs[4] if len(node.inputs) > 4 else None
        if st is not None:
            steps = [abs(int(s)) for s in st.const.reshape(-1)] if st.const is not None else None
            if steps is None or any(s > lim.step_max for s in steps):
                bad("step_max", f"slice steps {steps} exceed {lim.step_max}")
    if lim.input_numel_max is not None:
        xs = _static(x)
        if xs is None or math.prod(xs) > lim.input_numel_max:
            bad("input_numel_max", f"input has {math.prod(xs) if xs else '?'} elements (max "
                                   f"{lim.input_numel_max})")
    if lim.max_rank is not None and rank is not None and rank > lim.max_rank:
        xs = _static(x)
        eff = rank if xs is None else len(xs) - next((i for i, d in enumerate(xs) if d != 1), len(xs))
        if eff > lim.max_rank:
            bad("max_rank", f"input rank {rank} ({_shape(x)}) exceeds {lim.max_rank} for {t}")
    for a, allowed in lim.attrs.items():
        if a in node.attrs and node.attrs[a] not in allowed:
            bad("attrs", f"{a}={node.attrs[a]!r}; allowed {list(allowed)}")
    return out


def value_violations(graph: Graph, profile: Profile) -> list[Violation]:
    """Graph-wide tensor rules: static shapes, rank, effective rank, dimension and tensor-size limits."""
    out: list[Violation] = []
    vals: list[tuple[str, str, Value]] = [(f"input:{v.name}", "input", v) for v in graph.inputs]
    vals += [(n.name, onnx_type(n.op), o) for n in graph.nodes for o in n.outputs]
    for where, op, v in vals:
        t = v.type
        if t is None or t.shape is None:
            out.append(Violation(where, op, "static_shapes", f"%{v.name} has unknown rank"))
            continue
        if profile.static_shapes and not t.is_static:
            out.append(Violation(where, op, "static_shapes", f"%{v.name} has symbolic dims {t}; bind them "
                                                              f"with --input-shape"))
            continue
        r = len(t.shape)
        if r > profile.max_rank:
            out.append(Violation(where, op, "max_rank", f"%{v.name} {t} has rank {r} > {profile.max_rank}"))
        if profile.max_effective_rank is not None and t.is_static:
            lead = t.shape[: max(0, r - profile.max_effective_rank)]
            if any(d != 1 for d in lead):
                out.append(Violation(where, op, "max_effective_rank",
                                     f"%{v.name} {t}: only the {profile.max_effective_rank} innermost dims may "
                                     f"exceed 1"))
        if profile.max_dim is not None and t.is_static and any(d > profile.max_dim for d in t.shape):
            out.append(Violation(where, op, "max_dim", f"%{v.name} {t} has a dim > {profile.max_dim}"))
        if profile.max_tensor_bytes is not None and t.is_static and t.dtype.is_float:
            nb = (t.numel() or 0) * profile.activation_itemsize
            if nb > profile.max_tensor_bytes:
                out.append(Violation(where, op, "max_tensor_bytes", f"%{v.name} {t} takes {nb} bytes at "
                                                                      f"{profile.activation_dtype} (max "
                                                                      f"{profile.max_tensor_bytes})"))
    return out


def check(graph: Graph, profile: Profile) -> list[Violation]:
    """Every violation of ``profile`` in ``graph`` (an empty list means the target can run it all)."""
    out = value_violations(graph, profile)
    for n in graph.nodes:
        out += node_violations(n, profile)
    return out


def alignment_warnings(graph: Graph, profile: Profile) -> list[str]:
    """Conv/Gemm channel counts that are not multiples of ``channel_alignment`` (advisory: slower, not illegal)."""
    a = profile.channel_alignment
    if a <= 1:
        return []
    out = []
    for n in graph.nodes:
        if n.op in ("conv", "conv_transpose", "gemm", "matmul") and n.inputs[1] is not None \
                and n.inputs[1].const is not None:
            w = n.inputs[1].const.shape
            cout = w[0] if n.op.startswith("conv") or (n.op == "gemm" and n.attrs.get("transB")) else w[-1]
            if cout % a:
                out.append(f"{n.name} ({onnx_type(n.op)}): {cout} output channels, not a multiple of {a}")
    return out


# ---------------------------------------------------------------------------------------------- legalizers
@dataclass
class Legalizer:
    """A candidate rewrite: ``emits`` are the ONNX ops it produces (all must be allowed), ``applies`` filters."""

    name: str
    emits: tuple[str, ...] | Callable[[Node], tuple[str, ...]]
    apply: Callable[[Graph, Node], bool]
    applies: Callable[[Node], bool] = lambda n: True
    approximate: bool = False
    #: also tried on nodes whose only violations are tensor rules of their outputs (rank, effective rank)
    values: bool = False
    #: also tried, on quantized targets, on an allowed node whose op the quantizer leaves in float (a host
    #: fallback found only after quantization), when every op it emits is one the quantizer quantizes
    float_fallback: bool = False


def _decomp(fn: Callable[[Any, Node], Value | None], rule: str) -> Callable[[Graph, Node], bool]:
    from graphopt.passes._decompose_util import replace_node

    return lambda g, n: replace_node(g, n, lambda b: fn(b, n), rule)


def _c(b, value, like: Value, hint: str = "c") -> Value:
    from graphopt.passes._decompose_util import const_like

    return const_like(b, value, like, hint)


def _const_scalar(v: Value | None) -> float | None:
    from graphopt.passes._util import scalar_of

    return scalar_of(v)


def _pow_build(b, n: Node) -> Value | None:
    x, e = n.inputs[0], _const_scalar(n.inputs[1])
    if e == 2:
        return b.mul(x, x)
    if e == 3:
        return b.mul(x, b.mul(x, x))
    if e == 0.5:
        return b.sqrt(x)
    if e == -1:
        return b.reciprocal(x)
    if e == -0.5:
        return b.reciprocal(b.sqrt(x))
    if e == 1:
        return b.mul(x, _c(b, 1.0, x, "one"))
    return None


def _pow_emits(n: Node) -> tuple[str, ...]:
    e = _const_scalar(n.inputs[1])
    return {2: ("Mul",), 3: ("Mul",), 0.5: ("Sqrt",), -1: ("Reciprocal",), -0.5: ("Sqrt", "Reciprocal"),
            1: ("Mul",)}.get(e, ("Unsupported",))  # type: ignore[arg-type]


def _cumsum_build(b, n: Node) -> Value | None:
    """CumSum along the last axis is ``x @ T`` and along the second-to-last ``T' @ x`` with a 0/1 triangle."""
    x, ax = n.inputs[0], n.inputs[1]
    xs = _static(x)
    if xs is None or ax is None or ax.const is None or not x.type.dtype.is_float or len(xs) < 2:
        return None
    axis = int(ax.const.reshape(-1)[0]) % len(xs)
    if axis not in (len(xs) - 1, len(xs) - 2):
        return None
    length = xs[axis]
    # out[j] = sum_i x[i] * [i <= j] (inclusive), [i < j] (exclusive); reverse swaps the inequality.
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    m = (i >= j) if n.attrs.get("reverse") else (i <= j)
    if n.attrs.get("exclusive"):
        m &= i != j
    if axis == len(xs) - 1:
        return b.matmul(x, _c(b, m.astype(np.float32), x, "tri"))  # (..., L) @ M[i, j]
    return b.matmul(_c(b, m.T.astype(np.float32), x, "tri"), x)  # M^T[j, i] @ (..., L, N)


def _gather_as_slice_build(b, n: Node) -> Value | None:
    """Gather of constant indices forming a contiguous range == Slice (+ Reshape dropping a scalar index's axis)."""
    x, idx = n.inputs
    xs, out = _static(x), _static(n.outputs[0])
    if xs is None or out is None or idx is None or idx.const is None or idx.const.ndim > 1 or idx.const.size == 0:
        return None
    axis = int(n.attrs.get("axis", 0)) % len(xs)
    vals = [int(v) % xs[axis] for v in idx.const.reshape(-1)]
    if vals != list(range(vals[0], vals[0] + len(vals))):
        return None
    y = b.slice(x, b.const(np.asarray([vals[0]], dtype=np.int64), name=f"{b.hint}_st"),
                b.const(np.asarray([vals[-1] + 1], dtype=np.int64), name=f"{b.hint}_en"),
                b.const(np.asarray([axis], dtype=np.int64), name=f"{b.hint}_ax"))
    if idx.const.ndim == 0:
        y = b.reshape(y, b.const(np.asarray(out, dtype=np.int64), name=f"{b.hint}_shape"))
    return y


def _where_build(b, n: Node) -> Value | None:
    cond, x, y = n.inputs
    if cond is None or cond.const is None or not (x.is_const or y.is_const) or not n.outputs[0].type.dtype.is_float:
        return None
    m = cond.const.astype(bool)
    out_shape = _static(n.outputs[0])
    if out_shape is None:
        return None
    if y.is_const and not x.is_const:
        var, c, keep = x, y.const, m
    elif x.is_const and not y.is_const:
        var, c, keep = y, x.const, ~m
    else:
        return None
    cb = np.broadcast_to(c, np.broadcast_shapes(c.shape, m.shape)).astype(np.float64)
    keep = np.broadcast_to(keep, cb.shape)
    if np.all(np.isinf(cb[~keep])) or not np.any(~keep):
        # where(keep, var, +-inf) == var + (0 or +-inf): exact for finite var
        add = np.where(keep, 0.0, cb)
        return b.add(var, _c(b, add, var, "mask"))
    if not np.all(np.isfinite(cb)):
        return None
    return b.add(b.mul(var, _c(b, keep.astype(np.float64), var, "keep")), _c(b, np.where(keep, 0.0, cb), var, "fill"))


def _softplus_build(b, n: Node) -> Value:
    x = n.inputs[0]
    return b.log(b.add(b.exp(x), _c(b, 1.0, x, "one")))


def _div_const_build(b, n: Node) -> Value | None:
    a, d = n.inputs
    if d is None or d.const is None or not n.outputs[0].type.dtype.is_float or np.any(d.const == 0):
        return None
    return b.mul(a, _c(b, 1.0 / d.const.astype(np.float64), a, "recip"))


def _sub_build(b, n: Node) -> Value:
    a, s = n.inputs
    if s.const is not None:
        return b.add(a, _c(b, -s.const.astype(np.float64), a, "neg"))
    return b.add(a, b.mul(s, _c(b, -1.0, s, "minus1")))


def _global_pool_build(b, n: Node) -> Value | None:
    x = n.inputs[0]
    xs = _static(x)
    if xs is None:
        return None
    return b.reduce_mean(x, b.const(np.arange(2, len(xs), dtype=np.int64), name=f"{b.hint}_axes"), keepdims=1)


def _global_as_avgpool_build(b, n: Node) -> Value | None:
    xs = _static(n.inputs[0])
    if xs is None:
        return None
    return b.avg_pool(n.inputs[0], kernel_shape=list(xs[2:]))


def _reduce_mean_as_global(n: Node) -> bool:
    xs = _static(n.inputs[0])
    axes = _acted_axes(n, len(xs)) if xs is not None else None
    return xs is not None and len(xs) >= 3 and axes == list(range(2, len(xs)))


def _reduce_mean_gap_emits(n: Node) -> tuple[str, ...]:
    return ("GlobalAveragePool",) if int(n.attrs.get("keepdims", 1)) else ("GlobalAveragePool", "Reshape")


def _reduce_mean_gap_build(b, n: Node) -> Value | None:
    """The mean over every spatial axis (``x.mean((2, 3))``) is GlobalAveragePool, reshaped to (N, C) without
    keepdims. Exact."""
    gap = b.global_avg_pool(n.inputs[0])
    if int(n.attrs.get("keepdims", 1)):
        return gap
    return b.reshape(gap, b.const(np.asarray(_static(n.inputs[0])[:2], dtype=np.int64), name=f"{b.hint}_shape"))


def _matmul_as_gemm_build(b, n: Node) -> Value | None:
    """``A @ W`` with a constant 2-D ``W``: a Gemm on A's rows flattened to 2-D (any leading dims, e.g. the
    (N, H, W, C) channel MLP of ConvNeXt), reshaped back. Exact."""
    a, w = n.inputs
    as_, ws = _static(a), _static(w)
    if as_ is None or ws is None or w.const is None or len(ws) != 2 or len(as_) < 2:
        return None
    if len(as_) == 2:
        return b.gemm(a, w)
    flat = b.reshape(a, b.const(np.asarray([-1, as_[-1]], dtype=np.int64), name=f"{b.hint}_2d"))
    y = b.gemm(flat, w)
    return b.reshape(y, b.const(np.asarray([*as_[:-1], ws[1]], dtype=np.int64), name=f"{b.hint}_nd"))


def _slice_as_pool_build(b, n: Node) -> Value | None:
    """``x[:, :, ::s, ::t]`` (spatial steps, full range) == AveragePool(kernel 1, strides s, t)."""
    x = n.inputs[0]
    xs = _static(x)
    if xs is None or len(xs) < 3:
        return None
    from graphopt.passes._util import slice_params

    p = slice_params(n, len(xs))
    if p is None or any(a < 2 for a in p):
        return None
    strides = [1] * (len(xs) - 2)
    for a, (s, e, st) in p.items():
        if st < 1 or s != 0 or (e < xs[a] and e >= 0) or e < 0:
            return None
        strides[a - 2] = st
    return b.avg_pool(x, kernel_shape=[1] * (len(xs) - 2), strides=strides)


def _pad_as_concat_build(b, n: Node) -> Value | None:
    """Zero padding along one axis == Concat with zero constants (Edge TPU's documented zero-padding Concat)."""
    from graphopt.passes._util import pad_spec

    x = n.inputs[0]
    xs = _static(x)
    if xs is None:
        return None
    spec = pad_spec(n, len(xs))
    if spec is None or spec[1] != 0.0:
        return None
    pads, _ = spec
    r = len(xs)
    axes = [a for a in range(r) if pads[a] or pads[a + r]]
    if len(axes) != 1 or any(p < 0 for p in pads) or axes[0] == 0:
        return None
    a = axes[0]
    y = x
    for before, amount in ((True, pads[a]), (False, pads[a + r])):
        if amount:
            zs = list(_static(y) or xs)
            zs[a] = amount
            z = _c(b, np.zeros(zs), x, "zeros")
            y = b.concat(z, y, axis=a) if before else b.concat(y, z, axis=a)
    return y


def _squeeze_as_reshape_build(b, n: Node) -> Value | None:
    out = _static(n.outputs[0])
    if out is None:
        return None
    return b.reshape(n.inputs[0], b.const(np.asarray(out, dtype=np.int64), name=f"{b.hint}_shape"))


def _clip_as_relu(n: Node) -> bool:
    lo = _const_scalar(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else None
    hi = n.inputs[2] if len(n.inputs) > 2 else None
    return lo == 0.0 and hi is None


def _split_conv_kernel(profile: Profile) -> Callable[[Graph, Node], bool]:
    """A conv whose kernel exceeds ``kernel_max`` becomes a sum of tile convs over shifted input windows."""

    def apply(graph: Graph, n: Node) -> bool:
        lim = profile.ops.get("Conv")
        if lim is None or lim.kernel_max is None:
            return False
        x, w = n.inputs[0], n.inputs[1]
        bias = n.inputs[2] if len(n.inputs) > 2 else None
        xs, ws, ys = _static(x), _static(w), _static(n.outputs[0])
        if xs is None or ws is None or ys is None or w.const is None or (bias is not None and bias.const is None):
            return False
        nd = len(ws) - 2
        km = list(lim.kernel_max)
        km = km * nd if len(km) == 1 else km[-nd:]
        dil = _ints(n.attrs.get("dilations"), nd, 1)
        if any(d != 1 for d in dil) or n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", None):
            return False
        k = list(ws[2:])
        if all(a <= m for a, m in zip(k, km, strict=True)):
            return False
        strides = _ints(n.attrs.get("strides"), nd, 1)
        pads = _ints(n.attrs.get("pads"), 2 * nd, 0)
        from graphopt.passes._decompose_util import replace_node

        def build(b):
            xp = x
            if any(pads):
                full = [0, 0] + pads[:nd] + [0, 0] + pads[nd:]
                xp = b.pad(x, b.const(np.asarray(full, dtype=np.int64), name=f"{b.hint}_pads"))
            tiles = [list(range(0, k[i], km[i])) for i in range(nd)]
            acc = None
            for offs in np.stack(np.meshgrid(*tiles, indexing="ij"), -1).reshape(-1, nd):
                size = [min(km[i], k[i] - int(offs[i])) for i in range(nd)]
                sl = (slice(None), slice(None)) + tuple(slice(int(o), int(o) + s) for o, s in zip(offs, size,
                                                                                                   strict=True))
                wt = np.ascontiguousarray(w.const[sl])
                starts = [int(o) for o in offs]
                ends = [int(o) + (ys[2 + i] - 1) * strides[i] + size[i] for i, o in enumerate(offs)]
                win = b.slice(xp, b.const(np.asarray(starts, dtype=np.int64), name=f"{b.hint}_st"),
                              b.const(np.asarray(ends, dtype=np.int64), name=f"{b.hint}_en"),
                              b.const(np.arange(2, 2 + nd, dtype=np.int64), name=f"{b.hint}_ax"))
                attrs = {"strides": strides, "group": int(n.attrs.get("group", 1)), "kernel_shape": size}
                y = b.conv(win, b.const(wt, w.kind, name=f"{b.hint}_w"), **attrs)
                acc = y if acc is None else b.add(acc, y)
            if bias is not None:
                acc = b.add(acc, _c(b, bias.const.reshape(-1, *([1] * nd)), x, "bias"))
            return acc

        return replace_node(graph, n, build, "split-conv-kernel")

    return apply


def _split_conv_groups(profile: Profile) -> Callable[[Graph, Node], bool]:
    """A grouped conv the target cannot run (neither standard nor depthwise) becomes ``group`` standard convs on
    channel slices of the input, concatenated: exact, the same MACs, only more nodes (what TFLite's converter
    does for grouped convs)."""

    def apply(graph: Graph, n: Node) -> bool:
        lim = profile.ops.get("Conv")
        if lim is None or lim.group is None or "standard" not in lim.group or n.op != "conv":
            return False
        x, w = n.inputs[0], n.inputs[1]
        bias = n.inputs[2] if len(n.inputs) > 2 else None
        g = int(n.attrs.get("group", 1))
        ws = _static(w)
        if g <= 1 or ws is None or w.const is None or (bias is not None and bias.const is None) or ws[0] % g:
            return False
        cin, cout = ws[1], ws[0] // g
        from graphopt.passes._decompose_util import replace_node

        def build(b):
            ys = []
            ax = b.const(np.asarray([1], dtype=np.int64), name=f"{b.hint}_ax")
            for i in range(g):
                xi = b.slice(x, b.const(np.asarray([i * cin], dtype=np.int64), name=f"{b.hint}_st"),
                             b.const(np.asarray([(i + 1) * cin], dtype=np.int64), name=f"{b.hint}_en"), ax)
                ins = [xi, b.const(np.ascontiguousarray(w.const[i * cout:(i + 1) * cout]), w.kind, name=f"{b.hint}_w")]
                if bias is not None:
                    ins.append(b.const(np.ascontiguousarray(bias.const[i * cout:(i + 1) * cout]), bias.kind,
                                       name=f"{b.hint}_b"))
                ys.append(b.conv(*ins, **{**n.attrs, "group": 1}))
            return b.concat(*ys, axis=1)

        return replace_node(graph, n, build, "split-conv-groups")

    return apply


def _split_conv_stride(profile: Profile) -> Callable[[Graph, Node], bool]:
    """A conv whose stride exceeds ``stride_max`` (AlexNet's stride-4 stem on a stride-3 target) becomes the same
    conv at stride s' followed by a 1x1 AveragePool at stride f, s = s'·f per axis: exact (a strided conv is the
    stride-s' conv's output subsampled by f), at f² times the conv's MACs."""

    def apply(graph: Graph, n: Node) -> bool:
        lim, pool = profile.ops.get("Conv"), profile.ops.get("AveragePool")
        if n.op != "conv" or lim is None or lim.stride_max is None:
            return False
        if n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", None) or _static(n.inputs[0]) is None:
            return False
        nd = len(_static(n.inputs[0])) - 2
        strides = _ints(n.attrs.get("strides"), nd, 1)
        pool_max = pool.stride_max if pool is not None and pool.stride_max is not None else max(strides)
        split = []
        for st in strides:
            # largest conv stride within the limit that leaves a pool stride within the pool's limit
            opts = [(a, st // a) for a in range(min(st, lim.stride_max), 0, -1) if st % a == 0 and st // a <= pool_max]
            if not opts:
                return False
            split.append(opts[0])
        if all(f == 1 for _, f in split):
            return False
        from graphopt.passes._decompose_util import replace_node

        def build(b):
            y = b.conv(*[v for v in n.inputs if v is not None], **{**n.attrs, "strides": [a for a, _ in split]})
            return b.avg_pool(y, kernel_shape=[1] * nd, strides=[f for _, f in split])

        return replace_node(graph, n, build, "split-conv-stride")

    return apply


def _conv1d_polyphase(profile: Profile) -> Callable[[Graph, Node], bool]:
    """A 1-D conv whose stride s exceeds ``stride_max`` and cannot be split into allowed conv and pool strides
    (Wav2Vec2's stride 5 on a stride-4 target) as a stride-1 conv over the s phases of the input: the padded
    input [N, C, s·T'] is reshaped to [N, C, T', s] and transposed to s·C channels of length T', and the kernel
    tap j = q·s + r of channel c moves to channel c·s + r, tap q (taps past the kernel are zero). Exact, rank 4
    throughout, and the MACs of the original conv (plus its zero taps)."""

    def apply(graph: Graph, n: Node) -> bool:
        x, w = n.inputs[0], n.inputs[1]
        xs = _static(x)
        if (n.op != "conv" or xs is None or len(xs) != 3 or w is None or w.const is None
                or int(n.attrs.get("group", 1) or 1) != 1
                or n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", None)
                or _ints(n.attrs.get("dilations"), 1, 1) != [1]):
            return False
        (st,) = _ints(n.attrs.get("strides"), 1, 1)
        lim = profile.ops.get("Conv")
        if lim is None or lim.stride_max is None or st <= lim.stride_max:
            return False
        pb, pe = _ints(n.attrs.get("pads"), 2, 0)
        batch, c, length = (int(v) for v in xs)
        wt = np.asarray(w.const)
        o, k = wt.shape[0], wt.shape[2]
        t_out = (length + pb + pe - k) // st + 1
        kq = -(-k // st)
        need = (t_out + kq - 1) * st
        w2 = np.zeros((o, c * st, kq), dtype=wt.dtype)
        for q in range(kq):
            for r in range(st):
                if q * st + r < k:
                    w2[:, r::st, q] = wt[:, :, q * st + r]  # channel c*s + r of the phase layout
        from graphopt.passes._decompose_util import replace_node

        def build(b):
            y, extra = x, need - (length + pb + pe)
            if pb or pe + max(extra, 0):
                y = b.pad(y, b.const(np.asarray([0, 0, pb, 0, 0, pe + max(extra, 0)], dtype=np.int64),
                                     name=f"{b.hint}_pads"))
            if extra < 0:
                y = b.slice(y, b.const(np.asarray([0], dtype=np.int64), name=f"{b.hint}_st"),
                            b.const(np.asarray([need], dtype=np.int64), name=f"{b.hint}_en"),
                            b.const(np.asarray([2], dtype=np.int64), name=f"{b.hint}_ax"))
            y = b.reshape(y, b.const(np.asarray([batch, c, need // st, st], dtype=np.int64), name=f"{b.hint}_4d"))
            y = b.transpose(y, perm=[0, 1, 3, 2])
            y = b.reshape(y, b.const(np.asarray([batch, c * st, need // st], dtype=np.int64), name=f"{b.hint}_ph"))
            wv = b.const(w2, w.kind, name=f"{b.hint}_wphase")
            ins = [y, wv] + ([n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] is not None else [])
            return b.conv(*ins, kernel_shape=[kq])

        return replace_node(graph, n, build, "conv-stride-polyphase")

    return apply


def _lrn_build(b, n: Node) -> Value | None:
    """LRN ``x / (bias + alpha/size · Σ_window x²)^beta`` from supported ops: the channel-window sum of squares is
    a 1x1 Conv with a 0/1 band matrix (exact), the power is Sqrt-based for beta 0.75 / 0.5 (AlexNet, GoogLeNet) and
    ``exp(-beta·log t)`` otherwise. Odd sizes only (ONNX centres even windows differently from PyTorch, and
    onnxruntime rejects them)."""
    x = n.inputs[0]
    xs = _static(x)
    size = n.attrs.get("size")
    if xs is None or len(xs) < 3 or size is None or int(size) % 2 == 0:
        return None
    c, half, nd = xs[1], (int(size) - 1) // 2, len(xs) - 2
    band = np.zeros((c, c) + (1,) * nd, dtype=np.float32)
    for i in range(c):
        band[i, max(0, i - half):min(c, i + half + 1)] = 1.0
    sq = b.mul(x, x)
    win = b.conv(sq, b.const(band, "const", name=f"{b.hint}_band"), kernel_shape=[1] * nd)
    alpha, beta, bias = (float(n.attrs.get(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    t = b.add(b.mul(win, _c(b, alpha / int(size), x, "alpha")), _c(b, bias, x, "bias"))
    if beta == 0.75:
        r = b.sqrt(t)
        return b.div(x, b.mul(r, b.sqrt(r)))
    if beta == 0.5:
        return b.div(x, b.sqrt(t))
    return b.mul(x, b.exp(b.mul(b.log(t), _c(b, -beta, x, "beta"))))


def _lrn_emits(n: Node) -> tuple[str, ...]:
    beta = float(n.attrs.get("beta", 0.75))
    power = ("Sqrt", "Div") if beta in (0.75, 0.5) else ("Log", "Exp")
    return ("Mul", "Conv", "Add") + power


def _erf_tanh_build(b, n: Node) -> Value:
    """``erf(z) ≈ tanh(2/√π · (z + 2κ z³))``, κ = 0.044715: the tanh-GELU approximation written for erf (max
    abs error 3.6e-4), for targets with Tanh but no Erf where GELU already arrived decomposed (opset < 20)."""
    from graphopt.passes._util import GELU_TANH_KAPPA

    z = n.inputs[0]
    cube = b.mul(z, b.mul(z, z))
    inner = b.add(z, b.mul(cube, _c(b, 2.0 * GELU_TANH_KAPPA, z, "kappa")))
    return b.tanh(b.mul(inner, _c(b, 2.0 / math.sqrt(math.pi), z, "scale")))


def _sum_as_adds_build(b, n: Node) -> Value | None:
    ins = [v for v in n.inputs if v is not None]
    if len(ins) < 2:
        return None
    acc = ins[0]
    for v in ins[1:]:
        acc = b.add(acc, v)
    return acc


def _softmax_axis_fix(profile: Profile) -> Callable[[Node], bool]:
    """A softmax the target rejects only for its axis or rank (e.g. axis 1 of an (N, C, 1, 1) tensor, what
    opset-9 classifiers leave after GlobalAveragePool)."""

    def f(n: Node) -> bool:
        xs = _static(n.inputs[0])
        rules = {v.rule for v in node_violations(n, profile)}
        return xs is not None and bool(rules) and rules <= {"op_axes", "max_rank", "axis"}

    return f


def _softmax_2d_build(b, n: Node) -> Value | None:
    """``softmax(x, axis)`` on a static tensor as a last-axis softmax of a 2-D view: reshape when the dims after
    ``axis`` are all 1, else transpose ``axis`` last first (and back after). Exact."""
    xs = _static(n.inputs[0])
    if xs is None:
        return None
    r = len(xs)
    axis = int(n.attrs.get("axis", -1)) % r
    x, shape = n.inputs[0], list(xs)
    perm = None
    if any(d != 1 for d in xs[axis + 1:]):
        perm = [i for i in range(r) if i != axis] + [axis]
        x = b.transpose(x, perm=perm)
        shape = [xs[i] for i in perm]
    rows = math.prod(shape[:-1]) if perm is not None else math.prod(xs[:axis])
    flat = b.reshape(x, b.const(np.asarray([rows, xs[axis]], dtype=np.int64), name=f"{b.hint}_2d"))
    y = getattr(b, n.op)(flat, axis=1)
    y = b.reshape(y, b.const(np.asarray(shape, dtype=np.int64), name=f"{b.hint}_shape"))
    if perm is not None:
        y = b.transpose(y, perm=[perm.index(i) for i in range(r)])
    return y


def _softmax_2d_emits(n: Node) -> tuple[str, ...]:
    xs = _static(n.inputs[0])
    axis = int(n.attrs.get("axis", -1)) % len(xs) if xs else 0
    tail = xs is None or any(d != 1 for d in xs[axis + 1:])
    return ("Reshape", onnx_type(n.op)) + (("Transpose",) if tail else ())


def _channel_shuffle(graph: Graph, n: Node) -> tuple[Node, list[int]] | None:
    """``n`` = reshape (N, C, H, W) -> (N, g, C/g, H, W) followed by transpose [0, 2, 1, 3, 4] and a reshape
    back to (N, C, H, W): ShuffleNet's channel shuffle. Returns the closing reshape and the output-to-input
    channel map."""
    xs, ys = _static(n.inputs[0]), _static(n.outputs[0])
    if xs is None or ys is None or len(xs) != 4 or len(ys) != 5 or ys[0] != xs[0] or ys[3:] != xs[2:]:
        return None
    g, cg = ys[1], ys[2]
    if g * cg != xs[1] or len(n.outputs[0].uses) != 1 or n.outputs[0] in graph.outputs:
        return None
    t = n.outputs[0].uses[0].node
    if t.op != "transpose" or list(t.attrs.get("perm") or []) != [0, 2, 1, 3, 4] or len(t.outputs[0].uses) != 1 \
            or t.outputs[0] in graph.outputs:
        return None
    r2 = t.outputs[0].uses[0].node
    if r2.op != "reshape" or _static(r2.outputs[0]) != xs:
        return None
    # output channel k*g + i holds input channel i*cg + k
    return r2, [i * cg + k for k in range(cg) for i in range(g)]


def _channel_shuffle_conv(graph: Graph, n: Node) -> bool:
    """Channel shuffle (rank-5 reshape/transpose) as a 1x1 conv with a 0/1 permutation matrix: rank 4
    throughout, exact in float, and exact in int8 too (weights 1.0 quantize without error)."""
    found = _channel_shuffle(graph, n)
    if found is None:
        return False
    r2, src = found
    c = len(src)
    w = np.zeros((c, c, 1, 1), dtype=np.float32)
    w[np.arange(c), src, 0, 0] = 1.0
    from graphopt.passes._decompose_util import replace_node

    x = n.inputs[0]
    return replace_node(graph, r2, lambda b: b.conv(x, b.const(w, "param", name=f"{b.hint}_perm"),
                                                    kernel_shape=[1, 1]), "channel-shuffle-conv")


def _isnan_never(graph: Graph, n: Node) -> bool:
    """``IsNaN(x)`` on an int8 target is always false (an int8 tensor has no NaN): Hugging Face attention guards
    its softmax with ``where(isnan(p), 0, p)``. Each such ``where`` is replaced by its else branch; other uses get
    a constant all-false tensor. Reported approximate: it assumes the float model produces no NaN there either."""
    out = n.outputs[0]
    shape = out.type.shape if out.type is not None else None
    if shape is None or not all(isinstance(d, int) for d in shape):
        return False
    for u in list(out.uses):
        w = u.node
        y = w.outputs[0]
        if (w.op == "where" and u.index == 0 and w.inputs[2] is not None and w.inputs[2].type is not None
                and y.type is not None and w.inputs[2].type.shape == y.type.shape
                and w.inputs[2].type.dtype == y.type.dtype and y not in graph.outputs):
            graph.replace_all_uses(y, w.inputs[2])
            graph.erase_node(w)
    if out.uses or out in graph.outputs:
        graph.replace_all_uses(out, graph.add_const(f"{n.name}_never", np.zeros(shape, dtype=bool)))
    if not out.uses and out not in graph.outputs:
        graph.erase_node(n)
    return True


def _group_not_allowed(profile: Profile) -> Callable[[Node], bool]:
    def f(n: Node) -> bool:
        return any(v.rule == "group" for v in node_violations(n, profile))

    return f


def _too_big_kernel(profile: Profile) -> Callable[[Node], bool]:
    def f(n: Node) -> bool:
        return any(v.rule in ("kernel_max", "kernel_area_max") for v in node_violations(n, profile))

    return f


def _pool_global_build(b, n: Node) -> Value | None:
    """A pool whose one window covers the whole input is a global pool: a kernel of the input's spatial size, or
    (ceil_mode) a larger one with a single output position, like Hugging Face EfficientNet's
    ``AvgPool2d(hidden_dim, ceil_mode=True)`` head (kernel 1280 on a 7x7 map). Without padding the window holds
    only input elements, so the average divides by their count either way (onnxruntime clips the window to the
    input)."""
    xs, ys = _static(n.inputs[0]), _static(n.outputs[0])
    k = n.attrs.get("kernel_shape")
    if xs is None or k is None or any(_ints(n.attrs.get("pads"), 2 * len(k), 0)):
        return None
    if n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", None) \
            or any(d != 1 for d in _ints(n.attrs.get("dilations"), len(k), 1)):
        return None
    exact = list(k) == list(xs[2:])
    covers = ys is not None and all(o == 1 for o in ys[2:]) and all(a >= x for a, x in zip(k, xs[2:], strict=True))
    if not (exact or covers):
        return None
    return b.global_avg_pool(n.inputs[0]) if n.op == "avg_pool" else b.global_max_pool(n.inputs[0])


def legalizable(node: Node, profile: Profile, table: dict[str, list[Legalizer]] | None = None) -> bool:
    """Whether some legalizer of ``node.op`` applies to it and emits only ops ``profile`` allows: such a node is
    rewritten onto the NPU at export (e.g. a standalone BatchNorm into Mul+Add), so estimates should not price it
    on the host. Exactness of the build is checked only when it runs; this is the static test."""
    for cand in (table if table is not None else legalizers(profile)).get(node.op, []):
        emits = cand.emits(node) if callable(cand.emits) else cand.emits
        if cand.applies(node) and all(profile.allows(o) for o in emits):
            return True
    return False


def legalizers(profile: Profile) -> dict[str, list[Legalizer]]:
    """Candidate rewrites per IR op, in preference order (exact before approximate)."""
    from graphopt.passes._decompose_util import gelu_tanh, hard_sigmoid_primitives, instance_norm_primitives
    from graphopt.passes.approximate_gelu import gelu_sigmoid
    from graphopt.passes.decompose_batchnorm import batchnorm_primitives
    from graphopt.passes.decompose_gelu import gelu_erf
    from graphopt.passes.decompose_layernorm import layer_norm_primitives
    from graphopt.passes.decompose_mish import mish_primitives
    from graphopt.passes.decompose_softmax import log_softmax_primitives, softmax_primitives
    from graphopt.passes.gemm_to_matmul import gemm_primitives

    gelu_none = lambda n: n.attrs.get("approximate", "none") != "tanh"  # noqa: E731
    return {
        "hard_swish": [
            Legalizer("hard-swish-hard-sigmoid", ("HardSigmoid", "Mul"),
                      _decomp(lambda b, n: b.mul(n.inputs[0], b.hard_sigmoid(n.inputs[0], alpha=1 / 6, beta=0.5)),
                              "legalize-hard-swish")),
            Legalizer("hard-swish-clip", ("Mul", "Add", "Clip"),
                      _decomp(lambda b, n: b.mul(n.inputs[0], hard_sigmoid_primitives(b, n.inputs[0], 1 / 6, 0.5)),
                              "legalize-hard-swish")),
        ],
        "hard_sigmoid": [Legalizer("hard-sigmoid-clip", ("Mul", "Add", "Clip"), _decomp(
            lambda b, n: hard_sigmoid_primitives(b, n.inputs[0], float(n.attrs.get("alpha", 0.2)),
                                                   float(n.attrs.get("beta", 0.5))), "legalize-hard-sigmoid"))],
        "gelu": [
            Legalizer("gelu-erf", ("Div", "Erf", "Add", "Mul"), _decomp(lambda b, n: gelu_erf(b, n.inputs[0]),
                                                                        "legalize-gelu"), gelu_none),
            Legalizer("gelu-tanh", ("Mul", "Add", "Tanh"), _decomp(lambda b, n: gelu_tanh(b, n.inputs[0]),
                                                                   "legalize-gelu"), lambda n: not gelu_none(n)),
            Legalizer("gelu-tanh-approx", ("Mul", "Add", "Tanh"),
                      _decomp(lambda b, n: gelu_tanh(b, n.inputs[0]), "legalize-gelu"), gelu_none,
                      approximate=True),
            Legalizer("gelu-sigmoid-approx", ("Mul", "Sigmoid"),
                      _decomp(lambda b, n: gelu_sigmoid(b, n.inputs[0]), "legalize-gelu"), approximate=True),
        ],
        "layer_norm": [
            Legalizer("layernorm-div", ("ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div"),
                      _decomp(lambda b, n: layer_norm_primitives(b, n, True), "legalize-layernorm")),
            Legalizer("layernorm-reciprocal", ("ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Reciprocal"),
                      _decomp(lambda b, n: layer_norm_primitives(b, n, False), "legalize-layernorm")),
        ],
        "instance_norm": [
            Legalizer("instancenorm-div", ("ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div"),
                      _decomp(lambda b, n: instance_norm_primitives(b, n, True), "legalize-instancenorm")),
            Legalizer("instancenorm-reciprocal", ("ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Reciprocal"),
                      _decomp(lambda b, n: instance_norm_primitives(b, n, False), "legalize-instancenorm")),
        ],
        "softmax": [
            Legalizer("softmax-2d", _softmax_2d_emits, _decomp(_softmax_2d_build, "legalize-softmax"),
                      _softmax_axis_fix(profile)),
            Legalizer("softmax-primitives", ("ReduceMax", "Sub", "Exp", "ReduceSum", "Div"),
                      _decomp(lambda b, n: softmax_primitives(b, n, True), "legalize-softmax")),
            Legalizer("softmax-primitives-reciprocal", ("ReduceMax", "Sub", "Exp", "ReduceSum", "Reciprocal", "Mul"),
                      _decomp(lambda b, n: softmax_primitives(b, n, False), "legalize-softmax")),
        ],
        "log_softmax": [Legalizer("softmax-2d", _softmax_2d_emits, _decomp(_softmax_2d_build, "legalize-softmax"),
                                  _softmax_axis_fix(profile)),
                        Legalizer("log-softmax-primitives", ("ReduceMax", "Sub", "Exp", "ReduceSum", "Log"),
                                  _decomp(log_softmax_primitives, "legalize-softmax"))],
        "batch_norm": [Legalizer("batchnorm-mul-add", ("Mul", "Add"), _decomp(batchnorm_primitives,
                                                                              "legalize-batchnorm"))],
        "mish": [Legalizer("mish-primitives", ("Tanh", "Softplus", "Mul"), _decomp(mish_primitives,
                                                                                  "legalize-mish"))],
        "silu": [Legalizer("silu-sigmoid-mul", ("Sigmoid", "Mul"), _decomp(
            lambda b, n: b.mul(n.inputs[0], b.sigmoid(n.inputs[0])), "legalize-silu"))],
        "softplus": [Legalizer("softplus-log-exp", ("Exp", "Add", "Log"), _decomp(_softplus_build,
                                                                                 "legalize-softplus"))],
        "pow": [Legalizer("pow-to-mul", _pow_emits, _decomp(_pow_build, "legalize-pow"),
                          lambda n: _const_scalar(n.inputs[1]) in (2, 3, 0.5, -1, -0.5, 1))],
        "div": [Legalizer("div-by-const", ("Mul",), _decomp(_div_const_build, "legalize-div"),
                          lambda n: n.inputs[1] is not None and n.inputs[1].is_const),
                Legalizer("div-reciprocal", ("Reciprocal", "Mul"),
                          _decomp(lambda b, n: b.mul(n.inputs[0], b.reciprocal(n.inputs[1])), "legalize-div"))],
        "sub": [Legalizer("sub-as-add", ("Add", "Mul"), _decomp(_sub_build, "legalize-sub"))],
        "reciprocal": [Legalizer("reciprocal-div", ("Div",), _decomp(
            lambda b, n: b.div(_c(b, 1.0, n.inputs[0], "one"), n.inputs[0]), "legalize-reciprocal"))],
        "cumsum": [Legalizer("cumsum-matmul", ("MatMul",), _decomp(_cumsum_build, "legalize-cumsum"))],
        "gather": [Legalizer("gather-slice", ("Slice", "Reshape"), _decomp(_gather_as_slice_build,
                                                                            "legalize-gather"))],
        "where": [Legalizer("where-arith", ("Mul", "Add"), _decomp(_where_build, "legalize-where"))],
        "gemm": [Legalizer("gemm-matmul", ("MatMul", "Add", "Mul"), _decomp(gemm_primitives, "legalize-gemm"))],
        "matmul": [Legalizer("matmul-gemm", ("Gemm", "Reshape"), _decomp(_matmul_as_gemm_build, "legalize-matmul"),
                             lambda n: n.inputs[1] is not None and n.inputs[1].is_const)],
        "global_avg_pool": [
            Legalizer("gap-reduce-mean", ("ReduceMean",), _decomp(_global_pool_build, "legalize-global-pool")),
            Legalizer("gap-avg-pool", ("AveragePool",), _decomp(_global_as_avgpool_build, "legalize-global-pool")),
        ],
        "reduce_mean": [Legalizer("reduce-mean-gap", _reduce_mean_gap_emits, _decomp(
            _reduce_mean_gap_build, "legalize-reduce-mean"), _reduce_mean_as_global, float_fallback=True)],
        "avg_pool": [Legalizer("pool-global", ("GlobalAveragePool",), _decomp(_pool_global_build, "legalize-pool"))],
        "max_pool": [Legalizer("pool-global", ("GlobalMaxPool",), _decomp(_pool_global_build, "legalize-pool"))],
        "flatten": [Legalizer("flatten-reshape", ("Reshape",), _decomp(_squeeze_as_reshape_build,
                                                                      "legalize-reshape"))],
        "squeeze": [Legalizer("squeeze-reshape", ("Reshape",), _decomp(_squeeze_as_reshape_build,
                                                                      "legalize-reshape"))],
        "unsqueeze": [Legalizer("unsqueeze-reshape", ("Reshape",), _decomp(_squeeze_as_reshape_build,
                                                                          "legalize-reshape"))],
        "clip": [Legalizer("clip-relu", ("Relu",), _decomp(lambda b, n: b.relu(n.inputs[0]), "legalize-clip"),
                           _clip_as_relu)],
        "slice": [Legalizer("strided-slice-avgpool", ("AveragePool",), _decomp(_slice_as_pool_build,
                                                                               "legalize-slice"))],
        "pad": [Legalizer("zero-pad-concat", ("Concat",), _decomp(_pad_as_concat_build, "legalize-pad"))],
        "sum": [Legalizer("sum-adds", ("Add",), _decomp(_sum_as_adds_build, "legalize-sum"))],
        "erf": [Legalizer("erf-tanh-approx", ("Mul", "Add", "Tanh"), _decomp(_erf_tanh_build, "legalize-erf"),
                          approximate=True)],
        "lrn": [Legalizer("lrn-conv-band", _lrn_emits, _decomp(_lrn_build, "legalize-lrn"))],
        "is_nan": [Legalizer("isnan-never-int8", (), _isnan_never, lambda n: profile.quantized, approximate=True)],
        "reshape": [Legalizer("channel-shuffle-conv", ("Conv",), _channel_shuffle_conv,
                              lambda n: _channel_shuffle(n.graph, n) is not None, values=True)],
        "conv": [Legalizer("split-conv-kernel", ("Conv", "Pad", "Slice", "Add"), _split_conv_kernel(profile),
                           _too_big_kernel(profile)),
                 Legalizer("split-conv-groups", ("Slice", "Conv", "Concat"), _split_conv_groups(profile),
                           _group_not_allowed(profile)),
                 Legalizer("split-conv-stride", ("Conv", "AveragePool"), _split_conv_stride(profile),
                           lambda n: any(v.rule == "stride_max" for v in node_violations(n, profile))),
                 Legalizer("conv-stride-polyphase", ("Pad", "Slice", "Reshape", "Transpose", "Conv"),
                           _conv1d_polyphase(profile),
                           lambda n: any(v.rule == "stride_max" for v in node_violations(n, profile)))],
    }


def _cleanup(graph: Graph) -> None:
    from graphopt.passes.dce import dce
    from graphopt.passes.fold_constants import fold_constants

    fold_constants(graph)
    dce(graph)


def legalize(graph: Graph, profile: Profile, *, max_rounds: int = 6,
             progress: Callable[[int, int], None] | None = None) -> LegalizeResult:
    """Rewrite ``graph`` in place toward ``profile``; returns the rewrites done and the violations left.
    ``progress(done, total)`` is called as the nodes of each round are checked."""
    res = LegalizeResult(graph)
    table = legalizers(profile)
    quantized_ops: frozenset[str] = frozenset()
    if profile.quantized:
        from .quantize import quantizer_ops

        quantized_ops = quantizer_ops()
    for _ in range(max_rounds):
        changed = False
        bad_outputs = {v.node for v in value_violations(graph, profile)}
        nodes = list(graph.nodes)
        for i, node in enumerate(nodes):
            if progress is not None and i % 64 == 0:
                progress(i, len(nodes))
            if node.graph is not graph:
                continue
            op_level = bool(node_violations(node, profile))
            value_level = node.name in bad_outputs
            falls_back = profile.quantized and onnx_type(node.op) not in quantized_ops
            if not (op_level or value_level or falls_back):
                continue
            for cand in table.get(node.op, []):
                fallback_only = not op_level and not (value_level and cand.values)
                if fallback_only and not (falls_back and cand.float_fallback):
                    continue
                emits = cand.emits(node) if callable(cand.emits) else cand.emits
                if not cand.applies(node) or not all(profile.allows(o) for o in emits):
                    continue
                if fallback_only and not all(o in quantized_ops for o in emits):
                    continue
                name, op = node.name, onnx_type(node.op)
                if cand.apply(graph, node):
                    res.rewrites.append(Rewrite(name, op, cand.name, cand.approximate))
                    changed = True
                    break
        if not changed:
            break
        _cleanup(graph)
    if profile.pad_channels and profile.channel_alignment > 1:
        n = pad_channels(graph, profile.channel_alignment)
        if n:
            res.rewrites.append(Rewrite("*", "Conv", f"pad-channels x{n}"))
    if profile.fuse_conv_add_act:
        from graphopt.passes.fuse_conv_add_act import fuse_conv_add_act

        n = sum(fuse_conv_add_act(graph).values())
        if n:
            res.rewrites.append(Rewrite("*", "Conv", f"fuse-conv-add-act x{n}"))
    res.violations = check(graph, profile)
    res.warnings = alignment_warnings(graph, profile)
    return res


# ---------------------------------------------------------------------------------------------- channels
_CHANNELWISE_UNARY = {"relu", "clip", "sigmoid", "tanh", "leaky_relu", "hard_sigmoid", "hard_swish", "elu",
                      "gelu", "identity"}


def pad_channels(graph: Graph, align: int) -> int:
    """Zero-pad the output channels of Conv -> (unary activation)* -> Conv chains to a multiple of ``align``.

    Exact: the extra filters are zero (bias 0), activations act per element, and the consumer conv gets zero
    weights for the extra input channels, so the padded channels never reach an output. Only chains whose
    intermediate values have no other consumers are padded (so no Slice is needed).
    """
    from graphopt.ir.infer import infer_node

    count = 0
    for conv in graph.nodes_by_op().get("conv", []):
        w = conv.inputs[1]
        if conv.graph is not graph or w is None or w.const is None or int(conv.attrs.get("group", 1)) != 1:
            continue
        cout = w.const.shape[0]
        extra = (-cout) % align
        if not extra:
            continue
        chain: list[Node] = []
        v = conv.outputs[0]
        ok = True
        while True:
            if any(v is o for o in graph.outputs) or len(v.uses) != 1:
                ok = False
                break
            nxt = v.uses[0].node
            if nxt.op in _CHANNELWISE_UNARY and v.uses[0].index == 0 and all(
                    i is None or i.is_const and i.const.size == 1 for i in nxt.inputs[1:]):
                chain.append(nxt)
                v = nxt.outputs[0]
                continue
            ok = nxt.op == "conv" and v.uses[0].index == 0 and int(nxt.attrs.get("group", 1)) == 1 and \
                nxt.inputs[1] is not None and nxt.inputs[1].const is not None
            break
        if not ok:
            continue
        consumer = v.uses[0].node
        wp = np.concatenate([w.const, np.zeros((extra, *w.const.shape[1:]), w.const.dtype)])
        conv.set_input(1, graph.add_const(f"{conv.name}_w_padded".replace(".", "_"), wp, w.kind))
        b = conv.inputs[2] if len(conv.inputs) > 2 else None
        if b is not None and b.const is not None:
            conv.set_input(2, graph.add_const(f"{conv.name}_b_padded".replace(".", "_"),
                                              np.concatenate([b.const, np.zeros(extra, b.const.dtype)]), b.kind))
        wc = consumer.inputs[1].const
        wcp = np.concatenate([wc, np.zeros((wc.shape[0], extra, *wc.shape[2:]), wc.dtype)], axis=1)
        consumer.set_input(1, graph.add_const(f"{consumer.name}_w_padded".replace(".", "_"), wcp,
                                              consumer.inputs[1].kind))
        for n in [conv, *chain]:
            infer_node(n)
        count += 1
    graph.remove_unused_constants()
    return count
