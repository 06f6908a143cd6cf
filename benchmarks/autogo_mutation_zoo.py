"""AutoGO mutation on every zoo model with the shipped segment database: how often a mutation succeeds.

For each model of ``graphopt.models`` (lowered by the torch frontend with a dynamic batch, as
``graphopt optimize`` needs), ``--calls`` calls of :func:`graphopt.passes.autogo.mutate` (one generator seeded
with ``--seed``) against the shipped database. Every returned mutant is verified and run once, and its output
shape is compared with the parent's; a mutant that does not run counts as failed. Reported per model:
- successes, split into exact and resolution-propagated fits;
- how many of those replaced a run on ``(N, L, C)`` token tensors;
- mutations per second;
- the most common reason a call found nothing.

Why: the paper's AutoGO mutates CNNs only. Token models (ViT, BERT, Mamba2) are where graphopt goes beyond it,
and the success rate shows how much of such a graph the search can actually change.

    python benchmarks/autogo_mutation_zoo.py [--calls 20] [--seed 0] [--models vit_tiny,bert_tiny]

Writes ``benchmarks/results/autogo_mutation_zoo.json``.

Measured 2026-12-06 (20 calls, seed 0), before and after token-sequence propagation. "Before" is the same
script with ``passes/autogo/{mutate,resolution}.py`` and ``models/data/segments.db`` of commit af629d7.
Successes out of 20:

| model | before | after |
|---|---|---|
| vit_tiny | 1 | 10 (all 10 propagated on tokens) |
| convnext_tiny_cifar | 7 | 14 |
| bert_tiny | 15 | 19 (7 propagated) |
| mamba2_tiny | 10 | 15 |

The CNNs (resnet20/56/18, mobilenetv2, efficientnet_b0, hrnet_lite) give 20/20 and the same fits in both.
The remaining failures are source runs that no database segment fits: attention internals, patch
embedding, NHWC permutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from graphopt.passes.autogo import load_default_db, mutate

from graphopt import models
from graphopt.backends.torch import to_torch
from graphopt.frontends.torch import from_torch
from graphopt.ir import verify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402


def _first(y):
    return y[0] if isinstance(y, tuple | list) else y


def run_model(name: str, db, vocab, calls: int, seed: int) -> dict:
    net = models.get(name, seed=0).eval()
    xs = models.example_inputs(name, batch=2)
    parent = from_torch(net, xs, dynamic_batch=True)
    with torch.no_grad():
        ref_shape = tuple(_first(net(*xs)).shape)
    try:  # which tensors of this parent are tokens (only exists with token propagation)
        from graphopt.passes.autogo.resolution import nlc_values

        tokens = nlc_values(parent)
    except ImportError:
        tokens = set()
    by_name = {o.name: o for n in parent.nodes for o in n.outputs}
    rng = np.random.default_rng(seed)
    fits, why = Counter(), Counter()
    ok = token_runs = 0
    t0 = time.perf_counter()
    for _ in range(calls):
        reasons: list[str] = []
        m = mutate(parent, db, vocab, rng, reasons=reasons)
        if m is None:
            why.update(r.split(" fitting ")[0].split(":")[0][:70] for r in reasons)
            continue
        try:
            verify(m.graph)
            with torch.no_grad():
                y = _first(to_torch(m.graph).eval()(*xs))
        except Exception as e:  # noqa: BLE001 - a broken mutant is a failed call, with its reason
            why[f"mutant does not run: {type(e).__name__}"] += 1
            continue
        if tuple(y.shape) != ref_shape:
            why["mutant changed the output shape"] += 1
            continue
        ok += 1
        fits[m.mutation.fit] += 1
        src = [by_name[o.name] for n in parent.nodes if n.name in set(m.mutation.source_nodes) for o in n.outputs]
        token_runs += any(id(v) in tokens for v in src)
    dt = time.perf_counter() - t0
    return {"model": name, "nodes": len(parent), "calls": calls, "succeeded": ok, "fits": dict(fits),
            "token_runs": token_runs, "seconds": dt, "mutations_per_s": ok / dt if dt else 0.0,
            "top_failure": why.most_common(1)[0] if why else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(m for m in models.names() if m != "nb201"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 calls on resnet20 and vit_tiny")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    run = Run.start("autogo_mutation_zoo.json", quick=args.quick)
    if args.quick:
        args.calls, args.models = 3, "resnet20,vit_tiny"
    torch.set_num_threads(1)
    db, vocab = load_default_db()
    rows = []
    print(f"{'model':<20} {'nodes':>5} {'ok':>6} {'exact':>5} {'prop.':>5} {'tokens':>6} {'mut/s':>6}  top failure")
    for name in args.models.split(","):
        r = run_model(name, db, vocab, args.calls, args.seed)
        rows.append(r)
        f = r["fits"]
        top = f"{r['top_failure'][0]} ({r['top_failure'][1]})" if r["top_failure"] else "-"
        print(f"{name:<20} {r['nodes']:>5} {r['succeeded']:>3}/{r['calls']:<2} {f.get('exact', 0):>5} "
              f"{f.get('propagated', 0):>5} {r['token_runs']:>6} {r['mutations_per_s']:>6.1f}  {top}", flush=True)
    print(f"wrote {run.write({'calls': args.calls, 'seed': args.seed, 'rows': rows}, args.out)}")


if __name__ == "__main__":
    main()
