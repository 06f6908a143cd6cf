"""Elementwise ops: activations, arithmetic, comparisons, casts (ONNX semantics, numpy broadcasting)."""

import math

import torch
import torch.nn.functional as F

from ..registry import In, op

X = [In("X")]
AB = [In("A"), In("B")]

# ----------------------------------------------------------------------------------------------- activations


@op("relu", inputs=X, category="activation")
def relu(X):
    return torch.relu(X)


@op("sigmoid", inputs=X, category="activation")
def sigmoid(X):
    return torch.sigmoid(X)


@op("tanh", inputs=X, category="activation")
def tanh(X):
    return torch.tanh(X)


@op("leaky_relu", onnx="LeakyRelu", inputs=X, attrs={"alpha": 0.01}, category="activation")
def leaky_relu(X, *, alpha=0.01):
    return F.leaky_relu(X, alpha)


@op("elu", inputs=X, attrs={"alpha": 1.0}, category="activation")
def elu(X, *, alpha=1.0):
    return F.elu(X, alpha)


@op("celu", inputs=X, attrs={"alpha": 1.0}, category="activation", onnx_min_opset=12)
def celu(X, *, alpha=1.0):
    return F.celu(X, alpha)


@op("selu", inputs=X, attrs={"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
    category="activation")
def selu(X, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * torch.where(X > 0, X, alpha * (torch.exp(X) - 1))


@op("softplus", inputs=X, category="activation")
def softplus(X):
    return F.softplus(X)


@op("softsign", inputs=X, category="activation")
def softsign(X):
    return F.softsign(X)


@op("hard_sigmoid", onnx="HardSigmoid", inputs=X, attrs={"alpha": 0.2, "beta": 0.5}, category="activation")
def hard_sigmoid(X, *, alpha=0.2, beta=0.5):
    return torch.clamp(alpha * X + beta, 0.0, 1.0)


@op("hard_swish", onnx="HardSwish", inputs=X, category="activation", onnx_min_opset=14)
def hard_swish(X):
    return F.hardswish(X)


@op("gelu", inputs=X, attrs={"approximate": "none"}, category="activation", onnx_min_opset=20)
def gelu(X, *, approximate="none"):
    return F.gelu(X, approximate=approximate)


@op("mish", inputs=X, category="activation", onnx_min_opset=18)
def mish(X):
    return F.mish(X)


@op("thresholded_relu", onnx="ThresholdedRelu", inputs=X, attrs={"alpha": 1.0}, category="activation")
def thresholded_relu(X, *, alpha=1.0):
    return torch.where(X > alpha, X, torch.zeros_like(X))


@op("prelu", onnx="PRelu", inputs=[In("X"), In("slope")], category="activation", weight_inputs=(1,))
def prelu(X, slope):
    return torch.where(X < 0, X * slope, X)


@op("clip", inputs=[In("input"), In("min", optional=True), In("max", optional=True)], category="activation",
    onnx_min_opset=11)
def clip(input, min=None, max=None):
    # Constant scalar bounds (ReLU6 and friends) go through hardtanh, whose backward is one fused kernel; tensor
    # bounds make clamp's backward build comparison masks (~2x slower training of MobileNet-style nets).
    if (isinstance(min, torch.Tensor) and isinstance(max, torch.Tensor) and min.dim() == 0 and max.dim() == 0
            and min.device.type == "cpu" and max.device.type == "cpu" and not min.requires_grad
            and not max.requires_grad and input.is_floating_point()):
        return torch.nn.functional.hardtanh(input, float(min), float(max))
    if min is None and max is None:  # ONNX Clip without bounds is the identity
        return input
    return torch.clamp(input, min, max)


# ------------------------------------------------------------------------------------------------ unary math
def _unary(name, fn, onnx=""):
    op(name, inputs=X, category="math", onnx=onnx)(fn)


def exp(X):
    return torch.exp(X)


def log(X):
    return torch.log(X)


def sqrt(X):
    return torch.sqrt(X)


def abs_(X):
    return torch.abs(X)


def neg(X):
    return torch.neg(X)


def reciprocal(X):
    return torch.reciprocal(X)


def floor(X):
    return torch.floor(X)


def ceil(X):
    return torch.ceil(X)


def round_(X):
    return torch.round(X)


def erf(X):
    return torch.erf(X)


def sin(X):
    return torch.sin(X)


def cos(X):
    return torch.cos(X)


def tan(X):
    return torch.tan(X)


def sign(X):
    return torch.sign(X)


def asin(X):
    return torch.asin(X)


def acos(X):
    return torch.acos(X)


def atan(X):
    return torch.atan(X)


def sinh(X):
    return torch.sinh(X)


def cosh(X):
    return torch.cosh(X)


def asinh(X):
    return torch.asinh(X)


def acosh(X):
    return torch.acosh(X)


def atanh(X):
    return torch.atanh(X)


def identity(X):
    return X


def is_nan(X):
    return torch.isnan(X)


def logical_not(X):
    return torch.logical_not(X)


for _f in (exp, log, sqrt, abs_, neg, reciprocal, floor, ceil, round_, erf, sin, cos, tan, sign, asin, acos, atan,
           sinh, cosh, asinh, acosh, atanh):
    _unary(_f.__name__.rstrip("_"), _f)
_unary("identity", identity)
op("is_nan", onnx="IsNaN", inputs=X, category="compare")(is_nan)
op("not", onnx="Not", inputs=X, category="compare")(logical_not)


@op("is_inf", onnx="IsInf", inputs=X, attrs={"detect_negative": 1, "detect_positive": 1}, category="compare")
def is_inf(X, *, detect_negative=1, detect_positive=1):
    pos = (X == math.inf) if detect_positive else torch.zeros_like(X, dtype=torch.bool)
    neg = (X == -math.inf) if detect_negative else torch.zeros_like(X, dtype=torch.bool)
    return pos | neg


@op("cast", inputs=[In("input")], attrs={"to": "float32", "saturate": 1}, category="cast", value_prop=True)
def cast(input, *, to="float32", saturate=1):
    return input.to(getattr(torch, to))


# ------------------------------------------------------------------------------------------------ arithmetic
@op("add", inputs=AB, category="arith", value_prop=True, commutative=True)
def add(A, B):
    return A + B


@op("sub", inputs=AB, category="arith", value_prop=True)
def sub(A, B):
    return A - B


@op("mul", inputs=AB, category="arith", value_prop=True, commutative=True)
def mul(A, B):
    return A * B


@op("div", inputs=AB, category="arith", value_prop=True)
def div(A, B):
    if not A.is_floating_point() and not B.is_floating_point():
        return torch.div(A, B, rounding_mode="trunc")
    return A / B


@op("pow", inputs=[In("X"), In("Y")], category="arith")
def pow_(X, Y):
    out = torch.pow(X, Y)
    return out.to(X.dtype) if out.dtype != X.dtype else out


@op("mod", inputs=AB, attrs={"fmod": 0}, category="arith")
def mod(A, B, *, fmod=0):
    return torch.fmod(A, B) if fmod else torch.remainder(A, B)


@op("max", inputs=[In("data_0", variadic=True)], category="arith", value_prop=True, commutative=True)
def max_(*data_0):
    out = data_0[0]
    for t in data_0[1:]:
        out = torch.maximum(out, t)
    return out


@op("min", inputs=[In("data_0", variadic=True)], category="arith", value_prop=True, commutative=True)
def min_(*data_0):
    out = data_0[0]
    for t in data_0[1:]:
        out = torch.minimum(out, t)
    return out


@op("sum", inputs=[In("data_0", variadic=True)], category="arith", commutative=True)
def sum_(*data_0):
    out = data_0[0]
    for t in data_0[1:]:
        out = out + t
    return out


@op("mean", inputs=[In("data_0", variadic=True)], category="arith", commutative=True)
def mean(*data_0):
    out = data_0[0]
    for t in data_0[1:]:
        out = out + t
    return out / len(data_0)


# ----------------------------------------------------------------------------------------------- comparisons
@op("equal", inputs=AB, category="compare", value_prop=True, commutative=True)
def equal(A, B):
    return A == B


@op("less", inputs=AB, category="compare", value_prop=True)
def less(A, B):
    return A < B


@op("less_or_equal", inputs=AB, category="compare", value_prop=True)
def less_or_equal(A, B):
    return A <= B


@op("greater", inputs=AB, category="compare", value_prop=True)
def greater(A, B):
    return A > B


@op("greater_or_equal", inputs=AB, category="compare", value_prop=True)
def greater_or_equal(A, B):
    return A >= B


@op("and", onnx="And", inputs=AB, category="compare", commutative=True)
def logical_and(A, B):
    return torch.logical_and(A, B)


@op("or", onnx="Or", inputs=AB, category="compare", commutative=True)
def logical_or(A, B):
    return torch.logical_or(A, B)


@op("xor", onnx="Xor", inputs=AB, category="compare", commutative=True)
def logical_xor(A, B):
    return torch.logical_xor(A, B)


@op("where", inputs=[In("condition"), In("X"), In("Y")], category="compare", value_prop=True)
def where(condition, X, Y):
    return torch.where(condition, X, Y)
