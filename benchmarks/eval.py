"""Evaluation-engine benchmark (issue 4): training throughput of the emitted module vs the original, time to
first batch with the CIFAR-10 cache cold and warm, and local-executor overhead per candidate.

    .venv/bin/python benchmarks/eval.py [--steps 20] [--batch 128]

Prints a table and writes benchmarks/results/eval.json (with provenance). Targets: throughput ratio ≥ 0.95;
executor overhead < 0.5 s per candidate. The executor overhead compares warm with warm (``bench_executor``) and
is reported as the raw difference, sign included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402


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


def bench_executor(n: int = 20, reps: int = 5, workers: int = 2) -> dict:
    """Executor overhead per candidate, both sides warm (imports done, workers started, one warm-up block each).

    The in-process side uses the torch thread count of one worker. ``reps`` interleaved repetitions of: ``n``
    candidates called in-process; the same ``n`` submitted one at a time (``submit(...).result()``: the round trip
    a sequential search pays); the same ``n`` through ``map_unordered`` on ``workers`` workers. Overheads are raw
    differences of medians over repetitions (negative when the executor path was faster, e.g. when the in-process
    block met more load): sequential = per-candidate round trip - in-process time; parallel = wall per candidate x
    workers - in-process time (zero on ``workers`` idle cores with no overhead).
    """
    from graphopt.eval.executors import LocalExecutor

    seeds = list(range(n))

    def inproc_block() -> float:
        t0 = time.perf_counter()
        for i in seeds:
            _candidate(i)
        return (time.perf_counter() - t0) / n

    threads_before = torch.get_num_threads()
    with LocalExecutor(workers=workers) as ex:
        torch.set_num_threads(ex.threads_per_worker)  # the in-process side computes with a worker's threads

        def seq_block() -> float:
            t0 = time.perf_counter()
            for i in seeds:
                r = ex.submit(_candidate, i).result()
                assert isinstance(r, float)
            return (time.perf_counter() - t0) / n

        def map_block() -> float:
            t0 = time.perf_counter()
            res = list(ex.map_unordered(_candidate, seeds))
            assert all(r.ok for r in res)
            return (time.perf_counter() - t0) / n

        for block in (inproc_block, seq_block, map_block):  # warm-up: imports, worker start, first calls
            block()
        times: dict[str, list[float]] = {"in_process": [], "sequential": [], "parallel": []}
        for _ in range(reps):
            times["in_process"].append(inproc_block())
            times["sequential"].append(seq_block())
            times["parallel"].append(map_block())
        threads = ex.threads_per_worker
    torch.set_num_threads(threads_before)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"candidates_per_block": n, "repetitions": reps, "workers": workers, "cpu_count": os.cpu_count(),
            "torch_threads_in_process_and_per_worker": threads,
            "per_candidate_s": times, "median_s": med,
            "overhead_sequential_s": med["sequential"] - med["in_process"],
            "overhead_parallel_s": med["parallel"] * workers - med["in_process"],
            "target": "< 0.5 s per candidate"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", default="resnet20,mobilenetv2")
    ap.add_argument("--quick", action="store_true", help="smoke run (not written to the results file)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    run = Run.start("eval.json", argv=None if argv is None else [__file__, *argv], quick=args.quick)
    if args.quick:
        args.steps, args.batch, args.models = 3, 16, "resnet20"
    torch.set_num_threads(os.cpu_count() or 2)
    rows = [bench_throughput(m, args.batch, args.steps) for m in args.models.split(",")]
    fb = bench_first_batch()
    ex = bench_executor(n=4 if args.quick else 20, reps=2 if args.quick else 5)
    print(f"{'model':<14}{'original img/s':>16}{'emitted img/s':>16}{'ratio':>8}  target")
    for r in rows:
        print(f"{r['model']:<14}{r['original_img_s']:>16.1f}{r['emitted_img_s']:>16.1f}{r['ratio']:>8.3f}  ≥ 0.95")
    print(f"time to first batch: cold {fb['first_batch_cold_s']:.2f}s, warm {fb['first_batch_warm_s']:.2f}s "
          f"({fb['source']})")
    print(f"local executor, both warm ({ex['repetitions']} interleaved repetitions of {ex['candidates_per_block']} "
          f"candidates): in-process {ex['median_s']['in_process'] * 1e3:.1f} ms per candidate; overhead "
          f"sequential {ex['overhead_sequential_s'] * 1e3:+.1f} ms, parallel ({ex['workers']} workers) "
          f"{ex['overhead_parallel_s'] * 1e3:+.1f} ms (raw differences; target < 500 ms)")
    print(f"wrote {run.write({'throughput': rows, 'first_batch': fb, 'executor': ex}, args.out)}")


if __name__ == "__main__":
    main()
