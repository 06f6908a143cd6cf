"""The emitted PyTorch module holds every constant, whatever it is called: names that are ``nn.Module``
attributes (``half``, ``train``), names that are also module paths (``a`` and ``a.b``) and empty components
all work, and the module computes what onnxruntime computes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from graphopt.backends.onnx import to_onnx
from graphopt.backends.torch import module_keys, to_torch
from graphopt.frontends.onnx import load_onnx
from graphopt.frontends.torch import from_torch
from graphopt.ir import DType, Graph, TensorType


def test_gelu_model_survives_graphopt_onnx_round_trip(tmp_path):
    """graphopt's ONNX export decomposes GELU with a scalar initializer named ``half`` (below opset 20); loading
    that file and emitting PyTorch used to fail with "attribute 'half' already exists"."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()
    x = torch.randn(4, 10, 16)
    g = from_torch(net, (x,), dynamic_batch=True)
    path = tmp_path / "gelu.onnx"
    to_onnx(g, path=path, opset=17)
    back = load_onnx(path)
    assert "half" in back.constants
    got = to_torch(back).eval()(x).detach().numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, net(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_awkward_constant_names_get_valid_unique_module_keys():
    names = ["half", "train.weight", "train.bias", "a", "a.b", "blocks..w", "half_", "ok.weight"]
    keys = module_keys(names)
    assert keys["ok.weight"] == "ok.weight" and keys["a.b"] == "a.b"  # ordinary names are state_dict keys
    assert keys["half"] not in ("half", "half_") and keys["half_"] == "half_"  # unique after the suffix
    assert keys["train.weight"] == "train_.weight" and keys["train.bias"] == "train_.bias"  # one module path
    assert keys["a"] != "a" and keys["blocks..w"] == "blocks._.w"
    assert len(set(keys.values())) == len(names)
    for k in keys.values():
        assert all(p and not hasattr(torch.nn.Module, p) for p in k.split("."))


def test_module_with_awkward_names_computes_the_graph():
    g = Graph("names")
    x = g.add_input("x", TensorType(DType.float32, (2, 3)))
    rng = np.random.default_rng(0)
    consts = {name: g.add_const(name, rng.standard_normal(3).astype(np.float32), "param")
              for name in ("train", "a", "a.b", "to.x")}
    y = x
    for c in consts.values():
        y = g.create_node("add", [y, c]).output
    g.set_outputs([y])
    m = to_torch(g)
    xv = rng.standard_normal((2, 3)).astype(np.float32)
    want = xv + sum(c.const for c in consts.values())
    np.testing.assert_allclose(m(torch.from_numpy(xv)).detach().numpy(), want, rtol=1e-6)
    assert "a.b" in m.state_dict() and len(m.state_dict()) == 4  # every constant is a trainable parameter
    assert sum(p.numel() for p in m.parameters()) == 12


@pytest.mark.parametrize("name", ["half", "float", "forward", "training"])
def test_reserved_leaf_name_alone(name):
    g = Graph("one")
    x = g.add_input("x", TensorType(DType.float32, (2,)))
    c = g.add_const(name, np.array([1.0, 2.0], np.float32), "param")
    g.set_outputs([g.create_node("mul", [x, c]).output])
    out = to_torch(g)(torch.tensor([3.0, 4.0]))
    assert out.tolist() == [3.0, 8.0]
