"""Dynamic-shape graphs as transformer exporters write them: a static buffer sliced to a symbolic length, attention
masks whose symbolic dims multiply past the meta run's sentinels, GatherND, ``min`` of a bound and a symbol. Each case
is imported by the ONNX frontend and checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _helpers import assert_matches_ort, make_model, vi
from onnx import TensorProto, helper, numpy_helper

from graphopt.frontends.onnx import load_onnx

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
