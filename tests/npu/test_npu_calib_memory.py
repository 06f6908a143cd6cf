"""INT8 export memory and inputs: calibration fed in chunks (memory no longer grows with --calib-samples), an
estimate before it starts that says what to lower, the measured peak in the report, CIFAR-10 resized to the
model's input the way `graphopt score` does, and progress for the long phases."""

from __future__ import annotations

import json
import subprocess
import sys
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
from graphopt.frontends.onnx import load_onnx
from graphopt.npu.profiles import load_profile
from graphopt.npu.quantize import CalibData, load_calibration, quantize_qdq, run_onnx

runner = CliRunner()


class _Heavy(nn.Module):
    """Few weights, large activations: 32-channel convs at full resolution (what calibration keeps per sample)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.body = nn.Sequential(*[m for _ in range(3) for m in (nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())])
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.body(torch.relu(self.stem(x))).mean((2, 3)))


def _export(net: nn.Module, path: Path, size: int, channels: int = 3) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.randn(1, channels, size, size),), str(path), opset_version=17,
                          dynamo=False)
    return path


def test_calibration_holds_one_chunk_of_samples_at_a_time(tmp_path, monkeypatch):
    """onnxruntime's entropy calibrator kept every intermediate of every sample until the end (one collect_data
    call for all of them); now it gets chunks that fit calib_memory, and the int8 model is as good."""
    from onnxruntime.quantization import calibrate

    src = _export(_Heavy(), tmp_path / "heavy.onnx", 32)
    fp32 = onnx.load(str(src))
    rng = np.random.default_rng(0)
    name = fp32.graph.input[0].name
    feeds = [{name: rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(40)]
    calls: list[int] = []
    real = calibrate.HistogramCalibrater.collect_data

    def spy(self, reader):  # noqa: ANN001
        n = 0
        get = reader.get_next

        def counted():
            nonlocal n
            f = get()
            n += f is not None
            return f

        reader.get_next = counted
        try:
            return real(self, reader)
        finally:
            reader.get_next = get
            calls.append(n)

    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data", spy)
    stats: dict = {}
    per_sample = 4 * (32 * 32 * 32) * 7  # stem conv + 3 x (conv, relu): 32 x 32 x 32 floats each, roughly
    q = quantize_qdq(fp32, CalibData(feeds), load_profile("generic-npu-int8"), calib_memory=per_sample * 6,
                     stats=stats)
    chunk = stats["calibration_chunk"]
    assert 1 < chunk < 40 and stats["activation_bytes_per_sample"] > 0
    assert sum(calls) == 40 and max(calls) == chunk and len(calls) == -(-40 // chunk)
    # the chunked calibration gives the same quality as one chunk of everything
    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data", real)
    whole = quantize_qdq(fp32, CalibData(feeds), load_profile("generic-npu-int8"), calib_memory=1 << 40)
    ref = np.concatenate(run_onnx(fp32, feeds))
    err_chunked = np.abs(np.concatenate(run_onnx(q, feeds)) - ref).max()
    err_whole = np.abs(np.concatenate(run_onnx(whole, feeds)) - ref).max()
    assert err_chunked <= 1.5 * err_whole + 1e-6, (err_chunked, err_whole)


@pytest.mark.slow
def test_int8_export_peak_memory_stays_within_twice_the_fp32_export(tmp_path):
    """128 calibration samples of a 128-px model: the old calibration held all 128 samples' intermediates
    (~2.5 GB); the peak RSS of the INT8 export is now at most 2x that of the fp32 export of the same model. Each
    export runs in its own process; the figure is the one the report states (VmHWM)."""
    src = _export(_Heavy(), tmp_path / "heavy.onnx", 128)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((160, 3, 128, 128)).astype(np.float32))

    def peak(*extra: str) -> dict:
        out = tmp_path / f"out{len(extra)}.onnx"
        cmd = [sys.executable, "-c", "from graphopt.cli import main; main()", "export", str(src), "-o", str(out),
               "--latency-runs", "0", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(report_paths(out)[1].read_text())

    fp32 = peak()
    int8 = peak("-t", "generic-npu-int8", "--calib", str(tmp_path / "calib.npz"), "--calib-samples", "128",
                "--min-agreement", "0")
    m = int8["memory"]
    assert int8["quantization"]["calibration_samples"] == 128 and m["calibration_chunk"] < 128
    assert m["peak_rss_mb"] <= 2 * fp32["memory"]["peak_rss_mb"], (m, fp32["memory"])
    assert 0.5 <= m["estimate_mb"] / m["peak_rss_mb"] <= 2, m  # the up-front estimate is in the right range
    assert abs(m["measured_activations_per_sample_mb"] - m["activations_per_sample_mb"]) < 0.1 * \
        m["activations_per_sample_mb"]


def test_export_that_would_not_fit_says_what_to_lower(tmp_path, monkeypatch):
    from graphopt.npu import memory

    src = _export(_Heavy(), tmp_path / "heavy.onnx", 64)
    out = tmp_path / "npu.onnx"
    per_sample = 4 * 32 * 64 * 64 * 7
    monkeypatch.setattr(memory, "available", lambda: 3 * per_sample)  # room for a few samples, not 256 MB worth
    r = runner.invoke(app, ["export", str(src), "-o", str(out), "-t", "generic-npu-int8", "--calib", "random",
                            "--latency-runs", "0"])
    assert r.exit_code == 2 and not out.exists() and not report_paths(out)[1].exists()
    line = " ".join(r.output.split())
    assert str(src) in line and "would need about" in line and "lower --calib-memory to" in line
    monkeypatch.setattr(memory, "available", lambda: per_sample // 4)  # not even one sample
    r = runner.invoke(app, ["export", str(src), "-o", str(out), "-t", "generic-npu-int8", "--calib", "random",
                            "--latency-runs", "0"])
    assert r.exit_code == 2 and "lower the input resolution" in " ".join(r.output.split())
    # with the advised --calib-memory it runs
    mb = int(line.split("lower --calib-memory to ")[1].split()[0])
    monkeypatch.setattr(memory, "available", lambda: 3 * per_sample + (200 << 20))  # the process itself
    r = runner.invoke(app, ["export", str(src), "-o", str(out), "-t", "generic-npu-int8", "--calib", "random",
                            "--latency-runs", "0", "--calib-memory", str(mb), "--min-agreement", "0"])
    assert r.exit_code == 0, r.output


def test_cifar_calibration_is_resized_like_score_does(tmp_path):
    """`--calib cifar10` refused a model with another input size ("samples have shape [3, 32, 32] but input 'x'
    takes [3, 48, 48]") while `graphopt score` resizes the same data: now both give the same tensors."""
    from graphopt.predictors.proxies.passes import proxy_batch

    src = _export(_Heavy(), tmp_path / "h48.onnx", 48)
    g = load_onnx(str(src))
    cal = load_calibration("cifar10-demo", g, n=10**6, split="train")  # the whole train split, in its order
    assert "resized from 32x32 to 48x48" in cal.source
    pb = proxy_batch(g, "cifar10-demo", batch=len(cal), seed=0)  # every train image: sorted indices = in order
    for i in (0, 1, 7, len(cal) - 1):
        np.testing.assert_array_equal(cal.feeds[i][g.inputs[0].name], pb.inputs[i: i + 1].numpy())
    out = tmp_path / "npu.onnx"
    r = runner.invoke(app, ["export", str(src), "-o", str(out), "-t", "generic-npu-int8", "--calib",
                            "cifar10-demo", "--calib-samples", "16", "--eval-samples", "16", "--latency-runs", "0",
                            "--min-agreement", "0"])
    assert r.exit_code == 0, r.output
    assert "resized from 32x32 to 48x48" in json.loads(report_paths(out)[1].read_text())["quantization"][
        "calibration"]


def test_channel_mismatch_is_still_a_clear_error(tmp_path):
    from graphopt.npu.quantize import CalibrationError

    g = load_onnx(str(_export(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), tmp_path / "gray.onnx", 32, 1)))
    with pytest.raises(CalibrationError, match=r"samples have shape \[3, 32, 32\] but input .* takes \[1, 32, 32\]"):
        load_calibration("cifar10-demo", g, n=4)


def test_progress_reports_counted_phases(tmp_path):
    src = _export(_Heavy(), tmp_path / "h.onnx", 32)
    seen: list[tuple] = []
    rep = export_model(src, tmp_path / "p.onnx", target="generic-npu-int8", calib="cifar10-demo", calib_samples=12,
                       eval_samples=10, latency_runs=0, progress=lambda m, d, t: seen.append((m, d, t)))
    assert rep.ok
    phases = {m for m, _, _ in seen}
    assert {"legalizing for generic-npu-int8", "calibrating", "comparing int8 with fp32"} <= phases
    assert any(m.startswith("checking fp32") for m in phases) and "quantizing (onnxruntime QDQ)" in phases
    assert ("calibrating", 12, 12) in seen or ("quantizing (onnxruntime QDQ)", 12, 12) in seen
    assert ("comparing int8 with fp32", 10, 10) in seen
    msgs: list[str] = []  # the older one-argument callback still works
    export_model(src, tmp_path / "q.onnx", latency_runs=0, progress=msgs.append)
    assert "optimizing" in msgs
