"""``graphopt latency``: the JSON schema, target resolution and errors, the search hook (``predict_latency_ms``), the
analytic targets."""

from __future__ import annotations

import json

import pytest
import torch
from graphopt.predictors.latency import available_targets, load_target, predict_latency_ms
from typer.testing import CliRunner

from graphopt.cli import app
from graphopt.frontends.torch import from_torch

runner = CliRunner()


def _cnn_file(tmp_path, with_layernorm: bool = False):
    from graphopt.backends.onnx import to_onnx

    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
              torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
              torch.nn.Flatten(), torch.nn.Linear(32, 10)]
    if with_layernorm:
        layers.append(torch.nn.LayerNorm(10))
    g = from_torch(torch.nn.Sequential(*layers).eval(), (torch.randn(1, 3, 32, 32),))
    path = tmp_path / ("cnn_ln.onnx" if with_layernorm else "cnn.onnx")
    to_onnx(g, path=path)
    return path, g


@pytest.mark.parametrize("target", ["edgetpu-like", "cpu-ort", "pixel3"])
def test_latency_json_schema_and_totals(tmp_path, target):
    path, g = _cnn_file(tmp_path)
    res = runner.invoke(app, ["latency", "predict", str(path), "--target", target, "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for key in ("model", "target", "device", "method", "total_ms", "overhead_ms", "n_kernels", "unseen_kernels",
                "by_op_ms", "kernels", "folded", "dead", "off_npu", "notes"):
        assert key in d, key
    assert d["target"] == target and d["total_ms"] > 0 and d["n_kernels"] == len(d["kernels"])
    for k in d["kernels"]:
        assert set(k) == {"name", "kind", "sig", "nodes", "ops", "ms", "on_npu", "seen"} and k["ms"] >= 0
    assert d["total_ms"] == pytest.approx(sum(k["ms"] for k in d["kernels"]) + d["overhead_ms"])
    covered = [n for k in d["kernels"] for n in k["nodes"]] + d["folded"] + d["dead"]
    assert sorted(covered) == sorted(n.name for n in g.nodes)  # every node in exactly one kernel, or folded
    assert sum(d["by_op_ms"].values()) == pytest.approx(d["total_ms"] - d["overhead_ms"])
    # conv + BN + ReLU is one kernel
    first = next(k for k in d["kernels"] if k["ops"][0] == "conv")
    assert first["ops"][:2] == ["conv", "batch_norm"]
    # the search hook returns the same figure
    assert predict_latency_ms(g, target) == pytest.approx(d["total_ms"])
    # the shorthand `graphopt latency MODEL` is `latency predict`
    short = runner.invoke(app, ["latency", str(path), "-t", target, "--json"])
    assert short.exit_code == 0 and json.loads(short.stdout)["total_ms"] == pytest.approx(d["total_ms"])


def test_table_output_names_the_time_sinks(tmp_path):
    path, _ = _cnn_file(tmp_path)
    res = runner.invoke(app, ["latency", str(path), "--target", "edgetpu-like", "--nodes"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Time by kernel op" in res.stdout and "conv+batch_norm+relu" in res.stdout and "NPU" in res.stdout


def test_off_npu_kernels_are_reported_and_priced_on_the_host(tmp_path):
    path, g = _cnn_file(tmp_path, with_layernorm=True)  # edgetpu-like has no LayerNormalization
    d = json.loads(runner.invoke(app, ["latency", str(path), "-t", "edgetpu-like", "--json"]).stdout)
    ln = [k for k in d["kernels"] if "layer_norm" in k["ops"]]
    assert ln and all(k["on_npu"] is False for k in ln)
    assert set(ln[0]["nodes"]) & set(d["off_npu"])
    assert all(k["on_npu"] for k in d["kernels"] if "layer_norm" not in k["ops"])
    prof = __import__("graphopt.npu.profiles", fromlist=["load_profile"]).load_profile("edgetpu-like")
    assert ln[0]["ms"] >= prof.perf.fallback_overhead_us / 1e3  # the hand-over to the host is paid


def test_bad_target_lists_the_targets(tmp_path):
    path, _ = _cnn_file(tmp_path)
    res = runner.invoke(app, ["latency", str(path), "--target", "edgetpu"])
    assert res.exit_code == 2
    msg = " ".join(res.output.split())
    assert "unknown latency target 'edgetpu'" in msg and "did you mean 'edgetpu-like'" in msg
    for t in ("cpu-ort", "edgetpu-like", "pixel3", "raspi4", "edgegpu", "ethos-u55-like", "generic-npu-int8"):
        assert t in msg
    assert runner.invoke(app, ["latency", "fit", "--target", "ethos-u55-like"]).exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    res = runner.invoke(app, ["latency", str(path), "--target", str(bad)])
    assert res.exit_code == 2 and "not a latency predictor file" in res.output


def test_targets_list_and_analytic_targets_equal_the_npu_estimate(tmp_path):
    from graphopt.npu.latency import estimate_latency
    from graphopt.npu.profiles import load_profile

    res = runner.invoke(app, ["latency", "targets"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "cpu-ort" in res.stdout and "analytic" in res.stdout
    targets = available_targets()
    assert {"cpu-ort", "edgetpu-like", "pixel3", "raspi4", "edgegpu", "ethos-u55-like"} <= set(targets)
    _, g = _cnn_file(tmp_path)
    pred = load_target("ethos-u55-like").predict(g)
    assert pred.method == "analytic-roofline"
    assert pred.total_ms == pytest.approx(estimate_latency(g, load_profile("ethos-u55-like")).total_ms)
