"""Regression tests for IR/backend bugs: each test failed before its fix (see the docstrings)."""

import os
import stat

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from graphopt.backends.onnx import to_onnx
from graphopt.backends.torch import to_torch
from graphopt.frontends.onnx import load_onnx
from graphopt.ir import DType, Graph, TensorType, load, save
from graphopt.ir.infer import ShapeInferenceError, infer_graph, set_input_shapes
from graphopt.ir.serialize import atomic_write_bytes


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


# ------------------------------------------------------------------------ 1. value-producing ops, sym inputs
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


# ------------------------------------------------------------------------------------------- 2. bfloat16
def test_bfloat16_params_and_constants_reach_torch_and_disk(tmp_path):
    """Before: torch.from_numpy rejected the ml_dtypes bfloat16 arrays (to_torch and save both failed)."""
    bf16 = DType.bfloat16.to_numpy()
    w = np.array([[1.5, -2.25], [0.125, 3.0]], np.float32)
    g = Graph("bf")
    x = g.add_input("x", TensorType(DType.bfloat16, (3, 2)))
    wv = g.add_const("lin.weight", w.astype(bf16), "param")
    big = g.add_const("scale", np.full((20,), 0.5, np.float32).astype(bf16), "buffer")
    bias = g.add_const("bias", np.array([1.0, -1.0], np.float32).astype(bf16))
    y = g.create_node("matmul", [x, wv]).output
    y = g.create_node("add", [y, bias]).output
    s = g.create_node("reduce_sum", [big], {"keepdims": 0}).output
    g.set_outputs([g.create_node("mul", [y, s]).output])
    m = to_torch(g)
    assert m.lin.weight.dtype == torch.bfloat16 and m.lin.weight.requires_grad
    assert torch.equal(m.lin.weight.float(), torch.from_numpy(w))
    xin = torch.tensor([[1.0, 2.0], [0.5, -1.0], [0.0, 4.0]], dtype=torch.bfloat16)
    ref = (xin.float() @ torch.from_numpy(w) + torch.tensor([1.0, -1.0])) * 10.0
    torch.testing.assert_close(m(xin).float(), ref, rtol=1e-2, atol=1e-2)
    g2 = load(save(g, tmp_path / "bf.json"))
    for k, v in g.constants.items():
        assert g2.constants[k].const.dtype == bf16
        assert np.array_equal(g2.constants[k].const.view(np.int16), v.const.view(np.int16))


# ------------------------------------------------------------------------------------- 3. Graph.copy meta
def test_copy_does_not_share_nested_meta():
    """Before: copy() did dict(meta), so the copy's _sym_sentinels (and any list in node meta) was the
    original's object; inferring new symbols in a copy changed the original."""
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, ("batch", 4)))
    r = g.create_node("relu", [x], name="r")
    r.meta["provenance"] = ["frontend"]
    g.set_outputs([r.output])
    table = g.meta["_sym_sentinels"]
    before = dict(table)
    c = g.copy()
    c.inputs[0].type = TensorType(DType.float32, ("other", 4))
    infer_graph(c)
    c.nodes[0].meta["provenance"].append("pass")
    assert "other" in c.meta["_sym_sentinels"]
    assert g.meta["_sym_sentinels"] is table and table == before
    assert r.meta["provenance"] == ["frontend"]


# ---------------------------------------------------------------------------------- 4. file permissions
def test_atomic_write_honours_umask(tmp_path):
    """Before: files kept mkstemp's 0600, so IR/ONNX files were unreadable to the group."""
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == 0o640
    assert (tmp_path / "a.bin").read_bytes() == b"x"


