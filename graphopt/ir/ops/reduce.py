"""Reductions (ONNX opset-18 form: ``axes`` is an input; importers convert the older attribute form)."""

import torch

from ..cost import input_numel_flops
from ..registry import In, op

R_IN = [In("data"), In("axes", optional=True, static=True)]
R_ATTRS = {"keepdims": 1, "noop_with_empty_axes": 0}


def _axes(data, axes, noop_with_empty_axes):
    if axes is None or len(axes) == 0:
        return None if noop_with_empty_axes else list(range(data.dim()))
    return [int(a) for a in axes]


@op("reduce_mean", onnx="ReduceMean", inputs=R_IN, attrs=R_ATTRS, category="reduce", flops=input_numel_flops(),
    onnx_min_opset=18)
def reduce_mean(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else data.mean(dim=a, keepdim=bool(keepdims))


@op("reduce_sum", onnx="ReduceSum", inputs=R_IN, attrs=R_ATTRS, category="reduce", flops=input_numel_flops(),
    onnx_min_opset=13, value_prop=True)
def reduce_sum(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else data.sum(dim=a, keepdim=bool(keepdims))


@op("reduce_max", onnx="ReduceMax", inputs=R_IN, attrs=R_ATTRS, category="reduce", flops=input_numel_flops(),
    onnx_min_opset=18)
def reduce_max(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else data.amax(dim=a, keepdim=bool(keepdims))


@op("reduce_min", onnx="ReduceMin", inputs=R_IN, attrs=R_ATTRS, category="reduce", flops=input_numel_flops(),
    onnx_min_opset=18)
def reduce_min(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else data.amin(dim=a, keepdim=bool(keepdims))


@op("reduce_prod", onnx="ReduceProd", inputs=R_IN, attrs=R_ATTRS, category="reduce", flops=input_numel_flops(),
    onnx_min_opset=18, value_prop=True)
def reduce_prod(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    if a is None:
        return data
    for ax in sorted((x % data.dim() for x in a), reverse=True):
        data = data.prod(dim=ax, keepdim=bool(keepdims))
    return data


@op("reduce_l2", onnx="ReduceL2", inputs=R_IN, attrs=R_ATTRS, category="reduce", flops=input_numel_flops(2),
    onnx_min_opset=18)
def reduce_l2(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else torch.sqrt((data * data).sum(dim=a, keepdim=bool(keepdims)))


@op("reduce_log_sum_exp", onnx="ReduceLogSumExp", inputs=R_IN, attrs=R_ATTRS, category="reduce",
    flops=input_numel_flops(3), onnx_min_opset=18)
def reduce_log_sum_exp(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    a = _axes(data, axes, noop_with_empty_axes)
    return data if a is None else torch.logsumexp(data, dim=a, keepdim=bool(keepdims))


@op("argmax", onnx="ArgMax", inputs=[In("data")], attrs={"axis": 0, "keepdims": 1, "select_last_index": 0},
    category="reduce", flops=input_numel_flops())
def argmax(data, *, axis=0, keepdims=1, select_last_index=0):
    if select_last_index:
        flipped = torch.flip(data, [axis])
        return data.shape[axis] - 1 - torch.argmax(flipped, dim=axis, keepdim=bool(keepdims))
    return torch.argmax(data, dim=axis, keepdim=bool(keepdims))


@op("argmin", onnx="ArgMin", inputs=[In("data")], attrs={"axis": 0, "keepdims": 1, "select_last_index": 0},
    category="reduce", flops=input_numel_flops())
def argmin(data, *, axis=0, keepdims=1, select_last_index=0):
    if select_last_index:
        flipped = torch.flip(data, [axis])
        return data.shape[axis] - 1 - torch.argmin(flipped, dim=axis, keepdim=bool(keepdims))
    return torch.argmin(data, dim=axis, keepdim=bool(keepdims))


@op("cumsum", onnx="CumSum", inputs=[In("x"), In("axis", static=True)], attrs={"exclusive": 0, "reverse": 0},
    category="reduce", onnx_min_opset=11)
def cumsum(x, axis, *, exclusive=0, reverse=0):
    ax = int(axis if not isinstance(axis, list) else axis[0]) if not isinstance(axis, int) else axis
    if reverse:
        x = torch.flip(x, [ax])
    y = torch.cumsum(x, ax)
    if exclusive:
        y = y - x
    return torch.flip(y, [ax]) if reverse else y


@op("topk", onnx="TopK", inputs=[In("X"), In("K", static=True)], attrs={"axis": -1, "largest": 1, "sorted": 1},
    outputs=2, category="reduce", onnx_min_opset=11)
def topk(X, K, *, axis=-1, largest=1, sorted=1):
    k = int(K[0] if isinstance(K, list) else K)
    # ONNX orders equal values by index (smaller first): a stable sort guarantees it, torch.topk does not
    v, i = torch.sort(X, dim=axis, descending=bool(largest), stable=True)
    return v.narrow(axis, 0, k), i.narrow(axis, 0, k)
