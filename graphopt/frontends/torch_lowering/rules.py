"""The ATen -> IR lowering table (one ``register_lowering`` entry per ATen op or op family).

Conventions: ``ctx.v(arg, dtype)`` turns an FX argument into an IR value (scalars become 0-d constants of the
result dtype, so arithmetic stays ONNX-typed); ``ctx.op(name, inputs, attrs)`` emits one IR node; static
operands (shapes, axes, pads) are int64 constants. Multi-output ATen ops return tuples with ``None`` for outputs
graphopt does not compute (batch-norm's saved statistics, max-pool indices): using one raises a clear error.

Torch semantics that ONNX-style ops do not share are made explicit here: ``alpha`` of add/sub, ``squeeze`` of
non-1 dims (a no-op in torch), the PyTorch BN momentum (``1 - m`` in ONNX convention), ``hardsigmoid``'s 1/6
slope, adaptive pooling (global or integer-ratio only), and upsampling coordinate modes.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from ...ir.graph import Value
from ...ir.types import DType
from .context import (
    _NO_FOLD,
    DROP_TARGETS,
    INT64_MAX,
    INT64_MIN,
    SMALL_CONST,
    LoweringContext,
    Sym,
    is_static,
    register_lowering,
    sym_expr,
)

aten = torch.ops.aten
Ctx = LoweringContext


def _arg(n: fx.Node, i: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument of an ATen call."""
    if i < len(n.args):
        return n.args[i]
    return n.kwargs.get(name, default)


def _norm_dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _prod(xs: Any) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _all_static(shape: Any) -> bool:
    return all(is_static(d) for d in shape)


def _dt(x: Value) -> DType:
    assert x.type is not None
    return x.type.dtype


def _torch_dtype_name(d: Any) -> DType:
    return DType.from_any(d)


# ------------------------------------------------------------------------------------------------- no-ops
DROP_TARGETS.update({
    aten._assert_tensor_metadata.default, aten._assert_scalar.default, aten.sym_constrain_range_for_size.default,
    aten.sym_constrain_range.default, aten._assert_async.default, aten._assert_async.msg,
})
for _name in ("_functional_assert_async",):
    if hasattr(aten, _name):
        DROP_TARGETS.add(getattr(aten, _name).msg)
_NO_FOLD.update({aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.rand, aten.randn,
                 aten.bernoulli, aten.native_dropout, aten.dropout})


@register_lowering(aten.clone, aten.alias, aten.detach, aten.contiguous, aten.lift_fresh_copy, aten.lift_fresh,
                   aten.view_as, aten.alias_copy, aten.detach_copy, aten.dropout.default, aten.feature_dropout,
                   aten.positive)
def _passthrough(ctx: Ctx, n: fx.Node) -> Any:
    if n.target in (aten.dropout.default, aten.feature_dropout.default):
        p, train = _arg(n, 1, "p", 0.5), _arg(n, 2, "train", False)
        if train and p > 0:
            return ctx.op("dropout", [ctx.v(n.args[0])], {"ratio": float(p)})
    return ctx.v(n.args[0])


@register_lowering(operator.getitem)
def _getitem(ctx: Ctx, n: fx.Node) -> Any:
    seq, idx = ctx.lookup(n.args[0]), n.args[1]
    if not isinstance(seq, list | tuple):
        raise ctx.error(f"getitem on {type(seq).__name__}")
    res = seq[idx]
    if res is None:
        src = n.args[0]
        raise ctx.error(f"output {idx} of {src.target if isinstance(src, fx.Node) else src} is used, but graphopt "
                        f"lowers only the outputs it computes (e.g. batch-norm saved statistics and max-pool indices "
                        f"are not available)")
    return res


# ------------------------------------------------------------------------------------------------ SymInts
@register_lowering(aten.sym_size.int)
def _sym_size(ctx: Ctx, n: fx.Node) -> Any:
    val = n.meta.get("val")
    if is_static(val):
        return int(val)
    x = ctx.v(n.args[0])
    d = _norm_dim(int(n.args[1]), ctx.rank(n.args[0]))
    return Sym(sym_expr(val), ctx.op("shape", [x], {"start": d, "end": d + 1}))


@register_lowering(aten.sym_numel.default)
def _sym_numel(ctx: Ctx, n: fx.Node) -> Any:
    val = n.meta.get("val")
    if is_static(val):
        return int(val)
    return Sym(sym_expr(val), ctx.op("reshape", [ctx.op("size", [ctx.v(n.args[0])]), ctx.int_list([1])]))


def _sym_binop(ir_op: str, py: Any):
    def rule(ctx: Ctx, n: fx.Node) -> Any:
        args = [ctx.lookup(a) for a in n.args]
        if all(is_static(a) for a in args):
            return py(*args)
        vals = [a.value if isinstance(a, Sym) else ctx.int_list([int(a)]) for a in args]
        return Sym(sym_expr(n.meta.get("val")), ctx.op(ir_op, vals))

    return rule


for _op, _ir, _py in ((operator.add, "add", operator.add), (operator.sub, "sub", operator.sub),
                      (operator.mul, "mul", operator.mul), (operator.floordiv, "div", operator.floordiv)):
    register_lowering(_op)(_sym_binop(_ir, _py))


# ----------------------------------------------------------------------------------------- elementwise math
def _unary(ir_op: str, *targets: Any) -> None:
    def rule(ctx: Ctx, n: fx.Node) -> Value:
        return ctx.op(ir_op, [ctx.v(n.args[0])])

    register_lowering(*targets)(rule)


_unary("relu", aten.relu)
_unary("sigmoid", aten.sigmoid)
_unary("tanh", aten.tanh)
_unary("exp", aten.exp)
_unary("log", aten.log)
_unary("sqrt", aten.sqrt)
_unary("neg", aten.neg)
_unary("abs", aten.abs)
_unary("reciprocal", aten.reciprocal)
_unary("floor", aten.floor)
_unary("ceil", aten.ceil)
_unary("round", aten.round.default)
_unary("erf", aten.erf)
_unary("sin", aten.sin)
_unary("cos", aten.cos)
_unary("tan", aten.tan)
_unary("sign", aten.sign)
for _name in ("asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh"):
    _unary(_name, getattr(aten, _name))


@register_lowering(aten.trunc, aten.fix)
def _trunc(ctx: Ctx, n: fx.Node) -> Value:
    """Round toward zero: ``sign(x) * floor(|x|)`` (ONNX has no Trunc)."""
    x = ctx.v(n.args[0])
    return ctx.op("mul", [ctx.op("sign", [x]), ctx.op("floor", [ctx.op("abs", [x])])])


@register_lowering(aten.exp2)
def _exp2(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0])
    return ctx.op("pow", [ctx.scalar(2.0, _dt(x)), x])
_unary("silu", aten.silu)
_unary("hard_swish", aten.hardswish)
_unary("mish", aten.mish)
_unary("is_nan", aten.isnan)
if hasattr(aten, "softsign"):
    _unary("softsign", aten.softsign)


@register_lowering(aten.logical_not, aten.bitwise_not)
def _not(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0])
    if _dt(x) is not DType.bool:
        if n.target.overloadpacket is aten.bitwise_not:
            raise ctx.error("bitwise_not on integers has no IR op (only boolean not)")
        x = ctx.op("not", [ctx.op("equal", [x, ctx.scalar(0, _dt(x))])])
        return ctx.op("not", [x])
    return ctx.op("not", [x])


@register_lowering(aten.isinf)
def _isinf(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("is_inf", [ctx.v(n.args[0])])


@register_lowering(aten.rsqrt)
def _rsqrt(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("reciprocal", [ctx.op("sqrt", [ctx.v(n.args[0])])])


@register_lowering(aten.log1p)
def _log1p(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0], ctx.out_dtype())
    return ctx.op("log", [ctx.op("add", [x, ctx.scalar(1, _dt(x))])])


@register_lowering(aten.expm1)
def _expm1(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0], ctx.out_dtype())
    return ctx.op("sub", [ctx.op("exp", [x]), ctx.scalar(1, _dt(x))])


@register_lowering(aten.log2, aten.log10)
def _log_base(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0], ctx.out_dtype())
    base = 2.0 if n.target.overloadpacket is aten.log2 else 10.0
    return ctx.op("div", [ctx.op("log", [x]), ctx.scalar(math.log(base), _dt(x))])


