"""Fixed-batch relaxation (``passes/relax_batch.py``) on real ``torch.onnx.export`` files.

The reference is independent of graphopt: onnxruntime runs the *exported file* at its own fixed batch, chunk by
chunk, and the relaxed graph (emitted to PyTorch) must give every sample the same output at another batch size.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from graphopt.passes.relax_batch import BatchRelaxError, RelaxReport, relax_batch, verify_relaxed
from typer.testing import CliRunner

import graphopt
from graphopt.backends.torch import to_torch
from graphopt.cli import app
from graphopt.errors import GraphoptError

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (tests/conftest.py)


class ViewHead(nn.Module):
    """conv-bn-relu-pool, then ``x.view(1, 128)``: the batch is baked into the classifier's Reshape."""

    def __init__(self, dynamic: bool = False) -> None:
        super().__init__()
        self.dynamic = dynamic
        self.c, self.b, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(torch.relu(self.b(self.c(x))), 4)
        return self.fc(x.view(x.shape[0] if self.dynamic else 1, 128))


class TokenPrefix(nn.Module):
    """A class token expanded to the batch and a zero pad concatenated to the tokens, then ``reshape(B, -1)``: the
    exporter folds both into constants of batch size and writes the batch into the Reshape target."""

    def __init__(self) -> None:
        super().__init__()
        self.cls, self.proj = nn.Parameter(torch.randn(1, 1, 8)), nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.relu(self.proj(x))
        c = self.cls.expand(x.shape[0], -1, -1)
        pad = torch.zeros(x.shape[0], 1, 8)
        return torch.cat([c, t, pad], 1).reshape(x.shape[0], -1)


class ExpandSlice(nn.Module):
    """A per-sample gate broadcast with an Expand whose shape holds the batch, and a Slice over the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        gate = torch.sigmoid(y.mean((2, 3), keepdim=True)).expand(x.shape[0], 4, 8, 8)
        return (y * gate)[: x.shape[0]].flatten(1)


def export(module: nn.Module, shape: tuple, path, **kw) -> str:
    torch.manual_seed(0)
    module = module.eval()
    torch.onnx.export(module, (torch.randn(*shape),), str(path), input_names=["x"], opset_version=17, dynamo=False,
                      **kw)
    return str(path)


def ort_per_chunk(path: str, x: np.ndarray, fixed: int) -> np.ndarray:
    """The exported file in onnxruntime, ``fixed`` samples at a time (its own batch), outputs concatenated."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": x[i:i + fixed]})[0] for i in range(0, len(x), fixed)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("relax")
    torch.manual_seed(0)
    head = ViewHead()
    with torch.no_grad():  # non-trivial BN statistics
        head.b.running_mean.uniform_(-0.5, 0.5), head.b.running_var.uniform_(0.5, 2.0)
    return {
        "view": export(head, (1, 3, 16, 16), d / "view.onnx"),
        "prefix": export(TokenPrefix(), (1, 16, 12), d / "prefix.onnx"),
        "prefix2": export(TokenPrefix(), (2, 16, 12), d / "prefix2.onnx"),
        "expand2": export(ExpandSlice(), (2, 3, 8, 8), d / "expand2.onnx"),
        "dynamic": export(ViewHead(dynamic=True), (1, 3, 16, 16), d / "dynamic.onnx",
                          dynamic_axes={"x": {0: "n"}}),
    }


@pytest.mark.parametrize("name, fixed, rewritten", [
    ("view", 1, {"Reshape": 1}), ("prefix", 1, {"Reshape": 1}), ("prefix2", 2, {"Reshape": 1}),
    ("expand2", 2, {"Expand": 1, "Slice": 1}),
])
def test_relaxed_graph_equals_the_file_per_sample(files, name, fixed, rewritten):
    path = files[name]
    g = graphopt.load(path)
    shape = list(g.inputs[0].type.shape)
    relaxed, report = relax_batch(g)
    assert isinstance(report, RelaxReport) and report.changed and report.batch == fixed
    assert report.original_shapes == {"x": shape} and report.constants == rewritten and report.rewritten
    assert list(g.inputs[0].type.shape) == shape  # the input graph is untouched
    sym = relaxed.inputs[0].type.shape[0]
    assert isinstance(sym, str) and relaxed.outputs[0].type.shape[0] == sym
    line = report.describe()
    assert f"batch fixed at {fixed} in the file" in line and "relaxed to a symbolic batch" in line
    assert "\n" not in line

    n = 5  # neither 1 nor 2, and not a multiple of 2: the relaxed graph must really run another batch size
    x = np.random.default_rng(0).standard_normal((n + (n % fixed and fixed - n % fixed), *shape[1:]))
    x = x.astype(np.float32)
    want = ort_per_chunk(path, x, fixed)[:n]
    with torch.no_grad():
        got = to_torch(relaxed).eval()(torch.from_numpy(x[:n])).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))

    err = verify_relaxed(g, relaxed, report=report)
    assert 0 <= err < 1e-4 and report.max_error == err and "checked per sample" in report.describe()


