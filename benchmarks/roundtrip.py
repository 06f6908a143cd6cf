"""Round-trip benchmark: lowering/emission times, round-trip error, and training speed of the emitted module.

Protocol (one process, CPU, ``torch.set_num_threads(2)``):

* Every model of ``graphopt.models.names()``, random-init (seed 0), ``.eval()``, example inputs of batch 2.
* **Lowering**: ``graphopt.frontends.torch.from_torch(model, inputs)`` (``torch.export`` + ATen lowering + shape
  inference), best of ``--lower-repeats`` runs.
* **Emission**: ``graphopt.backends.torch.to_torch(graph)`` (source generation, compile, weight load) and
  ``graphopt.backends.onnx.to_onnx(graph, opset=18, path=...)`` (file written), best of ``--repeats`` runs.
* **Reference**: ``torch.onnx.export`` of the same module, same inputs, opset 18, file written, best of
  ``--repeats`` runs, with the TorchScript exporter (``dynamo=False``, the faster of the two, so the headline ratio
  is the conservative one) and, unless ``--no-dynamo``, once with the default ``dynamo=True`` exporter.
  Headline: ``onnx_ratio = to_onnx time / torch.onnx.export(dynamo=False) time`` (target <= 0.5).
* **Round-trip error**: max |output - original output| of the emitted PyTorch module and of the emitted ONNX
  file run by onnxruntime (CPU EP), on the example inputs.
* **Training speed** (ResNet-20 and ViT-tiny, batch ``--batch`` = 128, 32x32 images, random labels): the graph is
  lowered with a symbolic batch dim (``dynamic_batch=True``) and emitted; both modules in ``.train()``; one step =
  ``zero_grad(set_to_none) -> forward -> cross-entropy -> backward``. 3 warm-up steps each, then ``--train-repeats``
  repeats of 10 steps per module, alternating which module goes first at every step (so load drift hits both);
  median per repeat, and the ratio is min-of-medians (emitted) / min-of-medians (original) -- the machine is
  shared, and the minimum over repeats is the least-disturbed estimate. Target ratio <= 1.10. Loss and
  gradients of the first step are checked against the original.

Usage: ``python benchmarks/roundtrip.py [--models resnet20,vit_tiny] [--repeats 3] [--no-dynamo]``.
Writes ``benchmarks/results/roundtrip.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

TRAIN_MODELS = ("resnet20", "vit_tiny")


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Minimum wall time over ``repeats`` calls (and the last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _quiet() -> contextlib.ExitStack:
    """Silence the exporters' progress prints and warnings (they would swamp the table)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _flat(out: Any) -> list[np.ndarray]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    if isinstance(out, list | tuple):
        return [a for o in out for a in _flat(o)]
    return [np.asarray(out)]


def max_err(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        return float("inf")
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
               for x, y in zip(a, b, strict=True))