@register_lowering(aten.gelu)
def _gelu(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("gelu", [ctx.v(n.args[0])], {"approximate": str(_arg(n, 1, "approximate", "none"))})


@register_lowering(aten.hardsigmoid)
def _hardsigmoid(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("hard_sigmoid", [ctx.v(n.args[0])], {"alpha": 1.0 / 6.0, "beta": 0.5})


@register_lowering(aten.leaky_relu)
def _leaky_relu(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("leaky_relu", [ctx.v(n.args[0])], {"alpha": float(_arg(n, 1, "negative_slope", 0.01))})


@register_lowering(aten.elu)
def _elu(ctx: Ctx, n: fx.Node) -> Value:
    alpha, scale, in_scale = (float(_arg(n, 1, "alpha", 1.0)), float(_arg(n, 2, "scale", 1.0)),
                              float(_arg(n, 3, "input_scale", 1.0)))
    x = ctx.v(n.args[0])
    if in_scale != 1.0:
        x = ctx.op("mul", [x, ctx.scalar(in_scale, _dt(x))])
    if abs(scale - 1.0507009873554805) < 1e-7 and abs(alpha - 1.6732632423543772) < 1e-7 and in_scale == 1.0:
        return ctx.op("selu", [x])
    y = ctx.op("elu", [x], {"alpha": alpha})
    return y if scale == 1.0 else ctx.op("mul", [y, ctx.scalar(scale, _dt(x))])


@register_lowering(aten.celu)
def _celu(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("celu", [ctx.v(n.args[0])], {"alpha": float(_arg(n, 1, "alpha", 1.0))})


@register_lowering(aten.selu)
def _selu(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("selu", [ctx.v(n.args[0])])


@register_lowering(aten.prelu, aten._prelu_kernel)
def _prelu(ctx: Ctx, n: fx.Node) -> Value:
    x, w = ctx.v(n.args[0]), ctx.v(n.args[1])
    r = ctx.rank(n.args[0])
    if r >= 2 and w.type is not None and w.type.shape is not None and len(w.type.shape) == 1:
        w = ctx.op("reshape", [w, ctx.int_list([-1] + [1] * (r - 2))])
    return ctx.op("prelu", [x, w])


@register_lowering(aten.softplus)
def _softplus(ctx: Ctx, n: fx.Node) -> Value:
    beta, threshold = float(_arg(n, 1, "beta", 1.0)), float(_arg(n, 2, "threshold", 20.0))
    x = ctx.v(n.args[0])
    if threshold != 20.0:
        raise ctx.error(f"softplus threshold={threshold} (only the default 20 has an IR op)")
    if beta == 1.0:
        return ctx.op("softplus", [x])
    y = ctx.op("softplus", [ctx.op("mul", [x, ctx.scalar(beta, _dt(x))])])
    return ctx.op("div", [y, ctx.scalar(beta, _dt(x))])


def _bound(ctx: Ctx, b: Any, dt: DType) -> Value | None:
    return None if b is None else ctx.v(b, dt)


@register_lowering(aten.clamp.default, aten.clip.default, aten.hardtanh.default, aten.clamp_min.default,
                   aten.clamp_max.default, aten.relu6.default)
def _clamp(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0], ctx.out_dtype())
    dt = _dt(x)
    pk = n.target.overloadpacket
    if pk is aten.hardtanh:
        lo, hi = _arg(n, 1, "min_val", -1.0), _arg(n, 2, "max_val", 1.0)
    elif pk is aten.relu6:
        lo, hi = 0.0, 6.0
    elif pk is aten.clamp_min:
        lo, hi = n.args[1], None
    elif pk is aten.clamp_max:
        lo, hi = None, n.args[1]
    else:
        lo, hi = _arg(n, 1, "min"), _arg(n, 2, "max")
    return ctx.op("clip", [x, _bound(ctx, lo, dt), _bound(ctx, hi, dt)])


@register_lowering(aten.clamp.Tensor, aten.clamp_min.Tensor, aten.clamp_max.Tensor)
def _clamp_tensor(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    x = ctx.v(n.args[0], dt)
    pk = n.target.overloadpacket
    lo = n.args[1] if pk is aten.clamp_min else (None if pk is aten.clamp_max else _arg(n, 1, "min"))
    hi = n.args[1] if pk is aten.clamp_max else (None if pk is aten.clamp_min else _arg(n, 2, "max"))
    if lo is not None:
        x = ctx.op("max", [x, ctx.v(lo, dt)])
    if hi is not None:
        x = ctx.op("min", [x, ctx.v(hi, dt)])
    return x


# ------------------------------------------------------------------------------------------------ arithmetic
def _binary(ir_op: str, swap: bool = False):
    def rule(ctx: Ctx, n: fx.Node) -> Value:
        dt = ctx.out_dtype()
        a, b = n.args[0], n.args[1]
        alpha = n.kwargs.get("alpha", n.args[2] if len(n.args) > 2 else 1)
        if swap:
            a, b = b, a
        va = ctx.v(a, dt)
        vb = ctx.v(b, dt)
        if alpha != 1:
            if swap:
                va = ctx.op("mul", [va, ctx.scalar(alpha, dt)])
            else:
                vb = ctx.op("mul", [vb, ctx.scalar(alpha, dt)])
        return ctx.op(ir_op, [va, vb])

    return rule


register_lowering(aten.add.Tensor, aten.add.Scalar)(_binary("add"))
register_lowering(aten.sub.Tensor, aten.sub.Scalar)(_binary("sub"))
register_lowering(aten.rsub.Tensor, aten.rsub.Scalar)(_binary("sub", swap=True))
register_lowering(aten.mul.Tensor, aten.mul.Scalar)(_binary("mul"))
register_lowering(aten.maximum.default, aten.fmax.default)(_binary("max"))
register_lowering(aten.minimum.default, aten.fmin.default)(_binary("min"))


@register_lowering(aten.div.Tensor, aten.div.Scalar, aten.true_divide.Tensor)
def _div(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    return ctx.op("div", [ctx.v(n.args[0], dt), ctx.v(n.args[1], dt)])


@register_lowering(aten.div.Tensor_mode, aten.div.Scalar_mode, aten.floor_divide.default)
def _div_mode(ctx: Ctx, n: fx.Node) -> Value:
    mode = "floor" if n.target is aten.floor_divide.default else _arg(n, 2, "rounding_mode")
    dt = ctx.out_dtype()
    if mode is None:
        return ctx.op("div", [ctx.v(n.args[0], dt), ctx.v(n.args[1], dt)])
    if dt.is_float:
        q = ctx.op("div", [ctx.v(n.args[0], dt), ctx.v(n.args[1], dt)])
        if mode == "floor":
            return ctx.op("floor", [q])
        neg = ctx.op("less", [q, ctx.scalar(0, dt)])
        return ctx.op("where", [neg, ctx.op("ceil", [q]), ctx.op("floor", [q])])
    if mode == "trunc":
        return ctx.op("div", [ctx.v(n.args[0], dt), ctx.v(n.args[1], dt)])
    f = DType.float64
    q = ctx.op("floor", [ctx.op("div", [ctx.v(n.args[0], f), ctx.v(n.args[1], f)])])
    return ctx.cast(q, dt)


@register_lowering(aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar)
def _pow(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    return ctx.op("pow", [ctx.v(n.args[0], dt), ctx.v(n.args[1], dt)])


@register_lowering(aten.remainder, aten.fmod)
def _mod(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    fmod = 1 if n.target.overloadpacket is aten.fmod else 0
    return ctx.op("mod", [ctx.v(n.args[0], dt), ctx.v(n.args[1], dt)], {"fmod": fmod})


def _common_dtype(ctx: Ctx, a: Any, b: Any) -> DType:
    def probe(x: Any) -> Any:
        if isinstance(x, fx.Node):
            f = ctx.fake(x)
            if isinstance(f, torch.Tensor):
                return torch.empty([1] * f.dim(), dtype=f.dtype, device="meta")
            return f
        return x

    pa, pb = probe(a), probe(b)
    if not isinstance(pa, torch.Tensor):
        pa, pb = pb, pa
    return DType.from_any(torch.result_type(pa, pb))


def _compare(ir_op: str, negate: bool = False):
    def rule(ctx: Ctx, n: fx.Node) -> Value:
        dt = _common_dtype(ctx, n.args[0], n.args[1])
        y = ctx.op(ir_op, [ctx.v(n.args[0], dt), ctx.v(n.args[1], dt)])
        return ctx.op("not", [y]) if negate else y

    return rule


register_lowering(aten.eq.Tensor, aten.eq.Scalar)(_compare("equal"))
register_lowering(aten.ne.Tensor, aten.ne.Scalar)(_compare("equal", negate=True))
register_lowering(aten.lt.Tensor, aten.lt.Scalar)(_compare("less"))
register_lowering(aten.le.Tensor, aten.le.Scalar)(_compare("less_or_equal"))
register_lowering(aten.gt.Tensor, aten.gt.Scalar)(_compare("greater"))
register_lowering(aten.ge.Tensor, aten.ge.Scalar)(_compare("greater_or_equal"))


def _logical(ir_op: str):
    def rule(ctx: Ctx, n: fx.Node) -> Value:
        vals = []
        for a in n.args[:2]:
            x = ctx.v(a)
            if _dt(x) is not DType.bool:
                if n.target.overloadpacket in (aten.bitwise_and, aten.bitwise_or, aten.bitwise_xor):
                    raise ctx.error("bitwise ops on integers have no IR op (only on booleans)")
                x = ctx.op("not", [ctx.op("equal", [x, ctx.scalar(0, _dt(x))])])
            vals.append(x)
        return ctx.op(ir_op, vals)

    return rule


register_lowering(aten.logical_and, aten.bitwise_and.Tensor)(_logical("and"))
register_lowering(aten.logical_or, aten.bitwise_or.Tensor)(_logical("or"))
register_lowering(aten.logical_xor, aten.bitwise_xor.Tensor)(_logical("xor"))


@register_lowering(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def _where(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    return ctx.op("where", [ctx.v(n.args[0], DType.bool), ctx.v(n.args[1], dt), ctx.v(n.args[2], dt)])


@register_lowering(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    return ctx.op("where", [ctx.v(n.args[1], DType.bool), ctx.v(n.args[2], dt), ctx.v(n.args[0], dt)])


@register_lowering(aten._to_copy.default, aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.to.other,
                   aten.type_as.default, aten._to_copy, aten.to)
def _to(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.cast(ctx.v(n.args[0]), ctx.out_dtype())


@register_lowering(aten.copy.default)
def _copy(ctx: Ctx, n: fx.Node) -> Value:
    src = ctx.cast(ctx.v(n.args[1]), ctx.out_dtype())
    return _expand_to(ctx, src, n.args[1], ctx.out_shape())


# ---------------------------------------------------------------------------------------------- constants
def _fill_value(ctx: Ctx, value: Any, dt: DType) -> np.ndarray:
    if isinstance(value, fx.Node):
        raise ctx.error("fill value computed at run time")
    return np.asarray([value], dtype=dt.to_numpy())


def _fill(ctx: Ctx, shape: Any, value: Any, like: Any = None) -> Value:
    """A tensor of ``shape`` filled with ``value`` (dtype of the FX output): constant when small/static."""
    dt = ctx.out_dtype()
    if isinstance(value, fx.Node):
        v = ctx.v(value, dt)
        return _expand_to(ctx, v, value, ctx.out_shape())
    out_shape = ctx.out_shape()
    if _all_static(out_shape) and _prod(out_shape) <= SMALL_CONST:
        return ctx.const(np.full([int(d) for d in out_shape], value, dtype=dt.to_numpy()), ctx._hint("fill"))
    if _all_static(out_shape):
        shp = ctx.int_list([int(d) for d in out_shape])
        return ctx.op("constant_of_shape", [shp], {"value": _fill_value(ctx, value, dt)})
    # Dynamic shape: broadcast a scalar (IR shape inference of constant_of_shape would allocate the
    # sentinel-sized tensor for real; expand stays on meta tensors).
    shp = ctx.op("shape", [ctx.v(like)]) if like is not None else ctx.static_input(ctx.ints(shape))
    return ctx.op("expand", [ctx.scalar(value, dt), shp])


@register_lowering(aten.full.default, aten.new_full.default)
def _full(ctx: Ctx, n: fx.Node) -> Value:
    if n.target is aten.new_full.default:
        return _fill(ctx, n.args[1], n.args[2])
    return _fill(ctx, n.args[0], n.args[1])


@register_lowering(aten.zeros.default, aten.ones.default, aten.new_zeros.default, aten.new_ones.default,
                   aten.empty.memory_format, aten.new_empty.default)
def _zeros_ones(ctx: Ctx, n: fx.Node) -> Value:
    one = n.target.overloadpacket in (aten.ones, aten.new_ones)
    shape = n.args[1] if n.target.overloadpacket in (aten.new_zeros, aten.new_ones, aten.new_empty) else n.args[0]
    return _fill(ctx, shape, 1 if one else 0)


@register_lowering(aten.full_like.default, aten.zeros_like.default, aten.ones_like.default,
                   aten.empty_like.default)
def _full_like(ctx: Ctx, n: fx.Node) -> Value:
    pk = n.target.overloadpacket
    value = n.args[1] if pk is aten.full_like else (1 if pk is aten.ones_like else 0)
    return _fill(ctx, list(ctx.shape(n.args[0])), value, like=n.args[0])


@register_lowering(aten.scalar_tensor.default)
def _scalar_tensor(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.scalar(n.args[0], ctx.out_dtype())


@register_lowering(aten.arange.default, aten.arange.start, aten.arange.start_step)
def _arange(ctx: Ctx, n: fx.Node) -> Value:
    if n.target is aten.arange.default:
        start, end, step = 0, n.args[0], 1
    else:
        start, end = n.args[0], n.args[1]
        step = _arg(n, 2, "step", 1) if n.target is aten.arange.start_step else 1
    dt = ctx.out_dtype()
    vals = []
    for x in (start, end, step):
        x = ctx.lookup(x) if isinstance(x, fx.Node) else x
        if isinstance(x, Sym):
            vals.append(ctx.cast(ctx.op("reshape", [x.value, ctx.int_list([])]), dt))
        else:
            vals.append(ctx.scalar(x, dt))
    return ctx.op("range", vals)


# ------------------------------------------------------------------------------------------------- matmul
def _transposed_param(ctx: Ctx, a: Any) -> Value | None:
    """If FX arg ``a`` is ``permute(W, [1, 0])`` / ``t(W)`` of a 2-D constant, return W (for ``gemm`` transB)."""
    while isinstance(a, fx.Node) and a.op == "call_function" and a.target in (aten.clone.default,
                                                                             aten.contiguous.default):
        a = a.args[0]
    if not isinstance(a, fx.Node) or a.op != "call_function":
        return None
    if a.target in (aten.permute.default,) and list(a.args[1]) in ([1, 0], [-1, -2], [1, -2], [-1, 0]):
        src = a.args[0]
    elif a.target in (aten.t.default,) or (a.target is aten.transpose.int and ctx.rank(a.args[0]) == 2):
        src = a.args[0]
    else:
        return None
    if not isinstance(src, fx.Node) or ctx.rank(src) != 2:
        return None
    v = ctx.env.get(src.name)
    return v if isinstance(v, Value) and v.is_const else None


@register_lowering(aten.addmm.default)
def _addmm(ctx: Ctx, n: fx.Node) -> Value:
    bias, a, b = n.args[0], n.args[1], n.args[2]
    beta, alpha = float(n.kwargs.get("beta", 1.0)), float(n.kwargs.get("alpha", 1.0))
    w = _transposed_param(ctx, b)
    attrs = {"alpha": alpha, "beta": beta, "transA": 0, "transB": 1 if w is not None else 0}
    return ctx.op("gemm", [ctx.v(a), w if w is not None else ctx.v(b), ctx.v(bias, ctx.out_dtype())], attrs)


@register_lowering(aten.mm.default)
def _mm(ctx: Ctx, n: fx.Node) -> Value:
    w = _transposed_param(ctx, n.args[1])
    if w is not None:
        return ctx.op("gemm", [ctx.v(n.args[0]), w], {"transB": 1})
    return ctx.op("matmul", [ctx.v(n.args[0]), ctx.v(n.args[1])])


@register_lowering(aten.bmm.default, aten.matmul.default)
def _matmul(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("matmul", [ctx.v(n.args[0]), ctx.v(n.args[1])])


@register_lowering(aten.baddbmm.default)
def _baddbmm(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    beta, alpha = n.kwargs.get("beta", 1), n.kwargs.get("alpha", 1)
    y = ctx.op("matmul", [ctx.v(n.args[1]), ctx.v(n.args[2])])
    if alpha != 1:
        y = ctx.op("mul", [y, ctx.scalar(alpha, dt)])
    if beta == 0:
        return y
    c = ctx.v(n.args[0], dt)
    if beta != 1:
        c = ctx.op("mul", [c, ctx.scalar(beta, dt)])
    return ctx.op("add", [y, c])


@register_lowering(aten.linear.default)
def _linear(ctx: Ctx, n: fx.Node) -> Value:
    x, w, b = ctx.v(n.args[0]), ctx.v(n.args[1]), ctx.maybe_v(_arg(n, 2, "bias"))
    if ctx.rank(n.args[0]) == 2 and ctx.rank(n.args[1]) == 2:
        return ctx.op("gemm", [x, w, b], {"transB": 1})
    y = ctx.op("matmul", [x, ctx.op("transpose", [w], {"perm": [1, 0]})])
    return y if b is None else ctx.op("add", [y, b])


@register_lowering(aten.einsum.default)
def _einsum(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("einsum", [ctx.v(t) for t in n.args[1]], {"equation": str(n.args[0])})


# ------------------------------------------------------------------------------------------- convolutions
def _ntuple(x: Any, nd: int) -> list[int]:
    if isinstance(x, int):
        return [x] * nd
    x = [int(v) for v in x]
    return x * nd if len(x) == 1 else x


def _conv(ctx: Ctx, x: Any, w: Any, b: Any, stride: Any, padding: Any, dilation: Any, transposed: bool,
          output_padding: Any, groups: int) -> Value:
    wshape = ctx.shape(w)
    nd = len(wshape) - 2
    k = [int(d) for d in wshape[2:]]
    s, d = _ntuple(stride, nd), _ntuple(dilation, nd)
    attrs: dict[str, Any] = {"kernel_shape": k, "strides": s, "dilations": d, "group": int(groups)}
    if isinstance(padding, str):
        if padding == "valid":
            attrs["pads"] = [0] * (2 * nd)
        else:  # "same": torch pads the extra element at the end, like ONNX SAME_UPPER
            total = [d[i] * (k[i] - 1) for i in range(nd)]
            attrs["pads"] = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        p = _ntuple(padding, nd)
        attrs["pads"] = p + p
    xv = ctx.v(x)
    unbatched = ctx.rank(x) == nd + 1
    if unbatched:
        xv = ctx.op("unsqueeze", [xv, ctx.int_list([0])])
    inputs = [xv, ctx.v(w)] + ([ctx.v(b)] if b is not None else [])
    if transposed:
        attrs["output_padding"] = _ntuple(output_padding, nd)
        y = ctx.op("conv_transpose", inputs, attrs)
    else:
        y = ctx.op("conv", inputs, attrs)
    return ctx.op("squeeze", [y, ctx.int_list([0])]) if unbatched else y


@register_lowering(aten.convolution.default, aten._convolution.default)
def _convolution(ctx: Ctx, n: fx.Node) -> Value:
    x, w, b, stride, padding, dilation, transposed, output_padding, groups = n.args[:9]
    return _conv(ctx, x, w, b, stride, padding, dilation, bool(transposed), output_padding, groups)


@register_lowering(aten.conv1d, aten.conv2d, aten.conv3d)
def _convnd(ctx: Ctx, n: fx.Node) -> Value:
    return _conv(ctx, n.args[0], n.args[1], _arg(n, 2, "bias"), _arg(n, 3, "stride", 1), _arg(n, 4, "padding", 0),
                 _arg(n, 5, "dilation", 1), False, 0, _arg(n, 6, "groups", 1))


@register_lowering(aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d)
def _conv_transposend(ctx: Ctx, n: fx.Node) -> Value:
    return _conv(ctx, n.args[0], n.args[1], _arg(n, 2, "bias"), _arg(n, 3, "stride", 1), _arg(n, 4, "padding", 0),
                 _arg(n, 7, "dilation", 1), True, _arg(n, 5, "output_padding", 0), _arg(n, 6, "groups", 1))


# ---------------------------------------------------------------------------------------------- normalization
def _ones_or(ctx: Ctx, v: Any, size: int, dt: DType, fill: float, hint: str) -> Value:
    if v is not None:
        return ctx.v(v)
    return ctx.const(np.full([size], fill, dtype=dt.to_numpy()), ctx._hint(hint))


def _batch_norm(ctx: Ctx, x: Any, w: Any, b: Any, rm: Any, rv: Any, momentum: Any, eps: Any,
                training: bool) -> Value:
    c = ctx.shape(x)[1]
    if not is_static(c):
        raise ctx.error("batch norm over a dynamic channel count")
    dt = DType.from_any(ctx.fake(x).dtype)
    if rm is None or rv is None or (training and ctx.graph.meta.get("_eval_capture")):
        # no running statistics, or a model in eval mode whose code forces batch statistics: the IR's
        # batch_norm (running statistics in eval mode) would silently compute something else
        return _batch_norm_no_stats(ctx, x, w, b, eps)
    ins = [ctx.v(x), _ones_or(ctx, w, int(c), dt, 1.0, "bn_scale"), _ones_or(ctx, b, int(c), dt, 0.0, "bn_bias"),
           ctx.v(rm), ctx.v(rv)]
    mom = 0.1 if momentum is None else float(momentum)
    return ctx.op("batch_norm", ins, {"epsilon": float(eps), "momentum": 1.0 - mom})


def _batch_norm_no_stats(ctx: Ctx, x: Any, w: Any, b: Any, eps: Any) -> Value:
    """BN without running statistics always normalizes with batch statistics: spell it out with reductions."""
    r = ctx.rank(x)
    axes = ctx.int_list([0] + list(range(2, r)))
    xv = ctx.v(x)
    dt = _dt(xv)
    mean = ctx.op("reduce_mean", [xv, axes], {"keepdims": 1})
    d = ctx.op("sub", [xv, mean])
    var = ctx.op("reduce_mean", [ctx.op("mul", [d, d]), axes], {"keepdims": 1})
    y = ctx.op("div", [d, ctx.op("sqrt", [ctx.op("add", [var, ctx.scalar(float(eps), dt)])])])
    shape = ctx.int_list([-1] + [1] * (r - 2))
    if w is not None:
        y = ctx.op("mul", [y, ctx.op("reshape", [ctx.v(w), shape])])
    if b is not None:
        y = ctx.op("add", [y, ctx.op("reshape", [ctx.v(b), shape])])
    return y


@register_lowering(aten._native_batch_norm_legit_no_training.default)
def _bn_no_training(ctx: Ctx, n: fx.Node) -> tuple:
    x, w, b, rm, rv, momentum, eps = n.args[:7]
    return (_batch_norm(ctx, x, w, b, rm, rv, momentum, eps, False), None, None)


@register_lowering(aten._native_batch_norm_legit_functional.default)
def _bn_functional(ctx: Ctx, n: fx.Node) -> tuple:
    x, w, b, rm, rv, training, momentum, eps = n.args[:8]
    return (_batch_norm(ctx, x, w, b, rm, rv, momentum, eps, bool(training)), None, None, None, None)


@register_lowering(aten._native_batch_norm_legit.default, aten.native_batch_norm.default)
def _bn_legit(ctx: Ctx, n: fx.Node) -> tuple:
    x, w, b, rm, rv, training, momentum, eps = n.args[:8]
    return (_batch_norm(ctx, x, w, b, rm, rv, momentum, eps, bool(training)), None, None)


@register_lowering(aten._native_batch_norm_legit.no_stats)
def _bn_no_stats(ctx: Ctx, n: fx.Node) -> tuple:
    x, w, b, _training, _momentum, eps = n.args[:6]
    return (_batch_norm_no_stats(ctx, x, w, b, eps), None, None)


@register_lowering(aten.batch_norm.default)
def _bn_default(ctx: Ctx, n: fx.Node) -> Value:
    x, w, b, rm, rv, training, momentum, eps = n.args[:8]
    return _batch_norm(ctx, x, w, b, rm, rv, momentum, eps, bool(training))


def _layer_norm(ctx: Ctx, x: Any, shape: Any, w: Any, b: Any, eps: Any) -> Value:
    shape = [int(s) for s in shape]
    dt = DType.from_any(ctx.fake(x).dtype)
    scale = ctx.v(w) if w is not None else ctx.const(np.ones(shape, dtype=dt.to_numpy()), ctx._hint("ln_scale"))
    return ctx.op("layer_norm", [ctx.v(x), scale, ctx.maybe_v(b)], {"axis": -len(shape), "epsilon": float(eps)})


@register_lowering(aten.native_layer_norm.default)
def _native_layer_norm(ctx: Ctx, n: fx.Node) -> tuple:
    return (_layer_norm(ctx, *n.args[:5]), None, None)


@register_lowering(aten.layer_norm.default)
def _layer_norm_rule(ctx: Ctx, n: fx.Node) -> Value:
    return _layer_norm(ctx, n.args[0], n.args[1], _arg(n, 2, "weight"), _arg(n, 3, "bias"), _arg(n, 4, "eps", 1e-5))


def _group_norm(ctx: Ctx, x: Any, groups: int, w: Any, b: Any, eps: Any) -> Value:
    c = int(ctx.shape(x)[1])
    dt = DType.from_any(ctx.fake(x).dtype)
    ins = [ctx.v(x), _ones_or(ctx, w, c, dt, 1.0, "gn_scale"), _ones_or(ctx, b, c, dt, 0.0, "gn_bias")]
    return ctx.op("group_norm", ins, {"num_groups": int(groups), "epsilon": float(eps)})


@register_lowering(aten.group_norm.default)
def _group_norm_rule(ctx: Ctx, n: fx.Node) -> Value:
    return _group_norm(ctx, n.args[0], n.args[1], _arg(n, 2, "weight"), _arg(n, 3, "bias"), _arg(n, 4, "eps", 1e-5))


@register_lowering(aten.native_group_norm.default)
def _native_group_norm(ctx: Ctx, n: fx.Node) -> tuple:
    x, w, b, _n, _c, _hw, groups, eps = n.args[:8]
    return (_group_norm(ctx, x, groups, w, b, eps), None, None)


@register_lowering(aten.instance_norm.default)
def _instance_norm(ctx: Ctx, n: fx.Node) -> Value:
    x, w, b, _rm, _rv, use_input_stats, _momentum, eps = n.args[:8]
    if not use_input_stats:
        return _batch_norm(ctx, x, w, b, _rm, _rv, _momentum, eps, False)
    c = int(ctx.shape(x)[1])
    dt = DType.from_any(ctx.fake(x).dtype)
    ins = [ctx.v(x), _ones_or(ctx, w, c, dt, 1.0, "in_scale"), _ones_or(ctx, b, c, dt, 0.0, "in_bias")]
    return ctx.op("instance_norm", ins, {"epsilon": float(eps)})


@register_lowering(aten._softmax.default, aten.softmax.int)
def _softmax(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0], ctx.out_dtype())
    return ctx.op("softmax", [x], {"axis": int(n.args[1])})


@register_lowering(aten._log_softmax.default, aten.log_softmax.int)
def _log_softmax(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0], ctx.out_dtype())
    return ctx.op("log_softmax", [x], {"axis": int(n.args[1])})


@register_lowering(aten.native_dropout.default)
def _native_dropout(ctx: Ctx, n: fx.Node) -> tuple:
    x, p, train = n.args[0], float(n.args[1]), n.args[2]
    if train is False or p == 0.0:
        return (ctx.v(x), None)
    return (ctx.op("dropout", [ctx.v(x)], {"ratio": p}), None)


@register_lowering(aten.scaled_dot_product_attention.default)
def _sdpa(ctx: Ctx, n: fx.Node) -> Value:
    """Math attention: softmax(q k^T * scale + mask) v, with bool masks as -inf fills."""
    q, k, v = n.args[:3]
    mask, p = _arg(n, 3, "attn_mask"), float(_arg(n, 4, "dropout_p", 0.0))
    causal, scale = bool(_arg(n, 5, "is_causal", False)), n.kwargs.get("scale", n.args[6] if len(n.args) > 6 else None)
    gqa = bool(n.kwargs.get("enable_gqa", False))
    qs, ks = ctx.shape(q), ctx.shape(k)
    qv, kv, vv = ctx.v(q), ctx.v(k), ctx.v(v)
    dt = _dt(qv)
    if gqa and qs[-3] != ks[-3]:
        rep = int(qs[-3]) // int(ks[-3])
        kv, vv = (_repeat_heads(ctx, t, ctx.shape(a), rep) for t, a in ((kv, k), (vv, v)))
    e = qs[-1]
    if scale is None:
        if not is_static(e):
            raise ctx.error("attention with a dynamic head size needs an explicit scale")
        scale = 1.0 / math.sqrt(int(e))
    r = len(ks)
    perm = list(range(r - 2)) + [r - 1, r - 2]
    s = ctx.op("matmul", [qv, ctx.op("transpose", [kv], {"perm": perm})])
    s = ctx.op("mul", [s, ctx.scalar(float(scale), dt)])
    neg_inf = ctx.scalar(float("-inf"), dt)
    if causal:
        L, S = qs[-2], ks[-2]
        if not (is_static(L) and is_static(S)):
            raise ctx.error("causal attention over a dynamic sequence length")
        tri = ctx.const(np.tril(np.ones((int(L), int(S)), dtype=bool)), ctx._hint("causal_mask"))
        s = ctx.op("where", [tri, s, neg_inf])
    if mask is not None:
        m = ctx.v(mask)
        s = ctx.op("where", [m, s, neg_inf]) if _dt(m) is DType.bool else ctx.op("add", [s, ctx.cast(m, dt)])
    a = ctx.op("softmax", [s], {"axis": -1})
    if p > 0.0:
        a = ctx.op("dropout", [a], {"ratio": p})
    return ctx.op("matmul", [a, vv])


def _repeat_heads(ctx: Ctx, t: Value, shape: tuple, rep: int) -> Value:
    b, h, s, d = shape
    x = ctx.op("unsqueeze", [t, ctx.int_list([2])])
    x = ctx.op("expand", [x, ctx.int_list([1, 1, rep, 1, 1])])
    return ctx.op("reshape", [x, ctx.static_input(ctx.ints([0 if not is_static(b) else b, int(h) * rep, s, d]))])


# ---------------------------------------------------------------------------------------------------- pooling
def _pool_nd(n: fx.Node) -> int:
    name = n.target.overloadpacket.__name__
    for nd in (1, 2, 3):
        if f"{nd}d" in name:
            return nd
    raise AssertionError(name)


def _with_batch(ctx: Ctx, x: Any, nd: int, fn) -> Value:
    """Run a pooling emitter on an unbatched input by adding and removing the batch dim."""
    xv = ctx.v(x)
    if ctx.rank(x) == nd + 1:
        y = fn(ctx.op("unsqueeze", [xv, ctx.int_list([0])]))
        return ctx.op("squeeze", [y, ctx.int_list([0])])
    return fn(xv)


@register_lowering(aten.max_pool1d_with_indices, aten.max_pool2d_with_indices, aten.max_pool3d_with_indices,
                   aten.max_pool1d, aten.max_pool2d, aten.max_pool3d)
def _max_pool(ctx: Ctx, n: fx.Node) -> Any:
    nd = _pool_nd(n)
    k = _ntuple(n.args[1], nd)
    s = _arg(n, 2, "stride", None)
    s = k if not s else _ntuple(s, nd)
    p = _ntuple(_arg(n, 3, "padding", 0), nd)
    d = _ntuple(_arg(n, 4, "dilation", 1), nd)
    ceil = int(bool(_arg(n, 5, "ceil_mode", False)))
    attrs = {"kernel_shape": k, "strides": s, "pads": p + p, "dilations": d, "ceil_mode": ceil}
    y = _with_batch(ctx, n.args[0], nd, lambda xv: ctx.op("max_pool", [xv], attrs))
    return (y, None) if "with_indices" in n.target.overloadpacket.__name__ else y


@register_lowering(aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d)
def _avg_pool(ctx: Ctx, n: fx.Node) -> Value:
    nd = _pool_nd(n)
    k = _ntuple(n.args[1], nd)
    s = _arg(n, 2, "stride", None)
    s = k if not s else _ntuple(s, nd)
    p = _ntuple(_arg(n, 3, "padding", 0), nd)
    if _arg(n, 6, "divisor_override") is not None:
        raise ctx.error("avg_pool with divisor_override has no IR op")
    attrs = {"kernel_shape": k, "strides": s, "pads": p + p, "ceil_mode": int(bool(_arg(n, 4, "ceil_mode", False))),
             "count_include_pad": int(bool(_arg(n, 5, "count_include_pad", True)))}
    return _with_batch(ctx, n.args[0], nd, lambda xv: ctx.op("avg_pool", [xv], attrs))


def _adaptive(ctx: Ctx, n: fx.Node, kind: str) -> Value:
    nd = _pool_nd(n)
    x = n.args[0]
    in_sp = ctx.shape(x)[-nd:]
    out_sp = [int(v) if v is not None else None for v in _ntuple(n.args[1], nd)]
    out_sp = [o if o is not None else i for o, i in zip(out_sp, in_sp, strict=True)]
    if all(o == 1 for o in out_sp):
        return _with_batch(ctx, x, nd, lambda xv: ctx.op(f"global_{kind}_pool", [xv]))
    uneven = not _all_static(in_sp) or any(int(i) % o for i, o in zip(in_sp, out_sp, strict=True))
    if uneven and kind == "avg" and _all_static(in_sp) and nd <= 2:
        return _adaptive_avg_matmul(ctx, x, [int(i) for i in in_sp], out_sp)
    if uneven:
        raise ctx.error(f"adaptive_{kind}_pool from {list(in_sp)} to {out_sp}: only global pooling, integer "
                        f"ratios{' or 1-/2-D average pooling' if kind == 'avg' else ''} map to IR ops (make the "
                        f"input size a multiple of the output size)")
    k = [int(i) // o for i, o in zip(in_sp, out_sp, strict=True)]
    attrs = {"kernel_shape": k, "strides": k, "pads": [0] * (2 * nd)}
    return _with_batch(ctx, x, nd, lambda xv: ctx.op(f"{kind}_pool", [xv], attrs))


def _adaptive_avg_matmul(ctx: Ctx, x: Any, in_sp: list[int], out_sp: list[int]) -> Value:
    """Adaptive average pooling with uneven windows (7x7 -> 5x5, PSPNet's 1/2/3/6 bins) as constant matmuls:
    output o of an axis of length I averages inputs ``floor(o*I/O) .. ceil((o+1)*I/O)-1`` (PyTorch's windows),
    and a box average is the product of the per-axis averages, so ``y = P_h · x · P_wᵀ`` exactly."""
    dt = _dt(ctx.v(x))

    def pool_matrix(i_len: int, o_len: int) -> np.ndarray:
        m = np.zeros((o_len, i_len), dtype=np.float64)
        for o in range(o_len):
            lo, hi = (o * i_len) // o_len, -((-(o + 1) * i_len) // o_len)
            m[o, lo:hi] = 1.0 / (hi - lo)
        return m.astype(dt.to_numpy())

    y = ctx.v(x)
    pw = pool_matrix(in_sp[-1], out_sp[-1])
    y = ctx.op("matmul", [y, ctx.const(np.ascontiguousarray(pw.T), ctx._hint("pool_w"))])
    if len(in_sp) == 2:
        y = ctx.op("matmul", [ctx.const(pool_matrix(in_sp[0], out_sp[0]), ctx._hint("pool_h")), y])
    return y


@register_lowering(aten.adaptive_avg_pool1d, aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d,
                   aten.adaptive_avg_pool3d, aten._adaptive_avg_pool3d)
def _adaptive_avg(ctx: Ctx, n: fx.Node) -> Value:
    return _adaptive(ctx, n, "avg")


@register_lowering(aten.adaptive_max_pool1d, aten.adaptive_max_pool2d, aten.adaptive_max_pool3d)
def _adaptive_max(ctx: Ctx, n: fx.Node) -> tuple:
    return (_adaptive(ctx, n, "max"), None)


# ------------------------------------------------------------------------------------------------ reductions
def _dims(ctx: Ctx, dims: Any, rank: int) -> list[int]:
    if dims is None or (isinstance(dims, list | tuple) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted(_norm_dim(int(d), rank) for d in dims)


def _reduce(ctx: Ctx, ir_op: str, x: Any, dims: Any, keepdim: bool, dtype: Any = None) -> Value:
    r = ctx.rank(x)
    axes = _dims(ctx, dims, r)
    xv = ctx.v(x, ctx.out_dtype() if dtype is not None or ir_op in ("reduce_mean",) else None)
    if r == 0:  # a scalar: reduce it as a 1-element vector (the L1/L2 norms of a scalar are |x|, not x)
        return ctx.op(ir_op, [ctx.op("reshape", [xv, ctx.int_list([1])]), ctx.int_list([0])], {"keepdims": 0})
    if ir_op == "reduce_mean" and keepdim and r >= 4 and axes == list(range(2, r)):
        return ctx.op("global_avg_pool", [xv])
    return ctx.op(ir_op, [xv, ctx.int_list(axes)], {"keepdims": int(bool(keepdim))})


@register_lowering(aten.mean.dim, aten.mean.default)
def _mean(ctx: Ctx, n: fx.Node) -> Value:
    if n.target is aten.mean.default:
        return _reduce(ctx, "reduce_mean", n.args[0], None, False, n.kwargs.get("dtype"))
    return _reduce(ctx, "reduce_mean", n.args[0], n.args[1], _arg(n, 2, "keepdim", False), n.kwargs.get("dtype"))


@register_lowering(aten.sum.dim_IntList, aten.sum.default)
def _sum(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    x = n.args[0]
    if n.target is aten.sum.default:
        dims, keep = None, False
    else:
        dims, keep = _arg(n, 1, "dim"), _arg(n, 2, "keepdim", False)
    r = ctx.rank(x)
    xv = ctx.v(x, dt)
    if r == 0:
        return xv
    return ctx.op("reduce_sum", [xv, ctx.int_list(_dims(ctx, dims, r))], {"keepdims": int(bool(keep))})


def _minmax_reduce(ir_op: str):
    def rule(ctx: Ctx, n: fx.Node) -> Value:
        return _reduce(ctx, ir_op, n.args[0], _arg(n, 1, "dim"), _arg(n, 2, "keepdim", False))

    return rule


register_lowering(aten.amax.default, aten.max.default)(_minmax_reduce("reduce_max"))
register_lowering(aten.amin.default, aten.min.default)(_minmax_reduce("reduce_min"))


@register_lowering(aten.max.dim, aten.min.dim)
def _max_dim(ctx: Ctx, n: fx.Node) -> tuple:
    is_max = n.target.overloadpacket is aten.max
    x, d, keep = n.args[0], int(n.args[1]), bool(_arg(n, 2, "keepdim", False))
    xv = ctx.v(x)
    vals = ctx.op("reduce_max" if is_max else "reduce_min", [xv, ctx.int_list([d])], {"keepdims": int(keep)})
    idx = ctx.op("argmax" if is_max else "argmin", [xv], {"axis": d, "keepdims": int(keep)})
    return (vals, idx)


@register_lowering(aten.argmax.default, aten.argmin.default)
def _argmax(ctx: Ctx, n: fx.Node) -> Value:
    ir = "argmax" if n.target.overloadpacket is aten.argmax else "argmin"
    d, keep = _arg(n, 1, "dim"), bool(_arg(n, 2, "keepdim", False))
    xv = ctx.v(n.args[0])
    if d is None:
        y = ctx.op(ir, [ctx.op("reshape", [xv, ctx.int_list([-1])])], {"axis": 0, "keepdims": 0})
        return ctx.op("reshape", [y, ctx.int_list([1] * ctx.rank(n.args[0]) if keep else [])])
    return ctx.op(ir, [xv], {"axis": int(d), "keepdims": int(keep)})


@register_lowering(aten.prod.dim_int, aten.prod.default)
def _prod_rule(ctx: Ctx, n: fx.Node) -> Value:
    if n.target is aten.prod.default:
        return _reduce(ctx, "reduce_prod", n.args[0], None, False, n.kwargs.get("dtype"))
    return _reduce(ctx, "reduce_prod", n.args[0], [n.args[1]], _arg(n, 2, "keepdim", False), n.kwargs.get("dtype"))


@register_lowering(aten.logsumexp.default)
def _logsumexp(ctx: Ctx, n: fx.Node) -> Value:
    return _reduce(ctx, "reduce_log_sum_exp", n.args[0], n.args[1], _arg(n, 2, "keepdim", False))


@register_lowering(aten.any.dim, aten.any.dims, aten.any.default, aten.all.dim, aten.all.dims, aten.all.default)
def _any_all(ctx: Ctx, n: fx.Node) -> Value:
    ir = "reduce_max" if n.target.overloadpacket is aten.any else "reduce_min"
    x = n.args[0]
    xv = ctx.v(x)
    if _dt(xv) is DType.bool:
        xv = ctx.cast(xv, DType.int32)
    else:
        xv = ctx.cast(ctx.op("not", [ctx.op("equal", [xv, ctx.scalar(0, _dt(xv))])]), DType.int32)
    r = ctx.rank(x)
    dims = None if n.target in (aten.any.default, aten.all.default) else _arg(n, 1, "dim")
    keep = False if n.target in (aten.any.default, aten.all.default) else bool(_arg(n, 2, "keepdim", False))
    y = ctx.op(ir, [xv, ctx.int_list(_dims(ctx, dims, r))], {"keepdims": int(keep)}) if r else xv
    return ctx.cast(y, DType.bool)


def _var(ctx: Ctx, x: Any, dims: Any, correction: Any, keepdim: bool) -> tuple[Value, Value]:
    r = ctx.rank(x)
    axes = _dims(ctx, dims, r)
    shape = ctx.shape(x)
    if not all(is_static(shape[a]) for a in axes):
        raise ctx.error("variance over a dynamic dimension")
    count = _prod(shape[a] for a in axes)
    corr = 1.0 if correction is None else float(correction)
    xv = ctx.v(x)
    dt = _dt(xv)
    ax = ctx.int_list(axes)
    mean_k = ctx.op("reduce_mean", [xv, ax], {"keepdims": 1})
    d = ctx.op("sub", [xv, mean_k])
    ss = ctx.op("reduce_sum", [ctx.op("mul", [d, d]), ax], {"keepdims": int(keepdim)})
    var = ctx.op("div", [ss, ctx.scalar(max(count - corr, 0.0), dt)])
    mean = mean_k if keepdim else ctx.op("squeeze", [mean_k, ax])
    return var, mean


@register_lowering(aten.var.correction, aten.var.dim)
def _var_rule(ctx: Ctx, n: fx.Node) -> Value:
    corr = n.kwargs.get("correction", 1.0 if n.target is aten.var.correction else None)
    if n.target is aten.var.dim:
        corr = 1.0 if _arg(n, 2, "unbiased", True) else 0.0
        return _var(ctx, n.args[0], _arg(n, 1, "dim"), corr, bool(_arg(n, 3, "keepdim", False)))
    return _var(ctx, n.args[0], _arg(n, 1, "dim"), corr, bool(n.kwargs.get("keepdim", False)))[0]


@register_lowering(aten.std.correction, aten.std.dim)
def _std_rule(ctx: Ctx, n: fx.Node) -> Value:
    if n.target is aten.std.dim:
        corr = 1.0 if _arg(n, 2, "unbiased", True) else 0.0
        v = _var(ctx, n.args[0], _arg(n, 1, "dim"), corr, bool(_arg(n, 3, "keepdim", False)))[0]
    else:
        v = _var(ctx, n.args[0], _arg(n, 1, "dim"), n.kwargs.get("correction", 1.0),
                 bool(n.kwargs.get("keepdim", False)))[0]
    return ctx.op("sqrt", [v])


@register_lowering(aten.var_mean.correction)
def _var_mean(ctx: Ctx, n: fx.Node) -> tuple:
    return _var(ctx, n.args[0], _arg(n, 1, "dim"), n.kwargs.get("correction", 1.0),
                bool(n.kwargs.get("keepdim", False)))


@register_lowering(aten.linalg_vector_norm.default)
def _vector_norm(ctx: Ctx, n: fx.Node) -> Value:
    ord_, dims, keep = float(_arg(n, 1, "ord", 2)), _arg(n, 2, "dim"), bool(_arg(n, 3, "keepdim", False))
    x = n.args[0]
    if ord_ == 2.0:
        return _reduce(ctx, "reduce_l2", x, dims, keep)
    xv = ctx.op("abs", [ctx.v(x)])
    ax = ctx.int_list(_dims(ctx, dims, ctx.rank(x)))
    if ord_ == 1.0:
        return ctx.op("reduce_sum", [xv, ax], {"keepdims": int(keep)})
    if math.isinf(ord_):
        return ctx.op("reduce_max" if ord_ > 0 else "reduce_min", [xv, ax], {"keepdims": int(keep)})
    raise ctx.error(f"vector norm of order {ord_} has no IR lowering (orders 1, 2, inf are supported)")


@register_lowering(aten.cumsum.default)
def _cumsum(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0], ctx.out_dtype())
    d = _norm_dim(int(n.args[1]), max(ctx.rank(n.args[0]), 1))
    return ctx.op("cumsum", [x, ctx.const(np.asarray(d, dtype=np.int64), ctx._hint("axis"))])


@register_lowering(aten.topk.default)
def _topk(ctx: Ctx, n: fx.Node) -> tuple:
    k, d = int(n.args[1]), int(_arg(n, 2, "dim", -1))
    largest = int(bool(_arg(n, 3, "largest", True)))
    node = ctx.emit("topk", [ctx.v(n.args[0]), ctx.int_list([k])], {"axis": d, "largest": largest, "sorted": 1})
    return tuple(node.outputs)


@register_lowering(aten.tril.default, aten.triu.default)
def _trilu(ctx: Ctx, n: fx.Node) -> Value:
    upper = int(n.target.overloadpacket is aten.triu)
    k = ctx.const(np.asarray(int(_arg(n, 1, "diagonal", 0)), dtype=np.int64), ctx._hint("k"))
    return ctx.op("trilu", [ctx.v(n.args[0]), k], {"upper": upper})


# ------------------------------------------------------------------------------------------- shape / memory
def _same_dims(ctx: Ctx, a: Any, b: Any) -> bool:
    return len(a) == len(b) and all(sym_expr(x) == sym_expr(y) for x, y in zip(a, b, strict=True))


def _reshape_to(ctx: Ctx, x: Any, target: Any) -> Value:
    """Reshape FX tensor ``x`` to the FX output shape, as readably as the dims allow."""
    xv = ctx.v(x)
    in_shape, out_shape = ctx.shape(x), ctx.out_shape()
    if _same_dims(ctx, in_shape, out_shape):
        return xv
    if len(out_shape) == 2 and len(in_shape) >= 2:
        for axis in range(1, len(in_shape)):
            lead, rest = in_shape[:axis], in_shape[axis:]
            lead_ok = (sym_expr(out_shape[0]) == sym_expr(lead[0])) if len(lead) == 1 else (
                _all_static(lead) and is_static(out_shape[0]) and _prod(lead) == out_shape[0])
            if lead_ok and _all_static(rest) and is_static(out_shape[1]) and _prod(rest) == out_shape[1]:
                return ctx.op("flatten", [xv], {"axis": axis})
    if _all_static(out_shape):
        return ctx.op("reshape", [xv, ctx.int_list([int(d) for d in out_shape])])
    # Dynamic: ONNX 0 copies the input dim at the same position; at most one unknown may become -1.
    items = list(target) if target is not None else list(out_shape)
    spec: list[Any] = []
    literal_zero = any(is_static(ctx.lookup(t) if isinstance(t, fx.Node) else t) and
                       int(ctx.lookup(t) if isinstance(t, fx.Node) else t) == 0 for t in items)
    unresolved = []
    for i, (t, o) in enumerate(zip(items, out_shape, strict=True)):
        tv = ctx.lookup(t) if isinstance(t, fx.Node) else t
        if is_static(tv):
            spec.append(int(tv))
        elif is_static(o):
            spec.append(int(o))
        elif not literal_zero and i < len(in_shape) and sym_expr(in_shape[i]) == sym_expr(o):
            spec.append(0)
        else:
            spec.append(tv)
            unresolved.append(i)
    if len(unresolved) == 1 and -1 not in spec:
        spec[unresolved[0]] = -1
    attrs = {"allowzero": 1} if literal_zero else {}
    return ctx.op("reshape", [xv, ctx.static_input(ctx.ints(spec))], attrs)


@register_lowering(aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.view_copy.default,
                   aten._reshape_alias.default)
def _view(ctx: Ctx, n: fx.Node) -> Value:
    return _reshape_to(ctx, n.args[0], n.args[1])


@register_lowering(aten.flatten.using_ints, aten.unflatten.int)
def _flatten(ctx: Ctx, n: fx.Node) -> Value:
    return _reshape_to(ctx, n.args[0], None)


@register_lowering(aten.permute.default, aten.permute_copy.default)
def _permute(ctx: Ctx, n: fx.Node) -> Value:
    r = ctx.rank(n.args[0])
    perm = [_norm_dim(int(d), r) for d in n.args[1]]
    if perm == list(range(r)):
        return ctx.v(n.args[0])
    return ctx.op("transpose", [ctx.v(n.args[0])], {"perm": perm})


@register_lowering(aten.t.default, aten.transpose.int, aten.numpy_T.default)
def _transpose(ctx: Ctx, n: fx.Node) -> Value:
    r = ctx.rank(n.args[0])
    if r < 2:
        return ctx.v(n.args[0])
    if n.target is aten.transpose.int:
        a, b = _norm_dim(int(n.args[1]), r), _norm_dim(int(n.args[2]), r)
        perm = list(range(r))
        perm[a], perm[b] = perm[b], perm[a]
    else:
        perm = list(reversed(range(r)))
    if perm == list(range(r)):
        return ctx.v(n.args[0])
    return ctx.op("transpose", [ctx.v(n.args[0])], {"perm": perm})


def _expand_to(ctx: Ctx, xv: Value, x: Any, out_shape: tuple, sizes: Any = None) -> Value:
    in_shape = ctx.shape(x) if isinstance(x, fx.Node) else tuple(xv.type.shape or ())  # type: ignore[union-attr]
    if _same_dims(ctx, in_shape, out_shape):
        return xv
    if _all_static(out_shape):
        return ctx.op("expand", [xv, ctx.int_list([int(d) for d in out_shape])])
    off = len(out_shape) - len(in_shape)
    spec: list[Any] = []
    items = list(sizes) if sizes is not None else list(out_shape)
    for i, o in enumerate(out_shape):
        j = i - off
        t = items[i]
        tv = ctx.lookup(t) if isinstance(t, fx.Node) else t
        if j >= 0 and (sym_expr(in_shape[j]) == sym_expr(o) or (is_static(tv) and int(tv) == -1)):
            spec.append(1)
        elif is_static(o):
            spec.append(int(o))
        else:
            spec.append(tv)
    return ctx.op("expand", [xv, ctx.static_input(ctx.ints(spec))])


@register_lowering(aten.expand.default, aten.expand_copy.default)
def _expand(ctx: Ctx, n: fx.Node) -> Value:
    return _expand_to(ctx, ctx.v(n.args[0]), n.args[0], ctx.out_shape(), n.args[1])


@register_lowering(aten.unsqueeze.default, aten.unsqueeze_copy.default)
def _unsqueeze(ctx: Ctx, n: fx.Node) -> Value:
    d = _norm_dim(int(n.args[1]), ctx.rank(n.args[0]) + 1)
    return ctx.op("unsqueeze", [ctx.v(n.args[0]), ctx.int_list([d])])


@register_lowering(aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze_copy.dims)
def _squeeze(ctx: Ctx, n: fx.Node) -> Value:
    shape = ctx.shape(n.args[0])
    r = len(shape)
    if n.target is aten.squeeze.default:
        dims = list(range(r))
    elif n.target is aten.squeeze.dim:
        dims = [n.args[1]]
    else:
        dims = list(n.args[1])
    # torch ignores dims that are not 1 (ONNX rejects them): keep only the size-1 ones.
    axes = sorted({_norm_dim(int(d), max(r, 1)) for d in dims if r and is_static(shape[_norm_dim(int(d), r)])
                   and int(shape[_norm_dim(int(d), r)]) == 1})
    if not axes:
        return ctx.v(n.args[0])
    return ctx.op("squeeze", [ctx.v(n.args[0]), ctx.int_list(axes)])


@register_lowering(aten.cat.default, aten.concat.default)
def _cat(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    tensors = [t for t in n.args[0] if not (ctx.rank(t) == 1 and is_static(ctx.shape(t)[0])
                                               and ctx.shape(t)[0] == 0 and ctx.rank(n) != 1)]
    d = _norm_dim(int(_arg(n, 1, "dim", 0)), len(ctx.out_shape()))
    vals = [ctx.v(t, dt) for t in tensors]
    if len(vals) == 1:
        return vals[0]
    return ctx.op("concat", vals, {"axis": d})


@register_lowering(aten.stack.default)
def _stack(ctx: Ctx, n: fx.Node) -> Value:
    dt = ctx.out_dtype()
    d = _norm_dim(int(_arg(n, 1, "dim", 0)), len(ctx.out_shape()))
    vals = [ctx.op("unsqueeze", [ctx.v(t, dt), ctx.int_list([d])]) for t in n.args[0]]
    return vals[0] if len(vals) == 1 else ctx.op("concat", vals, {"axis": d})


def _split(ctx: Ctx, n: fx.Node, x: Any, sizes: list[int], dim: int) -> tuple:
    d = _norm_dim(dim, ctx.rank(x))
    if len(sizes) == 1:
        return (ctx.v(x),)
    node = ctx.emit("split", [ctx.v(x), ctx.int_list(sizes)], {"axis": d, "num_outputs": len(sizes)})
    return tuple(node.outputs)


@register_lowering(aten.split_with_sizes.default, aten.split_with_sizes_copy.default)
def _split_with_sizes(ctx: Ctx, n: fx.Node) -> tuple:
    return _split(ctx, n, n.args[0], [int(s) for s in n.args[1]], int(_arg(n, 2, "dim", 0)))


@register_lowering(aten.split.Tensor, aten.split_copy.Tensor)
def _split_tensor(ctx: Ctx, n: fx.Node) -> tuple:
    return _split(ctx, n, n.args[0], [int(t.shape[_norm_dim(int(_arg(n, 2, "dim", 0)), ctx.rank(n.args[0]))])
                                      for t in n.meta["val"]], int(_arg(n, 2, "dim", 0)))


@register_lowering(aten.chunk.default)
def _chunk(ctx: Ctx, n: fx.Node) -> tuple:
    d = int(_arg(n, 2, "dim", 0))
    return _split(ctx, n, n.args[0], [int(t.shape[_norm_dim(d, ctx.rank(n.args[0]))]) for t in n.meta["val"]], d)


@register_lowering(aten.unbind.int, aten.unbind_copy.int)
def _unbind(ctx: Ctx, n: fx.Node) -> tuple:
    d = _norm_dim(int(_arg(n, 1, "dim", 0)), ctx.rank(n.args[0]))
    parts = _split(ctx, n, n.args[0], [1] * len(n.meta["val"]), d)
    return tuple(ctx.op("squeeze", [p, ctx.int_list([d])]) for p in parts)


@register_lowering(aten.slice.Tensor, aten.slice_copy.Tensor)
def _slice(ctx: Ctx, n: fx.Node) -> Value:
    x = n.args[0]
    shape = ctx.shape(x)
    r = len(shape)
    d = _norm_dim(int(_arg(n, 1, "dim", 0)), r)
    start, end, step = _arg(n, 2, "start"), _arg(n, 3, "end"), _arg(n, 4, "step", 1)
    start = ctx.lookup(start) if isinstance(start, fx.Node) else start
    end = ctx.lookup(end) if isinstance(end, fx.Node) else end
    start = 0 if start is None else start
    if end is None or (is_static(end) and end >= INT64_MAX) or sym_expr(end) == sym_expr(shape[d]):
        end = INT64_MAX
    full_end = end == INT64_MAX or (is_static(end) and is_static(shape[d]) and end >= shape[d])
    if is_static(start) and start == 0 and full_end and step == 1:
        return ctx.v(x)
    starts = ctx.static_input(ctx.ints([start]), ctx._hint("starts"))
    ends = ctx.static_input(ctx.ints([min(end, INT64_MAX) if is_static(end) else end]), ctx._hint("ends"))
    return ctx.op("slice", [ctx.v(x), starts, ends, ctx.int_list([d], ctx._hint("axes")),
                            ctx.int_list([int(step)], ctx._hint("steps"))])


@register_lowering(aten.narrow.default)
def _narrow(ctx: Ctx, n: fx.Node) -> Value:
    x, d, start, length = n.args[:4]
    r = ctx.rank(x)
    return ctx.op("slice", [ctx.v(x), ctx.int_list([int(start)]), ctx.int_list([int(start) + int(length)]),
                            ctx.int_list([_norm_dim(int(d), r)])])


@register_lowering(aten.select.int, aten.select_copy.int)
def _select(ctx: Ctx, n: fx.Node) -> Value:
    d = _norm_dim(int(n.args[1]), ctx.rank(n.args[0]))
    idx = ctx.const(np.asarray(int(n.args[2]), dtype=np.int64), ctx._hint("index"))
    return ctx.op("gather", [ctx.v(n.args[0]), idx], {"axis": d})


@register_lowering(aten.index_select.default)
def _index_select(ctx: Ctx, n: fx.Node) -> Value:
    d = _norm_dim(int(n.args[1]), ctx.rank(n.args[0]))
    return ctx.op("gather", [ctx.v(n.args[0]), ctx.v(n.args[2])], {"axis": d})


@register_lowering(aten.embedding.default)
def _embedding(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("gather", [ctx.v(n.args[0]), ctx.v(n.args[1])], {"axis": 0})


@register_lowering(aten.gather.default)
def _gather_elements(ctx: Ctx, n: fx.Node) -> Value:
    d = _norm_dim(int(n.args[1]), ctx.rank(n.args[0]))
    return ctx.op("gather_elements", [ctx.v(n.args[0]), ctx.v(n.args[2])], {"axis": d})


@register_lowering(aten.index.Tensor, aten._unsafe_index.Tensor)
def _index(ctx: Ctx, n: fx.Node) -> Value:
    """Advanced indexing with integer index tensors on consecutive dims (the common gather patterns)."""
    x, indices = n.args[0], list(n.args[1])
    shape = ctx.shape(x)
    pos = [i for i, t in enumerate(indices) if t is not None]
    if not pos:
        return ctx.v(x)
    for i in pos:
        f = ctx.fake(indices[i])
        if f.dtype == torch.bool:
            raise ctx.error("boolean-mask indexing has a data-dependent output shape (no IR lowering); use "
                            "torch.where or masked_fill instead")
    if pos != list(range(pos[0], pos[0] + len(pos))):
        raise ctx.error("advanced indexing on non-adjacent dims has no IR lowering")
    d0 = pos[0]
    xv = ctx.v(x)
    if len(pos) == 1:
        return ctx.op("gather", [xv, ctx.v(indices[d0], DType.int64)], {"axis": d0})
    dims = [shape[i] for i in pos]
    trailing = list(shape[pos[-1] + 1:])
    if not _all_static(dims[1:]) or not _all_static(trailing):
        raise ctx.error("multi-tensor indexing needs static sizes for all but the first indexed dim")
    # Linearize: idx = i0 * (d1*d2..) + i1 * (d2..) + ...; gather on the merged dims.
    lin: Value | None = None
    for k, i in enumerate(pos):
        stride = _prod(dims[k + 1:])
        iv = ctx.v(indices[i], DType.int64)
        if is_static(dims[k]):
            size = ctx.scalar(int(dims[k]), DType.int64)
        else:
            size = ctx.op("reshape", [ctx.op("shape", [xv], {"start": i, "end": i + 1}), ctx.int_list([])])
        iv = ctx.op("where", [ctx.op("less", [iv, ctx.scalar(0, DType.int64)]), ctx.op("add", [iv, size]), iv])
        term = iv if stride == 1 else ctx.op("mul", [iv, ctx.scalar(stride, DType.int64)])
        lin = term if lin is None else ctx.op("add", [lin, term])
    merged_size = _prod(dims) if _all_static(dims) else -1
    spec = [0] * d0 + [merged_size] + [int(t) for t in trailing]
    merged = ctx.op("reshape", [xv, ctx.int_list(spec)])
    return ctx.op("gather", [merged, lin], {"axis": d0})


@register_lowering(aten.constant_pad_nd.default)
def _constant_pad(ctx: Ctx, n: fx.Node) -> Value:
    x, pad = n.args[0], [int(p) for p in n.args[1]]
    value = _arg(n, 2, "value", 0)
    r = ctx.rank(x)
    begins, ends = [0] * r, [0] * r
    for i in range(len(pad) // 2):
        begins[r - 1 - i], ends[r - 1 - i] = pad[2 * i], pad[2 * i + 1]
    if not any(begins) and not any(ends):
        return ctx.v(x)
    xv = ctx.v(x)
    return ctx.op("pad", [xv, ctx.int_list(begins + ends), ctx.scalar(value, _dt(xv))], {"mode": "constant"})


def _mode_pad(mode: str):
    def rule(ctx: Ctx, n: fx.Node) -> Value:
        x, pad = n.args[0], [int(p) for p in n.args[1]]
        r = ctx.rank(x)
        begins, ends = [0] * r, [0] * r
        for i in range(len(pad) // 2):
            begins[r - 1 - i], ends[r - 1 - i] = pad[2 * i], pad[2 * i + 1]
        return ctx.op("pad", [ctx.v(x), ctx.int_list(begins + ends)], {"mode": mode})

    return rule


register_lowering(aten.reflection_pad1d, aten.reflection_pad2d, aten.reflection_pad3d)(_mode_pad("reflect"))
register_lowering(aten.replication_pad1d, aten.replication_pad2d, aten.replication_pad3d)(_mode_pad("edge"))


@register_lowering(aten.repeat.default)
def _repeat(ctx: Ctx, n: fx.Node) -> Value:
    reps = [int(r) for r in n.args[1]]
    xv = ctx.v(n.args[0])
    extra = len(reps) - ctx.rank(n.args[0])
    if extra > 0:
        xv = ctx.op("unsqueeze", [xv, ctx.int_list(list(range(extra)))])
    return ctx.op("tile", [xv, ctx.int_list(reps)])


@register_lowering(aten.flip.default)
def _flip(ctx: Ctx, n: fx.Node) -> Value:
    r = ctx.rank(n.args[0])
    dims = [_norm_dim(int(d), r) for d in n.args[1]]
    k = len(dims)
    return ctx.op("slice", [ctx.v(n.args[0]), ctx.int_list([-1] * k), ctx.int_list([INT64_MIN] * k),
                            ctx.int_list(dims), ctx.int_list([-1] * k)])


@register_lowering(aten.roll.default)
def _roll(ctx: Ctx, n: fx.Node) -> Value:
    x = n.args[0]
    shifts = _ntuple(n.args[1], 1)
    dims = list(_arg(n, 2, "dims", []) or [])
    shape = ctx.shape(x)
    xv = ctx.v(x)
    if not dims:
        raise ctx.error("roll without dims (flattened roll) has no IR lowering")
    for s, d in zip(shifts, dims, strict=True):
        d = _norm_dim(int(d), len(shape))
        size = shape[d]
        if not is_static(size):
            raise ctx.error("roll along a dynamic dimension")
        s = int(s) % int(size)
        if s == 0:
            continue
        ax = ctx.int_list([d])
        tail = ctx.op("slice", [xv, ctx.int_list([int(size) - s]), ctx.int_list([INT64_MAX]), ax])
        head = ctx.op("slice", [xv, ctx.int_list([0]), ctx.int_list([int(size) - s]), ax])
        xv = ctx.op("concat", [tail, head], {"axis": d})
    return xv


# ------------------------------------------------------------------------------------------------ resampling
_SPATIAL_ND = {"1d": 1, "2d": 2, "3d": 3}


def _resize(ctx: Ctx, n: fx.Node, mode: str, ctm: str, nearest_mode: str = "floor", antialias: int = 0,
            scales: Any = None) -> Value:
    x = n.args[0]
    r = ctx.rank(x)
    nd = r - 2
    axes = list(range(2, r))
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": ctm, "axes": axes}
    if mode == "nearest":
        attrs["nearest_mode"] = nearest_mode
    if mode == "cubic":
        attrs["cubic_coeff_a"] = -0.75
    if antialias:
        attrs["antialias"] = 1
    xv = ctx.v(x)
    if scales is not None and all(s is not None for s in scales):
        sc = ctx.const(np.asarray([float(s) for s in scales][-nd:], dtype=np.float32), ctx._hint("scales"))
        return ctx.op("resize", [xv, None, sc], attrs)
    out_sp = ctx.out_shape()[2:]
    if not _all_static(out_sp):
        raise ctx.error("upsampling to a dynamic spatial size has no IR lowering")
    return ctx.op("resize", [xv, None, None, ctx.int_list([int(d) for d in out_sp])], attrs)


def _vec_scales(n: fx.Node, idx: int) -> Any:
    s = _arg(n, idx, "scale_factors")
    return list(s) if s else None


def _default_scales(n: fx.Node, first: int, nd: int) -> Any:
    vals = [_arg(n, first + i, f"scales_{i}") for i in range(nd)]
    return vals if all(v is not None for v in vals) else None


@register_lowering(aten.upsample_nearest1d.vec, aten.upsample_nearest2d.vec, aten.upsample_nearest3d.vec)
def _up_nearest_vec(ctx: Ctx, n: fx.Node) -> Value:
    return _resize(ctx, n, "nearest", "asymmetric", "floor", scales=_vec_scales(n, 2))


@register_lowering(aten.upsample_nearest1d.default, aten.upsample_nearest2d.default,
                   aten.upsample_nearest3d.default)
def _up_nearest(ctx: Ctx, n: fx.Node) -> Value:
    nd = ctx.rank(n.args[0]) - 2
    return _resize(ctx, n, "nearest", "asymmetric", "floor", scales=_default_scales(n, 2, nd))


@register_lowering(aten._upsample_nearest_exact1d.vec, aten._upsample_nearest_exact2d.vec,
                   aten._upsample_nearest_exact3d.vec)
def _up_nearest_exact_vec(ctx: Ctx, n: fx.Node) -> Value:
    return _resize(ctx, n, "nearest", "half_pixel", "round_prefer_ceil", scales=_vec_scales(n, 2))


@register_lowering(aten._upsample_nearest_exact1d.default, aten._upsample_nearest_exact2d.default,
                   aten._upsample_nearest_exact3d.default)
def _up_nearest_exact(ctx: Ctx, n: fx.Node) -> Value:
    nd = ctx.rank(n.args[0]) - 2
    return _resize(ctx, n, "nearest", "half_pixel", "round_prefer_ceil", scales=_default_scales(n, 2, nd))


def _linear_ctm(align: Any) -> str:
    return "align_corners" if align else "pytorch_half_pixel"


@register_lowering(aten.upsample_linear1d.vec, aten.upsample_bilinear2d.vec, aten.upsample_trilinear3d.vec)
def _up_linear_vec(ctx: Ctx, n: fx.Node) -> Value:
    return _resize(ctx, n, "linear", _linear_ctm(n.args[2]), scales=_vec_scales(n, 3))


@register_lowering(aten.upsample_linear1d.default, aten.upsample_bilinear2d.default,
                   aten.upsample_trilinear3d.default)
def _up_linear(ctx: Ctx, n: fx.Node) -> Value:
    nd = ctx.rank(n.args[0]) - 2
    return _resize(ctx, n, "linear", _linear_ctm(n.args[2]), scales=_default_scales(n, 3, nd))


@register_lowering(aten.upsample_bicubic2d.vec)
def _up_cubic_vec(ctx: Ctx, n: fx.Node) -> Value:
    return _resize(ctx, n, "cubic", _linear_ctm(n.args[2]), scales=_vec_scales(n, 3))


@register_lowering(aten.upsample_bicubic2d.default)
def _up_cubic(ctx: Ctx, n: fx.Node) -> Value:
    return _resize(ctx, n, "cubic", _linear_ctm(n.args[2]), scales=_default_scales(n, 3, 2))


@register_lowering(aten._upsample_bilinear2d_aa.vec)
def _up_bilinear_aa(ctx: Ctx, n: fx.Node) -> Value:
    return _resize(ctx, n, "linear", _linear_ctm(n.args[2]), antialias=1, scales=_vec_scales(n, 3))


@register_lowering(aten.pixel_shuffle.default)
def _pixel_shuffle(ctx: Ctx, n: fx.Node) -> Value:
    return ctx.op("depth_to_space", [ctx.v(n.args[0])], {"blocksize": int(n.args[1]), "mode": "CRD"})


@register_lowering(aten.pixel_unshuffle.default)
def _pixel_unshuffle(ctx: Ctx, n: fx.Node) -> Value:
    b, c, h, w = ctx.shape(n.args[0])
    r = int(n.args[1])
    if not all(is_static(d) for d in (c, h, w)):
        raise ctx.error("pixel_unshuffle with dynamic channel/spatial dims")
    bb = b if is_static(b) else 0
    x = ctx.op("reshape", [ctx.v(n.args[0]), ctx.int_list([bb, c, h // r, r, w // r, r])])
    x = ctx.op("transpose", [x], {"perm": [0, 1, 3, 5, 2, 4]})
    return ctx.op("reshape", [x, ctx.int_list([bb, c * r * r, h // r, w // r])])


# ----------------------------------------------------------------------------------- writes into tensor parts
# Functionalization turns in-place writes (``y[:, 0] = v``, ``y[mask] = 0``) into these scatter forms.
@register_lowering(aten.slice_scatter.default)
def _slice_scatter(ctx: Ctx, n: fx.Node) -> Value:
    x, src = n.args[0], n.args[1]
    shape = ctx.shape(x)
    d = _norm_dim(int(_arg(n, 2, "dim", 0)), len(shape))
    start, end, step = _arg(n, 3, "start"), _arg(n, 4, "end"), int(_arg(n, 5, "step", 1))
    size = shape[d]
    if not is_static(size) or step != 1:
        raise ctx.error("slice_scatter with a step or along a dynamic dim has no IR lowering")
    size = int(size)
    start = 0 if start is None else _norm_dim(int(start), size)
    end = size if end is None else min(_norm_dim(int(end), size) if int(end) < 0 else int(end), size)
    dt = ctx.out_dtype()
    xv, sv = ctx.v(x, dt), ctx.v(src, dt)
    ax = ctx.int_list([d])
    parts = []
    if start > 0:
        parts.append(ctx.op("slice", [xv, ctx.int_list([0]), ctx.int_list([start]), ax]))
    parts.append(sv)
    if end < size:
        parts.append(ctx.op("slice", [xv, ctx.int_list([end]), ctx.int_list([size]), ax]))
    return parts[0] if len(parts) == 1 else ctx.op("concat", parts, {"axis": d})


@register_lowering(aten.select_scatter.default)
def _select_scatter(ctx: Ctx, n: fx.Node) -> Value:
    x, src = n.args[0], n.args[1]
    shape = ctx.shape(x)
    d = _norm_dim(int(n.args[2]), len(shape))
    if not is_static(shape[d]):
        raise ctx.error("select_scatter along a dynamic dim has no IR lowering")
    size = int(shape[d])
    i = _norm_dim(int(n.args[3]), size)
    dt = ctx.out_dtype()
    xv = ctx.v(x, dt)
    sv = ctx.op("unsqueeze", [ctx.v(src, dt), ctx.int_list([d])])
    ax = ctx.int_list([d])
    parts = []
    if i > 0:
        parts.append(ctx.op("slice", [xv, ctx.int_list([0]), ctx.int_list([i]), ax]))
    parts.append(sv)
    if i + 1 < size:
        parts.append(ctx.op("slice", [xv, ctx.int_list([i + 1]), ctx.int_list([size]), ax]))
    return parts[0] if len(parts) == 1 else ctx.op("concat", parts, {"axis": d})


@register_lowering(aten.index_put.default)
def _index_put(ctx: Ctx, n: fx.Node) -> Value:
    """``x[mask] = v`` with a boolean mask over leading dims and a one-element value: a ``where``."""
    x, indices, values = n.args[0], list(n.args[1]), n.args[2]
    accumulate = bool(_arg(n, 3, "accumulate", False))
    dt = ctx.out_dtype()
    if (len(indices) == 1 and indices[0] is not None and ctx.fake(indices[0]).dtype == torch.bool
            and not accumulate):
        vf = ctx.fake(values)
        if vf.numel() == 1 if _all_static(vf.shape) else False:
            m = ctx.v(indices[0])
            extra = ctx.rank(x) - ctx.rank(indices[0])
            if extra:
                m = ctx.op("unsqueeze", [m, ctx.int_list(list(range(ctx.rank(indices[0]), ctx.rank(x))))])
            v = ctx.op("reshape", [ctx.v(values, dt), ctx.int_list([])])
            return ctx.op("where", [m, v, ctx.v(x, dt)])
    raise ctx.error("index_put (indexed assignment) is supported only as x[bool_mask] = scalar; use torch.where")


def _scatter(ctx: Ctx, n: fx.Node, src: Any, reduction: str) -> Value:
    x, d, idx = n.args[0], _norm_dim(int(n.args[1]), ctx.rank(n.args[0])), n.args[2]
    dt = ctx.out_dtype()
    iv = ctx.v(idx, DType.int64)
    if isinstance(src, fx.Node):
        sv = ctx.v(src, dt)
    else:
        sv = _expand_to(ctx, ctx.scalar(src, dt), None, ctx.shape(idx)) if _all_static(ctx.shape(idx)) else \
            ctx.op("expand", [ctx.scalar(src, dt), ctx.op("shape", [iv])])
    return ctx.op("scatter_elements", [ctx.v(x, dt), iv, sv], {"axis": d, "reduction": reduction})


@register_lowering(aten.scatter.src, aten.scatter.value)
def _scatter_rule(ctx: Ctx, n: fx.Node) -> Value:
    return _scatter(ctx, n, n.args[3], "none")


@register_lowering(aten.scatter.reduce, aten.scatter.value_reduce)
def _scatter_reduce_rule(ctx: Ctx, n: fx.Node) -> Value:
    red = {"add": "add", "multiply": "mul"}[str(n.kwargs.get("reduce", n.args[4] if len(n.args) > 4 else "add"))]
    return _scatter(ctx, n, n.args[3], red)


@register_lowering(aten.scatter_add.default)
def _scatter_add(ctx: Ctx, n: fx.Node) -> Value:
    return _scatter(ctx, n, n.args[3], "add")


@register_lowering(aten.square.default)
def _square(ctx: Ctx, n: fx.Node) -> Value:
    x = ctx.v(n.args[0], ctx.out_dtype())
    return ctx.op("mul", [x, x])


@register_lowering(aten.fill.Scalar, aten.fill.Tensor)
def _fill_rule(ctx: Ctx, n: fx.Node) -> Value:
    return _fill(ctx, list(ctx.shape(n.args[0])), n.args[1], like=n.args[0])
