"""NPU coverage: which real ONNX zoo graphs export cleanly to each built-in NPU profile.

Models: the 9 ONNX Model Zoo "light" graphs shipped in the ``onnx`` wheel (``onnx/backend/test/data/light``:
AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512; opset 9 files
with constant weights). Each goes through ``graphopt.export.export_model`` for every built-in target
(``graphopt targets``) with the fp32 check on, random calibration (the weights are placeholders, so int8
accuracy is not measured here) and few latency runs. Recorded per (model, target): exported without violations,
the remaining violation rules, the legalizers that fired, seconds.

Usage: ``python benchmarks/npu_coverage.py [--quick]``; writes ``benchmarks/results/npu_coverage.json`` (with
provenance).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import onnx

from graphopt.export import export_model
from graphopt.npu.profiles import available_profiles

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: SqueezeNet only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    run = Run.start("npu_coverage.json", argv=None if argv is None else [__file__, *argv], quick=args.quick)
    models = sorted(LIGHT.glob("light_*.onnx"))
    if args.quick:
        models = [m for m in models if "squeezenet" in m.stem]
    targets = sorted(available_profiles())
    rows, t_all = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            for t in targets:
                t0 = time.time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rep = export_model(m, Path(tmp) / f"{m.stem}_{t}.onnx", target=t, calib="random",
                                       calib_samples=16, eval_samples=16, latency_runs=2)
                rules = Counter(v["rule"] for v in rep.violations)
                rows.append({"model": m.stem.removeprefix("light_"), "target": t, "clean": not rep.violations,
                             "fp32_check_ok": bool(rep.fp32.get("ok", False)), "violations": dict(rules),
                             "rewrites": dict(Counter(r["legalizer"] for r in rep.rewrites)),
                             "nodes": [rep.nodes_before, rep.nodes_after], "seconds": round(time.time() - t0, 1)})
                r = rows[-1]
                print(f"{r['model']:14s} {t:18s} {'clean' if r['clean'] else 'violations':10s} "
                      f"fp32 {'ok' if r['fp32_check_ok'] else 'FAIL':4s} {r['violations'] or ''} "
                      f"({r['seconds']:.0f} s)", flush=True)
    clean = sum(r["clean"] for r in rows)
    print(f"\n{clean}/{len(rows)} (model, target) pairs export with no violation; fp32 checks ok: "
          f"{sum(r['fp32_check_ok'] for r in rows)}/{len(rows)}; {time.time() - t_all:.0f} s")
    for t in targets:
        print(f"  {t:18s} {sum(r['clean'] for r in rows if r['target'] == t)}/{len(models)}")
    by_target = {t: {"clean": sum(r["clean"] for r in rows if r["target"] == t),
                     "pairs": sum(r["target"] == t for r in rows)} for t in targets}
    doc = {"clean": clean, "pairs": len(rows), "per_target": by_target,
           "fp32_checks_ok": sum(r["fp32_check_ok"] for r in rows), "rows": rows, "seconds": time.time() - t_all}
    print(f"wrote {run.write(doc, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
