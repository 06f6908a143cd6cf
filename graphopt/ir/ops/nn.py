"""Neural-network ops: convolutions, matmuls, normalizations, pooling, softmax, resize (ONNX semantics).

``batch_norm`` and ``dropout`` take a ``training`` flag that only the PyTorch backend sets (from
``module.training``), so an emitted module trains exactly like the original; ONNX export is inference-only.
"""

import math

import torch
import torch.nn.functional as F

from ..cost import conv_flops, conv_transpose_flops, gemm_flops, input_numel_flops, matmul_flops, pool_flops
from ..registry import In, op
from ._rt import _bcast_axis, _ints, _spatial_pads, _torch_pad

CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None,
              "strides": None}


@op("conv", inputs=[In("X"), In("W"), In("B", optional=True)], attrs=CONV_ATTRS, category="conv",
    flops=conv_flops, weight_inputs=(1, 2))
def conv(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    nd = X.dim() - 2
    k = list(W.shape[2:])
    s, d = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    p = _spatial_pads(X, k, s, d, pads, auto_pad)
    if p[:nd] == p[nd:]:
        return getattr(F, f"conv{nd}d")(X, W, B, s, p[:nd], d, group)
    return getattr(F, f"conv{nd}d")(F.pad(X, _torch_pad(p)), W, B, s, 0, d, group)


@op("conv_transpose", onnx="ConvTranspose", inputs=[In("X"), In("W"), In("B", optional=True)],
    attrs={**CONV_ATTRS, "output_padding": None, "output_shape": None}, category="conv",
    flops=conv_transpose_flops, weight_inputs=(1, 2))
def conv_transpose(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
                   strides=None, output_padding=None, output_shape=None):
    nd = X.dim() - 2
    k = list(W.shape[2:])
    s, d = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    op_ = _ints(output_padding, nd, 0)
    p = _ints(pads, 2 * nd, 0)
    if output_shape is not None or auto_pad not in ("NOTSET", "", None):
        target = list(output_shape)[-nd:] if output_shape is not None else [X.shape[2 + i] * s[i] for i in range(nd)]
        p = [0] * (2 * nd)
        for i in range(nd):
            # the spec's split: SAME_UPPER puts the odd unit at the end, SAME_LOWER and an explicit output_shape
            # at the start; a negative total (output_shape past the natural size) extends the output
            total = s[i] * (X.shape[2 + i] - 1) + op_[i] + ((k[i] - 1) * d[i] + 1) - target[i]
            if auto_pad == "SAME_UPPER":
                p[i], p[i + nd] = total // 2, total - total // 2
            else:
                p[i], p[i + nd] = total - total // 2, total // 2
    grow = any(v < 0 for v in p)
    if p[:nd] == p[nd:] and not grow:
        return getattr(F, f"conv_transpose{nd}d")(X, W, B, s, p[:nd], op_, group, d)
    y = getattr(F, f"conv_transpose{nd}d")(X, W, None if grow else B, s, 0, op_, group, d)
    y = F.pad(y, [-v for v in _torch_pad(p)])
    if grow and B is not None:  # the extended border has no input contribution, only the bias
        y = y + B.reshape([1, -1] + [1] * nd)
    return y


@op("gemm", inputs=[In("A"), In("B"), In("C", optional=True)],
    attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}, category="matmul", flops=gemm_flops,
    weight_inputs=(1, 2))
def gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    if transA:
        A = A.t()
    if C is not None and transB and alpha == 1.0 and beta == 1.0:
        return F.linear(A, B, C)
    y = A @ (B.t() if transB else B)
    if alpha != 1.0:
        y = y * alpha
    if C is not None:
        y = y + (C * beta if beta != 1.0 else C)
    return y


@op("matmul", onnx="MatMul", inputs=[In("A"), In("B")], category="matmul", flops=matmul_flops,
    weight_inputs=(1,))
def matmul(A, B):
    return torch.matmul(A, B)


@op("einsum", inputs=[In("Inputs", variadic=True)], attrs={"equation": None}, category="matmul", onnx_min_opset=12)
def einsum(*Inputs, equation=None):
    return torch.einsum(equation, *Inputs)


