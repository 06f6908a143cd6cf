"""PO-NAS on AutoGO mutants of one network: does it pick the mutants worth training? (issues 5 and 6)

``graphopt optimize --ranker ponas`` trains only the mutants PO-NAS's screen prefers. This benchmark measures
that choice retrospectively, on candidates whose training score is already known: every candidate of the
cached ``benchmarks/autogo_cifar10.py`` ResNet-20 searches that share one scoring recipe (seed weights + replaced
segments, 40-step fine-tune on 10k CIFAR-10 images, validation accuracy; the default window run and the
``--cost-window 0,1.0`` run, so one graph has one score in both). Each candidate gets the paper's six metrics as
the search held it (one CIFAR-10 minibatch of 64, seed 0; cached in ``benchmarks/.cache/ponas_mutants``).

Two protocols, repeated over seeds (seed = PO-NAS initialisation and the arrival order), both with the screen's
CPU-sized surrogate budget (:data:`~graphopt.predictors.ponas.screen.SCREEN_FIT`: 300 steps, 1 restart; the
paper's 1,000 × 6 takes 30-60 s per refit here):

1. **Pool search** (the paper's loop, :meth:`PONASRanker.search`, ``--seeds``): budget ``--budget`` queries of the known
   score; reported: the best score found and its rank in the pool, beside random search (same budget, mean over
   the seeds), each single metric's and the mean normalised metric's greedy top-``budget``; and Spearman ρ of
   the final combined score over the whole pool beside each single metric's.
2. **Screen** (as in ``optimize``, ``--screen-seeds``): candidates arrive in a random order in groups of
   ``--oversample``; the screen (:class:`PONASScreen`, refitted on every value it was told) picks one per
   group, which is then "trained" (its known score observed). Reported: the mean pool percentile of the
   picks, beside a random pick (50 on average), the group's best (the ceiling) and each single metric's
   pick.

    .venv/bin/python benchmarks/ponas_mutants.py [--seeds 10] [--screen-seeds 5] [--budget 20] [--oversample 3]

Prints a table and writes ``benchmarks/results/ponas_mutants.json``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / ".cache" / "autogo_cifar10"
DEFAULT_RUNS = ["resnet20-b900-i20-n10000-seed-s40", "resnet20-b900-i20-n10000-seed-s40-w0_1"]
CACHE = ROOT / "benchmarks" / ".cache" / "ponas_mutants"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402


def load_candidates(runs: list[str]) -> tuple[list[str], dict, np.ndarray]:
    """Hashes, graphs and search scores of every finished candidate of ``runs`` (one score per hash)."""
    from graphopt.ir.serialize import load as load_graph

    scores: dict[str, float] = {}
    graphs: dict = {}
    for r in runs:
        run = RUNS / r / "run"
        if not (run / "runs.sqlite").exists():
            raise SystemExit(f"{run}/runs.sqlite not found: run benchmarks/autogo_cifar10.py first (see its docstring)")
        with sqlite3.connect(run / "runs.sqlite") as c:
            for h, m in c.execute("SELECT hash, metrics FROM candidates WHERE status='done'"):
                s = float(json.loads(m)["score"])
                if h in scores and abs(scores[h] - s) > 1e-9:
                    raise SystemExit(f"candidate {h} has two scores ({scores[h]}, {s}): the runs' recipes differ")
                scores[h] = s
                graphs[h] = load_graph(run / "graphs" / f"{h}.json")
    hashes = sorted(scores)
    return hashes, graphs, np.array([scores[h] for h in hashes])


def metrics_of(hashes: list[str], graphs: dict, names: list[str]) -> np.ndarray:
    """The six PO-NAS metrics per candidate, computed once and cached by hash."""
    from graphopt.predictors.proxies.passes import proxy_batch, score_graph

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "metrics.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    batch = None
    t0, n_new = time.monotonic(), 0
    for h in hashes:
        if h not in cached:
            batch = batch or proxy_batch(graphs[h], "cifar10", 64, 0)
            res = score_graph(graphs[h], names, batch, seed=0)
            cached[h] = [res[n].score if np.isfinite(res[n].score) else None for n in names]
            n_new += 1
            if n_new % 20 == 0:
                path.write_text(json.dumps(cached))
                print(f"  metrics: {n_new} computed ({time.monotonic() - t0:.0f} s)", flush=True)
    path.write_text(json.dumps(cached))
    return np.array([[np.nan if v is None else v for v in cached[h]] for h in hashes], dtype=np.float64)


def percentile(scores: np.ndarray) -> np.ndarray:
    """Pool percentile (0 = worst, 100 = best; ties share their average rank)."""
    return 100.0 * (stats.rankdata(scores) - 1) / (len(scores) - 1)


def pool_search(pool, scores: np.ndarray, names: list[str], budget: int, seeds: int) -> dict:
    from graphopt.predictors.ponas import PONASConfig, PONASRanker
    from graphopt.predictors.ponas.screen import SCREEN_FIT

    pct = percentile(scores)
    found, rhos = [], []
    for s in range(seeds):
        t0 = time.monotonic()
        ranker = PONASRanker(PONASConfig(**SCREEN_FIT), seed=s)
        res = ranker.search(pool, lambda i: float(scores[i]), budget=budget, n_init=3, final_k=3)
        found.append(float(pct[res.best_index]))
        rhos.append(float(stats.spearmanr(ranker.score(pool), scores).statistic))
        print(f"  pool search seed {s}: best found at percentile {found[-1]:.0f}, combined rho {rhos[-1]:+.3f} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
    rng = np.random.default_rng(0)
    rand = [float(pct[rng.choice(len(scores), budget, replace=False)].max()) for _ in range(1000)]
    greedy = {}
    for m, name in enumerate(names):
        col = np.nan_to_num(pool.normalized[:, m], nan=-1.0)
        greedy[name] = float(pct[np.argsort(-col, kind="stable")[:budget]].max())
    greedy["mean_metric"] = float(pct[np.argsort(-pool.normalized.mean(1), kind="stable")[:budget]].max())
    single = {n: float(stats.spearmanr(np.nan_to_num(pool.normalized[:, m], nan=-1.0), scores).statistic)
              for m, n in enumerate(names)}
    return {"budget": budget, "ponas_best_percentile": found, "ponas_mean": float(np.mean(found)),
            "random_mean": float(np.mean(rand)), "greedy_best_percentile": greedy,
            "combined_rho": rhos, "combined_rho_mean": float(np.mean(rhos)), "single_metric_rho": single}


def screen_protocol(hashes, graphs, raw, scores, names, oversample: int, seeds: int) -> dict:
    from graphopt.predictors.ponas import PONASScreen, ir_graph

    pct = percentile(scores)
    index = {h: i for i, h in enumerate(hashes)}
    picks, fits = [], []
    ceiling, single_pick = [], {n: [] for n in names}
    norm_all = np.nan_to_num(raw, nan=-np.inf)
    for s in range(seeds):
        screen = PONASScreen(lambda h: raw[index[h]], names, oversample=oversample, seed=s, key_fn=lambda h: h,
                             graph_fn=lambda h: ir_graph(graphs[h]))
        order = np.random.default_rng(s).permutation(len(hashes))
        got = []
        for k in range(0, len(order) - oversample + 1, oversample):
            group = [hashes[i] for i in order[k:k + oversample]]
            pick = group[screen.rank(group)[0]]
            screen.observe(pick, float(scores[index[pick]]))
            gi = [index[h] for h in group]
            got.append(pct[index[pick]])
            ceiling.append(pct[gi].max())
            for m, n in enumerate(names):  # higher raw metric = better (the paper's sign)
                single_pick[n].append(pct[gi[int(np.argmax(norm_all[gi, m]))]])
        picks.append(float(np.mean(got)))
        fits.append(screen.stats.fits)
        print(f"  screen seed {s}: mean pick percentile {picks[-1]:.1f} ({screen.stats.fits} refits, "
              f"{screen.stats.fit_seconds:.0f} s)", flush=True)
    return {"oversample": oversample, "ponas_pick_percentile": picks, "ponas_mean": float(np.mean(picks)),
            "random_pick": 50.0, "group_best": float(np.mean(ceiling)),
            "single_metric_pick": {n: float(np.mean(v)) for n, v in single_pick.items()}, "fits": fits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=",".join(DEFAULT_RUNS), help="cached autogo_cifar10 runs (comma list)")
    ap.add_argument("--seeds", type=int, default=10, help="pool-search repetitions")
    ap.add_argument("--screen-seeds", type=int, default=5, help="screen-protocol repetitions")
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--oversample", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    run = Run.start("ponas_mutants.json")
    torch.set_num_threads(args.threads)
    from graphopt.predictors.ponas import PONAS_METRICS, ArchPool, ir_graph

    names = list(PONAS_METRICS)
    t0 = time.monotonic()
    hashes, graphs, scores = load_candidates(args.runs.split(","))
    print(f"{len(hashes)} candidates, search score {scores.min():.4f} .. {scores.max():.4f}")
    raw = metrics_of(hashes, graphs, names)
    pool = ArchPool([ir_graph(graphs[h]) for h in hashes], raw, names, keys=hashes)
    ps = pool_search(pool, scores, names, args.budget, args.seeds)
    sc = screen_protocol(hashes, graphs, raw, scores, names, args.oversample, args.screen_seeds)
    print(f"\npool search, budget {args.budget} of {len(hashes)} (best found, pool percentile; {args.seeds} seeds)")
    per_seed = ", ".join(f"{v:.0f}" for v in ps["ponas_best_percentile"])
    print(f"  PO-NAS            {ps['ponas_mean']:6.1f}   (per seed {per_seed})")
    print(f"  random            {ps['random_mean']:6.1f}")
    for n, v in ps["greedy_best_percentile"].items():
        print(f"  greedy {n:11s}{v:6.1f}")
    print("\nSpearman rho with the search score over the pool")
    print(f"  PO-NAS combined   {ps['combined_rho_mean']:+.3f}   (after {args.budget} queries, mean of seeds)")
    for n, v in ps["single_metric_rho"].items():
        print(f"  {n:17s} {v:+.3f}")
    print(f"\nscreen: pick 1 of {args.oversample} arriving mutants (mean pool percentile of the picks)")
    per_seed = ", ".join(f"{v:.0f}" for v in sc["ponas_pick_percentile"])
    print(f"  PO-NAS screen     {sc['ponas_mean']:6.1f}   (per seed {per_seed})")
    print(f"  random pick       {sc['random_pick']:6.1f}")
    print(f"  group's best      {sc['group_best']:6.1f}   (ceiling)")
    for n, v in sc["single_metric_pick"].items():
        print(f"  by {n:14s} {v:6.1f}")
    doc = {"runs": args.runs.split(","), "n_candidates": len(hashes), "metrics": names, "seeds": args.seeds,
           "screen_seeds": args.screen_seeds, "pool_search": ps, "screen": sc, "wall_s": time.monotonic() - t0}
    print(f"\nwrote {run.write(doc, args.out)} ({doc['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
