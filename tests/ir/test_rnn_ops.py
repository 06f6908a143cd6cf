"""ONNX LSTM / GRU / RNN: imported as registry ops, run by the emitted PyTorch and re-exported, each checked
against onnxruntime on the original model over the spec's options (directions, layouts, sequence_lens, initial
states, peepholes, clip, linear_before_reset, named activations with alpha/beta)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _helpers import assert_matches_ort, make_model, run_ir, run_ort, vi
from onnx import TensorProto, helper, numpy_helper

from graphopt.frontends.onnx import load_onnx
from graphopt.ir.cost import node_cost

T, BATCH, IN, H = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _model(kind: str, *, direction: str = "forward", layout: int = 0, lens: bool = False, init: bool = False,
           peep: bool = False, **attrs) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(sum(map(ord, f"{kind}{direction}{lens}{init}{peep}")))
    d, g = (2 if direction == "bidirectional" else 1), GATES[kind]
    inits = [numpy_helper.from_array((rng.standard_normal((d, g * H, IN)) * 0.5).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((d, g * H, H)) * 0.5).astype(np.float32), "R"),
             numpy_helper.from_array((rng.standard_normal((d, 2 * g * H)) * 0.2).astype(np.float32), "B")]
    names = ["X", "W", "R", "B", "", "", "", ""]
    x_shape = [BATCH, T, IN] if layout else [T, BATCH, IN]
    inputs = [vi("X", ["b", "t", IN] if layout else ["t", "b", IN])]
    feeds = {"X": rng.standard_normal(x_shape).astype(np.float32)}
    if lens:
        names[4] = "L"
        inputs.append(vi("L", [BATCH], TensorProto.INT32))
        feeds["L"] = np.array([T, 2, 4], dtype=np.int32)
    state = [BATCH, d, H] if layout else [d, BATCH, H]
    if init:
        names[5] = "H0"
        inputs.append(vi("H0", state))
        feeds["H0"] = rng.standard_normal(state).astype(np.float32)
        if kind == "LSTM":
            names[6] = "C0"
            inputs.append(vi("C0", state))
            feeds["C0"] = rng.standard_normal(state).astype(np.float32)
    if peep:
        names[7] = "P"
        inits.append(numpy_helper.from_array((rng.standard_normal((d, 3 * H)) * 0.3).astype(np.float32), "P"))
    while names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    node = helper.make_node(kind, names, outs, hidden_size=H, direction=direction, layout=layout, **attrs)
    m = make_model([node], inputs, [vi(o, None) for o in outs], inits, opset=14)
    return m, feeds


CASES = [
    ("LSTM", {}), ("LSTM", {"direction": "reverse"}), ("LSTM", {"direction": "bidirectional", "init": True}),
    ("LSTM", {"layout": 1, "init": True}), ("LSTM", {"lens": True}), ("LSTM", {"lens": True, "direction": "reverse"}),
    ("LSTM", {"direction": "bidirectional", "lens": True, "layout": 1}), ("LSTM", {"peep": True, "clip": 0.7}),
    ("LSTM", {"activations": ["HardSigmoid", "Tanh", "Relu"], "activation_alpha": [0.3],
              "activation_beta": [0.4]}),
    ("GRU", {}), ("GRU", {"linear_before_reset": 1}), ("GRU", {"direction": "bidirectional", "init": True}),
    ("GRU", {"lens": True, "direction": "reverse", "layout": 1}), ("GRU", {"clip": 0.5}),
    ("RNN", {}), ("RNN", {"direction": "bidirectional", "lens": True}),
    ("RNN", {"activations": ["Relu"]}), ("RNN", {"activations": ["LeakyRelu", "Affine"], "activation_alpha": [0.2, 0.5],
                                                "activation_beta": [0.1], "direction": "bidirectional"}),
]


@pytest.mark.parametrize(("kind", "opts"), CASES, ids=[f"{k}-{'-'.join(sorted(o)) or 'plain'}" for k, o in CASES])
def test_recurrent_op_matches_onnxruntime(kind: str, opts: dict):
    if opts.get("layout"):
        return _check_batch_first(kind, {k: v for k, v in opts.items() if k != "layout"})
    m, feeds = _model(kind, **opts)
    g = assert_matches_ort(m, feeds, rtol=1e-4, atol=1e-5)
    assert [n.op for n in g.nodes] == [kind.lower()]


def _check_batch_first(kind: str, opts: dict) -> None:
    """onnxruntime has no layout=1 kernels: the batch-first model is checked against onnxruntime on the same
    weights in layout 0, with the inputs and outputs transposed."""
    m0, feeds0 = _model(kind, **opts)
    m1 = onnx.ModelProto()
    m1.CopyFrom(m0)
    node = m1.graph.node[0]
    next(a for a in node.attribute if a.name == "layout").i = 1
    feeds1 = {}
    for inp in m1.graph.input:
        a = feeds0[inp.name]
        if inp.name != "L":  # X [T,B,I] -> [B,T,I]; H0/C0 [D,B,H] -> [B,D,H]
            a = np.ascontiguousarray(a.transpose(1, 0, 2))
            inp.CopyFrom(vi(inp.name, list(a.shape)))
        feeds1[inp.name] = a
    want = run_ort(m0, feeds0)
    got = run_ir(load_onnx(m1), feeds1)
    np.testing.assert_allclose(got[0], want[0].transpose(2, 0, 1, 3), rtol=1e-4, atol=1e-5)
    for g_, w_ in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(g_, w_.transpose(1, 0, 2), rtol=1e-4, atol=1e-5)


def test_shapes_stay_symbolic_and_flops_count_the_gate_matmuls():
    m, _ = _model("LSTM", direction="bidirectional")
    g = load_onnx(m)
    y, yh, yc = g.nodes[0].outputs
    assert y.type.shape == ("t", 2, "b", H) and yh.type.shape == (2, "b", H) == yc.type.shape
    m1, _ = _model("GRU", layout=1)
    assert load_onnx(m1).nodes[0].outputs[0].type.shape == ("b", "t", 1, H)
    static, _ = _model("LSTM")
    static.graph.input[0].CopyFrom(vi("X", [T, BATCH, IN]))
    n = load_onnx(static).nodes[0]
    assert node_cost(n).flops == T * BATCH * (2 * 4 * H * (IN + H) + 10 * H)


def test_torch_lstm_exported_by_torch_onnx_round_trips(tmp_path: Path):
    """The model a user has: nn.LSTM (2 layers, batch_first) -> torch.onnx -> graphopt -> PyTorch and ONNX."""
    from graphopt.backends.torch import to_torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, _ = self.rnn(x)
            return self.head(y[:, -1])

    torch.manual_seed(0)
    net = Net().eval()
    path = tmp_path / "lstm.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, 5, 8),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "b", 1: "t"}})
    x = np.random.default_rng(1).standard_normal((3, 7, 8)).astype(np.float32)
    g = assert_matches_ort(onnx.load(str(path)), {"x": x}, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
        got = to_torch(g).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
