"""Vision zoo sweep (issue 22): common vision architectures through every command and every NPU profile.

Protocol (one run, one process driving the real CLI):

* Models: Hugging Face ``transformers`` vision architectures built from their config classes at random init
  (seed 0, nothing downloaded), at small sizes (64 px input, 1-2 blocks per stage, hidden sizes 16-128) so the
  sweep runs on a CPU: ResNet, ConvNeXt, ConvNeXt V2, ViT, DeiT, Swin, Swin V2, MobileViT, MobileViT V2,
  EfficientNet, RegNet, MobileNet V1/V2, LeViT, PoolFormer, SegFormer (classifier and segmentation head), BiT,
  CvT, FocalNet, DINOv2, BEiT, PVT v2. Conv2d and Linear layers then get PyTorch's default init
  (``reset_parameters``): HF's N(0, 0.02) makes the activations of deep CNNs vanish at random init (EfficientNet's
  pooled features are exactly 0, so every int8 comparison would be trivially perfect). ``torchvision``/``timm`` are
  not used: torchvision's PyPI wheel is built against CUDA torch and fails at import beside the CPU torch wheel.
  Each model (wrapped to return its logits) is exported by ``torch.onnx.export`` at its defaults (fixed batch 1,
  the default exporter); where that exporter fails the TorchScript exporter (``dynamo=False``) is used and the row
  says which.
* Every file goes through the installed ``graphopt`` CLI in a subprocess: ``inspect --json``, ``convert -o
  model.py`` (verified against onnxruntime), ``export`` (default fp32 pipeline), ``export --target T --calib
  cifar10-demo`` for every built-in profile (``graphopt/profiles/*.toml``), and ``score --json`` (all proxies,
  default batch). Recorded per command: exit code, seconds, peak RSS of that process (``ru_maxrss`` from
  ``os.wait4`` in a small launcher process, see ``_SHIM``), whether a Python traceback appeared on stdout/stderr
  (it never should), and the last line of the output when it failed. Per target, from the export's
  ``.report.json``: status, share of FLOPs and of the estimated latency on the NPU, host ops, int8 quality (top-1
  agreement or cosine, against the default quality gate) and the export's own peak RSS. Per-model failures never
  stop the sweep.
* Beside it: ``onnxslim.slim`` (and ``onnxsim.simplify`` when installed) on the same file; node counts of the
  original, graphopt's fp32 export and each simplifier's output, and their onnxruntime latency (CPU EP, one
  thread, default optimizations; rounds interleave the variants, each keeps its fastest of 5 runs, median over
  rounds).

Targets (issue 22): every model exits 0 for every command (or a documented refusal naming the op), no traceback,
``generic-npu-int8`` >= 95% of FLOPs on the NPU, ``ethos-u55-like``/``edgetpu-like`` >= 90% for every CNN, peak
RSS of any export <= 4 GB.

Usage: ``python benchmarks/vision_zoo.py [--quick] [--models resnet,vit] [--cache DIR]`` (writes
``benchmarks/results/vision_zoo.json``; ``--quick`` runs three models, and it and ``--models`` write to the temp
directory unless ``--out`` says otherwise).
Set ``OMP_NUM_THREADS=1 GRAPHOPT_NUM_THREADS=1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect as _inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.stem for p in (ROOT / "graphopt" / "profiles").glob("*.toml"))
SIZE = 64
QUICK = ("resnet", "vit", "mobilevit")
CMD_TIMEOUT = 900
INIT = "hf-config, then torch reset_parameters() on Conv2d/Linear, seed 0"


@dataclass(frozen=True)
class Spec:
    """One architecture: how to build it at random init, and what it is (``cnn`` | ``transformer`` | ``hybrid``)."""

    build: Callable[[], Any]
    family: str
    size: int = SIZE


def _T():  # noqa: N802 - the transformers module
    import transformers

    return transformers


def model_specs(size: int = SIZE) -> dict[str, Spec]:
    """The architectures of the sweep, tiny configs (nothing downloaded), for ``size`` x ``size`` inputs."""
    T, S = _T(), size
    four = {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "num_labels": 10}
    vit = {"image_size": S, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "num_labels": 10}
    swin = {"image_size": S, "patch_size": 4, "embed_dim": 16, "depths": [1, 1, 2], "num_heads": [1, 2, 4],
            "window_size": 4 if S >= 64 else 2, "num_labels": 10}
    seg = {"num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1], "hidden_sizes": [16, 32],
           "num_attention_heads": [1, 2], "decoder_hidden_size": 32}
    specs = {
        "resnet": Spec(lambda: T.ResNetForImageClassification(T.ResNetConfig(embedding_size=16, layer_type="basic",
                                                                             **four)), "cnn"),
        "convnext": Spec(lambda: T.ConvNextForImageClassification(T.ConvNextConfig(**four)), "cnn"),
        "convnextv2": Spec(lambda: T.ConvNextV2ForImageClassification(T.ConvNextV2Config(**four)), "cnn"),
        "regnet": Spec(lambda: T.RegNetForImageClassification(T.RegNetConfig(embedding_size=16, groups_width=8,
                                                                             **four)), "cnn"),
        "bit": Spec(lambda: T.BitForImageClassification(T.BitConfig(
            embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], num_groups=8, num_labels=10)),
            "cnn"),
        "efficientnet": Spec(lambda: T.EfficientNetForImageClassification(T.EfficientNetConfig(
            image_size=S, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=10)), "cnn"),
        "mobilenetv1": Spec(lambda: T.MobileNetV1ForImageClassification(T.MobileNetV1Config(
            image_size=S, depth_multiplier=0.25, num_labels=10)), "cnn"),
        "mobilenetv2": Spec(lambda: T.MobileNetV2ForImageClassification(T.MobileNetV2Config(
            image_size=S, depth_multiplier=0.25, num_labels=10)), "cnn"),
        "poolformer": Spec(lambda: T.PoolFormerForImageClassification(T.PoolFormerConfig(**four)), "cnn"),
        "vit": Spec(lambda: T.ViTForImageClassification(T.ViTConfig(intermediate_size=64, **vit)), "transformer"),
        "deit": Spec(lambda: T.DeiTForImageClassification(T.DeiTConfig(intermediate_size=64, **vit)), "transformer"),
        "dinov2": Spec(lambda: T.Dinov2ForImageClassification(T.Dinov2Config(mlp_ratio=2, **vit)), "transformer"),
        "beit": Spec(lambda: T.BeitForImageClassification(T.BeitConfig(intermediate_size=64,
                                                                       use_relative_position_bias=True, **vit)),
                     "transformer"),
        "swin": Spec(lambda: T.SwinForImageClassification(T.SwinConfig(**swin)), "transformer"),
        "swinv2": Spec(lambda: T.Swinv2ForImageClassification(T.Swinv2Config(**swin)), "transformer"),
        "pvt_v2": Spec(lambda: T.PvtV2ForImageClassification(T.PvtV2Config(
            image_size=S, num_attention_heads=[1, 1, 2, 2], **four)), "transformer"),
        "segformer": Spec(lambda: T.SegformerForImageClassification(T.SegformerConfig(num_labels=10, **seg)),
                          "transformer"),
        "segformer_seg": Spec(lambda: T.SegformerForSemanticSegmentation(T.SegformerConfig(num_labels=5, **seg)),
                              "transformer"),
        "focalnet": Spec(lambda: T.FocalNetForImageClassification(T.FocalNetConfig(
            image_size=S, embed_dim=16, depths=[1, 1, 1, 1], num_labels=10)), "hybrid"),
        "cvt": Spec(lambda: T.CvtForImageClassification(T.CvtConfig(  # depth[i] >= i+1: transformers indexes
            embed_dim=[16, 32, 64], num_heads=[1, 2, 2], depth=[1, 2, 3], num_labels=10)), "hybrid"),  # by stage
        "mobilevit": Spec(lambda: T.MobileViTForImageClassification(T.MobileViTConfig(
            image_size=S, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
            num_attention_heads=2, num_labels=10)), "hybrid"),
        "mobilevitv2": Spec(lambda: T.MobileViTV2ForImageClassification(T.MobileViTV2Config(
            image_size=S, width_multiplier=0.25, num_labels=10)), "hybrid"),
        "levit": Spec(lambda: T.LevitForImageClassification(T.LevitConfig(
            image_size=S, hidden_sizes=[32, 48, 64], num_attention_heads=[1, 2, 2], depths=[1, 1, 1],
            key_dim=[8, 8, 8], num_labels=10)), "hybrid"),
    }
    return {k: Spec(v.build, v.family, S) for k, v in specs.items()}


# -------------------------------------------------------------------------------------------------- ONNX files
def export_onnx(name: str, spec: Spec, d: Path) -> dict[str, Any]:
    """Build ``name`` at random init (seed 0) and write ``d/name.onnx`` with ``torch.onnx.export`` at its defaults
    (batch 1); the TorchScript exporter where the default one fails. Cached in ``d`` by the builder's source and
    the library versions."""
    import torch

    key = f"{_inspect.getsource(spec.build)}|{spec.size}|{INIT}|{torch.__version__}|{_T().__version__}"
    key = hashlib.sha1(key.encode()).hexdigest()[:12]
    path, meta = d / f"{name}.onnx", d / f"{name}.json"
    if path.is_file() and meta.is_file():
        m = json.loads(meta.read_text())
        if m.get("key") == key:
            return {**m, "path": str(path), "cached": True}

    class Logits(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.net(pixel_values=pixel_values).logits

    torch.manual_seed(0)
    t0 = time.perf_counter()
    net = Logits(spec.build()).eval()
    for mod in net.modules():  # PyTorch's default init: HF's N(0, 0.02) makes deep CNNs' activations vanish
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):  # (EfficientNet's features are exactly 0)
            mod.reset_parameters()
    x = torch.randn(1, 3, spec.size, spec.size)
    exporter, fallback_reason = "dynamo (default)", None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (x,), str(path), input_names=["pixel_values"], verbose=False)
        except Exception as e:  # the default (dynamo) exporter fails on some models: record it, use TorchScript
            exporter = "torchscript (dynamo=False)"
            fallback_reason = _one_line(f"{type(e).__name__}: {e}")
            torch.onnx.export(net, (x,), str(path), input_names=["pixel_values"], dynamo=False)
    m = {"key": key, "path": str(path), "exporter": exporter, "exporter_fallback_reason": fallback_reason,
         "params": sum(p.numel() for p in net.parameters()), "input": [1, 3, spec.size, spec.size],
         "file_mb": round(sum(f.stat().st_size for f in d.glob(f"{name}.onnx*")) / 2**20, 3),
         "export_s": round(time.perf_counter() - t0, 1)}
    meta.write_text(json.dumps(m))
    return m


def _one_line(s: str, n: int = 240) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------------------------------------- CLI
def graphopt_exe() -> list[str]:
    exe = Path(sys.executable).with_name("graphopt")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "graphopt.cli"]


_SHIM = ("import os, subprocess, sys\n"
         "p = subprocess.Popen(sys.argv[2:])\n"
         "_, st, ru = os.wait4(p.pid, 0)\n"
         "open(sys.argv[1], 'w').write(str(ru.ru_maxrss))\n"
         "sys.exit(os.waitstatus_to_exitcode(st))\n")
"""Runs the command and records its peak RSS. Through this small process, not straight from the sweep: Linux
carries a process's RSS high-water mark across fork/vfork and exec, so a child of the sweep (torch and
transformers loaded, ~500 MB) would never report less than the sweep's own size."""