# ----------------------------------------------------------------------------------------------- normalization
@op("batch_norm", onnx="BatchNormalization",
    inputs=[In("X"), In("scale"), In("B"), In("input_mean"), In("input_var")],
    attrs={"epsilon": 1e-5, "momentum": 0.9}, category="norm", flops=input_numel_flops(2),
    weight_inputs=(1, 2), foldable=False)
def batch_norm(X, scale, B, input_mean, input_var, *, epsilon=1e-5, momentum=0.9, training=False):
    """``momentum`` uses ONNX's convention (running = running*momentum + batch*(1-momentum))."""
    return F.batch_norm(X, input_mean, input_var, scale, B, training, 1.0 - momentum, epsilon)


@op("instance_norm", onnx="InstanceNormalization", inputs=[In("input"), In("scale"), In("B")],
    attrs={"epsilon": 1e-5}, category="norm", flops=input_numel_flops(5), weight_inputs=(1, 2))
def instance_norm(input, scale, B, *, epsilon=1e-5):
    return F.instance_norm(input, None, None, scale, B, True, 0.0, epsilon)


@op("layer_norm", onnx="LayerNormalization", inputs=[In("X"), In("Scale"), In("B", optional=True)],
    attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1}, category="norm", flops=input_numel_flops(5),
    weight_inputs=(1, 2), onnx_min_opset=17)
def layer_norm(X, Scale, B=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    axis = axis % X.dim()
    shape = list(X.shape[axis:])
    if list(Scale.shape) == shape and (B is None or list(B.shape) == shape):
        return F.layer_norm(X, shape, Scale, B, epsilon)
    y = F.layer_norm(X, shape, None, None, epsilon) * Scale
    return y + B if B is not None else y


@op("group_norm", onnx="GroupNormalization", inputs=[In("X"), In("scale"), In("bias")],
    attrs={"epsilon": 1e-5, "num_groups": None, "stash_type": 1}, category="norm",
    flops=input_numel_flops(5), weight_inputs=(1, 2), onnx_min_opset=21)
def group_norm(X, scale, bias, *, epsilon=1e-5, num_groups=None, stash_type=1):
    return F.group_norm(X, num_groups, scale, bias, epsilon)


@op("lrn", onnx="LRN", inputs=[In("X")], attrs={"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": None},
    category="norm", flops=input_numel_flops(4))
def lrn(X, *, alpha=1e-4, beta=0.75, bias=1.0, size=None):
    return F.local_response_norm(X, size, alpha, beta, bias)


@op("softmax", inputs=[In("input")], attrs={"axis": -1}, category="softmax", flops=input_numel_flops(5))
def softmax(input, *, axis=-1):
    return torch.softmax(input, axis)


@op("log_softmax", onnx="LogSoftmax", inputs=[In("input")], attrs={"axis": -1}, category="softmax",
    flops=input_numel_flops(5))
def log_softmax(input, *, axis=-1):
    return torch.log_softmax(input, axis)


@op("dropout", inputs=[In("data")], attrs={"ratio": 0.5}, category="memory", foldable=False)
def dropout(data, *, ratio=0.5, training=False):
    return F.dropout(data, ratio, training)


# ---------------------------------------------------------------------------------------------------- pooling
POOL_ATTRS = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None, "pads": None,
              "strides": None}


@op("max_pool", onnx="MaxPool", inputs=[In("X")], attrs={**POOL_ATTRS, "storage_order": 0}, category="pool",
    flops=pool_flops)
def max_pool(X, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None, strides=None,
             storage_order=0):
    nd = X.dim() - 2
    k = list(kernel_shape)
    s, d = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    p = _spatial_pads(X, k, s, d, pads, auto_pad)
    if p[:nd] == p[nd:] and all(p[i] * 2 <= (k[i] - 1) * d[i] + 1 for i in range(nd)):
        return getattr(F, f"max_pool{nd}d")(X, k, s, p[:nd], d, ceil_mode=bool(ceil_mode))
    X = F.pad(X, _torch_pad(p), value=-math.inf)
    return getattr(F, f"max_pool{nd}d")(X, k, s, 0, d, ceil_mode=bool(ceil_mode))


