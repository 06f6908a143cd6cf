"""Supernet-search benchmarks (issue 7), CPU-sized. Prints a table, writes benchmarks/results/supernet.json.

Sections (``--only`` picks some; the JSON holds the sections of this invocation only, written whole at the end):

* ``xnas``: XNAS vs first-order DARTS on the NB201 space. Protocol: NB201 supernet with C=8, N=1 (one cell
  per stage), CIFAR-10 from the shared data, ``--n-search`` training images split into two halves (weights /
  architecture), images average-pooled to 16x16 (CPU budget), batch 64, ``--epochs`` search epochs, SGD
  lr 0.025 cosine for weights; XNAS with L = 1.0 and its theoretical eta; DARTS Adam 3e-4 on alpha. Same
  derivation for both (per-edge argmax excluding ``none``). The derived architecture's CIFAR-10 test accuracy
  (200-epoch NB201 schedule) is looked up in ``/work/shared/data/nas/nb201_test_acc_3datasets_vtao.csv``;
  the published DARTS figure on NB201 (54.30) is printed beside. 3 seeds.
* ``s3``: S3 on ViT-tiny-sized elastic supernet (see graphopt/search/s3.py): the space after each evolution
  step and the chosen subnet's accuracy vs a random subnet of equal FLOPs from the initial space.
* ``dps``: DPS vs SPOS on CIFAR-paste segmentation with an HRNet-lite supernet (graphopt/search/dps.py).

Usage: ``python benchmarks/supernet.py [--quick] [--only xnas,s3,dps] [--seeds 0,1,2]``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

NB201_CSV = Path("/work/shared/data/nas/nb201_test_acc_3datasets_vtao.csv")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

DARTS_PUBLISHED = 54.30


def nb201_lookup() -> dict[str, float]:
    with open(NB201_CSV) as f:
        return {r["ArchitectureString"]: float(r["CIFAR10TestAccuracy200Epochs"]) for r in csv.DictReader(f)}


def run_xnas(args) -> dict:
    from graphopt.backends.torch import to_torch
    from graphopt.search.darts import darts_search
    from graphopt.search.xnas import xnas_search

    table = nb201_lookup()
    out: dict = {"protocol": {"C": 8, "N": 1, "n_search": args.n_search, "epochs": args.epochs, "batch": 64,
                              "image": "16x16 (CIFAR-10 avg-pooled 2x)", "seeds": args.seeds,
                              "xnas_L": 1.0, "derivation": "argmax excl. none"},
                 "runs": []}
    for method, fn in (("xnas", xnas_search), ("darts", darts_search)):
        for seed in args.seeds:
            r = fn(C=8, N=1, epochs=args.epochs, n_search=args.n_search, batch=64, seed=seed, downsample=2)
            m = to_torch(r.graph).eval()  # the derived path, emitted through the IR, must run
            with torch.no_grad():
                m(torch.randn(2, 3, 16, 16))
            acc = table[r.arch]
            row = {"method": method, "seed": seed, "arch": r.arch, "nb201_test_acc": acc,
                   "supernet_acc": r.supernet_acc, "seconds": round(r.seconds, 1)}
            if method == "xnas":
                row["active_per_edge"] = [len(a) for a in r.extra["active"]]
            out["runs"].append(row)
            print(f"  {method:5s} seed {seed}: {acc:6.2f}  {r.arch}  ({r.seconds:.0f}s)", flush=True)
    for method in ("xnas", "darts"):
        accs = [x["nb201_test_acc"] for x in out["runs"] if x["method"] == method]
        out[method] = {"mean": statistics.mean(accs), "std": statistics.pstdev(accs), "accs": accs}
    out["darts_published"] = DARTS_PUBLISHED
    return out


def print_xnas(res: dict) -> None:
    print("\nXNAS vs first-order DARTS on NB201 (CIFAR-10 test acc. of derived arch, 200-epoch NB201 lookup)")
    print(f"{'method':24s} {'mean':>7s} {'std':>6s}  per seed")
    for m in ("xnas", "darts"):
        r = res[m]
        print(f"{m:24s} {r['mean']:7.2f} {r['std']:6.2f}  {', '.join(f'{a:.2f}' for a in r['accs'])}")
    print(f"{'DARTS (published, NB201)':24s} {res['darts_published']:7.2f}")


def run_s3(args) -> dict:
    from graphopt.search.s3 import s3_benchmark

    return s3_benchmark(quick=args.quick, seed=args.seeds[0])


def run_dps(args) -> dict:
    from graphopt.search.dps import dps_benchmark

    return dps_benchmark(quick=args.quick, seeds=args.seeds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller budgets (a few minutes per section)")
    ap.add_argument("--only", default="xnas,s3,dps")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n-search", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    run = Run.start("supernet.json", argv=None if argv is None else [__file__, *argv], quick=args.quick)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.epochs = args.epochs or (4 if args.quick else 10)
    args.n_search = args.n_search or (1000 if args.quick else 2000)
    torch.set_num_threads(1)  # the 2 cores are shared; 1 thread avoids oversubscription
    results: dict = {}
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in sections:
        t0 = time.time()
        print(f"== {s}", flush=True)
        try:
            fn = {"xnas": run_xnas, "s3": run_s3, "dps": run_dps}[s]
        except KeyError:
            print(f"unknown section {s!r}; use xnas, s3, dps", file=sys.stderr)
            return 2
        try:
            res = fn(args)
        except (ImportError, AttributeError) as e:
            print(f"  section {s} not available: {e}")
            continue
        res["seconds"] = round(time.time() - t0, 1)
        res["quick"] = args.quick
        results[s] = res
    if "xnas" in results:
        print_xnas(results["xnas"])
    if "s3" in results and "table" in results["s3"]:
        print("\nS3 (ViT-tiny elastic supernet, CIFAR-10)")
        for line in results["s3"]["table"]:
            print("  " + line)
    if "dps" in results and "table" in results["dps"]:
        print("\nDPS vs SPOS (HRNet-lite supernet, CIFAR-paste segmentation)")
        for line in results["dps"]["table"]:
            print("  " + line)
    print(f"\nwrote {run.write(results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