# ---------------------------------------------------------------------------------------------- 5. subgraph
def test_subgraph_accepts_a_one_shot_iterator():
    """Before: the node set was rebuilt per graph node (quadratic), which also exhausted a generator after
    the first node, silently dropping the rest."""
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (2, 3)))
    a = g.create_node("relu", [x], name="a")
    b = g.create_node("neg", [a.output], name="b")
    c = g.create_node("exp", [b.output], name="c")
    d = g.create_node("add", [c.output, a.output], name="d")
    g.set_outputs([d.output])
    sub, b_in, b_out = g.subgraph(n for n in g.nodes if n.name in ("b", "c"))
    assert [n.name for n in sub.nodes] == ["b", "c"]
    assert b_in == [a.output] and b_out == [c.output]
    xs = torch.randn(5, 3)
    torch.testing.assert_close(to_torch(sub)(xs), torch.exp(-xs))


# ----------------------------------------------------------------------------------- 6. split and resize
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


# -------------------------------------------------------------------------------- 7. embedding via gather
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


# ------------------------------------------------------------------ codegen fast paths of the torch backend
def _linear_graph(shared_transpose: bool) -> Graph:
    rng = np.random.default_rng(3)
    g = Graph("lin")
    x = g.add_input("x", TensorType(DType.float32, ("batch", 5, 4)))
    w = g.add_const("fc.weight", rng.standard_normal((6, 4)).astype(np.float32), "param")
    b = g.add_const("fc.bias", rng.standard_normal(6).astype(np.float32), "param")
    wt = g.create_node("transpose", [w], {"perm": [1, 0]}).output
    y = g.create_node("matmul", [x, wt]).output
    y = g.create_node("add", [b, y]).output
    outs = [y, wt] if shared_transpose else [y]
    g.set_outputs(outs)
    return g


@pytest.mark.parametrize("shared", [False, True])
def test_linear_chain_is_emitted_as_f_linear_only_when_exact(shared):
    g = _linear_graph(shared)
    m = to_torch(g).train()
    src = m.graphopt_source
    assert ("F.linear(x, fc_weight, fc_bias)" in src) is not shared
    x = torch.randn(3, 5, 4)
    w = torch.from_numpy(g.constants["fc.weight"].const).requires_grad_()
    b = torch.from_numpy(g.constants["fc.bias"].const).requires_grad_()
    ref = x @ w.t() + b
    out = m(x)
    y = out[0] if shared else out
    torch.testing.assert_close(y, ref)
    y.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(m.fc.weight.grad, w.grad)
    torch.testing.assert_close(m.fc.bias.grad, b.grad)


@pytest.mark.parametrize(("index", "expect"), [(np.array(-1), ".select(1, 2)"), (np.array([1, 2]), ".narrow(1, 1, 2)"),
                                              (np.array([2, 0]), "gather(")])
def test_constant_gathers_become_views(index, expect):
    g = Graph("g")
    x = g.add_input("x", TensorType(DType.float32, (2, 3, 4)))
    idx = g.add_const("idx", index.astype(np.int64))
    g.set_outputs([g.create_node("gather", [x, idx], {"axis": 1}).output])
    m = to_torch(g)
    assert expect in m.graphopt_source
    xs = torch.randn(2, 3, 4)
    torch.testing.assert_close(m(xs), xs[:, torch.from_numpy(index)] if index.ndim else xs[:, int(index)])


def test_emitted_forward_releases_intermediates_at_last_use():
    """Locals are deleted after their last use, so a deep net's intermediates do not all stay alive."""
    g = Graph("chain")
    x = g.add_input("x", TensorType(DType.float32, (2, 3)))
    v = x
    for _ in range(4):
        v = g.create_node("relu", [v]).output
    s = g.create_node("split", [v], {"axis": 1, "num_outputs": 3})
    g.set_outputs([g.create_node("add", [s.outputs[0], v]).output])
    src = to_torch(g).graphopt_source
    forward = src[src.index("def forward"):]
    assert forward.count("del ") >= 4 and "del split_out1, split_out2" in forward
    ref = torch.relu(torch.randn(2, 3))
    out = to_torch(g)(ref)
    torch.testing.assert_close(out, ref[:, :1] + ref)
