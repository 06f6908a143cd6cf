"""Every PyTorch operator's own test samples (torch's OpInfo database: float32, CPU, first sample) lowered with
``from_torch`` and run from the emitted module: the result must equal PyTorch's, or the op must be refused with a
user-facing error (UnsupportedOpError / LoweringError / an unsupported dtype). A silent mismatch or any other
exception is a bug. The first sweep found two: ``F.batch_norm(training=True)`` in an eval-mode model and the norm
of a 0-d tensor, both lowered to something else without a word."""

from __future__ import annotations

import warnings

import pytest
import torch

from graphopt.backends.torch import to_torch
from graphopt.errors import USER_ERRORS
from graphopt.frontends.torch import from_torch

common = pytest.importorskip("torch.testing._internal.common_methods_invocations",
                             reason="torch's OpInfo database needs the expecttest package (a dev dependency)")

# random or uninitialised outputs: nothing to compare
NONDETERMINISTIC = ("empty", "rand", "normal", "uniform", "bernoulli", "cauchy", "exponential", "geometric",
                    "log_normal", "multinomial", "dropout", "randint", "new_empty")


def _samples() -> list:
    out = []
    for info in common.op_db:
        if any(k in info.name for k in NONDETERMINISTIC) or not info.supports_dtype(torch.float32, "cpu"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                si = next(iter(info.sample_inputs("cpu", torch.float32, requires_grad=False)))
        except Exception:  # noqa: BLE001 - torch's own sample generator failing is not our concern
            continue
        args = [si.input, *si.args]
        if (not isinstance(si.input, torch.Tensor) or any(isinstance(v, torch.Tensor) for v in si.kwargs.values())
                or any(isinstance(a, list | tuple) and any(isinstance(t, torch.Tensor) for t in a) for a in args)):
            continue
        out.append(pytest.param(info, si, id=f"{info.name}.{info.variant_test_name}".rstrip(".")))
    return out


SAMPLES = _samples()


def _module(info, si):  # noqa: ANN001, ANN202
    args = [si.input, *si.args]
    idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    class Op(torch.nn.Module):
        def forward(self, *ts: torch.Tensor):  # noqa: ANN202
            a = list(args)
            for i, t in zip(idx, ts, strict=True):
                a[i] = t
            return info.op(*a, **si.kwargs)

    return Op().eval(), [args[i] for i in idx]


@pytest.mark.parametrize(("info", "si"), SAMPLES)
def test_opinfo_sample_lowers_exactly_or_is_refused_clearly(info, si):
    m, tensors = _module(info, si)
    try:
        with torch.no_grad():
            want = m(*tensors)
    except Exception:  # noqa: BLE001 - the sample does not run eagerly either
        pytest.skip("the sample fails in eager PyTorch")
    if (not isinstance(want, torch.Tensor) or want.dtype.is_complex or want.numel() == 0
            or any(t.dtype.is_complex for t in tensors)):
        pytest.skip("not a real-valued tensor result")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = from_torch(m, tuple(tensors))
            got = to_torch(g).eval()(*tensors)
    except USER_ERRORS:
        return  # refused with a message that names the op (checked elsewhere): fine
    got = got[0] if isinstance(got, tuple | list) else got
    assert got.shape == want.shape, f"{info.name}: shape {tuple(got.shape)} vs PyTorch's {tuple(want.shape)}"
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-3, atol=1e-4, equal_nan=True)


def test_the_sweep_covers_hundreds_of_ops():
    assert len(SAMPLES) > 450
