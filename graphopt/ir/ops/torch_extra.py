"""Ops the PyTorch frontend needs that have no single ONNX opset-18 counterpart.

``silu`` (x * sigmoid(x), a.k.a. swish) is kept as one op instead of ``sigmoid`` + ``mul`` because it is one
fused kernel in PyTorch and one tokenizable activation for the search passes. ONNX has no ``Silu`` op, so it is
registered with ``onnx=None``: the ONNX backend is expected to emit ``Sigmoid`` + ``Mul`` for it (through
``registry.set_onnx_export``), and the ONNX frontend never produces it.
"""

import torch.nn.functional as F

from ..registry import In, op


@op("silu", onnx=None, inputs=[In("X")], category="activation")
def silu(X):
    """SiLU / swish: ``X * sigmoid(X)``."""
    return F.silu(X)
