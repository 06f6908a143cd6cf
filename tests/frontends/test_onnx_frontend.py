"""ONNX frontend: errors on bad files, external data safety, constants and kinds, symbolic dims, legacy forms.

Numeric checks run onnxruntime on the original model and compare it with (a) a direct execution of the
imported IR (each node's registry implementation, in order) and (b) onnxruntime on the re-exported model.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _helpers import assert_matches_ort, make_model, run_ir, run_ort, vi
from onnx import TensorProto, helper, numpy_helper

from graphopt.backends.onnx import to_onnx
from graphopt.backends.torch import to_torch
from graphopt.errors import ModelLoadError
from graphopt.frontends.onnx import FOLD_MAX_ELEMENTS, load_onnx
from graphopt.ir.registry import UnsupportedOpError

LIGHT_SQUEEZENET = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
F = TensorProto.FLOAT


# ------------------------------------------------------------------------------------------------- bad files
def test_truncated_file_names_the_file(tmp_path: Path):
    data = LIGHT_SQUEEZENET.read_bytes()
    bad = tmp_path / "half_squeezenet.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="half_squeezenet.onnx") as e:
        load_onnx(bad)
    assert "truncated" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"this is not an onnx model at all\n", bytes(range(256)) * 4])
def test_corrupt_file_names_the_file(tmp_path: Path, content: bytes):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(content)
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        load_onnx(bad)


def test_missing_file_and_undefined_value(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_onnx(tmp_path / "nope.onnx")
    m = make_model([helper.make_node("Relu", ["ghost"], ["y"], name="r")], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(ModelLoadError, match="ghost"):
        load_onnx(m)
    assert issubclass(ModelLoadError, ValueError)


def test_unknown_op_names_op_and_node():
    m = make_model([helper.make_node("FrobnicateTensor", ["x"], ["y"], name="frob_1")], [vi("x", [2])],
                   [vi("y", [2])])
    with pytest.raises(UnsupportedOpError, match="FrobnicateTensor") as e:
        load_onnx(m)
    assert "frob_1" in str(e.value)


def test_microsoft_domain_op_is_unsupported():
    node = helper.make_node("Gelu", ["x"], ["y"], name="ms_gelu", domain="com.microsoft")
    g = helper.make_graph([node], "t", [vi("x", [2])], [vi("y", [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError, match="com.microsoft") as e:
        load_onnx(m)
    assert "Gelu" in str(e.value) and "ms_gelu" in str(e.value)


def test_control_flow_is_unsupported():
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [vi("t", [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", [2])])
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)
    m = make_model([node], [vi("c", [], TensorProto.BOOL), vi("x", [2])], [vi("y", [2])])
    with pytest.raises(UnsupportedOpError, match="If") as e:
        load_onnx(m)
    assert "branch" in str(e.value) and "ontrol flow" in str(e.value)


# --------------------------------------------------------------------------------------------- external data
def _external_model(location: str) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    return make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x", [4])], [vi("y", [4])],
                      [w])


def test_external_data_inside_folder_loads(tmp_path: Path):
    vals = np.arange(4, dtype=np.float32) + 0.5
    (tmp_path / "weights.bin").write_bytes(vals.tobytes())
    onnx.save(_external_model("weights.bin"), tmp_path / "m.onnx")
    g = load_onnx(tmp_path / "m.onnx")
    np.testing.assert_array_equal(g.constants["w"].const, vals)
    x = np.ones(4, np.float32)
    np.testing.assert_allclose(run_ir(g, {"x": x})[0], x + vals)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_external_data_escaping_the_folder_is_refused(tmp_path: Path, kind: str):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4, np.float32).tobytes())
    if kind == "dotdot":
        loc = "../secret.bin"
    elif kind == "absolute":
        loc = str(secret)
    else:
        os.symlink(secret, model_dir / "link.bin")
        loc = "link.bin"
    onnx.save(_external_model(loc), model_dir / "m.onnx")
    with pytest.raises(ModelLoadError, match="absolute path|outside the model's folder") as e:
        load_onnx(model_dir / "m.onnx")
    assert "m.onnx" in str(e.value)


def test_external_data_of_in_memory_model_needs_a_path():
    with pytest.raises(ModelLoadError, match="from its path"):
        load_onnx(_external_model("weights.bin"))


# -------------------------------------------------------------------------------------- constants and kinds
def test_initializer_listed_as_input_is_a_constant():
    w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    b = np.arange(3, dtype=np.float32)
    m = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)],
                   [vi("x", [2, 4]), vi("w", [3, 4]), vi("b", [3])], [vi("y", [2, 3])],
                   [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")], opset=11, ir_version=3)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    g = assert_matches_ort(m, {"x": x})
    assert [v.name for v in g.inputs] == ["x"]
    assert g.constants["w"].kind == "param" and g.constants["b"].kind == "param"
    assert g.find_node("fc").op == "gemm"


def test_constant_subgraph_weights_are_folded_with_kinds():
    ci = lambda name, arr: numpy_helper.from_array(np.asarray(arr, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("ConstantOfShape", ["w_shape"], ["conv_w"], name="make_w",
                         value=numpy_helper.from_array(np.array([0.1], np.float32))),
        helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Shape", ["bn"], ["shp"], name="shape"),
        helper.make_node("Gather", ["shp", "zero"], ["n"], name="batch", axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"], name="unsq"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="cat", axis=0),
        helper.make_node("Reshape", ["bn", "target"], ["y"], name="flat"),
    ]
    inits = [ci("w_shape", [4, 2, 3, 3]), ci("zero", 0), ci("ax0", [0]), ci("minus1", [-1])]
    rng = np.random.default_rng(0)
    for name in ("s", "bb", "mean"):
        inits.append(numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), name))
    inits.append(numpy_helper.from_array(rng.random(4).astype(np.float32) + 0.5, "var"))
    m = make_model(nodes, [vi("x", [2, 2, 5, 5])], [vi("y", [2, 100])], inits)
    g = assert_matches_ort(m, {"x": rng.standard_normal((2, 2, 5, 5)).astype(np.float32)})
    assert [n.op for n in g.nodes] == ["conv", "batch_norm", "reshape"]  # weights and shape math folded
    kinds = {k: v.kind for k, v in g.constants.items()}
    assert kinds["conv_w"] == "param" and kinds["s"] == "param" and kinds["bb"] == "param"
    assert kinds["mean"] == "buffer" and kinds["var"] == "buffer"
    assert kinds["target"] == "const"
    np.testing.assert_array_equal(g.constants["conv_w"].const, np.full((4, 2, 3, 3), 0.1, np.float32))
    np.testing.assert_array_equal(g.constants["target"].const, [2, -1])


def test_folding_stops_at_the_size_limit():
    side = int(np.ceil(np.sqrt(FOLD_MAX_ELEMENTS + 1)))
    m = make_model([helper.make_node("ConstantOfShape", ["shape"], ["big"], name="big"),
                    helper.make_node("Mul", ["x", "big"], ["y"], name="mul")],
                   [vi("x", [1, side])], [vi("y", [side, side])],
                   [numpy_helper.from_array(np.array([side, side], np.int64), "shape")])
    g = load_onnx(m)
    assert [n.op for n in g.nodes] == ["constant_of_shape", "mul"]
    assert g.find_node("big").output.type.shape == (side, side)


@pytest.mark.parametrize("attr, value, expected", [
    ("value_float", 2.5, np.float32(2.5)),
    ("value_floats", [1.0, 2.0], np.array([1.0, 2.0], np.float32)),
    ("value_int", 3, np.int64(3)),
    ("value_ints", [4, 5], np.array([4, 5], np.int64)),
    ("value", numpy_helper.from_array(np.array([[1, 2]], np.int32)), np.array([[1, 2]], np.int32)),
    ("sparse_value", helper.make_sparse_tensor(numpy_helper.from_array(np.array([7.0, 8.0], np.float32)),
                                               numpy_helper.from_array(np.array([1, 3], np.int64)), [2, 2]),
     np.array([[0, 7], [0, 8]], np.float32)),
])
def test_constant_node_forms(attr, value, expected):
    node = helper.make_node("Constant", [], ["c"], name="c", **{attr: value})
    m = make_model([node, helper.make_node("Identity", ["c"], ["y"], name="id")], [], [onnx.ValueInfoProto(name="y")])
    g = load_onnx(m)
    c = g.outputs[0].const  # Identity of a constant folds to a constant
    assert c.dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(c, expected)
    np.testing.assert_array_equal(run_ort(m, {})[0], expected)


# ---------------------------------------------------------------------------------------- shapes and names
def test_symbolic_dims_are_preserved_and_overridable():
    x = helper.make_tensor_value_info("x", F, ["batch", 3, None])
    m = make_model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                    helper.make_node("ReduceSum", ["r", "axes"], ["y"], name="sum", keepdims=0)],
                   [x], [vi("y", ["batch", 3])], [numpy_helper.from_array(np.array([2], np.int64), "axes")])
    g = load_onnx(m)
    assert g.inputs[0].shape == ("batch", 3, "x_d2")
    assert g.outputs[0].shape == ("batch", 3)
    exported = to_onnx(g)
    dims = exported.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "x_d2"]
    xs = np.random.default_rng(0).standard_normal((5, 3, 7)).astype(np.float32)
    np.testing.assert_allclose(run_ort(exported, {"x": xs})[0], np.maximum(xs, 0).sum(2), rtol=1e-5)

    fixed = load_onnx(m, input_shapes={"x": [2, 3, 7]})
    assert fixed.inputs[0].shape == (2, 3, 7) and fixed.outputs[0].shape == (2, 3)
    with pytest.raises(ModelLoadError, match="'y'"):
        load_onnx(m, input_shapes={"y": [1]})
    with pytest.raises(ModelLoadError, match="fixes it to 3"):
        load_onnx(m, input_shapes={"x": [2, 4, 7]})


def test_names_kept_and_unsorted_nodes_reordered():
    nodes = [helper.make_node("Sigmoid", ["a"], ["b"], name="second"),
             helper.make_node("Relu", ["x"], ["a"], name="first")]
    m = make_model(nodes, [vi("x", [3])], [vi("b", [3])])
    g = load_onnx(m)
    assert [n.name for n in g.nodes] == ["first", "second"]
    assert [o.name for n in g.nodes for o in n.outputs] == ["a", "b"]


def test_opset_hint_applies_to_models_without_opset_import():
    m = make_model([helper.make_node("Squeeze", ["x"], ["y"], name="sq", axes=[0])], [vi("x", [1, 3])],
                   [vi("y", [3])], opset=11)
    del m.opset_import[:]
    g = load_onnx(m, opset_hint=11)
    assert g.find_node("sq").op == "squeeze" and g.outputs[0].shape == (3,)


# ------------------------------------------------------------------------------------------- legacy forms
def _c(name, arr, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(arr, dtype), name)


LEGACY = {
    "squeeze_unsqueeze_attr_11": (11, [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0, 3]),
                                       helper.make_node("Squeeze", ["u"], ["y"], axes=[0])], [], [2, 3, 4]),
    "reduce_axes_attr_12": (12, [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
                                 helper.make_node("ReduceSum", ["m"], ["y"], axes=[0, 2], keepdims=0)], [], [2, 3, 4]),
    "split_attr_uneven_11": (11, [helper.make_node("Split", ["x"], ["a", "b"], axis=2, split=[1, 3]),
                                  helper.make_node("Sub", ["b", "a"], ["y"])], [], [2, 3, 4]),
    "slice_attrs_9": (9, [helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[3, 100], axes=[1, 2])],
                      [], [2, 3, 4]),
    "pad_attrs_10": (10, [helper.make_node("Pad", ["x"], ["p"], pads=[0, 1, 2, 0, 0, 1], value=1.5),
                          helper.make_node("Pad", ["p"], ["y"], pads=[0, 0, 1, 0, 0, 1], mode="reflect")],
                     [], [2, 3, 4]),
    "clip_attrs_10": (10, [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.25)], [], [2, 3, 4]),
    "softmax_coerce_2d_11": (11, [helper.make_node("Softmax", ["x"], ["y"], axis=1)], [], [2, 3, 4]),
    "log_softmax_default_axis_12": (12, [helper.make_node("LogSoftmax", ["x"], ["y"])], [], [2, 3, 4]),
    "softmax_last_axis_11": (11, [helper.make_node("Softmax", ["x"], ["y"], axis=2)], [], [2, 3, 4]),
    "dropout_ratio_input_mask_12": (12, [helper.make_node("Dropout", ["x", "r"], ["y", "mask"])],
                                    [_c("r", 0.3, np.float32)], [2, 3, 4]),
    "dropout_attr_7": (7, [helper.make_node("Dropout", ["x"], ["y"], ratio=0.2)], [], [2, 3, 4]),
    "upsample_attr_7": (7, [helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 3.0])], [],
                        [1, 2, 3, 4]),
    "upsample_input_9": (9, [helper.make_node("Upsample", ["x", "s"], ["y"])],
                         [_c("s", [1.0, 1.0, 2.0, 2.0], np.float32)], [1, 2, 3, 4]),
    "resize_10": (10, [helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")],
                  [_c("s", [1.0, 1.0, 3.0, 2.0], np.float32)], [1, 2, 3, 4]),
    "batchnorm_spatial_7": (7, [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                                 spatial=1, epsilon=1e-3)],
                            [_c("s", [1.0, 2.0, 0.5], np.float32), _c("b", [0.1, 0.2, 0.3], np.float32),
                             _c("m", [0.0, 1.0, -1.0], np.float32), _c("v", [1.0, 4.0, 0.25], np.float32)],
                            [2, 3, 4]),
    "variadic_broadcast_8": (8, [helper.make_node("Sum", ["x", "r", "c"], ["s"]),
                                 helper.make_node("Max", ["s", "x", "c"], ["m"]),
                                 helper.make_node("Min", ["m", "r"], ["n"]),
                                 helper.make_node("Mean", ["n", "x", "r"], ["y"])],
                             [_c("r", [[0.5], [-0.5], [1.0]], np.float32), _c("c", [0.1, 0.2, 0.3, 0.4], np.float32)],
                             [2, 3, 4]),
    "topk_attr_9": (9, [helper.make_node("TopK", ["x"], ["y", "i"], k=2, axis=-1)], [], [2, 3, 4]),
    "cast_enum_9": (9, [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)], [], [2, 3, 4]),
    "reshape_input_concat_default_9": (9, [helper.make_node("Reshape", ["x", "shp"], ["r"]),
                                           helper.make_node("Concat", ["r", "r"], ["y"], axis=1)],
                                       [_c("shp", [2, -1])], [2, 3, 4]),
}


@pytest.mark.parametrize("case", sorted(LEGACY))
def test_legacy_forms_match_onnxruntime(case: str):
    opset, nodes, inits, shape = LEGACY[case]
    for i, n in enumerate(nodes):
        n.name = f"{case}_{i}"
    outs = [onnx.ValueInfoProto(name=o) for o in nodes[-1].output]  # types left to the runtimes
    m = make_model(nodes, [vi("x", shape)], outs, inits, opset=opset)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    g = assert_matches_ort(m, {"x": x})
    if case == "softmax_coerce_2d_11":  # the opset<13 semantics differ from a per-axis softmax here
        per_axis = torch.softmax(torch.from_numpy(x), 1).numpy()
        assert not np.allclose(run_ir(g, {"x": x})[0], per_axis, atol=1e-3)
    if case == "dropout_ratio_input_mask_12":
        assert g.find_node(f"{case}_0").attrs["ratio"] == pytest.approx(0.3)


def test_opset6_broadcast_with_axis_and_per_channel_prelu():
    """Opset < 7 ``broadcast=1, axis=k`` aligns B at axis k; PRelu's 1-D slope is per channel (axis 1)."""
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="add", broadcast=1, axis=1),
             helper.make_node("PRelu", ["a", "slope"], ["y"], name="prelu")]
    b = np.array([1.0, -2.0, 3.0], np.float32)
    slope = np.array([0.1, 0.2, 0.3], np.float32)
    m = make_model(nodes, [vi("x", [2, 3, 4])], [vi("y", [2, 3, 4])],
                   [numpy_helper.from_array(b, "b"), numpy_helper.from_array(slope, "slope")], opset=6, ir_version=3)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    g = load_onnx(m)
    a = x + b[None, :, None]
    want = np.where(a < 0, a * slope[None, :, None], a)
    np.testing.assert_allclose(run_ir(g, {"x": x})[0], want, rtol=1e-6)
    np.testing.assert_allclose(run_ort(to_onnx(g), {"x": x})[0], want, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_matches_onnxruntime_imported_reexported_and_as_pytorch(reduction: str):
    """ScatterND with every reduction, negative indices, slice updates (k < rank) and run-time data; reductions
    also get a repeated index (-4 is 0), which they must accumulate."""
    from graphopt.backends.onnx import OnnxExportError
    from graphopt.backends.torch import to_torch
    from graphopt.ir.cost import node_cost

    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 3, 5)).astype(np.float32)
    rows = [[0, -1], [2, 1], [-1, 0]] + ([[-4, 2]] if reduction == "none" else [[-4, -3]])
    idx = np.array(rows, dtype=np.int64).reshape(2, 2, 2)
    upd = rng.standard_normal((2, 2, 5)).astype(np.float32)
    m = make_model([helper.make_node("ScatterND", ["d", "i", "u"], ["y"], name="sn", reduction=reduction)],
                   [vi("d", [4, 3, 5]), vi("i", [2, 2, 2], TensorProto.INT64), vi("u", [2, 2, 5])], [vi("y", None)])
    feeds = {"d": data, "i": idx, "u": upd}
    g = assert_matches_ort(m, feeds)
    assert g.nodes[0].op == "scatter_nd" and g.outputs[0].type.shape == (4, 3, 5)
    assert node_cost(g.nodes[0]).flops == (0 if reduction == "none" else upd.size)  # one op per update element
    got = to_torch(g)(*(torch.from_numpy(feeds[v.name]) for v in g.inputs))
    np.testing.assert_allclose(got.numpy(), run_ort(m, feeds)[0], rtol=1e-5, atol=1e-6)
    if reduction in ("max", "min"):
        with pytest.raises(OnnxExportError, match="opset >= 18"):
            to_onnx(g, opset=16)


