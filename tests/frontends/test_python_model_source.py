"""PyTorch source as a model file: ``model.py[:NAME]`` is imported, instantiated and lowered (graphopt.modelio)."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import run_ir
from typer.testing import CliRunner

from graphopt.cli import app
from graphopt.errors import ModelLoadError
from graphopt.modelio import load_model

SOURCE = """
    import torch
    from torch import nn
    import torch.nn.functional as F
    from helper_block import Block          # a sibling module: the file's folder is importable


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.block = Block(8)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            y = self.block(F.relu(self.stem(x)))
            return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


    class NeedsArgs(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc = nn.Linear(width, 2)

        def forward(self, x):
            return self.fc(x)


    class FixedBatch(nn.Module):
        def forward(self, x):
            return x.reshape(2, -1).sum(1)     # a literal batch: torch.export cannot keep it dynamic


    def build_model():
        net = Net()
        with torch.no_grad():
            net.fc.bias.fill_(0.25)            # a factory may load weights; they must survive lowering
        return net


    def example_inputs():
        return (torch.randn(2, 3, 10, 10),)
"""

BLOCK = """
    from torch import nn


    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return x + self.bn(self.conv(x))
"""


@pytest.fixture()
def model_py(tmp_path: Path) -> Path:
    (tmp_path / "helper_block.py").write_text(textwrap.dedent(BLOCK))
    path = tmp_path / "mymodel.py"
    path.write_text(textwrap.dedent(SOURCE))
    return path


def _module(path: Path, name: str) -> torch.nn.Module:
    from graphopt.modelio import load_python_module

    return load_python_module(f"{path}:{name}")[0]


def test_factory_is_the_default_and_its_weights_and_outputs_survive(model_py: Path):
    g = load_model(str(model_py))  # no NAME: build_model() wins over the two classes
    assert g.inputs[0].type.shape[0] == "batch"  # lowered with a dynamic batch
    ref = _module(model_py, "build_model")
    assert float(ref.fc.bias.detach()[0]) == 0.25
    x = np.random.default_rng(0).standard_normal((3, 3, 10, 10)).astype(np.float32)
    (got,) = run_ir(g, {g.inputs[0].name: x})
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_input_shape_builds_the_example_and_a_class_can_be_named(model_py: Path):
    g = load_model(f"{model_py}:Net", input_shapes={"": [1, 3, 12, 12]})
    assert g.inputs[0].type.shape == ("batch", 3, 12, 12)
    with pytest.raises(ModelLoadError, match="unknown: y"):
        load_model(f"{model_py}:Net", input_shapes={"y": [1, 3, 12, 12]})


def test_clear_errors_for_missing_names_arguments_and_bad_files(model_py: Path, tmp_path: Path):
    with pytest.raises(ModelLoadError, match=r"has no 'Nope'; candidates: FixedBatch, NeedsArgs, Net"):
        load_model(f"{model_py}:Nope")
    with pytest.raises(ModelLoadError, match=r"cannot be called without arguments.*build_model"):
        load_model(f"{model_py}:NeedsArgs", input_shapes={"x": [2, 4]})
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(str(tmp_path / "absent.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ModelLoadError, match=r"broken.py: importing it failed \(RuntimeError: no GPU here\)"):
        load_model(str(broken))
    two = tmp_path / "two.py"
    two.write_text("from torch import nn\nclass A(nn.Linear): pass\nclass B(nn.Linear): pass\n")
    with pytest.raises(ModelLoadError, match="name the model as .*two.py:NAME; candidates: A, B"):
        load_model(str(two))


def test_a_literal_batch_falls_back_to_the_fixed_example_batch_with_a_warning(model_py: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load_model(f"{model_py}:FixedBatch", input_shapes={"x": [2, 3]})
    assert g.inputs[0].type.shape == (2, 3)
    assert any("could not be kept dynamic" in str(w.message) for w in caught)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(run_ir(g, {"x": x})[0], x.sum(1))


def test_cli_inspect_and_export_read_python_source(model_py: Path, tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(app, ["inspect", f"{model_py}:Net", "-s", "1,3,16,16", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["inputs"] == {"x": "float32[batch,3,16,16]"}
    out = tmp_path / "net.onnx"
    res = runner.invoke(app, ["export", f"{model_py}:Net", "-s", "1,3,16,16", "-o", str(out)])
    assert res.exit_code == 0, res.output
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with torch.no_grad():
        want = _module(model_py, "Net")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    res = runner.invoke(app, ["inspect", f"{model_py}:Net", "--json"])  # the file's example_inputs()
    assert res.exit_code == 0 and json.loads(res.stdout)["inputs"] == {"x": "float32[batch,3,10,10]"}
    bare = tmp_path / "bare.py"
    bare.write_text("from torch import nn\nclass A(nn.Linear):\n    def __init__(self):\n"
                    "        super().__init__(4, 2)\n")
    res = runner.invoke(app, ["inspect", str(bare)])
    assert res.exit_code == 2 and "pass --input-shape (e.g. input=1,3,32,32)" in res.output


def test_python_source_is_a_mining_corpus_item(model_py: Path):
    """``graphopt segments build mymodel.py:Net ...``: the corpus loader accepts PyTorch source too."""
    from graphopt.passes.autogo.corpus import corpus_graphs

    [(name, g)] = list(corpus_graphs([f"{model_py}:Net"]))
    assert name.endswith("mymodel.py:Net") and {n.op for n in g.nodes} >= {"conv", "batch_norm", "gemm"}
