"""Shape and type inference (graphopt/ir/infer.py): symbolic dims through shape arithmetic, value-producing ops on
symbolic inputs, and known-value propagation."""

import numpy as np
import pytest
import torch
from _helpers import conv_bn_relu_graph

from graphopt.backends.torch import to_torch
from graphopt.ir import DType, Graph, IRError, TensorType, verify
from graphopt.ir.infer import infer_graph, set_input_shapes


def test_symbolic_batch_survives_inference_through_shape_arithmetic():
    g = conv_bn_relu_graph()
    verify(g)
    assert g.outputs[0].type == TensorType(DType.float32, ("batch", 128))
    set_input_shapes(g, {"x": [4, 3, 8, 8]})
    assert g.outputs[0].type.shape == (4, 128)
    with pytest.raises(IRError, match="rank"):
        set_input_shapes(g, {"x": [4, 3, 8]})
    with pytest.raises(IRError, match="inputs are x"):
        set_input_shapes(g, {"nope": [1]})


def test_constant_of_shape_of_symbolic_shape_is_not_materialized():
    """Before: the sentinel dims (~7e6 each) made shape inference allocate batch*seq floats and fail."""
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, ("batch", "seq")))
    s = g.create_node("shape", [x]).output
    c = g.create_node("constant_of_shape", [s], {"value": np.array([2.5], np.float32)}).output
    assert c.type == TensorType(DType.float32, ("batch", "seq"))
    g.set_outputs([c])
    out = to_torch(g)(torch.zeros(3, 4))
    assert torch.equal(out, torch.full((3, 4), 2.5))


def test_range_over_symbolic_product_gets_a_symbolic_length():
    """Before: range(0, batch*seq) ran torch.arange over ~5e13 elements and failed (or allocated huge)."""
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, ("batch", "seq")))
    s = g.create_node("shape", [x]).output
    n = g.create_node("reduce_prod", [s], {"keepdims": 0}).output
    zero = g.add_const("zero", np.array(0, np.int64))
    one = g.add_const("one", np.array(1, np.int64))
    r = g.create_node("range", [zero, n, one]).output
    assert r.type is not None and r.type.rank == 1 and isinstance(r.type.shape[0], str)
    assert "_known" not in r.meta  # a sentinel-sized range is never evaluated for a known value
    g.set_outputs([r])
    set_input_shapes(g, {"x": [2, 3]})
    assert r.type.shape == (6,)
    assert np.array_equal(r.meta["_known"], np.arange(6))


def test_inference_never_hands_read_only_arrays_to_torch(monkeypatch):
    """Before: known-value propagation and constant_of_shape passed read-only numpy arrays to torch.as_tensor
    (torch warns once per process, so the call itself is checked)."""
    seen: list[np.ndarray] = []
    real = torch.as_tensor

    def spy(data, *a, **k):
        if isinstance(data, np.ndarray):
            seen.append(data)
        return real(data, *a, **k)

    monkeypatch.setattr(torch, "as_tensor", spy)
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (2, 3)))
    a = np.array([2, 3], np.int64)
    a.flags.writeable = False
    fill = np.array([1.0], np.float32)
    fill.flags.writeable = False
    ca = g.add_const("a", a)
    dbl = g.create_node("add", [ca, ca]).output
    c = g.create_node("constant_of_shape", [dbl], {"value": fill}).output
    g.set_outputs([c, x])
    infer_graph(g)
    assert np.array_equal(dbl.meta["_known"], [4, 6])
    assert c.type.shape == (4, 6)
    assert seen and all(arr.flags.writeable for arr in seen)
