"""Core IR: graph editing, inference with symbolic dims, costs, verifier, serialization, PyTorch backend."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from graphopt.backends.torch import to_python_source, to_torch
from graphopt.ir import (
    DType,
    Graph,
    IRError,
    IRFormatError,
    TensorType,
    UnsupportedOpError,
    VerificationError,
    graph_cost,
    load,
    save,
    structure_hash,
    verify,
)
from graphopt.ir.infer import set_input_shapes


def conv_bn_relu_graph(batch="batch") -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("cbr")
    x = g.add_input("x", TensorType(DType.float32, (batch, 3, 8, 8)))
    w = g.add_const("conv.weight", rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "param")
    b = g.add_const("conv.bias", rng.standard_normal(8).astype(np.float32), "param")
    gamma = g.add_const("bn.weight", rng.uniform(0.5, 1.5, 8).astype(np.float32), "param")
    beta = g.add_const("bn.bias", rng.standard_normal(8).astype(np.float32), "param")
    mean = g.add_const("bn.running_mean", rng.standard_normal(8).astype(np.float32), "buffer")
    var = g.add_const("bn.running_var", rng.uniform(0.5, 2, 8).astype(np.float32), "buffer")
    c = g.create_node("conv", [x, w, b], {"pads": [1, 1, 1, 1], "strides": [2, 2]}, name="conv").output
    n = g.create_node("batch_norm", [c, gamma, beta, mean, var], name="bn").output
    r = g.create_node("relu", [n], name="relu").output
    shp = g.create_node("shape", [r], {"end": 1}).output
    tail = g.add_const("tail", np.array([-1], dtype=np.int64))
    target = g.create_node("concat", [shp, tail], {"axis": 0}).output
    y = g.create_node("reshape", [r, target], name="flat").output
    g.set_outputs([y])
    return g


class Reference(torch.nn.Module):
    def __init__(self, g: Graph):
        super().__init__()
        c = g.constants
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        sd = {k: torch.from_numpy(c[k].const.copy()) for k in
              ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]}
        self.load_state_dict(sd, strict=False)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return y.reshape(y.shape[0], -1)


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


def test_backend_matches_reference_module_in_eval_and_train():
    g = conv_bn_relu_graph()
    ref = Reference(g)
    emitted = to_torch(g)
    x = torch.randn(5, 3, 8, 8)
    ref.eval()
    emitted.eval()
    torch.testing.assert_close(emitted(x), ref(x), rtol=1e-4, atol=1e-5)
    # Train mode: batch statistics and running-stat updates must match the original module exactly.
    ref.train()
    emitted.train()
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1)
    opt_e = torch.optim.SGD(emitted.parameters(), lr=0.1)
    for model, opt in ((ref, opt_r), (emitted, opt_e)):
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        model.loss = loss.item()
    assert emitted.loss == pytest.approx(ref.loss, rel=1e-5)
    for k, v in ref.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(emitted.state_dict()[k], v, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trips_and_parameters_are_trainable():
    g = conv_bn_relu_graph()
    m = to_torch(g)
    names = {n for n, _ in m.named_parameters()}
    assert names == {"conv.weight", "conv.bias", "bn.weight", "bn.bias"}
    assert {n for n, _ in m.named_buffers()} >= {"bn.running_mean", "bn.running_var"}
    m2 = to_torch(g)
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1.0)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(m.eval()(x), m2.eval()(x))


def test_emitted_source_runs_standalone(tmp_path):
    g = conv_bn_relu_graph()
    m = to_torch(g).eval()
    (tmp_path / "model.py").write_text(to_python_source(g, "Net"))
    torch.save(m.state_dict(), tmp_path / "weights.pt")
    x = torch.randn(3, 3, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch; sys.path.insert(0, '.'); import model\n"
        "m = model.Net(); m.load_state_dict(torch.load('weights.pt', weights_only=True)); m.eval()\n"
        "torch.save(m(torch.load('x.pt')), 'y.pt')\n"
    )
    # -I: isolated mode, so graphopt itself is not importable from the emitted file's point of view.
    subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, check=True)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), m(x))


def test_conv_cost_closed_form():
    g = conv_bn_relu_graph(batch=2)
    conv = g.find_node("conv")
    from graphopt.ir import node_cost

    c = node_cost(conv)
    # out 2x8x4x4, each output: 3*3*3 MACs + bias add
    assert c.flops == 2 * (2 * 8 * 4 * 4) * 27 + 2 * 8 * 4 * 4
    assert c.params == 8 * 27 + 8
    assert c.bytes_written == 2 * 8 * 4 * 4 * 4
    assert graph_cost(g).params == 8 * 27 + 8 + 16
    assert graph_cost(conv_bn_relu_graph()).flops is None  # symbolic batch: unknown, not guessed


def test_insert_replace_erase_and_use_lists():
    g = conv_bn_relu_graph()
    relu = g.find_node("relu")
    with g.inserting_after(relu):
        s = g.create_node("sigmoid", [relu.output], name="sig")
    flat = g.find_node("flat")
    flat.set_input(0, s.output)
    assert [u.node.name for u in s.output.uses] == ["flat"]
    assert relu.output.users[0].name in ("shape", "sig")
    verify(g)
    g.replace_all_uses(s.output, relu.output)
    g.erase_node(s)
    verify(g)
    with pytest.raises(IRError, match="used by"):
        g.erase_node(relu)


def test_verifier_names_offending_node():
    g = conv_bn_relu_graph()
    relu = g.find_node("relu")
    relu.outputs[0].type = TensorType(DType.float32, ("batch", 9, 4, 4))
    with pytest.raises(VerificationError, match="node relu"):
        verify(g)
    g = conv_bn_relu_graph()
    # Move relu's consumer before it: a use of a value defined later (what a cycle looks like in order).
    g.move_before(g.find_node("flat"), g.find_node("relu"))
    with pytest.raises(VerificationError, match="node flat .* later node"):
        verify(g)
    g.toposort()
    verify(g)


def test_toposort_reports_cycles():
    g = conv_bn_relu_graph()
    relu = g.find_node("relu")
    bn = g.find_node("bn")
    bn.set_input(0, relu.output)  # bn -> relu -> bn
    with pytest.raises(IRError, match="cycle"):
        g.toposort()


def test_unsupported_op_message_says_how_to_register():
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (1,)))
    with pytest.raises(UnsupportedOpError, match="Register one with"):
        g.create_node("frobnicate", [x])


def test_subgraph_extraction_boundaries():
    g = conv_bn_relu_graph()
    nodes = [g.find_node("bn"), g.find_node("relu")]
    sub, b_in, b_out = g.subgraph(nodes)
    assert [v.name for v in b_in] == ["conv"]
    assert [v.name for v in b_out] == ["relu"]
    assert set(sub.constants) == {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"}
    verify(sub)
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == len(g)
    assert nxg.has_edge("bn", "relu")


def test_json_round_trip_is_exact(tmp_path):
    g = conv_bn_relu_graph()
    g.find_node("conv").meta["provenance"] = {"pass": "test"}
    p = save(g, tmp_path / "m.json")
    g2 = load(p)
    verify(g2)
    assert structure_hash(g2) == structure_hash(g)
    assert [n.meta for n in g2.nodes] == [{k: v for k, v in n.meta.items()} for n in g.nodes]
    for name, v in g.constants.items():
        np.testing.assert_array_equal(g2.constants[name].const, v.const)
        assert g2.constants[name].kind == v.kind
    assert [str(o.type) for o in g2.outputs] == [str(o.type) for o in g.outputs]


def test_structure_hash_ignores_names_but_not_structure():
    a = conv_bn_relu_graph()
    b = conv_bn_relu_graph()
    b.find_node("relu").name = "renamed"
    assert structure_hash(a) == structure_hash(b)
    c = conv_bn_relu_graph()
    c.find_node("conv").attrs["strides"] = [1, 1]
    from graphopt.ir import infer_graph

    infer_graph(c)
    assert structure_hash(c) != structure_hash(a)


def test_corrupt_ir_files_give_clear_errors(tmp_path):
    g = conv_bn_relu_graph()
    p = save(g, tmp_path / "m.json")
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    with pytest.raises(IRFormatError, match="truncated or corrupt"):
        load(p)
    doc = json.loads(text)
    doc["nodes"][1]["inputs"][0] = "ghost"
    p.write_text(json.dumps(doc))
    with pytest.raises(IRFormatError, match="ghost"):
        load(p)
    p.write_text(text)
    w = tmp_path / "m.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(IRFormatError, match="corrupt weights"):
        load(p)


def test_scalar_constants_round_trip_with_their_rank(tmp_path):
    """0-d constants (e.g. a mutation's scalar multiplier) keep shape () through save/load."""
    g = Graph("s")
    x = g.add_input("x", TensorType(DType.float32, (2,)))
    c = g.add_const("c", np.asarray(2.0, dtype=np.float32), "param")
    g.set_outputs([g.create_node("mul", [x, c]).output])
    back = load(save(g, tmp_path / "s.json"))
    assert back.constants["c"].const.shape == () and back.constants["c"].const == np.float32(2.0)
