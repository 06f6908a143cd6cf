"""PyTorch lowering cases found by sweeping torch's OpInfo samples through ``from_torch``: forced batch
statistics in an eval-mode model, and adaptive average pooling with uneven windows. Checked against the
PyTorch module itself and, for the export, onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphopt.backends.onnx import to_onnx
from graphopt.backends.torch import to_torch
from graphopt.frontends.torch import from_torch


class _ForcedBatchStats(nn.Module):
    """Test-time normalization: ``F.batch_norm(training=True)`` inside a model that is in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("rm", torch.zeros(5))
        self.register_buffer("rv", torch.ones(5))
        self.w = nn.Parameter(torch.randn(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.rm, self.rv, self.w, None, training=True, momentum=0.5, eps=0.6)


def test_batch_norm_forced_to_batch_statistics_in_eval_mode_is_kept():
    """It was lowered to the IR's batch_norm, which uses the running statistics in eval mode: silently wrong."""
    torch.manual_seed(0)
    m = _ForcedBatchStats().eval()
    x = torch.randn(4, 5, 3) * 3 + 2
    g = from_torch(m, (x,))
    with torch.no_grad():
        want = m(x)
    np.testing.assert_allclose(to_torch(g).eval()(x).detach().numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert "batch_norm" not in {n.op for n in g.nodes}
    # an ordinary BatchNorm module in eval mode still becomes one foldable batch_norm node
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    assert [n.op for n in from_torch(bn, (torch.randn(2, 3, 8, 8),)).nodes] == ["conv", "batch_norm"]


@pytest.mark.parametrize(("shape", "out"), [((2, 3, 8, 8), (5, 7)), ((2, 3, 13, 9), (6, 2)), ((2, 4, 10), (4,)),
                                            ((3, 7, 7), (5, 5)), ((2, 8, 12, 12), (3, 3))])
def test_adaptive_avg_pool_with_uneven_windows(shape, out):
    """Refused before ("only global pooling or integer ratios"); VGG/AlexNet heads at other resolutions and
    PSPNet's pyramid bins need it. Lowered to constant matmuls (exact); integer ratios stay one avg_pool."""
    torch.manual_seed(1)
    pool = nn.AdaptiveAvgPool2d(out) if len(out) == 2 else nn.AdaptiveAvgPool1d(out)
    m = nn.Sequential(pool).eval()
    x = torch.randn(*shape)
    g = from_torch(m, (x,), dynamic_batch=len(shape) == 4 or (len(shape) == 3 and len(out) == 1))
    with torch.no_grad():
        want = m(x).numpy()
    np.testing.assert_allclose(to_torch(g).eval()(x).detach().numpy(), want, rtol=1e-5, atol=1e-6)
    ops = [n.op for n in g.nodes]
    even = all(i % o == 0 for i, o in zip(shape[-len(out):], out, strict=True))
    assert ops == ["avg_pool"] if even else set(ops) == {"matmul"}
    sess = ort.InferenceSession(to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], want, rtol=1e-5, atol=1e-6)


MATH = {"asin": torch.asin, "acos": torch.acos, "atan": torch.atan, "sinh": torch.sinh, "cosh": torch.cosh,
        "asinh": torch.asinh, "acosh": lambda x: torch.acosh(x + 2), "atanh": torch.atanh,
        "trunc": lambda x: torch.trunc(x * 5), "exp2": torch.exp2}


@pytest.mark.parametrize("name", sorted(MATH))
def test_inverse_and_hyperbolic_math_lower_and_export(name):
    """aten.acos & co. had no lowering (ONNX has the ops); trunc and exp2 lower to sign/floor/abs and pow."""
    fn = MATH[name]

    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return fn(x)

    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(2)) * 1.8 - 0.9
    g = from_torch(M(), (x,))
    want = fn(x).numpy()
    np.testing.assert_allclose(to_torch(g)(x).numpy(), want, rtol=1e-6, atol=1e-6)
    sess = ort.InferenceSession(to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], want, rtol=1e-5, atol=1e-6)
