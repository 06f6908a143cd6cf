"""Histogram calibrators cannot bin +-inf (Mamba2's causal mask before exp) or the finfo.min of a Hugging Face
attention mask: quantization falls back to MinMax. Random calibration feeds all ones to a mask input."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from _helpers import run_ort, vi
from onnx import TensorProto, helper, numpy_helper

from graphopt.frontends.onnx import load_onnx
from graphopt.npu.profiles import load_profile
from graphopt.npu.quantize import CalibData, quantize_qdq, run_onnx

I64 = TensorProto.INT64


def _masked_attention() -> onnx.ModelProto:
    """scores = x @ Wq, masked with a causal -inf constant, softmax, @ Wv: the -inf reaches a quantized Add."""
    rng = np.random.default_rng(0)
    t, d = 8, 16
    wq = (rng.standard_normal((d, t)) * 0.3).astype(np.float32)
    wv = (rng.standard_normal((t, d)) * 0.3).astype(np.float32)
    mask = np.triu(np.full((t, t), -np.inf, np.float32), k=1)
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["s"]), helper.make_node("Add", ["s", "mask"], ["m"]),
             helper.make_node("Softmax", ["m"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "wv"], ["y"])]
    g = helper.make_graph(nodes, "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, t, d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, t, d])],
                          [numpy_helper.from_array(a, n) for a, n in ((wq, "wq"), (wv, "wv"), (mask, "mask"))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_entropy_calibration_of_an_inf_tensor_falls_back_to_minmax_and_says_so() -> None:
    pytest.importorskip("onnxruntime")
    fp32 = _masked_attention()
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 8, 16)).astype(np.float32)} for _ in range(32)]
    with pytest.warns(UserWarning, match="calibrated with minmax"):
        q = quantize_qdq(fp32, CalibData(feeds, None, "test"), load_profile("generic-npu-int8"), method="entropy")
    props = {p.key: p.value for p in q.metadata_props}
    assert props["graphopt.calibration_method"].startswith("minmax")
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    ref, got = run_onnx(fp32, feeds[:8]), run_onnx(q, feeds[:8])
    a, b = np.concatenate(ref).ravel(), np.concatenate(got).ravel()
    assert np.isfinite(b).all()
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_minmax_without_inf_records_the_requested_method() -> None:
    pytest.importorskip("onnxruntime")
    fp32 = _masked_attention()
    fp32.graph.initializer[2].CopyFrom(numpy_helper.from_array(np.zeros((8, 8), np.float32), "mask"))
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 8, 16)).astype(np.float32)} for i in range(16)]
    q = quantize_qdq(fp32, CalibData(feeds, None, "test"), load_profile("generic-npu-int8"), method="entropy")
    assert {p.key: p.value for p in q.metadata_props}["graphopt.calibration_method"] == "entropy"


def test_a_tensor_that_vanishes_to_denormals_falls_back_to_minmax() -> None:
    """A randomly initialized MobileViT's deep activations shrink to 1e-44, a handful of denormals: onnxruntime's
    histogram cannot split that range into 128 bins and quantize_static raised "Too many bins"; now minmax is
    used, with a warning."""
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 16)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "tiny"], ["t"]),
             helper.make_node("Add", ["t", "h"], ["y"])]
    g = helper.make_graph(nodes, "denormal", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(1e-44), "tiny")])
    fp32 = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(16)]
    with pytest.warns(UserWarning, match="could not bin"):
        q = quantize_qdq(fp32, CalibData(feeds, None, "test"), load_profile("generic-npu-int8"), method="entropy")
    assert {p.key: p.value for p in q.metadata_props}["graphopt.calibration_method"].startswith("minmax")
    ref, got = run_onnx(fp32, feeds[:8]), run_onnx(q, feeds[:8])
    a, b = np.concatenate(ref).ravel(), np.concatenate(got).ravel()
    assert np.isfinite(b).all() and np.corrcoef(a, b)[0, 1] > 0.95


def test_huge_but_finite_activations_keep_the_requested_calibration() -> None:
    """Only mask sentinels (finfo.min, beyond 1e38) are kept float: a placeholder-weight VGG-19's logits of 1e30+
    were wrongly treated as masks for a while, which left its Gemm and Softmax in float."""
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((16, 16)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "huge"], ["y"])]
    g = helper.make_graph(nodes, "huge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(1e33), "huge")])
    fp32 = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(16)]
    q = quantize_qdq(fp32, CalibData(feeds, None, "test"), load_profile("generic-npu-int8"), method="entropy")
    assert {p.key: p.value for p in q.metadata_props}["graphopt.calibration_method"] == "entropy"


def _float_min_mask_model() -> onnx.ModelProto:
    """scores + where(mask, 0, finfo.min), softmax, @ V: how Hugging Face masks attention."""
    rng = np.random.default_rng(0)
    t, d = 8, 16
    wq = (rng.standard_normal((d, t)) * 0.3).astype(np.float32)
    wv = (rng.standard_normal((t, d)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["s"]),
             helper.make_node("Cast", ["mask"], ["mb"], to=TensorProto.BOOL),
             helper.make_node("Where", ["mb", "zero", "neg"], ["bias"]),
             helper.make_node("Add", ["s", "bias"], ["m"]),
             helper.make_node("Softmax", ["m"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "wv"], ["y"])]
    g = helper.make_graph(nodes, "hfmask", [vi("x", [1, t, d]), vi("mask", [1, 1, t], I64)], [vi("y", [1, t, d])],
                          [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(wv, "wv"),
                           numpy_helper.from_array(np.zeros((), np.float32), "zero"),
                           numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "neg")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_float_min_attention_mask_is_kept_float_and_calibrated_with_minmax():
    """entropy calibration of a tensor holding -3.4e38 failed inside onnxruntime ("Too many bins")."""
    from graphopt.npu.profiles import load_profile
    from graphopt.npu.quantize import CalibData, quantize_qdq

    model = _float_min_mask_model()
    rng = np.random.default_rng(1)
    mask = np.ones((1, 1, 8), np.int64)
    mask[..., 6:] = 0
    feeds = [{"x": rng.standard_normal((1, 8, 16)).astype(np.float32), "mask": mask} for _ in range(8)]
    with pytest.warns(UserWarning, match="mask values beyond 1e38"):
        q = quantize_qdq(model, CalibData(feeds, None, "test", False, []), load_profile("generic-npu-int8"),
                         method="entropy")
    props = {p.key: p.value for p in q.metadata_props}
    assert props["graphopt.calibration_method"].startswith("minmax")
    ref, got = run_ort(model, feeds[0])[0], run_ort(q, feeds[0])[0]
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()  # quantized, still the same function


def test_random_calibration_feeds_all_ones_to_a_mask_input():
    from graphopt.npu.quantize import random_calibration

    g = load_onnx(_float_min_mask_model())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = random_calibration(g, 3)
    assert all((f["mask"] == 1).all() for f in cal.feeds)
    assert not all((f["x"] == cal.feeds[0]["x"]).all() for f in cal.feeds[1:])
