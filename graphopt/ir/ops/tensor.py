"""Data-movement and shape ops (ONNX opset-18 forms; shape-like operands are ``static`` inputs)."""

import torch
import torch.nn.functional as F

from ..registry import In, op
from ._rt import _torch_pad


def _as_list(v):
    if isinstance(v, torch.Tensor):
        return [int(x) for x in v.reshape(-1).tolist()]
    if isinstance(v, int | float):
        return [int(v)]
    return [int(x) for x in v]


@op("reshape", inputs=[In("data"), In("shape", static=True)], attrs={"allowzero": 0}, category="shape",
    value_prop=True)
def reshape(data, shape, *, allowzero=0):
    shape = _as_list(shape)
    if not allowzero:
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


@op("flatten", inputs=[In("input")], attrs={"axis": 1}, category="shape", value_prop=True)
def flatten(input, *, axis=1):
    axis = axis % max(input.dim(), 1) if axis != input.dim() else axis
    lead = 1
    for d in input.shape[:axis]:
        lead *= d
    return input.reshape(lead, -1) if input.numel() or lead else input.reshape(lead, 0)


@op("transpose", inputs=[In("data")], attrs={"perm": None}, category="memory", value_prop=True)
def transpose(data, *, perm=None):
    if perm is None:
        perm = list(reversed(range(data.dim())))
    return data.permute(*perm)


@op("concat", inputs=[In("inputs", variadic=True)], attrs={"axis": None}, category="memory", value_prop=True)
def concat(*inputs, axis=None):
    return torch.cat(inputs, axis)


def _split_outputs(attrs):
    return int(attrs.get("num_outputs") or 1)


@op("split", inputs=[In("input"), In("split", optional=True, static=True)], attrs={"axis": 0, "num_outputs": None},
    outputs=_split_outputs, category="memory", onnx_min_opset=13)
