"""Op semantics against onnxruntime: Split with ``num_outputs`` (ONNX 18) and Resize's modes and coordinate
transformations (graphopt/ir/ops)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from graphopt.backends.onnx import to_onnx
from graphopt.backends.torch import to_torch
from graphopt.frontends.onnx import load_onnx
from graphopt.ir import DType, Graph, TensorType
from graphopt.ir.infer import ShapeInferenceError


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _split_graph(n: int, k: int) -> Graph:
    g = Graph("split")
    x = g.add_input("x", TensorType(DType.float32, (2, n)))
    node = g.create_node("split", [x], {"axis": 1, "num_outputs": k})
    g.set_outputs(node.outputs)
    return g


@pytest.mark.parametrize(("n", "k"), [(10, 3), (10, 4), (9, 4), (7, 2), (6, 3)])
def test_split_num_outputs_follows_onnx18(n, k):
    """Before: an uneven split with num_outputs (9 into 4) produced too few outputs and failed inference."""
    g = _split_graph(n, k)
    x = np.random.default_rng(0).standard_normal((2, n)).astype(np.float32)
    want = _ort(to_onnx(g, opset=18), {"x": x})
    chunk = -(-n // k)
    assert [w.shape[1] for w in want] == [chunk] * (k - 1) + [n - chunk * (k - 1)]
    assert [o.type.shape for o in g.outputs] == [w.shape for w in want]
    got = to_torch(g)(torch.from_numpy(x))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)


def test_split_impossible_num_outputs_is_a_clear_error():
    with pytest.raises(ShapeInferenceError, match="num_outputs=4"):
        _split_graph(5, 4)


def _resize_model(shape, mode, ctm, kind, val):
    arr = np.array(val, np.float32 if kind == "scales" else np.int64)
    ins = ["x", "", "p"] if kind == "scales" else ["x", "", "", "p"]
    node = helper.make_node("Resize", ins, ["y"], mode=mode, coordinate_transformation_mode=ctm)
    graph = helper.make_graph([node], "rz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(arr, "p")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


_X = np.random.default_rng(1).standard_normal((1, 2, 5, 7)).astype(np.float32)


_CASES = [("scales", [1, 1, 2.0, 1.5]), ("scales", [1, 1, 0.5, 0.6]), ("sizes", [1, 2, 9, 4]),
          ("sizes", [1, 2, 3, 10])]


@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "pytorch_half_pixel"])
@pytest.mark.parametrize(("kind", "val"), _CASES)
def test_resize_linear_matches_onnxruntime(ctm, kind, val):
    model = _resize_model(_X.shape, "linear", ctm, kind, val)
    want = _ort(model, {"x": _X})[0]
    g = load_onnx(model)
    got = to_torch(g)(torch.from_numpy(_X)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_ort(to_onnx(g), {"x": _X})[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("mode", "ctm", "kind", "val"), [
    ("nearest", "half_pixel", "scales", [1, 1, 2.0, 1.5]),  # ONNX's round_prefer_floor, not round-half-up
    ("linear", "pytorch_half_pixel", "sizes", [1, 2, 1, 3]),  # the size-1 special case
    ("linear", "asymmetric", "scales", [1, 1, 2.0, 2.0]),
    ("nearest", "asymmetric", "sizes", [1, 2, 9, 4]),
])
def test_resize_modes_match_onnxruntime(mode, ctm, kind, val):
    model = _resize_model(_X.shape, mode, ctm, kind, val)
    got = to_torch(load_onnx(model))(torch.from_numpy(_X)).numpy()
    np.testing.assert_allclose(got, _ort(model, {"x": _X})[0], rtol=1e-4, atol=1e-5)
