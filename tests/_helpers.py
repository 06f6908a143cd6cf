"""Helpers shared by several test modules (imported as ``from _helpers import ...``; pytest puts tests/ on the path)."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch import nn

from graphopt.backends.onnx import to_onnx
from graphopt.compare import verify
from graphopt.frontends.onnx import load_onnx
from graphopt.ir import DType, TensorType
from graphopt.ir import verify as verify_ir
from graphopt.ir.graph import Graph
from graphopt.ir.registry import get_op
from graphopt.pass_manager import PassManager


def run_ir(g: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Reference execution of the IR: every node's registry implementation on CPU tensors, in order."""
    env: dict[int, object] = {id(v): torch.from_numpy(np.array(feeds[v.name])) for v in g.inputs}
    env.update({id(v): torch.from_numpy(np.array(v.const)) for v in g.constants.values()})
    for n in g.nodes:
        od = get_op(n.op)
        args = []
        for i, v in enumerate(n.inputs):
            if v is None:
                args.append(None)
            elif od.input_spec(i).static and v.is_const:
                args.append(np.asarray(v.const).tolist())
            else:
                args.append(env[id(v)])
        with torch.no_grad():
            res = od.fn(*args, **n.attrs)
        for o, t in zip(n.outputs, res if isinstance(res, tuple | list) else [res], strict=True):
            env[id(o)] = t
    return [np.asarray(env[id(v)]) for v in g.outputs]  # type: ignore[arg-type]


class TinyCNN(torch.nn.Module):
    """conv-bn-relu-mean-linear, 3x(H, W) -> 10 logits: the smallest model with weights, BN and a head (too small
    for any segment mutant to fit a 1.1x FLOPs window; small enough to quantize in a second)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.c, self.b, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.b(self.c(x))).mean((2, 3)))


# ------------------------------------------------------------------- graphs and models shared across folders
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


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = self.down(x)
        return self.head(x.mean((2, 3)))


# ------------------------------------- ONNX models built node by node, checked against onnxruntime (frontend, ops)
def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def make_model(nodes, inputs, outputs, inits=(), opset: int = 18, ir_version: int | None = None):
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version or min(helper.find_min_ir_version_for([helper.make_opsetid("", opset)]), 10)
    return m


def vi(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def assert_matches_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol=1e-5, atol=1e-6) -> Graph:
    want = run_ort(model, feeds)
    g = load_onnx(model)
    assert all(v.type is not None for v in g.values())
    for got, ref in zip(run_ir(g, feeds), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
    exported = to_onnx(g)
    onnx.checker.check_model(exported, full_check=True)
    for got, ref in zip(run_ort(exported, feeds), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
    return g


# --------------------------------------------------------------------------------- pass tests (tests/passes/)
# Two families of pass tests import these under short local names (``run``, ``ops``, ``same``, ``export``):
# graph-based (a Graph in, compared by graphopt.verify) and file-based (an exported .onnx file in, the result
# re-exported at opset 18 and compared with onnxruntime on that file).
def run_passes(graph: Graph, pipeline: str) -> Graph:
    return PassManager(pipeline, verify_ir=True).run(graph).graph


def op_counts(g: Graph) -> Counter:
    return Counter(n.op for n in g.nodes)


def assert_same(ref, cand, **kw) -> None:
    rep = verify(ref, cand, **kw)
    assert rep.ok, str(rep)


def export_torchscript(module: nn.Module, inputs: tuple, path: Path, opset: int = 17) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, str(path), opset_version=opset, dynamo=False)
    return str(path)


PREP_PIPELINE = "canonicalize,fold-constants,cse,dce"


def export_torchscript_seeded(module: nn.Module, inputs: tuple, path: Path) -> str:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, str(path), opset_version=17, dynamo=False)
    return str(path)


def run_passes_on_file(path: str, pipeline: str) -> Graph:
    return PassManager(pipeline, verify_ir=True).run(load_onnx(path)).graph


def assert_same_at_opset18(ref: str, g: Graph, **kw) -> None:
    rep = verify(ref, to_onnx(g, opset=18), **kw)
    assert rep.ok, str(rep)


class MatAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(torch.randn(6, 5)), nn.Parameter(torch.randn(5))

    def forward(self, x):
        return torch.relu(x @ self.w + self.b)


class Attention(nn.Module):
    """BERT-style self-attention: separate Q/K/V Linear layers (biases), head split, 1/sqrt(d) Div, head merge."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.h, self.d = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        for lin in (self.q, self.k, self.v, self.o):
            nn.init.normal_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, c = x.shape
        q = self.q(x).view(b, s, self.h, self.d).transpose(1, 2)
        k = self.k(x).view(b, s, self.h, self.d).permute(0, 2, 3, 1)
        v = self.v(x).view(b, s, self.h, self.d).transpose(1, 2)
        p = torch.softmax(q @ k / math.sqrt(self.d), dim=-1)
        return self.o((p @ v).transpose(1, 2).reshape(b, s, c))