@op("avg_pool", onnx="AveragePool", inputs=[In("X")], attrs={**POOL_ATTRS, "count_include_pad": 0},
    category="pool", flops=pool_flops)
def avg_pool(X, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None, strides=None,
             count_include_pad=0):
    nd = X.dim() - 2
    k = list(kernel_shape)
    s, d = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    p = _spatial_pads(X, k, s, d, pads, auto_pad)
    if p[:nd] == p[nd:] and all(p[i] * 2 <= k[i] for i in range(nd)) and all(x == 1 for x in d):
        return getattr(F, f"avg_pool{nd}d")(X, k, s, p[:nd], bool(ceil_mode), bool(count_include_pad))
    y = getattr(F, f"avg_pool{nd}d")(F.pad(X, _torch_pad(p)), k, s, 0, bool(ceil_mode), True)
    if count_include_pad:
        return y
    ones = torch.ones((1, 1, *X.shape[2:]), dtype=X.dtype, device=X.device)
    return y / getattr(F, f"avg_pool{nd}d")(F.pad(ones, _torch_pad(p)), k, s, 0, bool(ceil_mode), True)


@op("global_avg_pool", onnx="GlobalAveragePool", inputs=[In("X")], category="pool", flops=input_numel_flops())
def global_avg_pool(X):
    return X.mean(dim=list(range(2, X.dim())), keepdim=True)


@op("global_max_pool", onnx="GlobalMaxPool", inputs=[In("X")], category="pool", flops=input_numel_flops())
def global_max_pool(X):
    return X.amax(dim=list(range(2, X.dim())), keepdim=True)


def _col2im_flops(node):  # noqa: ANN001, ANN202 - Node -> int | None
    """Overlapping blocks are summed: one add per input element."""
    from ..cost import _numel

    return _numel(node.inputs[0].shape) if node.inputs[0] is not None else None


@op("col2im", onnx="Col2Im", inputs=[In("input"), In("image_shape", static=True), In("block_shape", static=True)],
    attrs={"dilations": None, "pads": None, "strides": None}, category="memory", flops=_col2im_flops,
    onnx_min_opset=18)