def bench_roundtrip(name: str, repeats: int, lower_repeats: int, dynamo: bool, tmp: Path) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from graphopt import models
    from graphopt.backends.onnx import to_onnx
    from graphopt.backends.torch import to_torch
    from graphopt.frontends.torch import from_torch

    net = models.get(name, seed=0).eval()
    ex = tuple(models.example_inputs(name, batch=2))
    with torch.no_grad():
        ref = _flat(net(*ex))
    with _quiet():
        t_lower, g = best_time(lambda: from_torch(net, ex), lower_repeats)
    t_torch, mod = best_time(lambda: to_torch(g), repeats)
    mod.eval()  # nn.Modules start in train mode; the graph was captured from the eval-mode original
    p_ours = tmp / f"{name}.graphopt.onnx"
    t_onnx, _ = best_time(lambda: to_onnx(g, opset=18, path=p_ours), repeats)
    p_ts = tmp / f"{name}.torchscript.onnx"
    with _quiet():
        t_ts, _ = best_time(lambda: torch.onnx.export(net, ex, str(p_ts), opset_version=18, dynamo=False), repeats)
    t_dyn: float | None = None
    dyn_error = None
    if dynamo:
        try:
            with _quiet():
                t_dyn, _ = best_time(lambda: torch.onnx.export(net, ex, str(tmp / f"{name}.dynamo.onnx"),
                                                               opset_version=18, dynamo=True), 1)
        except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
            dyn_error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    with torch.no_grad():
        err_torch = max_err(ref, _flat(mod(*ex)))
    sess = ort.InferenceSession(str(p_ours), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), ex, strict=True)}
    err_onnx = max_err(ref, sess.run(None, feeds))
    return {
        "model": name,
        "nodes": len(g),
        "lower_s": t_lower,
        "emit_torch_s": t_torch,
        "emit_onnx_s": t_onnx,
        "torch_onnx_export_torchscript_s": t_ts,
        "torch_onnx_export_dynamo_s": t_dyn,
        "torch_onnx_export_dynamo_error": dyn_error,
        "onnx_ratio": t_onnx / t_ts,
        "onnx_ratio_vs_dynamo": None if t_dyn is None else t_onnx / t_dyn,
        "max_abs_err_torch": err_torch,
        "max_abs_err_onnx": err_onnx,
        "max_abs_output": max(float(np.max(np.abs(r))) if r.size else 0.0 for r in ref),
    }


def bench_train(name: str, batch: int, repeats: int, iters: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from graphopt import models
    from graphopt.backends.torch import to_torch
    from graphopt.frontends.torch import from_torch

    net = models.get(name, seed=0).eval()
    with _quiet():
        g = from_torch(net, tuple(models.example_inputs(name, batch=2)), dynamic_batch=True)
    emitted = to_torch(g)
    net.train()
    emitted.train()
    (x,) = models.example_inputs(name, batch=batch, seed=1)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1))

    def step(m: torch.nn.Module) -> torch.Tensor:
        m.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        return loss.detach()

    # Equivalence of the timed step: same loss and gradients (before BN statistics drift apart by order).
    l_ref, l_emit = step(net), step(emitted)
    grads = dict(emitted.named_parameters())
    grad_err = max(float((p.grad - grads[k].grad).abs().max()) for k, p in net.named_parameters())
    for _ in range(2):
        step(net)
        step(emitted)
    med: dict[str, list[float]] = {"original": [], "emitted": []}
    for _ in range(repeats):
        times: dict[str, list[float]] = {"original": [], "emitted": []}
        for i in range(iters):
            order = [("original", net), ("emitted", emitted)]
            for key, m in order if i % 2 == 0 else order[::-1]:
                t = time.perf_counter()
                step(m)
                times[key].append(time.perf_counter() - t)
        for key, ts in times.items():
            med[key].append(statistics.median(ts))
    o, e = min(med["original"]), min(med["emitted"])
    return {"model": name, "batch": batch, "iters_per_repeat": iters, "repeats": repeats,
            "original_step_s": o, "emitted_step_s": e, "ratio": e / o, "medians": med,
            "loss_abs_diff": float((l_ref - l_emit).abs()), "max_grad_abs_diff": grad_err}


