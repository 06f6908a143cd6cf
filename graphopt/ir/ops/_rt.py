"""Runtime helpers shared by op implementations (copied verbatim into emitted PyTorch source)."""

import math

import torch
import torch.nn.functional as F


def _ints(v, n, default):
    """Expand an optional ONNX list attribute to ``n`` ints."""
    if v is None:
        return [default] * n
    return [int(x) for x in v]


def _pad_same(in_sizes, kernel, strides, dilations, mode):
    """ONNX auto_pad SAME_UPPER/SAME_LOWER/VALID as explicit [begins..., ends...] pads."""
    n = len(kernel)
    if mode == "VALID":
        return [0] * (2 * n)
    begins, ends = [], []
    for i in range(n):
        out = math.ceil(in_sizes[i] / strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_sizes[i], 0)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _torch_pad(pads):
    """ONNX [b1..bn, e1..en] pads to F.pad's last-dim-first pairs."""
    n = len(pads) // 2
    out = []
    for i in reversed(range(n)):
        out += [int(pads[i]), int(pads[i + n])]
    return out


def _spatial_pads(x, kernel, strides, dilations, pads, auto_pad):
    n = len(kernel)
    if auto_pad not in ("NOTSET", "", None):
        return _pad_same(list(x.shape[2:]), kernel, strides, dilations, auto_pad)
    return _ints(pads, 2 * n, 0)


def _bcast_axis(t, x, axis=1):
    """Reshape a per-channel vector so it broadcasts along ``axis`` of ``x``."""
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


_ = (torch, F)  # referenced by emitted code