def col2im(input, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    """ONNX Col2Im (torch's ``fold``): rearranges ``[N, C * prod(block), L]`` columns of sliding blocks into an
    ``[N, C, *image_shape]`` image, summing where blocks overlap. Two spatial dims (torch's fold); ONNX's
    ``pads`` may differ at the two ends (the image is folded padded, then cropped)."""
    size = [int(s) for s in image_shape]
    k = [int(s) for s in block_shape]
    nd = len(size)
    if nd != 2:
        raise NotImplementedError(f"Col2Im with {nd} spatial dims: graphopt folds 2-D images only "
                                  "(torch.nn.functional.fold)")
    d, s, p = _ints(dilations, nd, 1), _ints(strides, nd, 1), _ints(pads, 2 * nd, 0)
    padded = [size[i] + p[i] + p[i + nd] for i in range(nd)]
    out = F.fold(input, padded, k, dilation=d, padding=0, stride=s)
    return out[..., p[0]:p[0] + size[0], p[1]:p[1] + size[1]]


# ------------------------------------------------------------------------------------------------- resampling
def _resize_coords(n_out, n_in, scale, ctm, device):
    """ONNX Resize: original coordinate of every output index along one axis, in float32 arithmetic with a
    float32 scale (``out/in`` when ``sizes`` were given), as onnxruntime computes it -- ties such as 3.5
    then round the same way."""
    x = torch.arange(n_out, dtype=torch.float32, device=device)
    if scale is None:  # sizes given: the float32 ratio out/in
        s = torch.tensor(n_out, dtype=torch.float32, device=device) / torch.tensor(n_in, dtype=torch.float32,
                                                                                    device=device)
    else:
        s = torch.tensor(scale, dtype=torch.float32, device=device)
    if ctm == "align_corners":
        return x * (n_in - 1) / (n_out - 1) if n_out > 1 else torch.zeros_like(x)
    if ctm == "asymmetric":
        return x / s
    if ctm == "half_pixel":
        return (x + 0.5) / s - 0.5
    if ctm == "pytorch_half_pixel":
        return (x + 0.5) / s - 0.5 if n_out > 1 else torch.zeros_like(x)
    if ctm == "tf_half_pixel_for_nn":
        return (x + 0.5) / s
    raise NotImplementedError(f"resize coordinate_transformation_mode={ctm} is not supported")


@op("resize", inputs=[In("X"), In("roi", optional=True, static=True), In("scales", optional=True, static=True),
                      In("sizes", optional=True, static=True)],
    attrs={"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
           "nearest_mode": "round_prefer_floor", "cubic_coeff_a": -0.75, "exclude_outside": 0,
           "extrapolation_value": 0.0, "antialias": 0, "axes": None, "keep_aspect_ratio_policy": "stretch"},
    category="resize", onnx_min_opset=11)
def resize(X, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
           nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0,
           antialias=0, axes=None, keep_aspect_ratio_policy="stretch"):
    """Nearest and (bi/tri)linear follow ONNX exactly for every coordinate mode (separable index/lerp along
    each spatial axis); cubic uses F.interpolate where it matches (half_pixel, align_corners)."""
    nd = X.dim() - 2
    ctm = coordinate_transformation_mode
    spatial = list(range(2, X.dim()))
    if (axes is not None and [a % X.dim() for a in axes] != spatial) or keep_aspect_ratio_policy != "stretch":
        raise NotImplementedError("resize with axes / keep_aspect_ratio_policy is not supported")
    n_in = list(X.shape[2:])
    if sizes is not None and len(sizes) > 0:
        n_out = [int(v) for v in list(sizes)[-nd:]]
        sc = [o / i for o, i in zip(n_out, n_in, strict=True)]
    else:
        sc = [float(v) for v in list(scales)[-nd:]]
        # floor(in * scale) in float32, as onnxruntime (3 * 1.6666666f is 5.0 in float32, 4.99.. in float64)
        f32 = torch.float32
        n_out = [int(torch.floor(torch.tensor(float(i), dtype=f32, device="cpu")
                                 * torch.tensor(s, dtype=f32, device="cpu"))) for i, s in zip(n_in, sc, strict=True)]
    given = None if sizes is not None and len(sizes) > 0 else sc
    if mode == "cubic" or (mode == "linear" and antialias and any(s < 1 for s in sc)):
        tmode = "bicubic" if mode == "cubic" else {1: "linear", 2: "bilinear", 3: "trilinear"}[nd]
        if ctm == "pytorch_half_pixel" and min(n_out) > 1:
            ctm = "half_pixel"
        if ctm in ("align_corners", "half_pixel") and cubic_coeff_a == -0.75 and not exclude_outside:
            return F.interpolate(X, size=None if given else n_out, scale_factor=given, mode=tmode,  # given scale kept
                                 align_corners=ctm == "align_corners", antialias=bool(antialias))
        raise NotImplementedError(f"resize mode={mode} coordinate_transformation_mode={ctm} "
                                  f"cubic_coeff_a={cubic_coeff_a} antialias={antialias} is not supported")
    if mode == "linear" and not antialias and nd <= 3:
        # Fast path (training speed, e.g. HRNet upsampling): F.interpolate computes the same coordinates for
        # these modes as long as it derives the same output size (it floors in float64, onnxruntime in float32).
        pt = ctm == "pytorch_half_pixel" and min(n_out) > 1
        same_size = given is None or all(int(i * s) == o for i, s, o in zip(n_in, sc, n_out, strict=True))
        if (ctm in ("align_corners", "half_pixel") or pt) and same_size:
            return F.interpolate(X, size=None if given else n_out, scale_factor=given,
                                 mode={1: "linear", 2: "bilinear", 3: "trilinear"}[nd],
                                 align_corners=ctm == "align_corners")
    if mode not in ("nearest", "linear"):
        raise NotImplementedError(f"resize mode={mode} is not supported")
    out = X
    for a in range(nd):
        if n_out[a] == n_in[a] and sc[a] == 1.0:
            continue
        c = _resize_coords(n_out[a], n_in[a], None if given is None else sc[a], ctm, X.device)
        if mode == "nearest":
            if nearest_mode == "round_prefer_floor":
                r = torch.ceil(c - 0.5)
            elif nearest_mode == "round_prefer_ceil":
                r = torch.floor(c + 0.5)
            elif nearest_mode == "floor":
                r = torch.floor(c)
            else:
                r = torch.ceil(c)
            idx = r.clamp(0, n_in[a] - 1).to(torch.int64)
            out = torch.index_select(out, 2 + a, idx)
        else:
            c = c.clamp(0, n_in[a] - 1)
            i0 = c.floor().to(torch.int64)
            i1 = (i0 + 1).clamp(max=n_in[a] - 1)
            shape = [1] * X.dim()
            shape[2 + a] = -1
            w = (c - i0.to(c.dtype)).reshape(shape).to(X.dtype)
            lo = torch.index_select(out, 2 + a, i0)
            hi = torch.index_select(out, 2 + a, i1)
            out = lo + (hi - lo) * w
    return out


@op("depth_to_space", onnx="DepthToSpace", inputs=[In("input")], attrs={"blocksize": None, "mode": "DCR"},
    category="shape")
def depth_to_space(input, *, blocksize=None, mode="DCR"):
    if mode == "CRD":
        return F.pixel_shuffle(input, blocksize)
    b, c, h, w = input.shape
    x = input.reshape(b, blocksize, blocksize, c // (blocksize * blocksize), h, w)
    x = x.permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c // (blocksize * blocksize), h * blocksize, w * blocksize)


@op("space_to_depth", onnx="SpaceToDepth", inputs=[In("input")], attrs={"blocksize": None}, category="shape")
def space_to_depth(input, *, blocksize=None):
    b, c, h, w = input.shape
    x = input.reshape(b, c, h // blocksize, blocksize, w // blocksize, blocksize)
    x = x.permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, c * blocksize * blocksize, h // blocksize, w // blocksize)


# --------------------------------------------------------------------------------------------- quantization
@op("quantize_linear", onnx="QuantizeLinear",
    inputs=[In("x"), In("y_scale"), In("y_zero_point", optional=True)], attrs={"axis": 1, "saturate": 1,
                                                                             "block_size": 0, "output_dtype": 0},
    category="quant", onnx_min_opset=13, foldable=False)
def quantize_linear(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0, output_dtype=0):
    """Saturates to the zero point's integer type (uint8 by default, or ``output_dtype`` given as an ONNX type
    code); per-tensor, per-axis (1-D scale) or blocked (``block_size``) scales; round half to even."""
    dt = y_zero_point.dtype if y_zero_point is not None else {3: torch.int8, 5: torch.int16, 6: torch.int32}.get(
        output_dtype, torch.uint8)
    info = torch.iinfo(dt)
    y_scale, y_zero_point = _q_params(y_scale, y_zero_point, x, axis, block_size)
    zp = y_zero_point.to(torch.int32) if y_zero_point is not None else 0
    return torch.clamp(torch.round(x / y_scale) + zp, info.min, info.max).to(dt)


def _q_params(scale, zero_point, x, axis, block_size):
    """Scale and zero point broadcastable to ``x``: per axis (1-D) or blocked (repeated ``block_size`` times
    along ``axis``)."""
    if block_size:
        ax = axis % x.dim()
        n = x.shape[ax]
        scale = scale.repeat_interleave(block_size, dim=ax).narrow(ax, 0, n)
        if zero_point is not None:
            zero_point = zero_point.repeat_interleave(block_size, dim=ax).narrow(ax, 0, n)
    elif scale.dim() == 1 and scale.numel() > 1:
        scale = _bcast_axis(scale, x, axis)
        zero_point = _bcast_axis(zero_point, x, axis) if zero_point is not None else None
    return scale, zero_point


@op("dequantize_linear", onnx="DequantizeLinear",
    inputs=[In("x"), In("x_scale"), In("x_zero_point", optional=True)], attrs={"axis": 1, "block_size": 0},
    category="quant", onnx_min_opset=13, foldable=False)
def dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0):
    x_scale, x_zero_point = _q_params(x_scale, x_zero_point, x, axis, block_size)
    zp = x_zero_point.to(torch.float32) if x_zero_point is not None else 0.0
    return ((x.to(torch.float32) - zp) * x_scale).to(x_scale.dtype)
