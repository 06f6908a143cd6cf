"""The INT8 quality gate: after quantization the int8 outputs are compared with fp32 on held-out samples, and a
model below --min-agreement (top-1, classifiers) / --min-cosine (other outputs) is refused with exit 3 -- a
ViT-B/16 used to be written with 0% top-1 agreement and exit 0."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from graphopt.cli import app
from graphopt.export import report_paths
from graphopt.frontends.onnx import load_onnx
from graphopt.npu.quantize import load_calibration

runner = CliRunner()
EVAL = 96


class _OutlierNet(nn.Module):
    """A trained transformer's "massive activations" in miniature: 8 channels of a hidden tensor are ``k`` times
    the others and the next conv scales them back, so in fp32 it is an ordinary CNN, while one int8 grid for
    that tensor leaves the other channels a level or two. ``k = 1``: the same CNN without the outliers."""

    def __init__(self, k: float, head: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = head
        self.c1, self.c2, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Linear(32, 10)
        with torch.no_grad():
            self.c1.weight[:8] *= k
            self.c1.bias[:8] *= k
            self.c2.weight[:, :8] /= k

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean((2, 3))) if self.head else x


def _export(net: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.randn(1, 3, 32, 32),), str(path), opset_version=17, dynamo=False)
    return path


def _cli(src: Path, out: Path, *extra: str):
    return runner.invoke(app, ["export", str(src), "-o", str(out), "-t", "generic-npu-int8", "--calib",
                               "cifar10-demo", "--calib-samples", "32", "--eval-samples", str(EVAL),
                               "--latency-runs", "0", *extra])


def _held_out(src: Path) -> list[np.ndarray]:
    g = load_onnx(str(src))
    return [f[g.inputs[0].name] for f in load_calibration("cifar10-demo", g, n=EVAL, split="test").feeds]


@pytest.fixture(scope="module")
def outlier(tmp_path_factory) -> tuple[Path, nn.Module]:
    net = _OutlierNet(1000.0)
    return _export(net, tmp_path_factory.mktemp("gate") / "outlier.onnx"), net


def test_int8_model_below_the_gate_is_refused_with_exit_3(outlier, tmp_path):
    src, _ = outlier
    out = tmp_path / "npu.onnx"
    r = _cli(src, out)
    assert r.exit_code == 3, r.output
    assert not out.exists() and report_paths(out)[1].exists()
    doc = json.loads(report_paths(out)[1].read_text())
    q = doc["quality"]
    assert doc["status"] == "quality-failed" and doc["exit_code"] == 3 and not doc["ok"]
    assert q["metric"] == "top1_agreement" and q["value"] < 0.9 and q["threshold"] == 0.9 and not q["passed"]
    assert q["value"] == doc["quantization"]["top1_agreement"] and q["samples"] == EVAL
    err = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "top-1 agreement" in err[0] and "--min-agreement" in err[0]
    assert f"{out} not written" in r.output.replace("\n", "")
    assert "INT8 quality gate" in report_paths(out)[0].read_text() and "FAILED" in report_paths(out)[0].read_text()


def test_min_agreement_0_writes_it_with_a_loud_warning_and_the_figure_is_right(outlier, tmp_path):
    """The reported agreement is what onnxruntime's int8 model and the PyTorch model give on the held-out
    images."""
    src, net = outlier
    out = tmp_path / "npu.onnx"
    r = _cli(src, out, "--min-agreement", "0")
    assert r.exit_code == 0 and out.exists(), r.output
    assert "INT8 QUALITY GATE OFF" in r.output
    doc = json.loads(report_paths(out)[1].read_text())
    assert doc["quality"]["enforced"] is False and doc["quality"]["below"] is True
    assert doc["warnings"][0].startswith("INT8 QUALITY GATE OFF")
    xs = _held_out(src)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x})[0] for x in xs])
    with torch.no_grad():
        want = net(torch.from_numpy(np.concatenate(xs))).numpy()
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    assert abs(agree - doc["quality"]["value"]) <= 2 / EVAL  # fp32 ONNX vs PyTorch may flip a near tie
    assert agree < 0.5  # the outlier channels really do wreck the int8 model


def test_a_faithful_int8_model_passes_the_gate(tmp_path):
    src = _export(_OutlierNet(1.0), tmp_path / "plain.onnx")
    out = tmp_path / "npu.onnx"
    r = _cli(src, out)
    assert r.exit_code == 0 and out.exists(), r.output
    q = json.loads(report_paths(out)[1].read_text())["quality"]
    assert q["passed"] and not q["below"] and q["value"] >= 0.9


def test_outputs_that_are_not_logits_are_gated_on_cosine(tmp_path):
    """A feature extractor (ReLU feature map out) is judged by mean cosine similarity (--min-cosine)."""
    bad = _export(_OutlierNet(1000.0, head=False), tmp_path / "feat_bad.onnx")
    r = _cli(bad, tmp_path / "bad.onnx")
    assert r.exit_code == 3, r.output
    q = json.loads(report_paths(tmp_path / "bad.onnx")[1].read_text())["quality"]
    assert q["metric"] == "mean_cosine" and q["value"] < 0.95 and "--min-cosine" in r.output
    r = _cli(bad, tmp_path / "bad.onnx", "--min-cosine", "0.2")
    assert r.exit_code == 0, r.output


def test_a_final_relu_folded_into_the_output_qdq_is_kept(tmp_path):
    """onnxruntime folds a Relu into the Q/DQ pair after the conv; stripping that output pair (to return float
    logits) dropped the Relu: a plain CNN's ReLU feature map came out with negative values and cosine 0.65 to
    fp32 (what the cosine gate found). Now the pair stays when it stands for the activation."""
    net = _OutlierNet(1.0, head=False)
    src = _export(net, tmp_path / "feat.onnx")
    out = tmp_path / "feat_int8.onnx"
    r = _cli(src, out)
    assert r.exit_code == 0, r.output
    xs = _held_out(src)[:16]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x})[0] for x in xs]).reshape(16, -1)
    with torch.no_grad():
        want = net(torch.from_numpy(np.concatenate(xs))).numpy().reshape(16, -1)
    assert got.min() >= 0
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99


def test_gate_arguments_are_checked(outlier, tmp_path):
    src, _ = outlier
    r = _cli(src, tmp_path / "x.onnx", "--min-agreement", "1.5")
    assert r.exit_code == 2 and "--min-agreement 1.5" in r.output and not (tmp_path / "x.onnx").exists()
