"""The PyTorch backend (graphopt/backends/torch.py): the emitted module matches a hand-written reference in eval and
train mode, state dicts round-trip, the emitted source runs standalone, bfloat16 weights, and the codegen fast paths
(F.linear, constant gathers as views, intermediates released at last use)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from _helpers import conv_bn_relu_graph

from graphopt.backends.torch import to_python_source, to_torch
from graphopt.ir import DType, Graph, TensorType, load, save


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
