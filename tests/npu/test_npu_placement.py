"""Placement instead of refusal: `export --target` writes the model with every node on the NPU or the host, and
the report and console lead with where things run, each host node with its violated constraint and its fix."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from graphopt.cli import app
from graphopt.export import export_model, report_paths
from graphopt.ir import DType, Graph, TensorType
from graphopt.ir.cost import node_cost
from graphopt.npu.legalize import check, legalize
from graphopt.npu.placement import place
from graphopt.npu.profiles import load_profile

runner = CliRunner()


class _LnCNN(nn.Module):
    """Conv stem, a channel LayerNorm the ConvNeXt way (NHWC permute, LayerNorm, permute back), conv, mean head.
    ethos-u55-like has Transpose but neither LayerNormalization nor the Sqrt/Div its decomposition needs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.ln = nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.LayerNorm(16)
        self.c2, self.fc = nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(torch.relu(self.c2(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def ln_cnn(tmp_path_factory) -> tuple[Path, nn.Module]:
    net = _LnCNN().eval()
    path = tmp_path_factory.mktemp("ln") / "ln_cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(path), opset_version=17, dynamo=False)
    return path, net


def test_export_places_unsupported_nodes_on_the_host_and_writes_the_model(ln_cnn, tmp_path):
    """ethos-u55-like refused this model (exit 1, LayerNormalization op-not-supported, no model). Now it is written
    with the LayerNorm on the host, the console leads with the placement, and the int8 model computes what the
    PyTorch model does."""
    src, net = ln_cnn
    out = tmp_path / "npu.onnx"
    r = runner.invoke(app, ["export", str(src), "-o", str(out), "-t", "ethos-u55-like", "--calib", "cifar10-demo",
                            "--calib-samples", "32", "--eval-samples", "64", "--latency-runs", "0"])
    assert r.exit_code == 0, r.output
    assert out.exists()
    doc = json.loads(report_paths(out)[1].read_text())
    assert doc["status"] == "host-fallback" and doc["exit_code"] == 0 and doc["ok"]
    pl = doc["placement"]
    assert [(h["op"], [c["rule"] for c in h["constraints"]]) for h in pl["host_nodes"]] == [
        ("LayerNormalization", ["op-not-supported"])]
    fix = pl["host_nodes"][0]["fix"]
    assert "'layernorm-div'" in fix and "lacks Sqrt, Div" in fix and "[ops]" in fix
    assert pl["totals"]["host"]["nodes"] == 1 and pl["totals"]["npu"]["nodes"] >= 6
    assert pl["transfers"] == 2  # Transpose -> LayerNorm (host) -> Transpose
    assert abs(pl["totals"]["npu"]["flops_share"] + pl["totals"]["host"]["flops_share"] - 1) < 1e-9
    assert 0 < pl["totals"]["host"]["flops_share"] < 0.05  # the convs carry the FLOPs
    assert pl["summary"].startswith("ethos-u55-like: ") and "1 on the host" in pl["summary"]
    # console: placement first, the host node's kind, constraint and fix
    text = r.output
    assert text.index("placement:") < text.index("fp32 check")
    assert "host: LayerNormalization [op-not-supported]" in text and "fix: graphopt's rewrite" in text
    md = report_paths(out)[0].read_text()
    assert md.index("## Placement") < md.index("## fp32 check") and "| `" in md.split("## Placement")[1]
    # the written model is int8 and runs: top-1 agrees with PyTorch on real images
    from graphopt.compare import run_model
    from graphopt.frontends.onnx import load_onnx
    from graphopt.npu.quantize import load_calibration

    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    g = load_onnx(str(src))
    xs = [f[g.inputs[0].name] for f in load_calibration("cifar10-demo", g, n=64).feeds]
    with torch.no_grad():
        want = net(torch.from_numpy(np.concatenate(xs))).numpy()
    got = np.concatenate([run_model(str(out), [x])[0] for x in xs])
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_strict_refuses_with_exit_3_from_python_too(ln_cnn, tmp_path):
    src, _ = ln_cnn
    out = tmp_path / "strict.onnx"
    rep = export_model(src, out, target="ethos-u55-like", calib="cifar10-demo", calib_samples=16, eval_samples=16,
                       latency_runs=0, strict=True)
    assert not rep.ok and rep.status == "violations" and rep.exit_code == 3
    assert not out.exists() and report_paths(out)[1].exists()
    assert rep.placement["host_nodes"][0]["op"] == "LayerNormalization"  # the placement is still reported


def test_placement_of_a_hand_built_graph(tmp_path):
    """conv (NPU) -> softmax over channels (host: op_axes) -> conv (NPU): FLOPs, latency and transfers per side."""
    prof = load_profile("edgetpu-like")  # Softmax only on the last axis, 1-D <= 16000 elements
    g = Graph("p")
    x = g.add_input("x", TensorType(DType.float32, (1, 3, 8, 8)))
    rng = np.random.default_rng(0)
    w1 = g.add_const("w1", rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "param")
    w2 = g.add_const("w2", rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "param")
    a = g.create_node("conv", [x, w1], {"pads": [1, 1, 1, 1]}, name="c1").output
    s = g.create_node("softmax", [a], {"axis": 1}, name="sm").output
    g.set_outputs([g.create_node("conv", [s, w2], {}, name="c2").output])
    viol = [v.to_dict() for v in check(g, prof)]
    assert {v["node"] for v in viol} == {"sm"}
    pl = place(g, prof, viol)
    assert pl.devices == {"c1": "npu", "sm": "host", "c2": "npu"} and pl.transfers == 2
    flops = {n.name: node_cost(n).flops for n in g.nodes}
    assert flops["c1"] == 2 * 4 * 64 * 27  # one multiply-add = 2 FLOPs
    assert pl.totals["host"]["flops"] == flops["sm"] and pl.totals["npu"]["flops"] == flops["c1"] + flops["c2"]
    assert pl.totals["host"]["latency_us"] >= prof.perf.fallback_overhead_us  # a host hand-over is not free
    (h,) = pl.host_nodes
    assert h.op == "Softmax" and [c["rule"] for c in h.constraints] == ["op_axes", "max_rank"]
    assert "'softmax-2d'" not in h.fix  # that rewrite exists and needs nothing the target lacks: it would have run
    d = pl.to_dict()
    assert d["host_ops"] == {"Softmax": 1} and "1 on the host" in d["summary"]


def test_legalized_softmax_leaves_nothing_on_the_host():
    """The same softmax after legalization: every node on the NPU, the summary says so."""
    prof = load_profile("edgetpu-like")
    g = Graph("p")
    x = g.add_input("x", TensorType(DType.float32, (1, 4, 2, 2)))
    g.set_outputs([g.create_node("softmax", [x], {"axis": 1}, name="sm").output])
    res = legalize(g, prof)
    pl = place(g, prof, [v.to_dict() for v in res.violations])
    assert not pl.host_nodes and pl.summary().startswith("all ") and "0 on the host" in pl.summary()


def _lrn_cnn(path: Path) -> Path:
    """AlexNet's conv -> LRN -> MaxPool, small (written with onnx.helper: torch exports LRN with an If):
    ethos-u55-like has neither LRN nor the Sqrt/Div of its rewrite."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name, *shape):  # noqa: ANN001, ANN202
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("LRN", ["r1"], ["n1"], name="lrn1", size=3, alpha=1e-4, beta=0.75, bias=1.0),
             helper.make_node("MaxPool", ["n1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Flatten", ["r2"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "lrn_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 3, 3), w("b2", 8),
                               w("w3", 10, 8 * 14 * 14), w("b3", 10)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_nodes_left_float_behind_a_host_node_say_whom_they_follow(tmp_path):
    """The MaxPool after the LRN is quantizable but reads a float tensor, so onnxruntime leaves it float: its fix
    is the LRN's, not "the quantizer has no int8 MaxPool"."""
    src = _lrn_cnn(tmp_path / "lrn.onnx")
    rep = export_model(src, tmp_path / "npu.onnx", target="ethos-u55-like", calib="cifar10-demo", calib_samples=16,
                       eval_samples=16, latency_runs=0)
    assert rep.ok and rep.status == "host-fallback"
    hosts = {h["op"]: h for h in rep.placement["host_nodes"]}
    lrn = hosts["LRN"]
    assert {c["rule"] for c in lrn["constraints"]} >= {"op-not-supported"}
    assert "'lrn-conv-band'" in lrn["fix"] and "lacks Sqrt, Div" in lrn["fix"]
    pool = hosts["MaxPool"]
    assert [c["rule"] for c in pool["constraints"]] == ["float_fallback"]
    assert f"from {lrn['node']} (LRN)" in pool["constraints"][0]["detail"]
    assert pool["fix"].startswith("none needed for this node") and "'pool-global'" not in pool["fix"]