def _json_safe(x: Any) -> Any:
    """Non-finite floats (an output-shape mismatch is recorded as an infinite error) become null."""
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def _fmt(x: float | None, unit: str = "s") -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.0f}ms" if unit == "s" and x < 10 else f"{x:.2f}{unit}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="", help="comma-separated subset of graphopt.models.names()")
    ap.add_argument("--repeats", type=int, default=3, help="emission/export timing repeats (best of)")
    ap.add_argument("--lower-repeats", type=int, default=2)
    ap.add_argument("--no-dynamo", action="store_true", help="skip the dynamo torch.onnx.export reference")
    ap.add_argument("--batch", type=int, default=128, help="training-step batch size")
    ap.add_argument("--train-repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10, help="timed training steps per module per repeat")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet20, one repeat, no dynamo, no training")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run = Run.start("roundtrip.json", argv=None if argv is None else [__file__, *argv], quick=args.quick)
    if args.quick:
        args.models, args.repeats, args.lower_repeats, args.no_dynamo, args.skip_train = "resnet20", 1, 1, True, True

    import torch

    from graphopt import models

    torch.set_num_threads(2)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    names = [n for n in args.models.split(",") if n] or list(models.names())
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            r = bench_roundtrip(name, args.repeats, args.lower_repeats, not args.no_dynamo, Path(d))
            rows.append(r)
            print(f"  {name}: lower {_fmt(r['lower_s'])}, to_onnx {_fmt(r['emit_onnx_s'])} vs torch.onnx.export "
                  f"{_fmt(r['torch_onnx_export_torchscript_s'])} ({r['onnx_ratio']:.3f}x)", flush=True)
    train = []
    if not args.skip_train:
        for name in [n for n in TRAIN_MODELS if n in names]:
            t = bench_train(name, args.batch, args.train_repeats, args.iters)
            train.append(t)
            print(f"  train {name}: {t['ratio']:.3f}x", flush=True)

    hdr = (f"{'model':<20}{'nodes':>6}{'lower':>9}{'to_torch':>10}{'to_onnx':>9}{'export(ts)':>11}"
           f"{'export(dyn)':>12}{'onnx/ts':>9}{'onnx/dyn':>9}{'err torch':>11}{'err onnx':>10}{'max|out|':>10}")
    print("\nLowering and emission (best of repeats; export = torch.onnx.export of the same module, opset 18)")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        dyn = r["onnx_ratio_vs_dynamo"]
        print(f"{r['model']:<20}{r['nodes']:>6}{_fmt(r['lower_s']):>9}{_fmt(r['emit_torch_s']):>10}"
              f"{_fmt(r['emit_onnx_s']):>9}{_fmt(r['torch_onnx_export_torchscript_s']):>11}"
              f"{_fmt(r['torch_onnx_export_dynamo_s']):>12}{r['onnx_ratio']:>9.3f}"
              f"{'-' if dyn is None else f'{dyn:.3f}':>9}{r['max_abs_err_torch']:>11.1e}{r['max_abs_err_onnx']:>10.1e}"
              f"{r['max_abs_output']:>10.1e}")
    worst = max(r["onnx_ratio"] for r in rows)
    print(f"worst to_onnx / torch.onnx.export(TorchScript) ratio: {worst:.3f} (target <= 0.5)")
    if train:
        print(f"\nTraining step (forward+backward, batch {args.batch}, 2 threads; min over {args.train_repeats} "
              f"repeats of the median of {args.iters} steps)")
        print(f"{'model':<12}{'original':>10}{'emitted':>10}{'ratio':>8}{'loss diff':>11}{'grad diff':>11}")
        for t in train:
            print(f"{t['model']:<12}{t['original_step_s']:>9.3f}s{t['emitted_step_s']:>9.3f}s{t['ratio']:>8.3f}"
                  f"{t['loss_abs_diff']:>11.1e}{t['max_grad_abs_diff']:>11.1e}")
        print("target ratio <= 1.10")
    result = {
        "protocol": __doc__,
        "environment": {"torch_threads": 2},
        "roundtrip": rows,
        "train": train,
        "summary": {
            "worst_onnx_ratio_vs_torchscript_export": worst,
            "worst_onnx_ratio_vs_dynamo_export": max((r["onnx_ratio_vs_dynamo"] for r in rows
                                                      if r["onnx_ratio_vs_dynamo"] is not None), default=None),
            "max_abs_err_torch": max(r["max_abs_err_torch"] for r in rows),
            "max_abs_err_onnx": max(r["max_abs_err_onnx"] for r in rows),
            "train_ratios": {t["model"]: t["ratio"] for t in train},
        },
    }
    out = run.write(_json_safe(result), args.out, dumps=lambda d: json.dumps(d, indent=1, allow_nan=False))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
