"""Numerical comparison of two models: ``graphopt.verify(reference, candidate)``.

Either side may be an ``nn.Module``, an IR ``Graph`` (run through the PyTorch backend), an ``onnx.ModelProto``
or a path to an ``.onnx`` file (run in onnxruntime). Inputs are generated from the graph's input types when
not given (seeded; symbolic dims get ``sym_value``), so a rewrite can be checked without a dataset.

Errors are judged against each output's scale, ``max|reference|``: float32 rounding grows with the magnitudes a
network sums, not with each output element's own size, so an element-wise ``allclose`` refuses correct models
whose outputs have near-zero entries (a converted DeepLabV3 was refused for errors of 1.7e-5 on entries ~1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .ir.graph import Graph
from .ir.types import DType, TensorType

RTOL = 1e-4
"""Largest error allowed, as a fraction of the output's scale max|reference|; one value for every check that a
model still computes the same (``convert``, ``export``'s fp32 check, ``transform``'s per-pass check)."""
ATOL = 1e-6
"""Absolute floor added to ``RTOL * scale``, for outputs that are (almost) all zero."""
APPROX_RTOL = 1e-3
"""``RTOL`` for ``export`` after an approximate NPU rewrite (Erf as tanh: ~4e-4 off per activation)."""


@dataclass
class OutputDiff:
    index: int
    name: str
    shape: tuple[int, ...]
    max_abs: float
    #: max_abs / scale: the error as a fraction of the output's scale
    max_rel: float
    ok: bool
    #: max |reference| over the output's finite entries
    scale: float = 0.0
    #: the largest max_rel this output could have had and passed (rtol + atol / scale)
    allowed_rel: float = 0.0

    def __str__(self) -> str:
        if self.allowed_rel == 0:  # bool / non-numeric: compared exactly
            return f"{self.name!r} {list(self.shape)}: {'equal' if self.ok else 'differs'} (compared exactly)"
        if self.scale == 0:
            return f"{self.name!r} {list(self.shape)}: max abs err {self.max_abs:.2g} on an all-zero output"
        return (f"{self.name!r} {list(self.shape)}: outputs up to {self.scale:.3g} in magnitude, max abs err "
                f"{self.max_abs:.2g} = {self.max_rel:.2g} of that (allowed {self.allowed_rel:.2g})")


@dataclass
class VerifyReport:
    ok: bool
    outputs: list[OutputDiff] = field(default_factory=list)
    rtol: float = RTOL
    atol: float = ATOL
    message: str = ""

    @property
    def worst(self) -> OutputDiff | None:
        """The output nearest to (or furthest past) its limit."""
        return max(self.outputs, key=lambda d: d.max_abs / (self.rtol * d.scale + self.atol or 1.0), default=None)

    def __str__(self) -> str:
        w = self.worst
        if self.message:
            return self.message
        if w is None:
            return "no outputs compared"
        if self.ok:
            return f"OK: {len(self.outputs)} output(s) match; closest to the limit: {w}"
        return f"MISMATCH: {w}"


def random_inputs(types: list[TensorType], *, seed: int = 0, sym_value: int = 2,
                  int_high: int = 10) -> list[np.ndarray]:
    """Seeded inputs matching ``types``: floats ~ N(0,1), ints in [0, int_high), bools random."""
    rng = np.random.default_rng(seed)
    out = []
    for t in types:
        shape = [d if isinstance(d, int) else sym_value for d in (t.shape or ())]
        if t.dtype.is_float:
            out.append(rng.standard_normal(shape).astype(t.dtype.to_numpy()))
        elif t.dtype is DType.bool:
            out.append(rng.integers(0, 2, shape).astype(bool))
        else:
            out.append(rng.integers(0, int_high, shape).astype(t.dtype.to_numpy()))
    return out


def prepare_model(model: Any) -> Any:
    """The runnable form of any supported model kind, built once for repeated :func:`run_model` calls: an
    eval-mode module for an IR graph, an onnxruntime session for an ONNX model or path. Why: a check that runs a
    model on several inputs would otherwise rebuild it every time (minutes for a multi-GB model)."""
    import torch

    if isinstance(model, Graph):
        from .backends.torch import to_torch

        return to_torch(model).eval()
    if isinstance(model, torch.nn.Module):
        return model
    import onnxruntime as ort

    if isinstance(model, ort.InferenceSession):
        return model
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else None
    so = ort.SessionOptions()
    so.log_severity_level = 3  # graph-cleanup warnings (unused initializers) are not the user's business here
    return ort.InferenceSession(str(model) if data is None else data, so, providers=["CPUExecutionProvider"])


def run_model(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Execute any supported model kind (or a :func:`prepare_model` result) on numpy inputs; numpy outputs."""
    import torch

    model = prepare_model(model)
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            res = model(*[torch.from_numpy(np.asarray(x).copy(order="C")) for x in inputs])
        flat = _flatten(res)
        return [t.detach().cpu().numpy() for t in flat]
    feeds = {i.name: x for i, x in zip(model.get_inputs(), inputs, strict=False)}
    return [np.asarray(o) for o in model.run(None, feeds)]


