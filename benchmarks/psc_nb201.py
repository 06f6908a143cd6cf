"""PSC predictor vs the whole-graph GNN on NAS-Bench-201 (CIFAR-10, 200-epoch test accuracy), on a split where no
held-out architecture has an equivalent in training.

Why a class-disjoint split: many NB201 strings describe the same network. A ``none`` edge contributes zero, an
edge that lies on no input-to-output path computes nothing that reaches the output, and the two intermediate
nodes can be relabelled. Such architectures have identical effective graphs, so a predictor (or a lookup table)
that saw one of them in training has seen the held-out one. A seeded random split (the figures before this
script) put most held-out archs next to such a twin.

Protocol (seeded, documented):

* graphs: all 15,625 NB201 networks (C=16, N=5, lowered to IR by the builder of
  ``graphopt.predictors.nb201_dataset``), features cached in ``~/.cache/graphopt`` (a pure function of the arch
  string and the builder version); feature view per ``--views`` (default the *effective* graph,
  ``gnn_features.effective_view``: ``none`` paths and what only they feed removed);
* **equivalence classes** (:func:`equivalence_classes`): the union of (a) the semantic cell class of
  :func:`cell_class` (``none`` edges and edges on no input-to-output path removed, intermediate nodes relabelled to
  the smaller of the two labelings) and (b) identical effective-graph features (what any predictor reading the
  effective view sees); all members of a class go to one side of every split;
* **split**: classes in a seeded random order; held-out = the first classes until >= ``--test-frac`` of the archs
  (20 %), validation = the next classes until >= ``--val-frac`` of the rest (15 %), training = the remaining
  classes. The leak of the old random split is measured on the same data: how many of its held-out archs have a
  twin in training, and the Spearman ρ of a lookup table (mean training label of the twins) on them;
* **tuning on validation only**: for PSC and for the whole-graph baseline (same encoder, same label transform),
  every combination of epochs (``--psc-epochs`` 3,6 with 2 random splits per graph per epoch; ``--whole-epochs``
  6,12, one pass per graph per epoch: the same number of graph passes), ensemble size (``--members`` 1,2: seeds
  0..m-1, the mean of the members' latent scores) and feature view is trained on the training split and scored by
  Spearman ρ on the validation split; the configuration with the best validation ρ is then scored, once, on the
  held-out split. The held-out split is read for nothing else;
* reported: held-out Spearman ρ and Kendall τ of both models (and ρ over the held-out *classes*: mean
  prediction vs mean label per class, one point per distinct network) beside the AutoGO paper's PSC .983 and whole-graph
  .809 (the paper's own split is not known to be class-disjoint: the comparison is of the gap, not the level).

Recipe otherwise as the shipped weights': lr 5e-3 with cosine decay, batch 32, MSE on Gaussianized ranks, 16
scoring splits per graph (``--max-splits``). ``--threads 1`` by default (small sparse ops oversubscribe badly on a
shared 2-core machine). ``--quick``: 1,500 training graphs, one configuration per model (a smoke run; not written
to the results file).

    nice .venv/bin/python benchmarks/psc_nb201.py [--quick] [--views effective,full]

Writes ``benchmarks/results/psc_nb201.json`` (with provenance, ``benchmarks/_results.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from graphopt.predictors.nb201_dataset import nb201_packed
from graphopt.predictors.psc import PSCConfig, predict_packed, train_predictor
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

PAPER = {"spearman_psc": 0.983, "spearman_whole": 0.809}
PAPER_NOTE = "AutoGO paper, NB-201: PSC predictor vs whole-graph GNN, Spearman rho (its split protocol not stated)"


# ------------------------------------------------------------------------------------------ equivalence
def cell_class(arch: str) -> str:
    """Canonical key of what an NB201 cell computes: ``none`` edges dropped, edges on no path from the input
    (node 0) to the output (node 3) dropped, nodes 1 and 2 relabelled to the smaller of the two labelings.
    A cell with no live edge outputs zero (key ``()``)."""
    from graphopt.models.nb201 import parse_arch

    edges = [(src, dst, op) for dst, src, op in parse_arch(arch) if op != "none"]
    fwd = {0}
    for s, d, _ in sorted(edges, key=lambda e: e[1]):
        if s in fwd:
            fwd.add(d)
    bwd = {3}
    for s, d, _ in sorted(edges, key=lambda e: -e[0]):
        if d in bwd:
            bwd.add(s)
    live = [(s, d, o) for s, d, o in edges if s in fwd and d in bwd]
    keys = [tuple(sorted(({1: a, 2: b}.get(s, s), {1: a, 2: b}.get(d, d), o) for s, d, o in live))
            for a, b in ((1, 2), (2, 1))]
    return repr(min(keys))


def feature_keys(packed) -> list[str]:
    """A hash of each graph's features (op, resolution, kernel, bias, edges): equal keys = the predictor sees
    the same input."""
    out = []
    for i in range(len(packed)):
        a, b, c, d = packed.node_ptr[i], packed.node_ptr[i + 1], packed.edge_ptr[i], packed.edge_ptr[i + 1]
        h = hashlib.sha1()
        for arr in (packed.op[a:b], packed.res[a:b], packed.kernel[a:b], packed.bias[a:b], packed.edges[:, c:d]):
            h.update(np.ascontiguousarray(arr).tobytes())
            h.update(b"|")
        out.append(h.hexdigest())
    return out


def equivalence_classes(archs: list[str], feat_keys: list[str] | None = None) -> np.ndarray:
    """Class id per arch: union of equal :func:`cell_class` and equal ``feat_keys`` (union-find)."""
    parent = list(range(len(archs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in ([cell_class(a) for a in archs], feat_keys):
        if keys is None:
            continue
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            j = first.setdefault(k, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[ri] = rj
    roots = [find(i) for i in range(len(archs))]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots], dtype=np.int64)


def class_split(classes: np.ndarray, fracs: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Index arrays of consecutive parts holding whole classes: part k gets classes (in a seeded random order)
    until it holds >= ``fracs[k]`` of what the earlier parts left; the last part gets the rest."""
    order = np.random.default_rng(seed).permutation(int(classes.max()) + 1)
    members: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(classes):
        members[int(c)].append(i)
    parts: list[list[int]] = [[] for _ in range(len(fracs) + 1)]
    left, k, target = len(classes), 0, fracs[0] * len(classes)
    for c in order:
        while k < len(fracs) and len(parts[k]) >= target:
            left -= len(parts[k])
            k += 1
            target = fracs[k] * left if k < len(fracs) else np.inf
        parts[k] += members[int(c)]
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def twin_leak(feat_keys: list[str], y: np.ndarray, train: np.ndarray, test: np.ndarray,
              classes: np.ndarray) -> dict[str, Any]:
    """How much of ``test`` has an equivalent in ``train``, and what a lookup table scores on it."""
    by_feat: dict[str, list[float]] = defaultdict(list)
    for i in train:
        by_feat[feat_keys[i]].append(float(y[i]))
    train_classes = set(classes[train].tolist())
    hit = [i for i in test if feat_keys[i] in by_feat]
    out: dict[str, Any] = {"test": len(test), "with_class_twin_in_train": int(sum(classes[i] in train_classes
                                                                                 for i in test)),
                           "with_feature_twin_in_train": len(hit)}
    if len(hit) > 2:
        look = np.array([np.mean(by_feat[feat_keys[i]]) for i in hit])
        out["lookup_spearman_on_twins"] = float(spearmanr(look, y[hit])[0])
    return out