def test_scatter_nd_from_the_dynamo_exporter_loads_and_matches_onnxruntime(tmp_path: Path):
    """Slice assignment (Swin-T's shifted-window mask) exported by torch.onnx's dynamo exporter is a ScatterND."""
    from graphopt.backends.torch import to_torch

    class Assign(torch.nn.Module):
        def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            y = x.clone()
            y[:, 1:3] = u
            return y * 2

    x, u = torch.randn(2, 5, 6), torch.randn(2, 2, 6)
    path = tmp_path / "assign.onnx"
    torch.onnx.export(Assign().eval(), (x, u), str(path), dynamo=True, opset_version=18)
    m = onnx.load(path)
    assert "ScatterND" in {n.op_type for n in m.graph.node}
    feeds = {"x": x.numpy(), "u": u.numpy()}
    g = assert_matches_ort(m, dict(zip([i.name for i in m.graph.input], feeds.values(), strict=True)))
    np.testing.assert_allclose(to_torch(g)(x, u).detach().numpy(), (Assign()(x, u)).numpy(), rtol=1e-6)


@pytest.mark.parametrize(("strides", "dilations", "pads"), [([1, 1], [1, 1], [0, 0, 0, 0]),
                                                            ([2, 1], [1, 2], [1, 0, 0, 2])])
