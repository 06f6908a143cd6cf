"""Evaluation-engine benchmark (issue 4): training throughput of the emitted module vs the original, time to
first batch with the CIFAR-10 cache cold and warm, and local-executor overhead per candidate.

    .venv/bin/python benchmarks/eval.py [--steps 20] [--batch 128]

Prints a table and writes benchmarks/results/eval.json. Targets: throughput ratio ≥ 0.95; executor overhead
< 0.5 s per candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def bench_throughput(name: str, batch: int, steps: int) -> dict:
    from graphopt.models import example_inputs, get

    from graphopt.backends.torch import to_torch
    from graphopt.frontends.torch import from_torch

    orig = get(name, seed=0)
    g = from_torch(orig.eval(), example_inputs(name, batch=2))
    emitted = to_torch(g)
    # Alternate single steps of the two modules (same data), so load from other processes hits both alike;
    # the ratio is the median of per-pair time ratios.
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    steppers = []
    for m in (orig, emitted):
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

        def step(m=m, opt=opt) -> float:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
            return time.perf_counter() - t0

        steppers.append(step)
    for _ in range(3):  # warm-up
        for st in steppers:
            st()
    ta, tb = [], []
    for _ in range(steps):
        ta.append(steppers[0]())
        tb.append(steppers[1]())
    a, b = batch / statistics.median(ta), batch / statistics.median(tb)
    pair_ratio = statistics.median([p / q for p, q in zip(ta, tb, strict=True)])
    return {"model": name, "original_img_s": a, "emitted_img_s": b, "ratio": pair_ratio, "target": ">= 0.95"}


def bench_first_batch() -> dict:
    from graphopt.eval.data import BatchLoader, load_dataset

    out = {}
    with tempfile.TemporaryDirectory() as d:
        os.environ["GRAPHOPT_CACHE_DIR"] = d
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            splits = load_dataset("cifar10", seed=0)
            next(iter(BatchLoader(splits.train, 128, shuffle=True, augment=True, seed=0)))
            out[f"first_batch_{label}_s"] = time.perf_counter() - t0
        out["source"] = splits.info.source
    os.environ.pop("GRAPHOPT_CACHE_DIR", None)
    return out


def _candidate(seed: int) -> float:
    """A realistic tiny candidate: build, train a few steps, return a metric."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(8, 10))
    x = torch.randn(16, 3, 32, 32)
    return float(m(x).sum())


def bench_executor(n: int = 20) -> dict:
    from graphopt.eval.executors import LocalExecutor

    t0 = time.perf_counter()
    for i in range(n):
        _candidate(i)
    inproc = (time.perf_counter() - t0) / n
    with LocalExecutor(workers=2) as ex:
        list(ex.map_unordered(_candidate, [0, 1]))  # warm the workers (imports torch once)
        t0 = time.perf_counter()
        res = list(ex.map_unordered(_candidate, list(range(n))))
        per = (time.perf_counter() - t0) / n
    assert all(r.ok for r in res)
    # two workers run in parallel: overhead per candidate = wall per candidate * workers - in-process time
    return {"in_process_s": inproc, "executor_wall_per_candidate_s": per,
            "overhead_per_candidate_s": max(0.0, per * 2 - inproc), "target": "< 0.5 s"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", default="resnet20,mobilenetv2")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    rows = [bench_throughput(m, args.batch, args.steps) for m in args.models.split(",")]
    fb = bench_first_batch()
    ex = bench_executor()
    print(f"{'model':<14}{'original img/s':>16}{'emitted img/s':>16}{'ratio':>8}  target")
    for r in rows:
        print(f"{r['model']:<14}{r['original_img_s']:>16.1f}{r['emitted_img_s']:>16.1f}{r['ratio']:>8.3f}  ≥ 0.95")
    print(f"time to first batch: cold {fb['first_batch_cold_s']:.2f}s, warm {fb['first_batch_warm_s']:.2f}s "
          f"({fb['source']})")
    print(f"local executor: {ex['overhead_per_candidate_s'] * 1e3:.1f} ms overhead per candidate (target < 500 ms)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "eval.json").write_text(json.dumps({"throughput": rows, "first_batch": fb, "executor": ex},
                                                  indent=1))


if __name__ == "__main__":
    main()