class GraphNet:
    """Builds small NCHW CNNs with the Graph API (AutoGO tests need no frontend)."""

    def __init__(self, name: str = "net", shape=(2, 3, 16, 16), seed: int = 0) -> None:
        self.g = Graph(name)
        self.rng = np.random.default_rng(seed)
        self.k = 0
        self.x = self.g.add_input("x", TensorType(DType.float32, shape))

    def _n(self, p):
        self.k += 1
        return f"{p}{self.k}"

    def conv(self, x, cout, k=3, s=1, group=1):
        n = self._n("conv")
        w = self.g.add_const(n + ".weight", self.rng.standard_normal((cout, x.shape[1] // group, k, k)).astype(
            np.float32) * 0.1, "param")
        return self.g.create_node("conv", [x, w], {"pads": [k // 2] * 4, "strides": [s, s], "group": group},
                                  name=n).output

    def bn(self, x):
        c, n = x.shape[1], self._n("bn")
        ps = [self.g.add_const(f"{n}.{a}", f(c, np.float32), kd) for a, f, kd in
              [("weight", np.ones, "param"), ("bias", np.zeros, "param"), ("mean", np.zeros, "buffer"),
               ("var", np.ones, "buffer")]]
        return self.g.create_node("batch_norm", [x, *ps], name=n).output

    def op(self, op, *xs, **attrs):
        return self.g.create_node(op, list(xs), attrs, name=self._n(op)).output

    def cbr(self, x, c, k=3, s=1):
        return self.op("relu", self.bn(self.conv(x, c, k, s)))

    def block(self, x, c, s=1):
        y = self.bn(self.conv(self.cbr(x, c, 3, s), c))
        sc = x if s == 1 and x.shape[1] == c else self.bn(self.conv(x, c, 1, s))
        return self.op("relu", self.op("add", y, sc))

    def head(self, x):
        f = self.op("flatten", self.op("global_avg_pool", x))
        n = self._n("fc")
        w = self.g.add_const(n + ".weight", self.rng.standard_normal((10, f.shape[1])).astype(np.float32), "param")
        b = self.g.add_const(n + ".bias", np.zeros(10, np.float32), "param")
        self.g.set_outputs([self.g.create_node("gemm", [f, w, b], {"transB": 1}, name=n).output])
        verify_ir(self.g)
        return self.g

    def done(self, *outs):
        self.g.set_outputs(list(outs))
        verify_ir(self.g)
        return self.g


def graph_resnet(name="resnet", widths=(8, 16), blocks=2, seed=0):
    b = GraphNet(name, seed=seed)
    x = b.cbr(b.x, widths[0])
    for i, w in enumerate(widths):
        for j in range(blocks):
            x = b.block(x, w, 2 if i > 0 and j == 0 else 1)
    return b.head(x)
