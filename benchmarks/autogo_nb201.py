"""AutoGO search on NAS-Bench-201 (CIFAR-10): best true test accuracy found after 20 / 50 / 100 queries.

Protocol (seeded, documented):

* **start**: the median NB201 architecture (the cell at the median of the 15,625 CIFAR-10 test accuracies,
  200-epoch schedule, seed mean, ``/work/shared/data/nas/nb201_test_acc_3datasets_vtao.csv``); it is the first
  query (its accuracy is needed on the Pareto front).
* **candidates**: AutoGO segment mutation restricted to the NB201 space
  (:mod:`graphopt.passes.autogo.nb201_space`): the cell's six edges are the segments, a run of 1-3 consecutive
  edges (half from the cheapest runs, half random) is replaced by NB201 op segments of the shipped segment
  database, the same way in all 15 cells, and the mutated IR graph is verified and mapped back to its arch
  string. *Necessary deviation from AutoGO*: free mutation (any database segment, one place in the graph)
  leaves the NB201 space, and then no true accuracy can be looked up; restricting replacements to NB201 ops
  applied to every cell keeps every candidate in the table. Each distinct arch is built by a real mutation
  once; its PSC features are memoized by arch string (tests check that a mutated graph is structure-hash- and
  feature-identical to the NB201 builder's graph of the arch it maps to, so the memo cannot change a score).
  Parent graphs are rebuilt from their arch string with the builder for the same reason.
* **loop** (per iteration): parents = ``select_parents`` of :mod:`graphopt.search.evolution` (grid sampling
  over the Pareto front of (true accuracy, FLOPs) of the queried archs, rank-sum gap filling); each parent
  gets ``--proposals`` mutation proposals; the unqueried distinct archs form the pool; the **ranker** picks the
  ``--batch`` best of the pool; each pick is one **query** (true accuracy looked up in the table, counted
  against the budget; an arch is never queried twice). ``ParetoEvolution.run`` itself is not used: it scores
  every accepted mutant with one function, whereas here a cheap ranker screens many mutants and only the top
  ones are queried. Objective accuracy, cost FLOPs; no FLOPs window (the target is accuracy).
* **rankers** (the PSC score of a graph = mean PSC over its deterministic prefix/segment/context splits,
  :meth:`PSCPredictor.score_graph`, batched):

  - ``psc_online`` — **the honest figure**: PSC fine-tuned only on the archs queried so far (retrained from
    scratch every ``--retrain-every`` queries, ``--train-steps`` Adam steps, 8 random splits per graph) from an
    encoder pretrained *self-supervised* on the label-free structure of all 15,625 NB201 graphs
    (:func:`pretrain_state`; no accuracy is read). Before the first ``--retrain-every`` queries it has no labels
    and the first batch is random;
  - ``psc_held128`` — PSC trained once on 128 random archs (same pretrained encoder) that the search is then
    forbidden to query; those 128 labels are read *in addition* to the query budget;
  - ``psc_shipped`` — the shipped weights ``models/weights/psc_nb201.pt``, trained on **all 15,625 archs**, so
    on the answers: an upper bound of what a perfect-ish ranker gives, not a fair search result;
  - ``random`` — no predictor: the batch is drawn at random from the pool (what the PSC ranking adds).

References (README of the shared NB201 data): REA 93.92 (query budget not stated there), random search 93.70;
AutoGO paper on NB-201: 93.50 → 93.84. NB201 optimum 94.37.

Measured (10 seeds, 19.5 min on the shared 2-core machine; @20 / @50 / @100 queries, mean): psc_online 93.80 /
94.33 / 94.34, psc_held128 94.23 / 94.34 / 94.35, psc_shipped 94.32 / 94.37 / 94.37, random 93.32 / 93.74 /
94.15. The restricted mutation local search is itself strong from the median arch; PSC mainly makes it
faster (fewer queries to the top).

Runs single-threaded (``torch.set_num_threads(1)``; run it under ``nice`` on a shared machine).
``--quick``: 2 seeds, 30 queries, 2 variants (a smoke run; figures not comparable).
Writes ``benchmarks/results/autogo_nb201.json``.

    nice .venv/bin/python benchmarks/autogo_nb201.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from graphopt.passes.autogo.nb201_space import NB201Space, parse_nb201
from graphopt.predictors.gnn_features import PackedGraphs, RawFeatures, raw_features
from graphopt.predictors.nb201_dataset import build_nb201_ir, load_nb201_labels, nb201_packed
from graphopt.predictors.psc import (
    PSCConfig,
    PSCPredictor,
    default_weights_path,
    predict_packed,
    pretrain_state,
    train_predictor,
)

from graphopt.ir.cost import graph_cost
from graphopt.search.evolution import Candidate, select_parents

REFERENCES = {"REA": 93.92, "random search": 93.70, "AutoGO paper start": 93.50, "AutoGO paper best": 93.84,
              "NB201 optimum": 94.37}
CHECKPOINTS = (20, 50, 100)
VARIANTS = ("psc_online", "psc_held128", "psc_shipped", "random")


# ---------------------------------------------------------------------------------------------------- table
class NB201Table:
    """True CIFAR-10 test accuracy by arch string; every lookup through :meth:`query` is one counted query."""

    def __init__(self, archs: list[str], acc: np.ndarray) -> None:
        self.archs = archs
        self.acc = {a: float(v) for a, v in zip(archs, acc, strict=True)}

    def lookup(self, arch: str) -> float:
        if arch not in self.acc:
            raise KeyError(f"{arch!r} is not an NB201 arch string of the ground-truth table")
        return self.acc[arch]

    def median_arch(self) -> str:
        order = sorted(self.archs, key=lambda a: (self.acc[a], a))
        return order[len(order) // 2]


# ---------------------------------------------------------------------------------------------- mutation glue
class Mutator:
    """NB201-restricted AutoGO mutation with per-arch memos of features and FLOPs (module doc)."""

    def __init__(self, space: NB201Space, vocab: list[str], parents_cached: int = 64, effective: bool = False
                 ) -> None:
        self.space = space
        self.vocab = vocab
        self.effective = effective  # features of the data-dependent graph (as the predictors were trained)
        self.feats: dict[str, RawFeatures] = {}
        self.flops: dict[str, float] = {}
        self.lineage: dict[str, dict[str, Any]] = {}
        self._parents: OrderedDict[str, tuple] = OrderedDict()
        self._cap = parents_cached
        self.built = 0
        self.build_s = 0.0

    def parent(self, arch: str) -> tuple:
        if arch not in self._parents:
            g = build_nb201_ir(arch)
            self._parents[arch] = (g, parse_nb201(g))
            self.flops.setdefault(arch, float(graph_cost(g).flops or 0))
            if arch not in self.feats:  # the start arch (the builder's graph: identical features, tested)
                self.feats[arch] = raw_features(g, self.vocab, effective=self.effective)
            if len(self._parents) > self._cap:
                self._parents.popitem(last=False)
        self._parents.move_to_end(arch)
        return self._parents[arch]

    def propose(self, arch: str, rng: np.random.Generator) -> str:
        """One mutation of ``arch``; builds (and memoizes) the mutant the first time its arch appears."""
        g, cells = self.parent(arch)
        prop = self.space.propose(cells, rng)
        child = prop.arch
        if child not in self.feats:
            t = time.perf_counter()
            m = self.space.apply(g, cells, prop, rng)
            self.feats[child] = raw_features(m.graph, self.vocab, effective=self.effective)
            self.flops[child] = float(graph_cost(m.graph).flops or 0)
            self.lineage[child] = m.lineage
            self.built += 1
            self.build_s += time.perf_counter() - t
        return child

    def packed(self, archs: list[str]) -> PackedGraphs:
        return PackedGraphs.from_features([self.feats[a] for a in archs], np.zeros(len(archs)), self.vocab, archs)


# ------------------------------------------------------------------------------------------------- rankers
@dataclass
class Ranker:
    """Scores a pool of archs; ``update`` sees the queried (arch, accuracy) pairs after each batch."""

    name: str
    score: Callable[[list[str]], np.ndarray]
    update: Callable[[dict[str, float]], None] = lambda q: None
    info: dict[str, Any] = field(default_factory=dict)


def fixed_ranker(name: str, pred: PSCPredictor, mut: Mutator, memo: dict[str, float], info: dict) -> Ranker:
    def score(archs: list[str]) -> np.ndarray:
        todo = [a for a in archs if a not in memo]
        if todo:
            for a, s in zip(todo, predict_packed(pred, mut.packed(todo), latent=True), strict=True):
                memo[a] = float(s)
        return np.array([memo[a] for a in archs])

    return Ranker(name, score, info=info)


def online_ranker(mut: Mutator, state: dict, every: int, steps: int, seed: int, timing: dict) -> Ranker:
    box: dict[str, Any] = {"pred": None, "n": 0}

    def update(queried: dict[str, float]) -> None:
        n = len(queried)
        if n < every or n - box["n"] < every:
            return
        archs = list(queried)
        data = mut.packed(archs)
        data.y = np.array([queried[a] for a in archs], dtype=np.float32)
        spg = 8
        epochs = max(1, round(steps * 32 / (n * spg)))
        t = time.perf_counter()
        box["pred"] = train_predictor(data, PSCConfig(epochs=epochs, splits_per_graph=spg, seed=seed,
                                                                effective=mut.effective),
                                      init_state=state)
        timing["train_s"] = timing.get("train_s", 0.0) + time.perf_counter() - t
        timing["retrains"] = timing.get("retrains", 0) + 1
        box["n"] = n

    def score(archs: list[str]) -> np.ndarray:
        if box["pred"] is None:  # no labels yet: random order
            return np.random.default_rng(seed + len(archs)).random(len(archs))
        return predict_packed(box["pred"], mut.packed(archs), latent=True)

    return Ranker("psc_online", score, update)


def random_ranker(seed: int) -> Ranker:
    rng = np.random.default_rng(seed + 77)
    return Ranker("random", lambda archs: rng.random(len(archs)))


# -------------------------------------------------------------------------------------------------- search
def search(start: str, table: NB201Table, mut: Mutator, ranker: Ranker, *, seed: int, budget: int,
           parents: int, proposals: int, batch: int, forbidden: set[str] | None = None) -> dict[str, Any]:
    """One AutoGO search (module doc); returns the query trajectory and statistics."""
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    forbidden = forbidden or set()
    queried: dict[str, float] = {}
    order: list[str] = []
    pool_sizes: list[int] = []

    def query(arch: str) -> None:
        assert arch not in queried and arch not in forbidden
        queried[arch] = table.lookup(arch)
        order.append(arch)

    query(start)
    mut.parent(start)
    it = 0
    while len(queried) < budget:
        cands = [Candidate(a, None, queried[a], mut.flops[a]) for a in order]  # type: ignore[arg-type]
        chosen = select_parents(cands, parents, prng)
        pool: dict[str, None] = {}
        for p in chosen:
            for _ in range(proposals):
                c = mut.propose(p.hash, rng)
                if c not in queried and c not in forbidden:
                    pool[c] = None
        archs = list(pool)
        pool_sizes.append(len(archs))
        if not archs:
            it += 1
            if it > 1000:
                raise RuntimeError("no new candidates for 1000 iterations")
            continue
        s = ranker.score(archs)
        for k in np.argsort(-s, kind="stable")[: min(batch, budget - len(queried))]:
            query(archs[int(k)])
        ranker.update(queried)
        it += 1
    best = np.maximum.accumulate([queried[a] for a in order])
    return {"seed": seed, "trajectory": [float(v) for v in best], "queried": order,
            "best_arch": max(order, key=lambda a: queried[a]), "iterations": it,
            "mean_pool": float(np.mean(pool_sizes)) if pool_sizes else 0.0}


# ---------------------------------------------------------------------------------------------------- main
def dump_json(out: dict[str, Any], index: dict[str, int]) -> str:
    """The result JSON, kept small: queried archs as NB201 indices (row of the ground-truth CSV), number lists
    on one line."""
    for r in out["results"].values():
        for run in r["runs"]:
            if "queried" in run:
                run["queried_index"] = [index[x] for x in run.pop("queried")]
    text = json.dumps(out, indent=1)
    return re.sub(r"\[\s*([-0-9.e, \n]+?)\s*\]", lambda m: "[" + ",".join(
        x.strip() for x in m.group(1).split(",")) + "]", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--parents", type=int, default=4, help="parents per iteration (grid over the Pareto front)")
    ap.add_argument("--proposals", type=int, default=20, help="mutation proposals per parent")
    ap.add_argument("--batch", type=int, default=5, help="queries per iteration (top of the ranked pool)")
    ap.add_argument("--retrain-every", type=int, default=10, help="psc_online: queries between retrains")
    ap.add_argument("--train-steps", type=int, default=150, help="psc_online: Adam steps per retrain")
    ap.add_argument("--held-steps", type=int, default=1000, help="psc_held128: Adam steps")
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "autogo_nb201.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.quick:
        a.seeds, a.budget, a.variants = 2, 30, "psc_online,random"
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--variants: unknown {bad}; choose from {VARIANTS}")
    t_all = time.time()

    archs, acc = load_nb201_labels()
    table = NB201Table(archs, acc)
    start = table.median_arch()
    space = NB201Space()
    shipped = PSCPredictor.load(default_weights_path())
    # every variant reads the features the shipped weights were trained on (effective view or every node)
    mut = Mutator(space, list(shipped.cfg.vocab), effective=shipped.cfg.effective)
    # label-free structure for pretraining; the 128 training archs of psc_held128
    packed = nb201_packed(effective=mut.effective)
    print(f"start (median of {len(archs)}): {start}  acc {table.lookup(start):.2f}")
    timing: dict[str, Any] = {}
    info: dict[str, Any] = {}

    state = None
    if any(v in ("psc_online", "psc_held128") for v in variants):
        t = time.time()
        cfg = PSCConfig(pretrain_epochs=a.pretrain_epochs, seed=0, effective=mut.effective)
        state = pretrain_state(packed, cfg)  # graph statistics only: packed.y is never read
        timing["pretrain_s"] = round(time.time() - t, 1)
        print(f"self-supervised pretraining on {len(packed)} label-free graphs: {timing['pretrain_s']} s", flush=True)

    held_pred, held_set = None, set()
    if "psc_held128" in variants:
        rng = np.random.default_rng(12345)
        idx = rng.permutation(len(packed))
        idx = [i for i in idx if packed.keys[i] != start][:128]
        held_set = {packed.keys[i] for i in idx}
        sub = packed.subset(idx)
        t = time.time()
        held_pred = train_predictor(sub, PSCConfig(epochs=max(1, round(a.held_steps * 32 / (128 * 8))),
                                                   splits_per_graph=8, seed=0, effective=mut.effective),
                                   init_state=state)
        timing["held128_train_s"] = round(time.time() - t, 1)
        info["held128_best_label"] = float(max(sub.y))
        print(f"psc_held128 trained on 128 archs (best label {max(sub.y):.2f}): {timing['held128_train_s']} s",
              flush=True)

    results: dict[str, Any] = {}
    memo_shipped: dict[str, float] = {}
    memo_held: dict[str, float] = {}
    for v in variants:
        t_v = time.time()
        runs = []
        vt: dict[str, Any] = {}
        for seed in range(a.seeds):
            if v == "psc_online":
                r = online_ranker(mut, state, a.retrain_every, a.train_steps, seed, vt)  # type: ignore[arg-type]
            elif v == "psc_held128":
                r = fixed_ranker(v, held_pred, mut, memo_held, {})  # type: ignore[arg-type]
            elif v == "psc_shipped":
                r = fixed_ranker(v, shipped, mut, memo_shipped, {})
            else:
                r = random_ranker(seed)
            res = search(start, table, mut, r, seed=seed, budget=a.budget, parents=a.parents,
                         proposals=a.proposals, batch=a.batch, forbidden=held_set if v == "psc_held128" else None)
            assert len(set(res["queried"])) == len(res["queried"]) == a.budget
            runs.append(res)
            cp = {q: res["trajectory"][q - 1] for q in CHECKPOINTS if q <= a.budget}
            print(f"  {v:<12} seed {seed}: " + "  ".join(f"@{q} {x:.2f}" for q, x in cp.items())
                  + f"  ({time.time() - t_v:.0f} s)", flush=True)
        traj = np.array([r["trajectory"] for r in runs])
        summ = {str(q): {"mean": float(traj[:, q - 1].mean()), "std": float(traj[:, q - 1].std())}
                for q in CHECKPOINTS if q <= a.budget}
        vt["seconds"] = round(time.time() - t_v, 1)
        results[v] = {"summary": summ, "runs": runs, "timing": vt,
                      "found_optimum": int(sum(r["trajectory"][-1] >= REFERENCES["NB201 optimum"] - 1e-6
                                               for r in runs))}

    trained_on = {
        "psc_online": "only the archs queried so far in that run (<= budget labels), from an encoder pretrained "
                      "self-supervised on the label-free structure of all 15,625 NB201 graphs",
        "psc_held128": "128 random NB201 archs (labels read in addition to the budget; the search may not "
                       "query them), same pretrained encoder",
        "psc_shipped": f"all {shipped.cfg.train_info.get('graphs')} NB201 archs, CIFAR-10 test accuracy "
                       f"({shipped.cfg.train_info.get('epochs_run')} epochs) — includes the answers: upper bound",
        "random": "no predictor",
    }
    timing["total_s"] = round(time.time() - t_all, 1)
    timing["mutants_built"] = mut.built
    timing["mutation_s_per_built_mutant"] = round(mut.build_s / max(mut.built, 1), 4)
    out = {"start_arch": start, "start_acc": table.lookup(start), "references": REFERENCES,
           "trained_on": {v: trained_on[v] for v in variants}, "results": results, "info": info, "timing": timing,
           "config": {k: (str(x) if isinstance(x, Path) else x) for k, x in vars(a).items()},
           "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}}

    print()
    print(f"AutoGO on NB201 CIFAR-10, start = median arch ({table.lookup(start):.2f}), {a.seeds} seeds, "
          f"best true test accuracy found (mean ± std)")
    head = "".join(f"{'@' + str(q) + ' queries':>18}" for q in CHECKPOINTS if q <= a.budget)
    print(f"{'ranker':<14}{head}   predictor trained on")
    for v in variants:
        s = results[v]["summary"]
        cells = "".join(f"{s[str(q)]['mean']:>11.2f} ± {s[str(q)]['std']:.2f}" for q in CHECKPOINTS if q <= a.budget)
        print(f"{v:<14}{cells}   {trained_on[v]}")
    print("references: REA 93.92 (NB201 paper; README states no query budget), random search 93.70, "
          "AutoGO paper NB-201 93.50 → 93.84, optimum 94.37")
    if "psc_online" in variants and a.budget >= 100:
        m = results["psc_online"]["summary"]["100"]["mean"]
        print(f"honest figure (psc_online @100): {m:.2f} — {'beats' if m > 93.92 else 'does not beat'} REA 93.92")
    print(f"mutants built {mut.built} ({timing['mutation_s_per_built_mutant'] * 1000:.0f} ms each); "
          f"total {timing['total_s']:.0f} s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(dump_json(out, {a_: i for i, a_ in enumerate(archs)}) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
