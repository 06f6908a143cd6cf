"""Empirical bias correction after QDQ quantization: it must shrink the mean output shift, not just run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.npu.profiles import load_profile
from graphopt.npu.quantize import CalibData, correct_bias, quantize_qdq, run_onnx


def _conv_net(seed: int = 0) -> onnx.ModelProto:
    """Conv(3->16, 3x3) -> Relu -> Conv(16->8, 1x1): a real two-layer graph with biases, static batch 1."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((16, 3, 3, 3)) * 0.4).astype(np.float32)
    b1 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((8, 16, 1, 1)) * 0.3).astype(np.float32)
    b2 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
                          [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                                       (b2, "b2"))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _channel_shift(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    d = np.concatenate(ref).astype(np.float64) - np.concatenate(got).astype(np.float64)
    return float(np.abs(d.mean(axis=(0, 2, 3))).mean())


def test_bias_correction_reduces_mean_shift_and_keeps_int32_biases() -> None:
    pytest.importorskip("onnxruntime")
    fp32 = _conv_net()
    rng = np.random.default_rng(1)
    calib = CalibData([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(64)], None, "t")
    profile = load_profile("generic-npu-int8")
    plain = quantize_qdq(fp32, calib, profile, method="minmax")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(plain)
    changed = correct_bias(fp32, fixed, calib)
    assert changed >= 1
    held_out = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(64)]
    ref = run_onnx(fp32, held_out)
    before = _channel_shift(ref, run_onnx(plain, held_out))
    after = _channel_shift(ref, run_onnx(fixed, held_out))
    assert after < before  # the shift measured on calibration data generalizes to new inputs
    biases = [t for t in fixed.graph.initializer if numpy_helper.to_array(t).dtype == np.int32]
    assert biases, "corrected biases stay int32 initializers"
    onnx.checker.check_model(fixed)


def test_quantize_qdq_bias_correction_flag_changes_only_biases() -> None:
    pytest.importorskip("onnxruntime")
    fp32 = _conv_net(2)
    rng = np.random.default_rng(3)
    calib = CalibData([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(32)], None, "t")
    profile = load_profile("generic-npu-int8")
    a = quantize_qdq(fp32, calib, profile, method="minmax")
    b = quantize_qdq(fp32, calib, profile, method="minmax", bias_correction=True)
    ia = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert ia.keys() == ib.keys()
    differing = [k for k in ia if not np.array_equal(ia[k], ib[k])]
    assert differing and all(ia[k].dtype == np.int32 for k in differing)


def test_cli_export_bias_correction_recorded_and_biases_moved(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from graphopt.cli import app
    from graphopt.export import report_paths

    src = tmp_path / "net.onnx"
    onnx.save(_conv_net(4), str(src))
    biases = {}
    for flag in ("--no-bias-correction", "--bias-correction"):
        out = tmp_path / f"q{flag}.onnx"
        r = CliRunner().invoke(app, ["export", str(src), "-o", str(out), "--target", "generic-npu-int8", "--calib",
                                     "random", "--latency-runs", "0", flag])
        assert r.exit_code == 0, r.output
        doc = json.loads(report_paths(out)[1].read_text())
        assert doc["quantization"]["bias_correction"] is (flag == "--bias-correction")
        m = onnx.load(str(out))
        biases[flag] = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer
                        if numpy_helper.to_array(t).dtype == np.int32}
    assert biases["--bias-correction"].keys() == biases["--no-bias-correction"].keys()
    assert any(not np.array_equal(biases["--bias-correction"][k], biases["--no-bias-correction"][k])
               for k in biases["--bias-correction"])