def split(input, split=None, *, axis=0, num_outputs=None):
    if split is not None and len(_as_list(split)) > 0:
        return tuple(torch.split(input, _as_list(split), axis))
    # ONNX-18: ceil-sized chunks, the last one smaller (possibly empty); onnxruntime rejects a negative last.
    if not num_outputs:
        raise ValueError("split: give either the split sizes input or the num_outputs attribute")
    n = input.shape[axis]
    chunk = -(-n // num_outputs)
    last = n - chunk * (num_outputs - 1)
    if last < 0:
        raise ValueError(f"split: dim {axis} of size {n} cannot be split into num_outputs={num_outputs} "
                         f"chunks of ceil({n}/{num_outputs})={chunk} (the last chunk would be negative); "
                         f"give explicit split sizes instead")
    return tuple(torch.split(input, [chunk] * (num_outputs - 1) + [last], axis))


def _slice_types(node):  # noqa: ANN001, ANN202 - Node -> list[TensorType]
    """Slicing a static dim up to a *symbolic* end (``position_ids[:, :seq]`` on a 512-long buffer) clamps the
    symbol's huge sentinel to the static length in the meta run; the output dim is really ``min(n, seq)``. We
    take it to be ``seq − start`` -- the model is only valid when the slice fits, which is what torch.export
    assumes too (it guards ``seq <= n``) -- so later ops that combine it with ``seq``-long tensors still infer."""
    from ..infer import infer_by_meta, known_value, symbol_of
    from ..types import TensorType

    types = infer_by_meta(node)
    data, out = node.inputs[0].type, types[0]
    starts, ends = (known_value(v) for v in node.inputs[1:3])
    if out is None or out.shape is None or data is None or data.shape is None or starts is None or ends is None:
        return types
    axes_v = known_value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    steps_v = known_value(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    starts, ends = _as_list(starts.tolist()), _as_list(ends.tolist())
    axes = list(range(len(starts))) if axes_v is None else _as_list(axes_v.tolist())
    steps = [1] * len(starts) if steps_v is None else _as_list(steps_v.tolist())
    dims = list(out.shape)
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        a %= len(dims)
        n = data.shape[a]
        if st == 1 and isinstance(n, int) and 0 <= s < n < e:
            sym = symbol_of(node.graph, int(e), int(s))
            if sym is not None:
                dims[a] = sym
    return [TensorType(out.dtype, tuple(dims))]


@op("slice", inputs=[In("data"), In("starts", static=True), In("ends", static=True),
                     In("axes", optional=True, static=True), In("steps", optional=True, static=True)],
    category="memory", value_prop=True, onnx_min_opset=10, infer=_slice_types)
def slice_(data, starts, ends, axes=None, steps=None):
    starts, ends = _as_list(starts), _as_list(ends)
    axes = list(range(len(starts))) if axes is None else _as_list(axes)
    steps = [1] * len(starts) if steps is None else _as_list(steps)
    idx = [slice(None)] * data.dim()
    flips = []
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = a % data.dim()
        n = data.shape[a]
        if st > 0:
            s = max(0, min(n, s + n if s < 0 else s))
            e = max(0, min(n, e + n if e < 0 else e))
            idx[a] = slice(s, max(s, e), st)
        else:
            s = max(-1, min(n - 1, s + n if s < 0 else s))
            e = max(-1, min(n - 1, e + n if e < 0 else e))
            flips.append((a, torch.arange(s, e, st) if s > e else torch.arange(0)))
    out = data[tuple(idx)]
    for a, index in flips:
        out = torch.index_select(out, a, index.to(out.device))
    return out



@op("gather", inputs=[In("data"), In("indices")], attrs={"axis": 0}, category="memory", value_prop=True,
    weight_inputs=(0,))
def gather(data, indices, *, axis=0):
    """A float constant table gathered by row is an embedding: ``weight_inputs=(0,)`` makes importers (ONNX)
    mark it a trainable ``param`` (integer shape tables stay ``const``, the ONNX frontend only promotes floats)."""
    axis = axis % data.dim()
    n = data.shape[axis]
    idx = torch.where(indices < 0, indices + n, indices).to(torch.int64)
    out = torch.index_select(data, axis, idx.reshape(-1))
    return out.reshape(list(data.shape[:axis]) + list(indices.shape) + list(data.shape[axis + 1:]))


@op("gather_elements", onnx="GatherElements", inputs=[In("data"), In("indices")], attrs={"axis": 0},
    category="memory")
def gather_elements(data, indices, *, axis=0):
    n = data.shape[axis]
    return torch.gather(data, axis, torch.where(indices < 0, indices + n, indices).to(torch.int64))


@op("gather_nd", onnx="GatherND", inputs=[In("data"), In("indices")], attrs={"batch_dims": 0}, category="memory",
    onnx_min_opset=11)
def gather_nd(data, indices, *, batch_dims=0):
    """ONNX GatherND: the last axis of ``indices`` addresses the ``k`` dims after the ``batch_dims`` leading ones
    (which data and indices share); negative indices count from the end. Done as one flat advanced index."""
    b, k = batch_dims, indices.shape[-1]
    lead, addressed, rest = data.shape[:b], data.shape[b:b + k], data.shape[b + k:]
    nb = 1
    for d in lead:
        nb *= d
    strides, size = [], 1
    for d in reversed(addressed):
        strides.insert(0, size)
        size *= d
    idx = indices.to(torch.int64).reshape(nb, -1, k)
    flat = torch.zeros(idx.shape[:2], dtype=torch.int64, device=idx.device)
    for j in range(k):
        col = idx[..., j]
        flat = flat + torch.where(col < 0, col + addressed[j], col) * strides[j]
    rows = torch.arange(nb, device=idx.device).reshape(nb, 1)
    out = data.reshape(nb, size, *rest)[rows, flat]
    return out.reshape(*indices.shape[:-1], *rest)


def _scatter_flops(node):  # noqa: ANN001, ANN202 - Node -> int | None
    """A reducing scatter combines every update element with one data element; a plain one only moves data."""
    from ..cost import _numel

    if node.attrs.get("reduction", "none") == "none":
        return 0
    upd = node.inputs[2]
    return None if upd is None else _numel(upd.shape)


@op("scatter_elements", onnx="ScatterElements", inputs=[In("data"), In("indices"), In("updates")],
    attrs={"axis": 0, "reduction": "none"}, category="memory", flops=_scatter_flops, onnx_min_opset=11)
def scatter_elements(data, indices, updates, *, axis=0, reduction="none"):
    n = data.shape[axis]
    idx = torch.where(indices < 0, indices + n, indices).to(torch.int64)
    if reduction == "none":
        return torch.scatter(data, axis, idx, updates)
    return torch.scatter_reduce(data, axis, idx, updates,
                                {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}.get(reduction, reduction))


@op("scatter_nd", onnx="ScatterND", inputs=[In("data"), In("indices"), In("updates")], attrs={"reduction": "none"},
    category="memory", flops=_scatter_flops, onnx_min_opset=11)
def scatter_nd(data, indices, updates, *, reduction="none"):
    """ONNX ScatterND, the inverse of GatherND: each k-tuple on the last axis of ``indices`` addresses a slice of
    ``data``'s first k dims (negative entries count from the end). The k dims are flattened into one, so a
    single scatter along dim 0 does it and every ``reduction`` (none/add/mul/max/min) is torch's own."""
    k = indices.shape[-1]
    addressed, rest = data.shape[:k], data.shape[k:]
    strides, size = [], 1
    for d in reversed(addressed):
        strides.insert(0, size)
        size *= d
    idx = indices.to(torch.int64).reshape(-1, k)
    flat = torch.zeros(idx.shape[0], dtype=torch.int64, device=idx.device)
    for j in range(k):
        col = idx[:, j]
        flat = flat + torch.where(col < 0, col + addressed[j], col) * strides[j]
    upd = updates.reshape(idx.shape[0], *rest)
    index = flat.reshape(-1, *[1] * len(rest)).expand(upd.shape)
    base = data.reshape(size, *rest)
    if reduction == "none":
        out = torch.scatter(base, 0, index, upd)
    else:
        out = torch.scatter_reduce(base, 0, index, upd,
                                   {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[reduction])
    return out.reshape(data.shape)


@op("squeeze", inputs=[In("data"), In("axes", optional=True, static=True)], category="shape", value_prop=True,
    onnx_min_opset=13)
def squeeze(data, axes=None):
    if axes is None or len(_as_list(axes)) == 0:
        return data.squeeze()
    dims = sorted((a % data.dim() for a in _as_list(axes)), reverse=True)
    for d in dims:
        data = data.squeeze(d)
    return data


@op("unsqueeze", inputs=[In("data"), In("axes", static=True)], category="shape", value_prop=True,
    onnx_min_opset=13)
def unsqueeze(data, axes):
    axes = _as_list(axes)
    rank = data.dim() + len(axes)
    for a in sorted(x % rank for x in axes):
        data = data.unsqueeze(a)
    return data


@op("expand", inputs=[In("input"), In("shape", static=True)], category="memory", value_prop=True)
def expand(input, shape):
    return input.expand(torch.broadcast_shapes(tuple(input.shape), tuple(_as_list(shape))))


@op("tile", inputs=[In("input"), In("repeats", static=True)], category="memory", value_prop=True)
def tile(input, repeats):
    return input.repeat(_as_list(repeats))


@op("shape", inputs=[In("data")], attrs={"start": 0, "end": None}, category="shape")
def shape(data, *, start=0, end=None):
    dims = list(data.shape)
    return torch.tensor(dims[start:end] if end is not None else dims[start:], dtype=torch.int64)


@op("size", inputs=[In("data")], category="shape")
def size(data):
    return torch.tensor(data.numel(), dtype=torch.int64)


@op("constant_of_shape", onnx="ConstantOfShape", inputs=[In("input", static=True)], attrs={"value": None},
    category="memory", onnx_min_opset=9)
def constant_of_shape(input, *, value=None):
    """``value`` is a one-element array (dtype included); default float32 zero as in ONNX.

    The fill value is read on the CPU (explicit ``device``) so shape inference can run this under
    ``torch.device("meta")``; a numpy ``value`` is copied because read-only arrays make torch warn.
    """
    shp = _as_list(input)
    if value is None:
        return torch.zeros(shp, dtype=torch.float32)
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value.copy(), device="cpu")
    v = value.reshape(-1)
    return torch.full(shp, v[0].item(), dtype=v.dtype)


@op("range", inputs=[In("start", static=True), In("limit", static=True), In("delta", static=True)],
    category="memory", value_prop=True, onnx_min_opset=11)
def range_(start, limit, delta):
    vals = [start, limit, delta]
    vals = [v.item() if isinstance(v, torch.Tensor) else (v[0] if isinstance(v, list) else v) for v in vals]
    return torch.arange(vals[0], vals[1], vals[2])


@op("pad", inputs=[In("data"), In("pads", static=True), In("constant_value", optional=True, static=True),
                   In("axes", optional=True, static=True)], attrs={"mode": "constant"}, category="memory",
    onnx_min_opset=11)
def pad(data, pads, constant_value=None, axes=None, *, mode="constant"):
    pads = _as_list(pads)
    if axes is not None and len(_as_list(axes)) > 0:
        ax = [a % data.dim() for a in _as_list(axes)]
        full = [0] * (2 * data.dim())
        for i, a in enumerate(ax):
            full[a], full[a + data.dim()] = pads[i], pads[i + len(ax)]
        pads = full
    tp = _torch_pad(pads)
    while len(tp) > 2 and tp[-1] == 0 and tp[-2] == 0:
        tp = tp[:-2]
    if mode == "constant":
        cv = 0.0 if constant_value is None else (constant_value[0] if isinstance(constant_value, list)
                                                 else constant_value)
        return F.pad(data, tp, value=float(cv) if cv is not None else 0.0)
    return F.pad(data, tp, mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])


@op("one_hot", onnx="OneHot", inputs=[In("indices"), In("depth", static=True), In("values")], attrs={"axis": -1},
    category="memory", onnx_min_opset=11)
def one_hot(indices, depth, values, *, axis=-1):
    d = int(depth[0] if isinstance(depth, list) else depth)
    idx = torch.where(indices < 0, indices + d, indices).to(torch.int64)
    # an index outside [-depth, depth) gives an all-off row (the spec), not an error
    oh = F.one_hot(torch.where((idx >= 0) & (idx < d), idx, d), d + 1)[..., :d]
    if axis != -1 and axis != indices.dim():
        oh = oh.movedim(-1, axis)
    return torch.where(oh.bool(), values[1], values[0])


@op("trilu", inputs=[In("input"), In("k", optional=True, static=True)], attrs={"upper": 1}, category="memory",
    onnx_min_opset=14)
def trilu(input, k=None, *, upper=1):
    kk = 0 if k is None else int(k[0] if isinstance(k, list) else k)
    return torch.triu(input, kk) if upper else torch.tril(input, kk)
