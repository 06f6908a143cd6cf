"""Less common ONNX ops the ONNX frontend imports: Hardmax and the remaining reductions.

Same conventions as the other op modules: ONNX opset-18 semantics (``axes`` is an input), implementations use
only ``torch``/``F``/``math`` and module-level helpers, so the PyTorch backend can copy their source.
"""

import torch

from ..cost import input_numel_flops
from ..registry import In, op
from .reduce import _axes

R_IN = [In("data"), In("axes", optional=True, static=True)]
R_ATTRS = {"keepdims": 1, "noop_with_empty_axes": 0}


@op("hardmax", inputs=[In("input")], attrs={"axis": -1}, category="softmax", flops=input_numel_flops(),
    onnx_min_opset=13)
def hardmax(input, *, axis=-1):
    """One-hot of the first maximum along ``axis`` (opset-13 semantics: a single axis, not a 2-D view)."""
    idx = torch.argmax(input, dim=axis, keepdim=True)
    return torch.zeros_like(input).scatter(axis, idx, 1.0)


@op("reduce_l1", onnx="ReduceL1", inputs=R_IN, attrs=R_ATTRS, category="reduce", flops=input_numel_flops(2),
    onnx_min_opset=18)
def reduce_l1(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else data.abs().sum(dim=a, keepdim=bool(keepdims))


@op("reduce_sum_square", onnx="ReduceSumSquare", inputs=R_IN, attrs=R_ATTRS, category="reduce",
    flops=input_numel_flops(2), onnx_min_opset=18)
def reduce_sum_square(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else (data * data).sum(dim=a, keepdim=bool(keepdims))


@op("reduce_log_sum", onnx="ReduceLogSum", inputs=R_IN, attrs=R_ATTRS, category="reduce",
    flops=input_numel_flops(2), onnx_min_opset=18)
def reduce_log_sum(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else torch.log(data.sum(dim=a, keepdim=bool(keepdims)))