def test_col2im_matches_onnxruntime_imported_reexported_and_as_pytorch(strides, dilations, pads):
    """Col2Im (torch's ``fold``): overlapping blocks summed, strides, dilations and ONNX's per-end pads."""
    from graphopt.backends.torch import to_torch
    from graphopt.ir.cost import node_cost

    h, w, k = 5, 6, [2, 3]
    ph, pw = h + pads[0] + pads[2], w + pads[1] + pads[3]
    blocks = [(p - d * (kk - 1) - 1) // s + 1 for p, d, kk, s in zip([ph, pw], dilations, k, strides, strict=True)]
    x = np.random.default_rng(0).standard_normal((2, 3 * 6, blocks[0] * blocks[1])).astype(np.float32)
    m = make_model([helper.make_node("Col2Im", ["x", "shape", "block"], ["y"], name="c2i", strides=strides,
                                     dilations=dilations, pads=pads)],
                   [vi("x", list(x.shape))], [vi("y", None)], opset=18,
                   inits=[numpy_helper.from_array(np.array([h, w], np.int64), "shape"),
                          numpy_helper.from_array(np.array(k, np.int64), "block")])
    g = assert_matches_ort(m, {"x": x})
    assert g.nodes[0].op == "col2im" and g.outputs[0].type.shape == (2, 3, h, w)
    assert node_cost(g.nodes[0]).flops == x.size  # one add per column element
    np.testing.assert_allclose(to_torch(g)(torch.from_numpy(x)).detach().numpy(), run_ort(m, {"x": x})[0],
                               rtol=1e-5, atol=1e-6)


def test_col2im_from_the_dynamo_exporter_loads_and_matches_onnxruntime(tmp_path: Path):
    """``F.unfold`` / ``F.fold`` (Hugging Face MobileViTV2's patch folding) exported by torch.onnx's default
    exporter: the fold is a Col2Im, which graphopt refused (every command of MobileViTV2 exited 2)."""

    class Refold(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            cols = torch.nn.functional.unfold(x, (2, 2), stride=2) * 2
            return torch.nn.functional.fold(cols, x.shape[-2:], (2, 2), stride=2)

    x = torch.randn(1, 4, 6, 8)
    path = tmp_path / "refold.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Refold().eval(), (x,), str(path))
    m = onnx.load(path)
    assert "Col2Im" in {n.op_type for n in m.graph.node}
    assert_matches_ort(m, {m.graph.input[0].name: x.numpy()})


def test_col2im_with_three_spatial_dims_is_refused_naming_the_op():
    m = make_model([helper.make_node("Col2Im", ["x", "shape", "block"], ["y"], name="c2i")],
                   [vi("x", [1, 8, 8])], [vi("y", None)], opset=18,
                   inits=[numpy_helper.from_array(np.array([3, 3, 3], np.int64), "shape"),
                          numpy_helper.from_array(np.array([2, 2, 2], np.int64), "block")])
    with pytest.raises(UnsupportedOpError, match="Col2Im with 3 spatial dims"):
        load_onnx(m)


def test_col2im_of_tiling_blocks_is_decomposed_below_opset_18():
    """ethos-u55-like and edgetpu-like export at opset 17, which has no Col2Im (MobileViTV2 exited 2 there): blocks
    that tile the image (MobileViTV2's patch folding) become Reshape, Transpose, Reshape, exact against
    onnxruntime; overlapping blocks, which sum, are refused naming the node."""
    from graphopt.pass_api import PassError, get_pass

    def model(strides: list[int]) -> onnx.ModelProto:
        cols = ((4 - 2) // strides[0] + 1) * ((6 - 2) // strides[1] + 1)
        return make_model([helper.make_node("Col2Im", ["x", "shape", "block"], ["y"], name="c2i", strides=strides)],
                          [vi("x", [2, 3 * 4, cols])], [vi("y", None)], opset=18,
                          inits=[numpy_helper.from_array(np.array([4, 6], np.int64), "shape"),
                                 numpy_helper.from_array(np.array([2, 2], np.int64), "block")])

    m = model([2, 2])
    x = np.random.default_rng(0).standard_normal((2, 12, 6)).astype(np.float32)
    g = load_onnx(m)
    get_pass("convert-opset")(g, opset=17)
    assert {n.op for n in g.nodes} == {"reshape", "transpose"}
    out = to_onnx(g, opset=17)
    onnx.checker.check_model(out, full_check=True)
    np.testing.assert_array_equal(run_ort(out, {"x": x})[0], run_ort(m, {"x": x})[0])
    with pytest.raises(PassError, match="could not rewrite col2im nodes c2i"):
        get_pass("convert-opset")(load_onnx(model([1, 1])), opset=17)


def test_onnx_embedding_table_is_a_trainable_param():
    """Before: an ONNX Gather over a float initializer imported as ``const`` -> a frozen buffer in the emitted
    module, so training it (issue acceptance 3) silently skipped the embedding."""
    table = np.random.default_rng(2).standard_normal((10, 4)).astype(np.float32)
    node = helper.make_node("Gather", ["emb.weight", "ids"], ["y"], axis=0)
    graph = helper.make_graph([node], "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
                              [numpy_helper.from_array(table, "emb.weight")])
    g = load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert g.constants["emb.weight"].kind == "param"
    m = to_torch(g)
    params = dict(m.named_parameters())
    assert "emb.weight" in params
    ids = torch.tensor([[0, 3, 9], [1, 1, 2]])
    m(ids).sum().backward()
    ref = torch.nn.functional.embedding(ids, torch.from_numpy(table).requires_grad_())
    assert torch.equal(m(ids).detach(), ref.detach())
    assert params["emb.weight"].grad[1].eq(2).all() and params["emb.weight"].grad[5].eq(0).all()
