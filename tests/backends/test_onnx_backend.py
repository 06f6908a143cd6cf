"""ONNX backend: opset-dependent forms, checker, onnxruntime vs the IR's own execution, errors, file writing.

The reference is a direct execution of the IR: each node's registry implementation (PyTorch) in order on CPU
tensors — the semantics every backend must reproduce.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _helpers import run_ir

import graphopt.backends.onnx as onnx_backend
from graphopt.backends.onnx import OnnxEmitter, OnnxExportError, to_onnx
from graphopt.frontends.onnx import load_onnx
from graphopt.ir.graph import Graph, Node
from graphopt.ir.registry import In, op, set_onnx_export
from graphopt.ir.types import DType, TensorType

RNG = np.random.default_rng(0)


def run_ort(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def f32(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def check(g: Graph, feeds: dict[str, np.ndarray], opset: int, rtol=1e-5, atol=1e-5) -> onnx.ModelProto:
    model = to_onnx(g, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    want = run_ir(g, feeds)
    got = run_ort(model, feeds)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    return model


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def node_of(model: onnx.ModelProto, op_type: str):
    return next(n for n in model.graph.node if n.op_type == op_type)


# ------------------------------------------------------------------------------------------ opset forms
def small_graph() -> Graph:
    """reduce / squeeze / layer_norm / gelu / softmax(axis 1) / split / dropout / cast with a symbolic batch."""
    g = Graph("small")
    x = g.add_input("x", TensorType(DType.float32, ("batch", 4, 7)))
    ln = g.create_node("layer_norm", [x, g.add_const("ln.weight", f32(7), "param"),
                                      g.add_const("ln.bias", f32(7), "param")], {"epsilon": 1e-5}, name="ln")
    ax2 = g.add_const("ax2", i64([2]))
    mean = g.create_node("reduce_mean", [ln.output, ax2], {"keepdims": 1}, name="mean")
    sq = g.create_node("squeeze", [mean.output, ax2], name="sq")
    us = g.create_node("unsqueeze", [sq.output, g.add_const("ax1", i64([1]))], name="us")
    ge = g.create_node("gelu", [ln.output], name="gelu")
    sm = g.create_node("softmax", [ge.output], {"axis": 1}, name="sm")
    drop = g.create_node("dropout", [sm.output], {"ratio": 0.3}, name="drop")
    parts = g.create_node("split", [drop.output], {"axis": 2, "num_outputs": 2}, name="split")
    total = g.create_node("reduce_sum", [parts.outputs[0], ax2], {"keepdims": 0}, name="total")
    prod = g.create_node("mul", [total.output, sq.output], name="prod")
    cast = g.create_node("cast", [prod.output], {"to": "float64"}, name="cast")
    g.set_outputs([cast.output, parts.outputs[1], us.output])
    return g


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 20])
def test_small_graph_at_each_opset(opset: int):
    g = small_graph()
    model = check(g, {"x": f32(3, 4, 7)}, opset)
    types = op_types(model)
    sq = node_of(model, "Squeeze")
    rm = node_of(model, "ReduceMean")
    if opset < 13:
        assert len(sq.input) == 1 and [a.name for a in sq.attribute] == ["axes"]
    else:
        assert len(sq.input) == 2 and not sq.attribute
    assert (len(rm.input) == 2) == (opset >= 18)
    assert ("LayerNormalization" in types) == (opset >= 17)
    assert ("Gelu" in types) == (opset >= 20) and ("Erf" in types) == (opset < 20)
    assert "Dropout" not in types and "Identity" in types
    split = node_of(model, "Split")
    if opset >= 18:
        assert {a.name: a.i for a in split.attribute}["num_outputs"] == 2
    elif opset >= 13:
        assert len(split.input) == 2  # uneven 7 -> [4, 3] spelled out
    else:
        assert list(next(a for a in split.attribute if a.name == "split").ints) == [4, 3]
    cast = node_of(model, "Cast")
    assert next(a.i for a in cast.attribute if a.name == "to") == onnx.TensorProto.DOUBLE
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert len(model.graph.value_info) > 0


def misc_graph() -> Graph:
    """Ops with several opset forms: resize, pad with axes, group_norm, hard_swish, mish, shape slice, silu."""
    g = Graph("misc")
    x = g.add_input("x", TensorType(DType.float32, (2, 4, 3, 5)))
    rs = g.create_node("resize", [x, None, g.add_const("scales", np.array([1, 1, 2, 2], np.float32))],
                       {"mode": "nearest"}, name="up")
    pad = g.create_node("pad", [rs.output, g.add_const("pads", i64([1, 0, 2, 1])), None,
                                g.add_const("pad_axes", i64([2, 3]))], name="pad")
    gn = g.create_node("group_norm", [pad.output, g.add_const("gn.weight", f32(4), "param"),
                                      g.add_const("gn.bias", f32(4), "param")], {"num_groups": 2}, name="gn")
    hs = g.create_node("hard_swish", [gn.output], name="hs")
    mi = g.create_node("mish", [hs.output], name="mish")
    si = g.create_node("silu", [mi.output], name="silu")
    shp = g.create_node("shape", [si.output], {"start": 1, "end": 3}, name="shp")
    cos = g.create_node("constant_of_shape", [shp.output], {"value": np.array([1.5], np.float32)}, name="fill")
    lsm = g.create_node("log_softmax", [si.output], {"axis": 2}, name="lsm")
    g.set_outputs([lsm.output, cos.output])
    return g


def axes_resize_graph(batch: int | str, form: str) -> Graph:
    """Resize over the spatial axes only (``axes=[2, 3]``), as the torch frontend lowers ``F.interpolate``."""
    g = Graph("axes_resize")
    x = g.add_input("x", TensorType(DType.float32, (batch, 3, 4, 6)))
    attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel", "axes": [2, 3]}
    if form == "scales":
        ins = [x, None, g.add_const("scales", np.array([0.5, 2.0], np.float32))]
    else:
        ins = [x, None, None, g.add_const("sizes", i64([3, 9]))]
    g.set_outputs([g.create_node("resize", ins, attrs, name="up").output])
    return g


@pytest.mark.parametrize("opset", [11, 13, 17, 18])
@pytest.mark.parametrize("form", ["scales", "sizes"])
@pytest.mark.parametrize("batch", [2, "batch"])
def test_spatial_axes_resize_at_each_opset(opset: int, form: str, batch: int | str):
    """Before opset 18 Resize has no ``axes``: the spatial scales/sizes are widened to every axis (batch and
    channel sizes from the static shape, or from Shape at run time); this failed export to opset-17 NPU targets."""
    model = check(axes_resize_graph(batch, form), {"x": f32(2, 3, 4, 6)}, opset)
    rs = node_of(model, "Resize")
    assert any(a.name == "axes" for a in rs.attribute) == (opset >= 18)
    assert ("Shape" in op_types(model)) == (opset < 18 and form == "sizes" and batch == "batch")


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
def test_misc_graph_at_each_opset(opset: int):
    model = check(misc_graph(), {"x": f32(2, 4, 3, 5)}, opset, atol=1e-4)
    types = op_types(model)
    assert ("GroupNormalization" in types) == (opset >= 21)
    assert ("HardSwish" in types) == (opset >= 14)
    assert ("Mish" in types) == (opset >= 18)
    assert "Sigmoid" in types  # silu has no ONNX op: Sigmoid + Mul
    pad = node_of(model, "Pad")
    assert len(pad.input) == (4 if opset >= 18 else 2)
    rs = node_of(model, "Resize")
    assert rs.input[1] != "" or opset >= 13  # roi placeholder before opset 13


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_extra_ops_hardmax_and_reductions(opset: int):
    g = Graph("extra")
    x = g.add_input("x", TensorType(DType.float32, (2, 3, 4)))
    hm = g.create_node("hardmax", [x], {"axis": 1}, name="hm")
    ax = g.add_const("ax", i64([1, 2]))
    outs = [hm.output]
    for op_name in ("reduce_l1", "reduce_sum_square"):
        outs.append(g.create_node(op_name, [x, ax], {"keepdims": 0}, name=op_name).output)
    ab = g.create_node("abs", [x], name="abs")
    outs.append(g.create_node("reduce_log_sum", [ab.output, ax], name="rls").output)
    g.set_outputs(outs)
    model = check(g, {"x": f32(2, 3, 4)}, opset)
    assert ("Transpose" in op_types(model)) == (opset < 13)  # Hardmax's 2-D semantics before opset 13
    from graphopt.backends.torch import to_torch

    feeds = {"x": f32(2, 3, 4)}
    with torch.no_grad():
        res = to_torch(g)(torch.from_numpy(feeds["x"]))
    for a, b in zip(res, run_ort(model, feeds), strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-6)


def test_graph_outputs_that_are_inputs_constants_or_repeated():
    g = Graph("passthrough")
    x = g.add_input("x", TensorType(DType.float32, (2, 3)))
    c = g.add_const("c", f32(2, 3))
    r = g.create_node("relu", [x], name="r")
    g.set_outputs([x, c, r.output, r.output])
    feeds = {"x": f32(2, 3)}
    model = check(g, feeds, 18)
    assert len({o.name for o in model.graph.output}) == 4


# ------------------------------------------------------------------------------------------------ errors
def test_op_needing_a_newer_opset_names_node_and_opset():
    g = Graph("tri")
    x = g.add_input("x", TensorType(DType.float32, (3, 3)))
    t = g.create_node("trilu", [x], name="upper_tri")
    g.set_outputs([t.output])
    with pytest.raises(OnnxExportError, match=r"upper_tri.*opset >= 14"):
        to_onnx(g, opset=13)
    check(g, {"x": f32(3, 3)}, 14)


def test_attribute_needing_a_newer_opset_and_bad_opset():
    g = Graph("argmax")
    x = g.add_input("x", TensorType(DType.float32, (3, 4)))
    a = g.create_node("argmax", [x], {"axis": 1, "select_last_index": 1}, name="am")
    g.set_outputs([a.output])
    with pytest.raises(OnnxExportError, match=r"am .*select_last_index.*opset >= 12"):
        to_onnx(g, opset=11)
    check(g, {"x": np.array([[1, 3, 3, 0]] * 3, np.float32)}, 12)
    with pytest.raises(OnnxExportError, match="opset 9"):
        to_onnx(g, opset=9)


def test_op_without_onnx_form_is_refused():
    g = Graph("sup")
    x = g.add_input("x", TensorType(DType.float32, (2,)))
    a, b = g.create_node("relu", [x], name="a"), g.create_node("neg", [x], name="b")
    ch = g.create_node("choice", [None, a.output, b.output], {"selected": 0}, name="pick")
    g.set_outputs([ch.output])
    with pytest.raises(OnnxExportError, match="pick.*no ONNX form"):
        to_onnx(g)


@op("test_onnx_backend_swish", onnx=None, inputs=[In("X")], attrs={"beta": 1.0}, replace=True)
def _swish(X, *, beta=1.0):
    return X * torch.sigmoid(beta * X)


def _emit_swish(em: OnnxEmitter, node: Node) -> None:
    x = em.inputs(node)[0]
    bx, sg = em.tmp(node, "bx"), em.tmp(node, "sig")
    em.node("Mul", [x, em.scalar(node.attrs["beta"], node.inputs[0].dtype)], [bx])
    em.node("Sigmoid", [bx], [sg])
    em.node("Mul", [x, sg], em.outputs(node), name=node.name)


def test_custom_emitter_is_used_and_its_min_opset_enforced():
    set_onnx_export("test_onnx_backend_swish", _emit_swish, min_opset=13)
    g = Graph("swish")
    x = g.add_input("x", TensorType(DType.float32, (2, 5)))
    s = g.create_node("test_onnx_backend_swish", [x], {"beta": 1.7}, name="sw")
    g.set_outputs([s.output])
    model = check(g, {"x": f32(2, 5)}, 13)
    assert op_types(model) == ["Mul", "Sigmoid", "Mul"]
    with pytest.raises(OnnxExportError, match="sw .*opset >= 13"):
        to_onnx(g, opset=11)


# --------------------------------------------------------------------------------------------- writing
def _conv_graph() -> Graph:
    g = Graph("conv")
    x = g.add_input("x", TensorType(DType.float32, ("n", 3, 8, 8)))
    c = g.create_node("conv", [x, g.add_const("w", f32(16, 3, 3, 3), "param"), g.add_const("b", f32(16), "param")],
                      {"pads": [1, 1, 1, 1]}, name="conv")
    g.set_outputs([g.create_node("relu", [c.output], name="relu").output])
    return g


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    g = _conv_graph()
    path = tmp_path / "m.onnx"
    model = to_onnx(g, path=path)
    assert path.read_bytes() == model.SerializeToString()
    old = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(onnx_backend.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        to_onnx(g, opset=13, path=path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_large_constants_go_to_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(onnx_backend, "EXTERNAL_DATA_THRESHOLD", 100)
    g = _conv_graph()
    with pytest.raises(OnnxExportError, match="path="):
        to_onnx(g)
    path = tmp_path / "big.onnx"
    to_onnx(g, path=path)
    assert (tmp_path / "big.onnx.data").stat().st_size >= 16 * 3 * 3 * 3 * 4
    assert len(path.read_bytes()) < 16 * 3 * 3 * 3 * 4
    assert (tmp_path / "big.onnx.data").stat().st_mode & 0o044  # not the 0600 of a temp file
    onnx.checker.check_model(str(path), full_check=True)
    feeds = {"x": f32(2, 3, 8, 8)}
    np.testing.assert_allclose(run_ort(str(path), feeds)[0], run_ir(g, feeds)[0], rtol=1e-5, atol=1e-5)
    back = load_onnx(path)  # the frontend reads the external file back
    np.testing.assert_array_equal(back.constants["w"].const, g.constants["w"].const)
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]


def test_import_export_round_trip_keeps_names_and_kinds():
    g = _conv_graph()
    back = load_onnx(to_onnx(g))
    assert [n.name for n in back.nodes] == ["conv", "relu"]
    assert back.inputs[0].type == g.inputs[0].type
    assert {k: v.kind for k, v in back.constants.items()} == {"w": "param", "b": "param"}
    feeds = {"x": f32(1, 3, 8, 8)}
    np.testing.assert_allclose(run_ir(back, feeds)[0], run_ir(g, feeds)[0], rtol=1e-6)
