"""Issue 22's sweep on every ``make test``: a representative subset of ``benchmarks/vision_zoo.py``'s Hugging Face
vision architectures (random init, tiny configs, 32 px, exported by ``torch.onnx.export`` at its defaults with a
fixed batch of 1) through every command a user runs on such a file: ``inspect``, ``convert``, ``export``, ``export
--target`` for every built-in profile, and ``score``. Each exits 0 with no traceback; the fp32 export matches
onnxruntime on the original; every target writes a model whose placement report accounts for every FLOP, with at
least 95% of them on ``generic-npu-int8``'s NPU.

The subset: ResNet (CNN, BatchNorm folded, a global-average-pool head), ViT (LayerNorm, GELU exported as its Erf
formula, attention with Softmax), Swin (window attention; the default exporter fails on it, so the TorchScript
one writes it, with the relative-position gather), MobileViT (convolutions and attention over unfolded patches,
SiLU)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")

from graphopt.cli import app  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["resnet", "vit", "swin", "mobilevit"]
runner = CliRunner()


@pytest.fixture(scope="module")
def vz():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("vision_zoo_bench", ROOT / "benchmarks" / "vision_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def onnx_file(vz, tmp_path_factory):
    d, specs = tmp_path_factory.mktemp("zoo"), vz.model_specs(size=32)
    return lambda name: vz.export_onnx(name, specs[name], d)


def _cli(args: list[str]):
    res = runner.invoke(app, args)
    crashed = res.exception is not None and not isinstance(res.exception, SystemExit)
    assert not crashed and "Traceback" not in res.output, (args, res.output, res.exception)
    assert res.exit_code == 0, (args, res.output)
    return res


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", MODELS)
def test_model_through_every_command(name, vz, onnx_file, tmp_path, one_thread):
    meta = onnx_file(name)
    src = Path(meta["path"])
    assert meta["input"] == [1, 3, 32, 32]

    doc = json.loads(_cli(["inspect", str(src), "--json"]).stdout)
    assert doc["flops"] > 0 and doc["params"] > 0

    res = _cli(["convert", str(src), "-o", str(tmp_path / "m.py")])
    assert "verify: OK" in res.output and (tmp_path / "m.py").is_file()

    fp32 = tmp_path / "fp32.onnx"
    _cli(["export", str(src), "-o", str(fp32), "--latency-runs", "0"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref, got = _ort(src, x), _ort(fp32, x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()) + 1e-6)

    for target in vz.PROFILES:
        out = tmp_path / f"{target}.onnx"
        # the int8 quality gate is off here (--min-agreement 0, written with a warning): random-init transformers
        # fall below it (benchmarks/vision_zoo.py records the gate at its defaults); test_npu_int8_gate tests it
        _cli(["export", str(src), "-t", target, "--calib", "cifar10-demo", "--calib-samples", "64",
              "--eval-samples", "64", "--latency-runs", "0", "--min-agreement", "0", "--min-cosine", "0",
              "-o", str(out)])
        assert out.is_file(), target
        rep = json.loads(out.with_name(f"{target}.report.json").read_text())
        pl = rep["placement"]
        npu, host = pl["totals"]["npu"], pl["totals"]["host"]
        assert npu["nodes"] > 0 and pl["summary"], target
        assert host["nodes"] == len(pl["host_nodes"]), target  # every host node listed, with its reason
        assert math.isclose(npu["flops_share"] + host["flops_share"], 1.0, abs_tol=1e-9)
        assert _ort(out, x).shape == ref.shape, target
        if target == "generic-npu-int8":
            assert npu["flops_share"] >= 0.95, pl["summary"]

    scores = json.loads(_cli(["score", str(src), "--json", "--batch", "8", "--proxy", "synflow,nwot,snip"])
                        .stdout.strip().splitlines()[-1])
    assert set(scores) == {"synflow", "nwot", "snip"}
    assert all(v is not None and math.isfinite(v) for v in scores.values()), scores