# ------------------------------------------------------------------------------------------------ models
def _member(tr, cfg: PSCConfig, log) -> Any:
    return train_predictor(tr, cfg, log=log)


def _score(members: list, data) -> np.ndarray:
    return np.mean([predict_packed(m, data, latent=True) for m in members], axis=0)


def per_class(z: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean prediction and mean label of each class (one point per distinct network)."""
    ids, inv = np.unique(classes, return_inverse=True)
    n = np.bincount(inv)
    return np.bincount(inv, z) / n, np.bincount(inv, y) / n


def tune_and_test(name: str, mode: str, epochs: list[int], members: list[int], views: dict[str, Any],
                  parts: dict[str, np.ndarray], args, log, classes: np.ndarray) -> dict[str, Any]:
    """Train every (view, epochs, seed) on ``train``; pick (view, epochs, members) by validation Spearman ρ;
    score the pick on the held-out split."""
    grid: list[dict[str, Any]] = []
    trained: dict[tuple[str, int], list] = {}
    for view, packed in views.items():
        tr, va = packed.subset(parts["train"]), packed.subset(parts["val"])
        for ep in epochs:
            ms, secs = [], []
            for seed in range(max(members)):
                t = time.time()
                cfg = PSCConfig(mode=mode, epochs=ep, splits_per_graph=2 if mode == "psc" else 1, seed=seed,
                                max_splits=args.max_splits, effective=view == "effective")
                tag = f"  [{name} {view} e{ep} s{seed}] "
                ms.append(_member(tr, cfg, lambda s, tag=tag: log(tag + s)))
                secs.append(round(time.time() - t, 1))
            trained[(view, ep)] = ms
            for m in members:
                z = _score(ms[:m], va)
                grid.append({"view": view, "epochs": ep, "members": m, "val_spearman": float(spearmanr(z, va.y)[0]),
                             "val_kendall": float(kendalltau(z, va.y)[0]), "train_seconds": sum(secs[:m])})
                log(f"{name} {view} epochs {ep} members {m}: validation rho {grid[-1]['val_spearman']:.4f}")
    pick = max(grid, key=lambda g: g["val_spearman"])
    te = views[pick["view"]].subset(parts["test"])
    z = _score(trained[(pick["view"], pick["epochs"])][: pick["members"]], te)
    zc, yc = per_class(z, np.asarray(te.y, dtype=np.float64), classes[parts["test"]])
    return {"grid": grid, "picked": {k: pick[k] for k in ("view", "epochs", "members", "val_spearman")},
            "test_spearman": float(spearmanr(z, te.y)[0]), "test_kendall": float(kendalltau(z, te.y)[0]),
            "test_spearman_per_class": float(spearmanr(zc, yc)[0]), "test_classes": len(zc)}


# -------------------------------------------------------------------------------------------------- main
def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (not comparable figures)")
    ap.add_argument("--psc-epochs", default="3,6")
    ap.add_argument("--whole-epochs", default="6,12")
    ap.add_argument("--members", default="1,2", help="ensemble sizes to choose from")
    ap.add_argument("--views", default="effective", help="feature views to choose from: effective,full")
    ap.add_argument("--max-splits", type=int, default=16, help="scoring splits per graph")
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--val-frac", type=float, default=0.15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    run = Run.start("psc_nb201.json", argv=None if argv is None else [__file__, *argv], quick=a.quick)
    torch.set_num_threads(a.threads)
    t_all = time.time()
    if a.quick:
        a.psc_epochs, a.whole_epochs, a.members = "1", "2", "1"
    log = lambda s: print(s, flush=True)  # noqa: E731

    t0 = time.time()
    view_names = [v.strip() for v in a.views.split(",") if v.strip()]
    if not set(view_names) <= {"effective", "full"}:
        raise SystemExit(f"--views: choose from effective,full, got {view_names}")
    views = {v: nb201_packed(C=16, N=5, effective=v == "effective") for v in view_names}
    eff = views.get("effective") or nb201_packed(C=16, N=5, effective=True)
    t_data = time.time() - t0
    archs, y = list(eff.keys), np.asarray(eff.y, dtype=np.float64)
    fkeys = feature_keys(eff)
    classes = equivalence_classes(archs, fkeys)
    test, val, train = class_split(classes, (a.test_frac, a.val_frac), a.seed)
    if a.quick:
        train = np.random.default_rng(a.seed).choice(train, 1500, replace=False)
    assert not (set(classes[test]) & set(classes[train])) and not (set(classes[val]) & set(classes[train]))
    parts = {"train": train, "val": val, "test": test}
    # the old protocol: a seeded random permutation, the last 3,125 held out
    perm = np.random.default_rng(a.seed).permutation(len(archs))
    leak = {"random_split": twin_leak(fkeys, y, perm[: len(archs) - 3125], perm[len(archs) - 3125:], classes),
            "class_disjoint_split": twin_leak(fkeys, y, train, test, classes)}
    sizes = np.bincount(classes)
    info = {"archs": len(archs), "classes": int(classes.max()) + 1, "largest_classes": sorted(sizes.tolist())[-5:],
            "cell_classes": len({cell_class(x) for x in archs}), "feature_classes": len(set(fkeys)),
            "sizes": {k: len(v) for k, v in parts.items()}, "features_s": round(t_data, 1)}
    log(f"NB201: {info['archs']} archs in {info['classes']} equivalence classes (cell {info['cell_classes']}, "
        f"features {info['feature_classes']}); split {info['sizes']}")
    log(f"random split: {leak['random_split']['with_class_twin_in_train']} of 3125 held-out archs have an "
        f"equivalent in training; lookup table on them: rho {leak['random_split'].get('lookup_spearman_on_twins')}")

    results = {}
    for name, mode, eps in (("psc", "psc", a.psc_epochs), ("whole", "whole", a.whole_epochs)):
        t = time.time()
        results[name] = tune_and_test(name, mode, _ints(eps), _ints(a.members), views, parts, a, log, classes)
        results[name]["seconds"] = round(time.time() - t, 1)
        log(f"{name}: picked {results[name]['picked']} -> held-out rho {results[name]['test_spearman']:.4f}, "
            f"tau {results[name]['test_kendall']:.4f}")

    gap = results["psc"]["test_spearman"] - results["whole"]["test_spearman"]
    doc = {"protocol": {"split": "class-disjoint (equivalence_classes), seeded", "seed": a.seed,
                        "test_frac": a.test_frac, "val_frac": a.val_frac, "selection": "validation Spearman rho",
                        "grid": {"psc_epochs": _ints(a.psc_epochs), "whole_epochs": _ints(a.whole_epochs),
                                 "members": _ints(a.members), "views": view_names},
                        "max_splits": a.max_splits, "threads": a.threads, "quick": a.quick},
           "data": info, "leak": leak, "results": results,
           "gap_psc_minus_whole": gap, "paper": PAPER, "paper_gap": PAPER["spearman_psc"] - PAPER["spearman_whole"],
           "paper_note": PAPER_NOTE, "seconds": round(time.time() - t_all, 1)}
    print()
    print(f"{'model':<8}{'picked (validation rho)':<30}{'held-out rho':>13}{'tau':>8}{'rho per class':>14}"
          f"{'paper rho':>11}")
    for k in ("psc", "whole"):
        r, p = results[k], results[k]["picked"]
        tag = f"{p['view']} e{p['epochs']} m{p['members']} ({p['val_spearman']:.3f})"
        print(f"{k:<8}{tag:<30}{r['test_spearman']:>13.4f}{r['test_kendall']:>8.4f}"
              f"{r['test_spearman_per_class']:>14.4f}{PAPER['spearman_' + k]:>11.3f}")
    print(f"gap PSC - whole: {gap:+.4f} (paper {doc['paper_gap']:+.3f})")
    print(f"wrote {run.write(doc, a.out)}")


if __name__ == "__main__":
    main()