def test_prefix_constants_are_broadcast_to_the_runtime_batch(files):
    """The folded class token / zero pad of batch size (1 or 2) become one sample expanded to the batch."""
    for name in ("prefix", "prefix2"):
        relaxed, report = relax_batch(graphopt.load(files[name]))
        assert report.broadcast == {"Concat": 1}
        concat = next(n for n in relaxed.nodes if n.op == "concat" and n.outputs[0].type.dtype.is_float)
        assert [v.producer.op if v.producer else None for v in concat.inputs] == ["expand", "relu", "expand"]


def test_symbolic_batch_is_returned_unchanged(files):
    g = graphopt.load(files["dynamic"])
    relaxed, report = relax_batch(g)
    assert relaxed is g and not report.changed and report.rewritten == [] and report.original_shapes == {}


class MergesBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).reshape(4, -1)  # [1, 4, 8, 8] -> [4, 64]: batch merged into the rows


class ReducesBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(0, keepdim=True)


@pytest.mark.parametrize("module, node_op, why", [
    (MergesBatch(), "/Reshape", "merges the batch"),
    (ReducesBatch(), "/ReduceMean", "drops the batch"),
])
def test_inseparable_batch_raises_naming_the_node(tmp_path, module, node_op, why):
    g = graphopt.load(export(module, (1, 4, 8, 8), tmp_path / "m.onnx"))
    with pytest.raises(BatchRelaxError) as e:
        relax_batch(g)
    msg = str(e.value)
    assert isinstance(e.value, GraphoptError) and f"node {node_op} " in msg and why in msg
    assert "re-export the model with a dynamic batch" in msg and "\n" not in msg


def test_verify_relaxed_catches_a_per_sample_difference(files):
    g = graphopt.load(files["view"])
    relaxed, _ = relax_batch(g)
    w = relaxed.constants["fc.bias"]
    w.const = w.const + 1e-2 * np.abs(w.const).max()
    with pytest.raises(BatchRelaxError, match="differs from the file on sample 0"):
        verify_relaxed(g, relaxed)


def test_registered_pass_relaxes_in_a_pipeline(files):
    from graphopt.pass_api import get_pass
    from graphopt.pass_manager import PassManager

    assert get_pass("relax-batch").semantics_preserving is False
    res = PassManager("relax-batch,dce").run(graphopt.load(files["view"]))
    assert res.records[0].changes == {"inputs": 1, "constants": 1}
    assert isinstance(res.graph.inputs[0].type.shape[0], str)


def test_score_relaxes_a_fixed_batch_file_and_matches_the_dynamic_export(files):
    res = runner.invoke(app, ["score", files["view"], "--proxy", "synflow,nwot", "--batch", "16", "--json"])
    assert res.exit_code == 0, res.output
    assert "batch fixed at 1 in the file; relaxed to a symbolic batch (1 Reshape constant rewritten), checked " \
           "per sample" in res.stderr
    fixed = json.loads(res.stdout)
    # the same weights exported with a dynamic batch: the same function, so the same scores
    dyn = ViewHead(dynamic=True)
    torch.manual_seed(0)
    src = ViewHead()
    with torch.no_grad():
        src.b.running_mean.uniform_(-0.5, 0.5), src.b.running_var.uniform_(0.5, 2.0)
    dyn.load_state_dict(src.state_dict())
    path = export(dyn, (1, 3, 16, 16), files["view"].replace("view.onnx", "view_dyn.onnx"),
                  dynamic_axes={"x": {0: "n"}})
    res = runner.invoke(app, ["score", path, "--proxy", "synflow,nwot", "--batch", "16", "--json"])
    assert res.exit_code == 0 and "relaxed" not in res.stderr, res.output
    assert fixed == pytest.approx(json.loads(res.stdout), rel=1e-5)


def test_score_and_inspect_end_to_end(files, tmp_path):
    res = runner.invoke(app, ["score", files["view"], "--proxy", "synflow,nwot"])
    assert res.exit_code == 0, res.output
    assert "synflow" in res.stdout and "nwot" in res.stdout
    res = runner.invoke(app, ["inspect", files["view"], "--proxies", "synflow", "--json"])
    assert res.exit_code == 0, res.output
    syn = json.loads(res.stdout)["proxies"]["synflow"]
    assert {r["node"] for r in syn["nodes"]} == {"/c/Conv", "/fc/Gemm"} and "relaxed" in res.stderr
    res = runner.invoke(app, ["score", files["view"], "--proxy", "nwot", "--batch", "1", "--json"])
    assert res.exit_code == 0 and "log(#ReLU units)" in res.stderr, res.output
    # a batch that cannot be separated: scored at the file's own batch, with a warning naming the node
    path = export(nn.Sequential(ReducesBatch(), nn.Conv2d(4, 4, 3), nn.ReLU()), (1, 4, 8, 8), tmp_path / "r.onnx")
    res = runner.invoke(app, ["score", path, "--proxy", "synflow", "--json"])
    assert res.exit_code == 0, res.output
    assert "/ReduceMean" in res.stderr and "scoring at the file's batch of 1 instead of 64" in res.stderr