def run_cli(args: list[str], cwd: Path, timeout: float = CMD_TIMEOUT) -> dict[str, Any]:
    """Run ``graphopt ARGS``; exit code, seconds, peak RSS of that process (MB), traceback seen, error line."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", _SHIM, rss.name, *graphopt_exe(), *args], cwd=cwd,
                             stdout=out, stderr=err, env=env, start_new_session=True)
        timed_out = False
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # the shim leads its own session: its child goes too
            rc, timed_out = p.wait(), True
        secs = time.perf_counter() - t0
        try:
            rss_kb = int(Path(rss.name).read_text() or 0)
        except (OSError, ValueError):
            rss_kb = 0
        out.seek(0)
        err.seek(0)
        so, se = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    tb = "Traceback (most recent call last)" in so + se
    res: dict[str, Any] = {"rc": rc, "seconds": round(secs, 1), "peak_rss_mb": round(rss_kb / 1024),
                           "traceback": tb}
    if timed_out:
        res["error"] = f"timed out after {timeout:.0f} s"
    elif rc != 0 or tb:
        lines = [ln.strip() for ln in (se.strip() or so.strip()).splitlines() if ln.strip()]
        res["error"] = _one_line(lines[-1] if lines else f"exit {rc}, no output")
    res["_stdout"], res["_stderr"] = so, se
    return res


def _report(path: Path) -> dict[str, Any] | None:
    js = path.with_name(path.name.removesuffix(".onnx") + ".report.json")
    if not js.is_file():
        js = Path(str(path) + ".report.json")
    try:
        return json.loads(js.read_text())
    except (OSError, ValueError):
        return None


def _target_summary(rep: dict[str, Any] | None, out: Path) -> dict[str, Any]:
    if rep is None:
        return {"report": False}
    pl = rep.get("placement") or {}
    tot = pl.get("totals") or {}
    npu, host = tot.get("npu", {}), tot.get("host", {})
    q = rep.get("quality") or {}
    return {"report": True, "status": rep.get("status"), "written": out.is_file(),
            "npu_flops_share": npu.get("flops_share"), "npu_latency_share": npu.get("latency_share"),
            "ops_npu": npu.get("nodes"), "ops_host": host.get("nodes"), "host_ops": pl.get("host_ops"),
            "transfers": pl.get("transfers"), "summary": pl.get("summary"),
            "host_nodes": [{"node": h["node"], "op": h["op"], "rules": [c["rule"] for c in h["constraints"]]}
                           for h in (pl.get("host_nodes") or [])][:20],
            "quality": {k: q.get(k) for k in ("metric", "value", "threshold", "passed")} if q else None,
            "int8_mean_cosine": (rep.get("quantization") or {}).get("mean_cosine"),
            "report_peak_rss_mb": (rep.get("memory") or {}).get("peak_rss_mb"),
            "fp32_check_ok": (rep.get("fp32") or {}).get("ok")}


def sweep_model(name: str, onnx_path: Path, work: Path, *, score_args: list[str] | None = None,
                calib: str = "cifar10-demo", extra_export: list[str] | None = None) -> dict[str, Any]:
    """Every command on one file; never raises for a failing command."""
    work.mkdir(parents=True, exist_ok=True)
    cmds: dict[str, dict[str, Any]] = {}
    src = str(onnx_path)
    cmds["inspect"] = run_cli(["inspect", src, "--json"], work)
    cmds["convert"] = run_cli(["convert", src, "-o", str(work / f"{name}_converted.py")], work)
    fp32 = work / f"{name}_graphopt.onnx"
    cmds["export"] = run_cli(["export", src, "-o", str(fp32), *(extra_export or [])], work)
    rep = _report(fp32)
    cmds["export"]["nodes_after"] = rep.get("nodes_after") if rep else None
    for t in PROFILES:
        o = work / f"{name}_{t}.onnx"
        r = run_cli(["export", src, "-t", t, "--calib", calib, "-o", str(o), *(extra_export or [])], work)
        r.update(_target_summary(_report(o), o))
        cmds[f"export:{t}"] = r
    cmds["score"] = run_cli(["score", src, "--json", *(score_args or [])], work)
    sc = cmds["score"]
    if sc["rc"] == 0:
        try:
            sc["scores"] = json.loads(sc["_stdout"].strip().splitlines()[-1])
        except (ValueError, IndexError):
            sc["scores"] = None
    return {"commands": cmds, "graphopt_fp32": str(fp32) if fp32.is_file() else None}


# ----------------------------------------------------------------------------------------- simplifiers, latency
def simplifiers(src: Path, work: Path) -> dict[str, Any]:
    """onnxslim (and onnxsim when installed) on ``src``: written file or error, seconds."""
    import onnx

    out: dict[str, Any] = {}
    try:
        import onnxslim

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = onnxslim.slim(onnx.load(str(src)))
        p = work / f"{src.stem}_onnxslim.onnx"
        onnx.save(m, str(p))
        out["onnxslim"] = {"path": str(p), "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as e:  # a simplifier failing is a row, not a crash
        out["onnxslim"] = {"error": _one_line(f"{type(e).__name__}: {e}")}
    try:
        import onnxsim
    except ImportError:
        out["onnxsim"] = {"error": "not installed"}
    else:
        try:
            t0 = time.perf_counter()
            m, ok = onnxsim.simplify(onnx.load(str(src)))
            p = work / f"{src.stem}_onnxsim.onnx"
            onnx.save(m, str(p))
            out["onnxsim"] = {"path": str(p), "seconds": round(time.perf_counter() - t0, 1), "check_ok": bool(ok)}
        except Exception as e:
            out["onnxsim"] = {"error": _one_line(f"{type(e).__name__}: {e}")}
    return out


def latency_ms(paths: dict[str, Path], rounds: int = 7, reps: int = 5) -> dict[str, float | None]:
    """Median over interleaved rounds of each variant's fastest of ``reps`` runs (onnxruntime CPU, 1 thread)."""
    import numpy as np
    import onnxruntime as ort

    sess, feeds = {}, {}
    for k, p in paths.items():
        try:
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
            rng = np.random.default_rng(0)
            feed = {}
            for i in s.get_inputs():
                shape = [d if isinstance(d, int) else 1 for d in i.shape]
                feed[i.name] = rng.standard_normal(shape).astype(np.float32)
            for _ in range(3):
                s.run(None, feed)
            sess[k], feeds[k] = s, feed
        except Exception:
            continue
    times: dict[str, list[float]] = {k: [] for k in sess}
    for r in range(rounds):
        order = list(sess) if r % 2 == 0 else list(reversed(sess))
        for k in order:
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                sess[k].run(None, feeds[k])
                best = min(best, time.perf_counter() - t0)
            times[k].append(best * 1e3)
    return {k: (round(statistics.median(times[k]), 4) if times.get(k) else None) for k in paths}


