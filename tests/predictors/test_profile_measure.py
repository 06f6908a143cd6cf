"""``graphopt profile``: onnxruntime profiler times mapped onto IR nodes (every node accounted for, fused kernels
attributed to their main node), on real models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from graphopt.predictors.latency.measure import map_profile, profile_graph
from typer.testing import CliRunner

from graphopt.cli import app
from graphopt.frontends.torch import from_torch

runner = CliRunner()


class _ResBlock(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.block = _ResBlock(16)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = self.block(torch.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _cnn():
    torch.manual_seed(0)
    net = _Net().eval()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return from_torch(net, (torch.randn(1, 3, 16, 16),))


def _check_accounting(g, res):
    names = {n.name for n in g.nodes}
    assert set(res.node_status) == names  # every IR node accounted for
    kinds = {s.split(":", 1)[0] for s in res.node_status.values()}
    assert kinds <= {"timed", "fused", "folded"}  # these graphs have no dead code: no live node is "removed"
    for name, st in res.node_status.items():
        if st.startswith("fused:"):
            assert res.node_status[st[6:]] == "timed"  # fused into a node that carries the kernel's time
        if st != "timed":
            assert res.node_us.get(name, 0.0) == 0.0
    assert "<unmapped>" not in res.node_us  # every optimized node's time went to an IR node
    total_ort = sum(n.us for n in res.ort_nodes)
    assert sum(res.node_us.values()) == pytest.approx(total_ort)
    assert sum(k["us"] for k in res.kernels) == pytest.approx(total_ort)
    assert total_ort / 1e3 == pytest.approx(res.kernel_sum_ms)
    covered = [s for k in res.kernels for s in k["ir_nodes"]]
    assert len(covered) == len(set(covered))  # kernels are disjoint


def test_conv_bn_relu_and_residual_are_one_kernel_attributed_to_the_conv():
    g = _cnn()
    res = profile_graph(g, runs=6, warmup=1, rounds=2)
    _check_accounting(g, res)
    assert res.latency_ms > 0 and res.p10_ms <= res.latency_ms <= res.p90_ms and len(res.run_ms) == 6
    op = {n.name: n.op for n in g.nodes}
    # every BatchNorm and every ReLU after a conv was fused into that conv's kernel (onnxruntime runs none of them)
    for n in g.nodes:
        if n.op == "batch_norm" or (n.op == "relu" and op.get(n.inputs[0].producer.name) in ("batch_norm", "add")):
            st = res.node_status[n.name]
            assert st.startswith("fused:") and op[st[6:]] == "conv", (n.name, st)
    # the residual add goes with the second conv of the block (NCHWc Conv with a Sum input), not with the next one
    add = next(n for n in g.nodes if n.op == "add")
    conv2 = add.inputs[0].producer.inputs[0].producer if add.inputs[0].producer.op == "batch_norm" else None
    kern = next(k for k in res.kernels if add.name in k["ir_nodes"])
    assert conv2 is not None and conv2.name in kern["ir_nodes"]
    convs = [n for n in g.nodes if n.op == "conv"]
    assert all(res.node_status[c.name] == "timed" and res.node_us[c.name] > 0 for c in convs)
    # the conv kernels carry most of the time
    assert sum(res.node_us[c.name] for c in convs) > 0.4 * sum(res.node_us.values())


def test_attention_block_maps_fused_matmuls_and_reorders():
    """A transformer block (MatMul+Add -> Gemm with inserted Reshapes, scaled QK^T -> FusedMatMul, LayerNorm):
    onnxruntime renames most tensors; every node is still accounted for."""
    from graphopt.predictors.latency.fit_cpu import _Builder, _token_block

    from graphopt.ir import DType, TensorType

    rng = np.random.default_rng(1)
    b = _Builder(rng, "attn")
    x = b.g.add_input("x", TensorType(DType.float32, (1, 32, 64)))
    y = x
    while sum(n.op == "softmax" for n in b.g.nodes) == 0:
        y = _token_block(b, y)
    b.g.set_outputs([y])
    res = profile_graph(b.g, runs=4, warmup=1, rounds=1)
    _check_accounting(b.g, res)
    ops = {n.op_type for n in res.ort_nodes}
    assert ops & {"Gemm", "FusedMatMul", "MatMul"}
    # an optimized node without an anchor (an inserted Reshape) is attached to a node that has one
    for n in res.ort_nodes:
        if not n.ir_nodes:
            assert n.attached_to is not None and n.primary is not None


def test_unnamed_nodes_and_layout_reorders_are_attributed():
    """HardSwish: onnxruntime splits it into HardSigmoid + Mul, unnamed (profiled as ``OpType_<index>``), inside
    an NCHWc region closed by a ReorderOutput that writes the IR value: the HardSwish IR node carries their time."""
    from graphopt.predictors.latency.fit_cpu import _Builder

    from graphopt.ir import DType, TensorType

    b = _Builder(np.random.default_rng(0), "hs")
    x = b.g.add_input("x", TensorType(DType.float32, (1, 16, 16, 16)))
    b.g.set_outputs([b.node("hard_swish", [b.conv(x, 16, 3)])])
    res = profile_graph(b.g, runs=4, warmup=1, rounds=1)
    _check_accounting(b.g, res)
    hs = next(n.name for n in b.g.nodes if n.op == "hard_swish")
    assert res.node_status[hs] == "timed" and res.node_us[hs] > 0
    assert {n.op_type for n in res.ort_nodes if n.primary == hs} >= {"Mul"}


def test_map_profile_without_an_optimized_graph_uses_names():
    """With no optimized graph (onnxruntime could not save it) the emitted graph stands in: each emitted node's
    time goes to its IR node, a decomposition's helper nodes to the IR node they compute."""
    from graphopt.backends.onnx import to_onnx

    g = _cnn()
    emitted = to_onnx(g)
    times = {n.name: float(i + 1) for i, n in enumerate(emitted.graph.node)}
    res = map_profile(g, emitted, None, times)
    assert sum(res["node_us"].values()) == pytest.approx(sum(times.values()))
    timed = {k for k, v in res["node_status"].items() if v == "timed"}
    assert timed == {n.name for n in g.nodes}  # one emitted node per IR node here


def test_profile_cli_json_and_table(tmp_path):
    from graphopt.backends.onnx import to_onnx

    g = _cnn()
    path = tmp_path / "cnn.onnx"
    to_onnx(g, path=path)
    res = runner.invoke(app, ["profile", str(path), "--runs", "4", "--warmup", "1", "--rounds", "2", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for key in ("latency_ms", "p10_ms", "p90_ms", "iqr_rel", "kernel_sum_ms", "node_us", "node_status", "kernels",
                "ort_nodes", "load_avg", "threads", "runs"):
        assert key in d
    assert d["threads"] == 1 and d["runs"] == 4
    res = runner.invoke(app, ["profile", str(path), "--runs", "4", "--warmup", "1", "--nodes"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "Time by IR op" in res.stdout and "fused:" in res.stdout
    bad = runner.invoke(app, ["profile", str(path), "--runs", "0"])
    assert bad.exit_code == 2 and "--runs" in bad.output
