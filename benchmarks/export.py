"""Export benchmark: graphopt's default fp32 pipeline vs onnxsim, onnxslim and onnxoptimizer; NPU legalization.

Protocol (one run, one process):

* Models: the 9 ONNX "light" zoo graphs shipped in the ``onnx`` wheel (``onnx/backend/test/data/light``) and every
  graphopt zoo model exported with ``torch.onnx.export`` (TorchScript exporter, opset 17, batch 1, random-init
  weights, seed 0) -- the files users typically hand to a simplifier.
* Each file goes through (a) ``graphopt.export.export_model`` with no target (the default fp32 pipeline, opset 18,
  checked against the original), (b) ``onnxsim.simplify`` with its defaults, (c) ``onnxslim.slim`` with its
  defaults (the simplifier Ultralytics and Hugging Face Optimum use), (d) ``onnxoptimizer.optimize`` with its
  default passes. Node count = ``len(model.graph.node)`` (``Constant`` nodes count: they are nodes); the summary
  counts models where ours has *strictly* fewer, equally many, or more nodes than each simplifier.
* Latency: onnxruntime CPU EP, default graph optimizations, ``intra_op_num_threads=1``, one random input, 5
  warm-up runs, then ``--runs`` rounds that time every variant of the model in turn (interleaved, order reversed
  every other round, so load drift hits all variants alike); in a round each variant runs 5 times back to back
  and keeps its fastest run; rounds rotate over 5 onnxruntime sessions per variant (1 over 100 MB), since one
  session of the very same model can be 12% slower than another. A sixth variant, ``onnxsim_copy``, is onnxsim's
  graph again, timed as if it were another simplifier: the A/A control, whose ratio to onnxsim shows the noise.
* Latency ratio (ours / X per model): the median over rounds of the per-round ratio, with a bootstrap 95% interval
  over rounds. The summary is the median over models, with a 95% interval from resampling every model's rounds
  (the spread a re-run of the same measurement would give). A ratio whose interval holds 1, or that the A/A
  control matches, is noise.
* NPU: every zoo model exported for ``generic-npu-int8`` (legalize + INT8 QDQ, calibrated on CIFAR-10 for image
  models, random tokens for token models); the number of remaining violations is recorded.
* ``--int8`` (a separate results file, ``export_int8.json``): a ResNet-20 trained here (``--epochs`` epochs of SGD,
  cosine, on the CIFAR-10 train set; about 4 min per epoch on 2 idle cores) or loaded from ``--weights`` (its
  sha256 recorded), exported, quantized for ``generic-npu-int8`` with 512 CIFAR-10 train images, and the top-1
  agreement between fp32 and int8 measured on the CIFAR-10 test images (``--test-images``), plain QDQ and with
  ``--bias-correction``. Nothing is cached between runs.

Timings on a shared machine are noisy: the provenance records the load average at the start.

Usage: ``python benchmarks/export.py [--runs 30] [--quick]`` (writes ``benchmarks/results/export.json``);
``python benchmarks/export.py --int8 [--epochs 10 | --weights W.pt]`` (writes ``export_int8.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def export_zoo(d: Path) -> dict[str, Path]:
    import torch

    from graphopt import models

    out = {}
    for name in models.names():
        net = models.get(name, seed=0).eval()
        ex = tuple(models.example_inputs(name, batch=1))
        p = d / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, ex, str(p), opset_version=17, dynamo=False)
        out[name] = p
    return out


def input_feed(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random input for every real graph input (initializer-backed inputs of old files are skipped)."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    emb_rows = {}
    for n in model.graph.node:  # token inputs index an embedding table: keep ids inside it
        if n.op_type == "Gather" and len(n.input) == 2:
            for t in model.graph.initializer:
                if t.name == n.input[0]:
                    emb_rows[n.input[1]] = t.dims[0]
    feed = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim]
        dt = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dt, np.floating):
            feed[i.name] = rng.standard_normal(shape).astype(dt)
        else:
            feed[i.name] = rng.integers(0, emb_rows.get(i.name, 10), shape).astype(dt)
    return feed


def session(model: onnx.ModelProto | str, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def interleaved_latency(models: dict[str, onnx.ModelProto | str], feed: dict, runs: int, warmup: int = 5,
                        burst: int = 5, sessions: int | None = None) -> dict:
    """Per-variant latency that load on the shared machine, and the luck of one session, cannot bias.

    Each of ``runs`` rounds times every variant in turn (interleaved, so drift hits all alike); within a round a
    variant runs ``burst`` times back to back and the round keeps the fastest (timeit's rule: slower repeats
    measure interference, not the graph). Rounds rotate over ``sessions`` independent onnxruntime sessions per
    variant: measured on EfficientNet-B0, three sessions of one and the same model differed by up to 12% (2.55 vs
    2.85 ms, memory placement decided at session creation), more than the graphs being compared, so one session
    per variant ranked identical graphs apart. The figure is the median over all rounds of these per-round
    minima; the plain median of all single runs is reported beside it. Default: 5 sessions per variant, 1 for
    models over 100 MB (memory: six variants x 2 sessions of VGG-19 held 15 GB; the A/A control then shows how
    far one session's luck moves a ratio). The variant order is reversed every other round.
    """
    if sessions is None:
        size = max(m.ByteSize() if isinstance(m, onnx.ModelProto) else Path(m).stat().st_size for m in models.values())
        sessions = 5 if size < 100e6 else 1
    sess = {k: [session(m) for _ in range(sessions)] for k, m in models.items()}
    feeds = {k: {i.name: feed[i.name] for i in s[0].get_inputs() if i.name in feed} for k, s in sess.items()}
    for _ in range(warmup):
        for k, ss in sess.items():
            for s in ss:
                s.run(None, feeds[k])
    best: dict[str, list[float]] = {k: [] for k in sess}
    every: dict[str, list[float]] = {k: [] for k in sess}
    for r in range(runs):
        for k in (list(sess) if r % 2 == 0 else list(reversed(sess))):  # alternate who goes first
            s = sess[k][r % sessions]
            ts = []
            for _ in range(burst):
                t0 = time.perf_counter()
                s.run(None, feeds[k])
                ts.append((time.perf_counter() - t0) * 1e3)
            best[k].append(min(ts))
            every[k].extend(ts)
    return {k: {"median_ms": statistics.median(best[k]), "p10_ms": float(np.percentile(every[k], 10)),
                "p90_ms": float(np.percentile(every[k], 90)), "median_single_ms": statistics.median(every[k]),
                "burst": burst, "sessions": sessions, "rounds_ms": [round(x, 5) for x in best[k]]} for k in sess}


def ratio_stats(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Latency ratio a/b from rounds timed together: the median of the per-round ratios, with a bootstrap 95%
    interval over rounds (the run-to-run spread: which ratios a repeat of the same measurement could give)."""
    r = np.asarray(a, dtype=float) / np.asarray(b, dtype=float)
    boot = np.median(np.random.default_rng(seed).choice(r, size=(n_boot, len(r)), replace=True), axis=1)
    return {"median": float(np.median(r)), "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "rounds": len(r)}


def summary_ratio(rows: list[dict], a: str, b: str, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Median over models of the per-model ratio a/b, with a bootstrap 95% interval: every resample redraws the
    rounds of every model (the spread a re-run of the whole benchmark would show)."""
    rng = np.random.default_rng(seed)
    per = [np.asarray(r["latency"][a]["rounds_ms"]) / np.asarray(r["latency"][b]["rounds_ms"]) for r in rows]
    if not per:
        return {"median": None, "ci95": [None, None], "models": 0}
    boot = [float(np.median([np.median(rng.choice(x, len(x))) for x in per])) for _ in range(n_boot)]
    return {"median": float(np.median([np.median(x) for x in per])),
            "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))], "models": len(per)}


def max_abs_err(ref: onnx.ModelProto | str, cand: onnx.ModelProto, feed: dict) -> float:
    a = session(ref).run(None, feed)
    s = session(cand)
    b = s.run(None, {i.name: feed[i.name] for i in s.get_inputs()})
    return float(max(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))) for x, y in zip(a, b,
                                                                                                      strict=True)))


def nonstandard_ops(m: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(f"{n.domain}.{n.op_type}" for n in m.graph.node if n.domain not in ("", "ai.onnx")))


BASELINES = ("onnxsim", "onnxslim", "onnxoptimizer")


def compare_model(name: str, path: Path, source: str, runs: int, tmp: Path) -> dict:
    import onnxoptimizer
    import onnxsim
    import onnxslim

    from graphopt.export import export_model

    orig = onnx.load(str(path))
    row: dict = {"model": name, "source": source}
    t0 = time.perf_counter()
    out = tmp / f"{name}.ours.onnx"
    rep = export_model(str(path), out, latency_runs=0)
    row["seconds_ours"] = time.perf_counter() - t0
    ours = onnx.load(str(out))
    row["ours_fp32_check"] = {"ok": rep.fp32["ok"], "max_abs_err": rep.fp32["max_abs_err"]}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim, sim_ok = onnxsim.simplify(orig)
    row["seconds_onnxsim"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    slim_in = onnx.ModelProto()
    slim_in.CopyFrom(orig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slim = onnxslim.slim(slim_in)
    row["seconds_onnxslim"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    opt = onnxoptimizer.optimize(orig)
    row["seconds_onnxoptimizer"] = time.perf_counter() - t0
    # A/A control: onnxsim's very graph again, timed as a separate variant (its own sessions)
    variants = {"original": orig, "ours": ours, "onnxsim": sim, "onnxslim": slim, "onnxoptimizer": opt,
                "onnxsim_copy": sim}
    row["nodes"] = {k: len(m.graph.node) for k, m in variants.items() if k != "onnxsim_copy"}
    row["nonstandard_ops"] = {k: nonstandard_ops(m) for k, m in (("onnxsim", sim), ("onnxslim", slim))}
    feed = input_feed(orig)
    row["max_abs_err_vs_original"] = {k: max_abs_err(orig, m, feed) for k, m in variants.items()
                                      if k not in ("original", "onnxsim_copy")}
    lat = interleaved_latency(variants, feed, runs)
    row["latency"] = lat
    row["ratio"] = {f"ours/{b}": ratio_stats(lat["ours"]["rounds_ms"], lat[b]["rounds_ms"]) for b in BASELINES}
    row["ratio"]["onnxsim_copy/onnxsim (A/A)"] = ratio_stats(lat["onnxsim_copy"]["rounds_ms"],
                                                             lat["onnxsim"]["rounds_ms"])
    n = row["nodes"]
    row["nodes_vs"] = {b: ("fewer" if n["ours"] < n[b] else "equal" if n["ours"] == n[b] else "more")
                       for b in BASELINES}
    return row


def npu_row(name: str, path: Path, tmp: Path) -> dict:
    from graphopt import models
    from graphopt.export import export_model

    calib = "random" if "token" in models.info(name)["input"] else "cifar10"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = export_model(str(path), tmp / f"{name}.npu.onnx", target="generic-npu-int8", calib=calib,
                               calib_samples=64, eval_samples=200, latency_runs=0, allow_violations=True)
    except Exception as e:  # noqa: BLE001 - one model's failure is a result, not the end of the benchmark
        return {"model": name, "violations": -1, "error": f"{type(e).__name__}: {e}", "rewrites": {},
                "float_islands": -1}
    q = rep.quantization or {}
    return {"model": name, "violations": len(rep.violations), "violation_list": rep.violations[:20],
            "calibration_method": q.get("calibration_method"),
            "rewrites": dict(Counter(r["legalizer"] for r in rep.rewrites)), "calibration": q.get("calibration"),
            "float_islands": len(q.get("float_islands", [])), "top1_agreement": q.get("top1_agreement"),
            "fp32_check_ok": rep.fp32.get("ok"), "nodes_int8": rep.nodes_after}


def resnet20_agreement(epochs: float, test_images: int, tmp: Path, weights: Path | None = None) -> dict:
    """int8 agreement of a trained ResNet-20: trained here (``epochs`` epochs) or loaded from ``weights`` (an
    explicit file: its sha256 is recorded). Nothing is cached between runs."""
    import hashlib

    import torch

    from graphopt import models
    from graphopt.eval.data import load_dataset
    from graphopt.eval.train import TrainConfig, seed_everything, train_model
    from graphopt.export import export_model

    seed_everything(0)
    net = models.get("resnet20", seed=0)
    if weights is not None:
        state = torch.load(weights, weights_only=True, map_location="cpu")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        net.load_state_dict(state)
        train_s, status = 0.0, "loaded"
        source = {"weights": str(weights), "sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest()}
    else:
        splits = load_dataset("cifar10", val_fraction=0.0)
        t0 = time.perf_counter()
        res = train_model(net, splits.train, TrainConfig(epochs=epochs, batch_size=128, lr=0.1, seed=0))
        train_s, status = time.perf_counter() - t0, res.status
        source = {"trained_here": {"epochs": epochs, "batch_size": 128, "lr": 0.1, "seed": 0,
                                   "data": "cifar10 train split (50,000 images)"}}
    net.eval()
    path = tmp / "resnet20_trained.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(path), opset_version=17, dynamo=False)
    out: dict = {"source": source, "train_seconds": train_s, "train_status": status}
    # Both quantizers, same calibration set: plain QDQ and QDQ + empirical bias correction (``--bias-correction``).
    for key, bc in (("plain", False), ("bias_corrected", True)):
        rep = export_model(str(path), tmp / f"resnet20_int8_{key}.onnx", target="generic-npu-int8", calib="cifar10",
                           calib_samples=512, eval_samples=test_images, latency_runs=30, bias_correction=bc)
        q = rep.quantization or {}
        out[key] = {"calibration": q.get("calibration"), "evaluation": q.get("evaluation"),
                    "top1_agreement": q.get("top1_agreement"), "fp32_accuracy": q.get("fp32_accuracy"),
                    "int8_accuracy": q.get("quantized_accuracy"), "mean_cosine": q.get("mean_cosine"),
                    "violations": len(rep.violations), "float_islands": len(q.get("float_islands", [])),
                    "latency_ms_fp32_original": rep.latency.get("before", {}).get("median_ms"),
                    "latency_ms_int8": rep.latency.get("after", {}).get("median_ms")}
    return out


def node_summary(rows: list[dict]) -> dict[str, Any]:
    """Per baseline: on how many models ours has strictly fewer / equally many / more nodes, and which."""
    out: dict[str, Any] = {}
    for b in BASELINES:
        by = {k: [r["model"] for r in rows if r["nodes_vs"][b] == k] for k in ("fewer", "equal", "more")}
        out[b] = {"fewer": len(by["fewer"]), "equal": len(by["equal"]), "more": len(by["more"]),
                  "models_more": by["more"], "models_fewer": by["fewer"]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="timed rounds per model (>= 20)")
    ap.add_argument("--int8", action="store_true",
                    help="only the ResNet-20 int8 agreement (writes export_int8.json): trains ResNet-20 here "
                         "unless --weights is given")
    ap.add_argument("--epochs", type=float, default=10.0, help="--int8: ResNet-20 training epochs")
    ap.add_argument("--weights", type=Path, default=None, help="--int8: a trained ResNet-20 state_dict instead")
    ap.add_argument("--test-images", type=int, default=10000, help="--int8: CIFAR-10 test images")
    ap.add_argument("--models", nargs="*", help="only these models (names or light_* stems)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 models, 6 rounds (not written to results)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    run = Run.start("export_int8.json" if args.int8 else "export.json",
                    argv=None if argv is None else [__file__, *argv], quick=args.quick)
    import onnxoptimizer
    import onnxruntime
    import onnxsim
    import onnxslim
    import torch

    versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "onnxsim": getattr(onnxsim, "__version__", "?"), "onnxslim": getattr(onnxslim, "__version__", "?"),
                "onnxoptimizer": getattr(onnxoptimizer, "__version__", "?"), "torch": torch.__version__}
    tmp = Path(tempfile.mkdtemp(prefix="graphopt-bench-export-"))
    if args.int8:
        agree = resnet20_agreement(args.epochs, 200 if args.quick else args.test_images, tmp, args.weights)
        doc = {"versions": versions, "resnet20_int8": agree}
        print(json.dumps(agree, indent=1))
        print(f"\nwrote {run.write(doc, args.out)}")
        return 0
    if args.quick:
        args.runs, args.models = 6, args.models or ["resnet20", "light_squeezenet"]
    t_all = time.perf_counter()
    zoo = export_zoo(tmp)
    light = {p.stem: p for p in sorted(LIGHT.glob("light_*.onnx"))}
    todo = [(k, p, "onnx-light") for k, p in light.items()] + [(k, p, "graphopt-zoo") for k, p in zoo.items()]
    if args.models:
        todo = [t for t in todo if t[0] in args.models]
    rows = []
    for name, path, src in todo:
        print(f"[export] {name} ...", file=sys.stderr, flush=True)
        rows.append(compare_model(name, path, src, args.runs, tmp))
    npu = []
    for name, path in zoo.items():
        if args.models and name not in args.models:
            continue
        print(f"[npu] {name} ...", file=sys.stderr, flush=True)
        npu.append(npu_row(name, path, tmp))

    summary = {
        "models": len(rows),
        "nodes_vs": node_summary(rows),
        "latency_ratio": {f"ours/{b}": summary_ratio(rows, "ours", b) for b in BASELINES}
        | {"onnxsim_copy/onnxsim (A/A)": summary_ratio(rows, "onnxsim_copy", "onnxsim")},
        "ours_fp32_checks_ok": all(r["ours_fp32_check"]["ok"] for r in rows),
        "npu_zero_violations_all": all(r["violations"] == 0 for r in npu),
        "seconds": time.perf_counter() - t_all,
    }
    doc = {"protocol": {"runs": args.runs, "ort_threads": 1, "opset_ours": 18, "burst": 5,
                        "ratio": "per model: median over rounds of the per-round ratio of the rounds' fastest runs "
                                 "(variants interleaved in every round); ci95: bootstrap over rounds. Summary: "
                                 "median over models, ci95 from resampling every model's rounds. A/A: onnxsim's "
                                 "graph timed twice as two variants (the noise floor)."},
           "versions": versions, "summary": summary, "models": rows, "npu_generic_int8": npu}
    print_tables(doc)
    print(f"\nwrote {run.write(doc, args.out)}")
    return 0


def print_tables(doc: dict) -> None:
    print(f"\n{'model':24s} {'orig':>5s} {'ours':>5s} {'sim':>5s} {'slim':>5s} {'opt':>5s}  {'ours ms':>9s} "
          f"{'ours/sim [95% CI]':>22s} {'ours/slim':>9s} {'A/A':>6s}  notes")
    for r in doc["models"]:
        n, lat, rat = r["nodes"], r["latency"], r["ratio"]
        notes = [f"nodes {v} than {b}" for b, v in r["nodes_vs"].items() if v == "more"]
        for b, ops in r["nonstandard_ops"].items():
            if ops:
                notes.append(f"{b} uses " + ", ".join(f"{k} x{v}" for k, v in ops.items()))
        s = rat["ours/onnxsim"]
        print(f"{r['model']:24s} {n['original']:5d} {n['ours']:5d} {n['onnxsim']:5d} {n['onnxslim']:5d} "
              f"{n['onnxoptimizer']:5d}  {lat['ours']['median_ms']:9.3f} {s['median']:7.3f} "
              f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] {rat['ours/onnxslim']['median']:9.3f} "
              f"{rat['onnxsim_copy/onnxsim (A/A)']['median']:6.3f}  {'; '.join(notes)}")
    s = doc["summary"]
    print()
    for b, v in s["nodes_vs"].items():
        print(f"nodes vs {b:<14} strictly fewer {v['fewer']:2d}, equal {v['equal']:2d}, more {v['more']:2d} "
              f"of {s['models']}" + (f"  (more: {', '.join(v['models_more'])})" if v["models_more"] else ""))
    for k, v in s["latency_ratio"].items():
        print(f"latency {k:<28} median over models {v['median']:.3f}  95% CI [{v['ci95'][0]:.3f}, "
              f"{v['ci95'][1]:.3f}]")
    print("\ngeneric-npu-int8:")
    for r in doc["npu_generic_int8"]:
        print(f"  {r['model']:22s} violations {r['violations']:3d}  float islands {r['float_islands']:3d}  "
              f"rewrites {r['rewrites']}" + (f"  ERROR {r['error']}" if r.get("error") else ""))


if __name__ == "__main__":
    sys.exit(main())
