"""ONNX round trips on the models shipped with the ``onnx`` package.

* The 9 ONNX Model Zoo "light" graphs (weights replaced by ``ConstantOfShape``): import, every value typed,
  re-export, onnxruntime on the original vs the re-export (and vs the emitted PyTorch module) on a seeded
  random input, and the re-export vs the shipped ``*_output_0.pb``. That reference was produced by onnx's
  backend test runner from ``generate_dummy_data(random=False)``: ``arange(n).reshape(shape) / n`` in float32
  (onnx/backend/test/runner/__init__.py).
* The 117 PyTorch-exported models under ``pytorch-converted/`` and ``pytorch-operator/`` (opsets 6-12, legacy
  forms): import, re-export, onnxruntime on the shipped inputs vs the shipped outputs, and the same check for
  the PyTorch module emitted by ``graphopt.backends.torch``. Each model is its own test id; the failures and
  their reasons are listed in docs/coverage.md, which ``GRAPHOPT_WRITE_COVERAGE=1 pytest
  tests/frontends/test_onnx_corpus.py`` regenerates from a run (and the count test checks it is current).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from graphopt.backends.onnx import to_onnx
from graphopt.frontends.onnx import FOLD_MAX_ELEMENTS, load_onnx
from graphopt.ir.verify import verify

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
LIGHT = sorted((DATA / "light").glob("*.onnx"))
CORPUS = sorted(p.parent for p in DATA.glob("pytorch-*/*/model.onnx"))
CORPUS_IDS = [f"{p.parent.name}/{p.name}" for p in CORPUS]
MIN_PASSING = 110
RTOL, ATOL = 1e-4, 1e-5
TOLERANCE: dict[str, tuple[float, float]] = {}
"""Per-model (rtol, atol) where the shipped reference has known low precision; none is needed today."""
COVERAGE_DOC = Path(__file__).resolve().parents[2] / "docs" / "coverage.md"


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models on a shared 2-core box: thread hand-offs cost more than they save."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _session(model) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def _close(got: np.ndarray, want: np.ndarray, rtol: float, atol: float, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape} != reference {want.shape}")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# -------------------------------------------------------------------------------------------- light models
@pytest.mark.parametrize("path", LIGHT, ids=[p.stem for p in LIGHT])
def test_light_model_round_trip(path: Path):
    g = load_onnx(path)
    untyped = [v.name for v in g.values() if v.type is None]
    assert not untyped, f"values without a type: {untyped[:5]}"
    verify(g)
    assert not any(n.op == "constant_of_shape" and n.output.type.numel() <= FOLD_MAX_ELEMENTS for n in g.nodes), \
        "ConstantOfShape weights under the folding limit must be constants"
    assert any(v.kind == "param" for v in g.constants.values())

    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    shape = list(g.inputs[0].shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    orig, new = _session(path), _session(model)
    want = orig.run(None, {orig.get_inputs()[0].name: x})
    got = new.run(None, {new.get_inputs()[0].name: x})
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        _close(a, b, RTOL, ATOL, f"{path.stem}: re-export vs original")

    from graphopt.backends.torch import to_torch

    with torch.no_grad():
        res = to_torch(g).eval()(torch.from_numpy(x))
    res = list(res) if isinstance(res, tuple | list) else [res]
    for a, b in zip(res, want, strict=True):
        _close(a.numpy(), b, RTOL, ATOL, f"{path.stem}: emitted PyTorch module vs original")

    ref_file = path.with_name(f"{path.stem}_output_0.pb")
    n = int(np.prod(shape))
    dummy = (np.arange(n).reshape(shape) / n).astype(np.float32)
    ref = numpy_helper.to_array(onnx.load_tensor(str(ref_file)))
    _close(new.run(None, {new.get_inputs()[0].name: dummy})[0], ref, RTOL, ATOL,
           f"{path.stem}: re-export vs shipped {ref_file.name}")


# ------------------------------------------------------------------------------------ pytorch-exported corpus
def _load_case(d: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ds = d / "test_data_set_0"
    ins = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(ds.glob("input_*.pb"),
                                                                          key=lambda p: int(p.stem.split("_")[1]))]
    outs = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(ds.glob("output_*.pb"),
                                                                           key=lambda p: int(p.stem.split("_")[1]))]
    return ins, outs


def _check_case(d: Path) -> None:
    """Raise AssertionError (or the import/export error) when the model does not round-trip."""
    from graphopt.backends.torch import to_torch

    key = f"{d.parent.name}/{d.name}"
    rtol, atol = TOLERANCE.get(key, (RTOL, ATOL))
    g = load_onnx(d / "model.onnx")
    untyped = [v.name for v in g.values() if v.type is None]
    assert not untyped, f"values without a type: {untyped[:5]}"
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    ins, refs = _load_case(d)
    sess = _session(model)
    assert len(sess.get_inputs()) == len(ins), "input count differs from the shipped test data"
    outs = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), ins, strict=True)})
    assert len(outs) == len(refs), f"{len(outs)} outputs, reference has {len(refs)}"
    for k, (a, b) in enumerate(zip(outs, refs, strict=True)):
        _close(a, b, rtol, atol, f"onnxruntime on the re-export, output {k}")
    module = to_torch(g).eval()
    with torch.no_grad():
        res = module(*[torch.from_numpy(np.array(x)) for x in ins])
    res = list(res) if isinstance(res, tuple | list) else [res]
    assert len(res) == len(refs)
    for k, (a, b) in enumerate(zip(res, refs, strict=True)):
        _close(a.numpy(), b, rtol, atol, f"emitted PyTorch module, output {k}")


@functools.cache
def _result(d: Path) -> str | None:
    """None when the model passes, else the reason (first line of the error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _check_case(d)
        except Exception as e:  # noqa: BLE001 - recorded as the failure reason
            msg = " ".join(str(e).split())
            return f"{type(e).__name__}: {msg[:300]}"
    return None


@pytest.mark.parametrize("case", CORPUS, ids=CORPUS_IDS)
def test_corpus_model(case: Path):
    reason = _result(case)
    if reason is not None:
        pytest.fail(reason)


def test_corpus_pass_count_and_coverage_doc():
    assert len(CORPUS) == 117, f"expected 117 pytorch-converted/pytorch-operator models, found {len(CORPUS)}"
    results = {k: _result(d) for k, d in zip(CORPUS_IDS, CORPUS, strict=True)}
    failures = {k: r for k, r in results.items() if r is not None}
    passed = len(results) - len(failures)
    if os.environ.get("GRAPHOPT_WRITE_COVERAGE"):
        _write_coverage(results)
    assert passed >= MIN_PASSING, f"{passed}/{len(results)} pass; failures: {failures}"
    doc = COVERAGE_DOC.read_text()
    assert f"**{passed}/{len(results)}**" in doc, "docs/coverage.md is stale: regenerate it (see module docstring)"
    for k in failures:
        assert f"`{k}`" in doc, f"docs/coverage.md does not list the failure {k}"


def _write_coverage(results: dict[str, str | None]) -> None:
    import collections

    ops: collections.Counter[str] = collections.Counter()
    opsets: collections.Counter[int] = collections.Counter()
    for d in CORPUS:
        m = onnx.load(str(d / "model.onnx"), load_external_data=False)
        ops.update({n.op_type for n in m.graph.node})
        opsets.update(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    failures = {k: r for k, r in results.items() if r is not None}
    passed = len(results) - len(failures)
    lines = [
        "# ONNX import/export coverage",
        "",
        "Generated by `GRAPHOPT_WRITE_COVERAGE=1 pytest tests/frontends/test_onnx_corpus.py` (do not edit by hand).",
        "",
        "Corpus: the models shipped in the `onnx` package under `backend/test/data/pytorch-converted` and",
        "`pytorch-operator`. Each is imported with `graphopt.frontends.onnx.load_onnx`, re-exported with",
        "`graphopt.backends.onnx.to_onnx` (opset 18, `onnx.checker` full check), run in onnxruntime on the shipped",
        "inputs and compared with the shipped outputs; the PyTorch module emitted by `graphopt.backends.torch`",
        f"must reproduce the same outputs. Tolerance: rtol {RTOL:g}, atol {ATOL:g}"
        + (f" (per-model overrides: {TOLERANCE})." if TOLERANCE else " for every model (no overrides)."),
        "",
        f"Result: **{passed}/{len(results)}** pass. The 9 ONNX Model Zoo light graphs (`backend/test/data/light`) are "
        "tested separately (re-export vs original in onnxruntime, and vs the shipped output).",
        "",
        "Opsets in the corpus: " + ", ".join(f"{v} ({c} models)" for v, c in sorted(opsets.items())) + ".",
        "",
        "ONNX op types in the corpus (models using each): "
        + ", ".join(f"{k} ({c})" for k, c in sorted(ops.items())) + ".",
        "",
        "## Failures",
        "",
    ]
    if failures:
        lines += ["| model | reason |", "| --- | --- |"]
        lines += [f"| `{k}` | {r.replace('|', '/')} |" for k, r in sorted(failures.items())]
    else:
        lines.append("None.")
    lines += ["", "## All models", "", "| model | result |", "| --- | --- |"]
    lines += [f"| `{k}` | {'pass' if r is None else 'FAIL'} |" for k, r in results.items()]
    COVERAGE_DOC.write_text("\n".join(lines) + "\n")