def _nodes(p: Path | None) -> int | None:
    if p is None or not Path(p).is_file():
        return None
    import onnx

    return len(onnx.load(str(p), load_external_data=False).graph.node)


# ---------------------------------------------------------------------------------------------------- table
CMD_COLS = ["inspect", "convert", "export", *[f"export:{t}" for t in PROFILES], "score"]


def cell(r: dict[str, Any]) -> str:
    """``ok``; ``ok 97%`` (share of FLOPs on the NPU); ``gate 35% cos0.71`` (int8 refused by the quality gate: the
    int8/fp32 top-1 agreement and mean cosine); ``exit N``; ``TRACEBACK``."""
    if r.get("traceback"):
        return "TRACEBACK"
    share = f" {r['npu_flops_share']:.0%}" if r.get("npu_flops_share") is not None else ""
    if r["rc"] == 3 and r.get("status") == "quality-failed":
        q = r.get("quality") or {}
        v = q.get("value")
        cos = r.get("int8_mean_cosine")
        return "gate " + ("?" if v is None else f"{v:.0%}" if q.get("metric") == "top1_agreement" else f"cos{v:.2f}") \
            + (f" cos{cos:.2f}" if cos is not None and q.get("metric") == "top1_agreement" else "")
    if r["rc"] != 0:
        return f"exit {r['rc']}"
    return "ok" + share


