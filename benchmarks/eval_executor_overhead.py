"""Per-candidate overhead of graphopt's LocalExecutor (what the pool costs on top of the evaluation itself).

Measures: pool start-up (construction to first result), sequential round-trip latency of a no-op task,
throughput of ``map_unordered`` over no-op tasks, round-trip with 1 MB / 10 MB arguments, and the cost of
recovering from a crashed or timed-out worker. Prints a table and writes
``benchmarks/results/eval_executor_overhead.json`` (with provenance).

    python benchmarks/eval_executor_overhead.py [--workers 2] [--tasks 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from graphopt.eval.executors import LocalExecutor, TaskFailed, cpu_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402


def noop(x: object = None) -> int:
    return 0


def size_of(b: bytes) -> int:
    return len(b)


def die() -> None:
    os._exit(1)


def hang() -> None:
    time.sleep(3600)


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_ms": 1e3 * statistics.median(xs), "p90_ms": 1e3 * xs[int(0.9 * (len(xs) - 1))],
            "mean_ms": 1e3 * statistics.fmean(xs), "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="smoke run (not written to the results file)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    run = Run.start("eval_executor_overhead.json", quick=args.quick)
    if args.quick:
        args.tasks = 20
    rows: dict[str, dict[str, float]] = {}

    t0 = time.perf_counter()
    ex = LocalExecutor(args.workers)
    ex.submit(noop).result()
    rows["pool start-up (to first result)"] = {"median_ms": 1e3 * (time.perf_counter() - t0), "n": 1}

    t = time.perf_counter()
    for _ in range(args.tasks):
        noop()
    rows["direct call (baseline)"] = {"median_ms": 1e3 * (time.perf_counter() - t) / args.tasks, "n": args.tasks}

    lat = []
    for _ in range(args.tasks):
        t = time.perf_counter()
        ex.submit(noop).result()
        lat.append(time.perf_counter() - t)
    rows["round trip, no-op, sequential"] = _ms(lat)

    t = time.perf_counter()
    n_ok = sum(r.ok for r in ex.map_unordered(noop, range(args.tasks)))
    wall = time.perf_counter() - t
    assert n_ok == args.tasks
    rows[f"map_unordered no-op, {args.workers} workers (wall/task)"] = {
        "median_ms": 1e3 * wall / args.tasks, "n": args.tasks, "tasks_per_s": args.tasks / wall}

    for mb in (1, 10):
        payload = os.urandom(mb * 2**20)
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            assert ex.submit(size_of, payload).result() == len(payload)
            lat.append(time.perf_counter() - t)
        rows[f"round trip, {mb} MB argument"] = _ms(lat)

    lat = []
    for _ in range(5):
        t = time.perf_counter()
        err = ex.submit(die).exception()
        assert isinstance(err, TaskFailed) and err.reason == "worker crashed"
        ex.submit(noop).result()
        lat.append(time.perf_counter() - t)
    rows["crash detected + replacement serves a task"] = _ms(lat)

    lat = []
    for _ in range(5):
        t = time.perf_counter()
        err = ex.submit_task(hang, timeout=0.2).exception()
        assert isinstance(err, TaskFailed) and err.reason == "timeout"
        ex.submit(noop).result()
        lat.append(time.perf_counter() - t - 0.2)
    rows["timeout kill + replacement serves a task (minus the 0.2 s timeout)"] = _ms(lat)
    ex.shutdown()

    width = max(len(k) for k in rows)
    print(f"{'measurement':<{width}}  {'median ms':>10}  {'p90 ms':>8}")
    for k, v in rows.items():
        p90 = f"{v['p90_ms']:8.2f}" if "p90_ms" in v else f"{'':8}"
        print(f"{k:<{width}}  {v['median_ms']:10.3f}  {p90}")
    result = {"executor": "LocalExecutor (spawn)", "workers": args.workers, "tasks": args.tasks,
              "cpu_count": cpu_count(), "rows": rows}
    print(f"wrote {run.write(result, args.out)}")


if __name__ == "__main__":
    main()