def _flatten(res: Any) -> list:
    import torch

    if isinstance(res, torch.Tensor):
        return [res]
    if isinstance(res, dict):
        return [t for v in res.values() for t in _flatten(v)]
    if isinstance(res, list | tuple):
        return [t for v in res for t in _flatten(v)]
    if hasattr(res, "to_tuple"):
        return _flatten(res.to_tuple())
    return []


def input_types_of(model: Any) -> list[TensorType] | None:
    if isinstance(model, Graph):
        return [v.type for v in model.inputs]  # type: ignore[misc]
    if isinstance(model, str | Path) or hasattr(model, "graph"):
        import onnx

        m = onnx.load(str(model), load_external_data=False) if isinstance(model, str | Path) else model
        inits = {i.name for i in m.graph.initializer}
        types = []
        for i in m.graph.input:
            if i.name in inits:
                continue
            tt = i.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
            types.append(TensorType(DType.from_any(tt.elem_type), tuple(dims)))
        return types
    return None


def verify(reference: Any, candidate: Any, inputs: list | tuple | None = None, *, rtol: float = RTOL,
           atol: float = ATOL, seed: int = 0, reference_outputs: list[np.ndarray] | None = None) -> VerifyReport:
    """Compare outputs of two models; ``report.ok`` and ``str(report)`` name the worst output tensor.

    An output passes when ``max|reference - candidate| <= rtol * max|reference| + atol`` (an ``allclose`` on the
    outputs divided by their scale; see the module docstring for why not element-wise). NaN matches NaN.

    ``reference_outputs``: the reference's outputs on ``inputs``, computed earlier (then ``reference`` is not run,
    so a caller can free a large reference model before building the candidate)."""
    if inputs is None:
        types = input_types_of(candidate) or input_types_of(reference)
        if types is None:
            raise ValueError("verify() needs inputs when neither model is a Graph or ONNX model")
        inputs = random_inputs(types, seed=seed)
    np_inputs = [x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x) for x in inputs]
    ref = reference_outputs if reference_outputs is not None else run_model(reference, np_inputs)
    cand = run_model(candidate, np_inputs)
    if len(ref) != len(cand):
        return VerifyReport(False, [], rtol, atol, f"MISMATCH: reference has {len(ref)} outputs, candidate "
                                                     f"{len(cand)}")
    report = VerifyReport(True, [], rtol, atol)
    for i, (a, b) in enumerate(zip(ref, cand, strict=True)):
        name = f"output{i}"
        if a.shape != b.shape:
            report.ok = False
            report.message = f"MISMATCH: {name} shape {list(a.shape)} vs {list(b.shape)}"
            report.outputs.append(OutputDiff(i, name, a.shape, float("inf"), float("inf"), False, 0.0, float("inf")))
            continue
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
            ok = bool(np.array_equal(a, b))
            diff = 0.0 if ok else 1.0
            report.outputs.append(OutputDiff(i, name, a.shape, diff, diff, ok))
            report.ok &= ok
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        with np.errstate(invalid="ignore"):
            err = np.abs(a64 - b64)
        both_nan = (np.isnan(a64) & np.isnan(b64)) | (a64 == b64)  # equal infinities count as equal
        err[both_nan] = 0.0
        err[np.isnan(err)] = np.inf
        max_abs = float(np.max(err)) if err.size else 0.0
        finite = np.abs(a64[np.isfinite(a64)])
        scale = float(finite.max()) if finite.size else 0.0
        ok = max_abs <= rtol * scale + atol
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        allowed = rtol + atol / scale if scale > 0 else float("inf")
        report.outputs.append(OutputDiff(i, name, a.shape, max_abs, max_rel, ok, scale, allowed))
        report.ok &= ok
    return report