def table(rows: list[dict[str, Any]]) -> str:
    """Models x commands: ``ok`` / ``ok 97%`` (FLOPs on the NPU) / ``gate 35%`` / ``exit N`` / ``TRACEBACK``."""
    short = {"inspect": "inspect", "convert": "convert", "export": "export", "score": "score",
             **{f"export:{t}": t.removesuffix("-like").removeprefix("generic-") for t in PROFILES}}
    head = ["model", "exporter", *[short[c] for c in CMD_COLS], "export RSS MB", "s"]
    lines, notes = [], []
    for row in rows:
        if "commands" not in row:
            lines.append([row["model"], "failed", *["-"] * len(CMD_COLS), "-", f"{row['seconds']:.0f}"])
            notes.append(f"{row['model']}: building or exporting the model failed: {row['error']}")
            continue
        c = row["commands"]
        rss = max((c[k]["peak_rss_mb"] for k in c if k.startswith("export")), default=0)
        exporter = "dynamo" if row["onnx"]["exporter"].startswith("dynamo") else "torchscript"
        lines.append([row["model"], exporter, *[cell(c[k]) for k in CMD_COLS], str(rss), f"{row['seconds']:.0f}"])
    w = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    fmt = lambda xs: "  ".join(str(x).ljust(w[i]) for i, x in enumerate(xs)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * n for n in w]), *[fmt(x) for x in lines], *notes])


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok_rows = [r for r in rows if "commands" in r]
    s: dict[str, Any] = {"models": len(rows), "onnx_export_failed": [r["model"] for r in rows if "commands" not in r],
                         "tracebacks": sorted({f"{r['model']}:{k}" for r in ok_rows for k, c in r["commands"].items()
                                               if c.get("traceback")})}
    for col in CMD_COLS:
        s[col] = {"exit0": sum(r["commands"][col]["rc"] == 0 for r in ok_rows), "of": len(ok_rows),
                  "failed": {r["model"]: r["commands"][col].get("error", f"exit {r['commands'][col]['rc']}")
                             for r in ok_rows if r["commands"][col]["rc"] != 0}}
    for t in PROFILES:
        c = [r["commands"][f"export:{t}"] for r in ok_rows]
        shares = [x.get("npu_flops_share") for x in c if x.get("written") and x.get("npu_flops_share") is not None]
        s[f"export:{t}"].update({
            "written": sum(bool(x.get("written")) for x in c),
            "all_on_npu": sum(x.get("status") == "ok" for x in c),
            "npu_flops_share_min": min(shares) if shares else None,
            "npu_flops_share_median": statistics.median(shares) if shares else None,
            "below_95pct": {r["model"]: r["commands"][f"export:{t}"].get("npu_flops_share") for r in ok_rows
                            if (r["commands"][f"export:{t}"].get("npu_flops_share") or 0) < 0.95},
            "cnn_below_90pct": {r["model"]: r["commands"][f"export:{t}"].get("npu_flops_share") for r in ok_rows
                                if r["family"] == "cnn"
                                and (r["commands"][f"export:{t}"].get("npu_flops_share") or 0) < 0.90}})
    rss = [c["peak_rss_mb"] for r in ok_rows for k, c in r["commands"].items() if k.startswith("export")]
    s["export_peak_rss_mb_max"] = max(rss) if rss else None
    return s


