"""Dynamic-shape graphs as transformer exporters write them: a static buffer sliced to a symbolic length,
attention masks whose symbolic dims multiply past the meta run's sentinels, GatherND, float-min masks in INT8
calibration. Each case is checked against onnxruntime, and a Hugging Face BERT exported by torch.onnx end to end."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_onnx_frontend import assert_matches_ort, make_model, run_ort, vi

from graphopt.frontends.onnx import load_onnx
from graphopt.ir.registry import unsupported_message

I64 = TensorProto.INT64


def _i64(name: str, vals) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(vals, dtype=np.int64), name)


def test_static_buffer_sliced_to_a_symbolic_length_keeps_the_symbol():
    """``position_ids[:, :seq]`` on a 64-long buffer is [1, seq], not [1, 64]: the Add with [batch, seq] infers."""
    buf = np.arange(64, dtype=np.int64).reshape(1, 64) * 3
    nodes = [helper.make_node("Shape", ["x"], ["sh"], start=1, end=2),
             helper.make_node("Slice", ["buf", "zero", "sh", "one"], ["pos"]),
             helper.make_node("Add", ["x", "pos"], ["y"]),
             helper.make_node("Shape", ["x"], ["sh2"], start=1, end=2),
             helper.make_node("Slice", ["buf", "two", "sh2", "one"], ["pos2"])]  # [1, seq - 2]
    m = make_model(nodes, [vi("x", ["batch", "seq"], I64)], [vi("y", ["batch", "seq"], I64), vi("pos2", None, I64)],
                   [numpy_helper.from_array(buf, "buf"), _i64("zero", [0]), _i64("one", [1]), _i64("two", [2])])
    g = load_onnx(m)
    y = next(v for v in g.outputs if v.name == "y")
    pos2 = next(v for v in g.outputs if v.name == "pos2")
    assert y.type.shape == ("batch", "seq")
    assert pos2.type.shape[0] == 1 and isinstance(pos2.type.shape[1], str)
    x = np.arange(30, dtype=np.int64).reshape(3, 10)
    assert_matches_ort(m, {"x": x})


def test_slice_to_the_end_with_int64_max_still_clamps():
    nodes = [helper.make_node("Slice", ["x", "one", "big", "ax"], ["y"])]
    m = make_model(nodes, [vi("x", ["n", 8])], [vi("y", None)],
                   [_i64("one", [1]), _i64("big", [np.iinfo(np.int64).max]), _i64("ax", [1])])
    g = load_onnx(m)
    assert g.outputs[0].type.shape == ("n", 7)


def test_attention_mask_with_three_symbolic_dims_does_not_overflow():
    """[batch,1,seq,1] & [batch,1,1,seq] -> [batch,1,seq,seq], expanded over 12 heads: the sentinel sizes
    (~7e6 each) overflow int64; inference retries with small sentinels and keeps the symbols."""
    nodes = [helper.make_node("Unsqueeze", ["m", "ax13"], ["a"]),   # [batch, 1, seq, 1]
             helper.make_node("Unsqueeze", ["m", "ax12"], ["b"]),   # [batch, 1, 1, seq]
             helper.make_node("And", ["a", "b"], ["ab"]),             # [batch, 1, seq, seq]
             helper.make_node("Where", ["ab", "zero", "neg"], ["bias"]),
             helper.make_node("Shape", ["m"], ["b_"], start=0, end=1),
             helper.make_node("Shape", ["m"], ["s_"], start=1, end=2),
             helper.make_node("Concat", ["b_", "heads", "s_", "s_"], ["tgt"], axis=0),  # [batch, 12, seq, seq]
             helper.make_node("Expand", ["bias", "tgt"], ["y"])]
    m = make_model(nodes, [vi("m", ["batch", "seq"], TensorProto.BOOL)], [vi("y", None)],
                   [_i64("ax13", [1, 3]), _i64("ax12", [1, 2]),
                    numpy_helper.from_array(np.zeros((), np.float32), "zero"),
                    numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "neg"),
                    _i64("heads", [12])])
    g = load_onnx(m)
    shape = g.outputs[0].type.shape
    assert shape[0] == "batch" and shape[1] == 12 and shape[2] == "seq" and shape[3] == "seq"
    mask = np.random.default_rng(0).integers(0, 2, (2, 5)).astype(bool)
    assert_matches_ort(m, {"m": mask})


@pytest.mark.parametrize("batch_dims", [0, 1])
def test_gather_nd_matches_onnxruntime(batch_dims: int):
    rng = np.random.default_rng(batch_dims)
    data = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    if batch_dims == 0:
        idx = np.array([[[0, -1], [2, 3]], [[1, 0], [-3, 2]]], dtype=np.int64)  # [2, 2, 2] -> [2, 2, 5, 2]
    else:
        idx = np.array([[[1, 4]], [[3, -2]], [[0, 0]]], dtype=np.int64)  # [3, 1, 2] -> [3, 1, 2]
    m = make_model([helper.make_node("GatherND", ["d", "i"], ["y"], batch_dims=batch_dims)],
                   [vi("d", list(data.shape)), vi("i", list(idx.shape), I64)], [vi("y", None)])
    g = assert_matches_ort(m, {"d": data, "i": idx})
    assert g.nodes[0].op == "gather_nd"


def test_unsupported_op_message_suggests_a_snake_case_name():
    msg = unsupported_message("MaxRoiPoolND", node="n1")
    assert "'max_roi_pool_nd'" in msg and "onnx='MaxRoiPoolND'" in msg and "'n1'" in msg


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


def test_hugging_face_bert_exported_by_torch_onnx_loads_runs_and_quantizes(tmp_path: Path):
    """The whole path that failed: torch.onnx (dynamo) BERT with dynamic batch and sequence -> inspect (symbolic
    slice, GatherND, [batch,1,seq,seq] masks) -> emitted PyTorch vs onnxruntime -> INT8 export."""
    transformers = pytest.importorskip("transformers")
    import torch

    from graphopt.export import export_model

    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    net = transformers.BertForSequenceClassification(cfg).eval()
    ids, mask = torch.randint(0, 100, (2, 12)), torch.ones(2, 12, dtype=torch.long)
    path = tmp_path / "bert.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (ids, mask), str(path), input_names=["input_ids", "attention_mask"], dynamo=True,
                          dynamic_shapes=({0: "batch", 1: "seq"}, {0: "batch", 1: "seq"}), verbose=False)
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    feed_mask = np.ones((3, 9), np.int64)
    feed_mask[1, 5:] = 0
    feeds = {"input_ids": rng.integers(0, 100, (3, 9)), "attention_mask": feed_mask}
    g = assert_matches_ort(model, feeds, rtol=1e-4, atol=1e-5)
    assert g.outputs[0].type.shape == ("batch", 2)
    with torch.no_grad():
        want = net(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feed_mask)).logits.numpy()
    np.testing.assert_allclose(run_ort(model, feeds)[0], want, rtol=1e-4, atol=1e-5)
    # INT8: the finfo.min mask stays float (entropy calibration used to fail on it), the rest is quantized;
    # the mask arithmetic (Cast/And/GatherND/IsNaN) is no NPU op, so it is written with --allow-violations
    out, calib = tmp_path / "bert_int8.onnx", tmp_path / "calib.npz"
    lengths = rng.integers(4, 13, 16)  # padded sentences: the mask's zeros reach the finfo.min branch
    np.savez(calib, input_ids=rng.integers(0, 100, (16, 12)),
             attention_mask=(np.arange(12)[None, :] < lengths[:, None]).astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = export_model(path, out, target="generic-npu-int8", calib=str(calib), input_shapes={
                           "input_ids": [1, 12], "attention_mask": [1, 12]}, allow_violations=True,
                           calib_samples=16, eval_samples=16, latency_runs=0, min_agreement=0.75)
    assert out.exists() and rep.quantization["top1_agreement"] >= 0.75  # a tiny random-init BERT: gate at 0.75
    assert rep.quantization["calibration_method"].startswith("minmax")
    q = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 10


def test_min_of_a_static_bound_and_a_symbol_keeps_the_symbol():
    """GPT-Neo reshapes to ``[batch, min(64, seq), ...]``: the min of the bound and the symbol's sentinel used to
    be the static 64, so the reshape of a [batch, seq] tensor failed."""
    nodes = [helper.make_node("Shape", ["x"], ["b_"], start=0, end=1),
             helper.make_node("Shape", ["x"], ["s_"], start=1, end=2),
             helper.make_node("Min", ["bound", "s_"], ["m_"]),
             helper.make_node("Concat", ["b_", "m_", "one"], ["tgt"], axis=0),
             helper.make_node("Reshape", ["x", "tgt"], ["y"])]
    m = make_model(nodes, [vi("x", ["batch", "seq"])], [vi("y", None)],
                   [_i64("bound", [64]), _i64("one", [1])])
    g = load_onnx(m)
    assert g.outputs[0].type.shape == ("batch", "seq", 1)
    assert_matches_ort(m, {"x": np.random.default_rng(0).standard_normal((2, 9)).astype(np.float32)})