# ------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {', '.join(QUICK)} only")
    ap.add_argument("--models", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep the exported ONNX files here between runs (default: a temporary directory)")
    ap.add_argument("--rounds", type=int, default=7, help="latency rounds")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    specs = model_specs()
    names = [n.strip() for n in args.models.split(",") if n.strip()] or (list(QUICK) if args.quick else list(specs))
    unknown = [n for n in names if n not in specs]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {', '.join(specs)}")
    run = Run.start("vision_zoo.json", argv=None if argv is None else [__file__, *argv],
                    quick=args.quick or bool(args.models))
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vision_zoo_") as tmp:
        cache = (args.cache or Path(tmp) / "onnx").resolve()
        cache.mkdir(parents=True, exist_ok=True)
        for name in names:
            spec, t0 = specs[name], time.perf_counter()
            row: dict[str, Any] = {"model": name, "family": spec.family}
            try:
                row["onnx"] = export_onnx(name, spec, cache)
            except Exception as e:  # the model or torch.onnx failed: a row, and the sweep goes on
                row["error"] = _one_line(f"{type(e).__name__}: {e}")
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                print(f"{name}: ONNX export failed: {row['error']}", flush=True)
                continue
            src = Path(row["onnx"]["path"])
            work = Path(tmp) / name
            row.update(sweep_model(name, src, work))
            simp = simplifiers(src, work)
            variants = {"original": src}
            if row["graphopt_fp32"]:
                variants["graphopt"] = Path(row["graphopt_fp32"])
            variants.update({k: Path(v["path"]) for k, v in simp.items() if "path" in v})
            lat = latency_ms(variants, rounds=args.rounds)
            row["compare"] = {k: {"nodes": _nodes(variants.get(k)), "latency_ms": lat.get(k),
                                  **{kk: vv for kk, vv in simp.get(k, {}).items() if kk != "path"}}
                              for k in ["original", "graphopt", "onnxslim", "onnxsim"]}
            for c in row["commands"].values():
                c.pop("_stdout", None)
                c.pop("_stderr", None)
            row.pop("graphopt_fp32", None)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            c = row["commands"]
            print(f"{name:14s} " + " ".join(f"{k.removeprefix('export:')}={cell(c[k])}" for k in CMD_COLS)
                  + f"  ({row['seconds']:.0f} s)", flush=True)
            for k in CMD_COLS:
                if c[k].get("error"):
                    print(f"    {k}: {c[k]['error']}", flush=True)
    print()
    print(table(rows))
    summ = summarize(rows)
    print()
    for col in CMD_COLS:
        extra = ""
        if col.startswith("export:"):
            s = summ[col]
            extra = (f", written {s['written']}, all on NPU {s['all_on_npu']}, min NPU FLOPs share "
                     f"{'?' if s['npu_flops_share_min'] is None else format(s['npu_flops_share_min'], '.1%')}")
        print(f"{col:24s} exit 0: {summ[col]['exit0']}/{summ[col]['of']}{extra}")
    print(f"tracebacks: {summ['tracebacks'] or 'none'}; max export peak RSS {summ['export_peak_rss_mb_max']} MB; "
          f"{time.perf_counter() - t_all:.0f} s")
    doc = {"profiles": PROFILES, "input_size": SIZE, "summary": summ, "rows": rows,
           "seconds": round(time.perf_counter() - t_all, 1)}
    print(f"wrote {run.write(doc, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
