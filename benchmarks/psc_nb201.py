"""PSC predictor on NAS-Bench-201 (CIFAR-10, 200-epoch test accuracy): ranking quality against published figures.

Protocol (seeded, documented):

* graphs: all 15,625 NB201 networks (C=16, N=5: the zoo's network, lowered to IR by the builder of
  ``graphopt.predictors.nb201_dataset``; ~214 nodes each), features cached in ``~/.cache/graphopt``;
* split: a seeded permutation; the last ``--test`` graphs (default 3,125 = 20 %) are held out, the rest train;
* **Spearman ρ** on the held-out graphs of the PSC predictor (graph score = mean PSC over its scoring splits)
  and of the whole-graph GNN baseline (same encoder, same budget) — paper: 0.983 and 0.809;
* **Kendall τ** of PSC trained on only 128 / 512 random training graphs, on the same held-out graphs — beside
  the FLAN GIN predictor's figures (0.785 / 0.877); small sets get 8 splits per graph and a fixed budget of
  2,000 steps, starting from an encoder pretrained (self-supervised, :func:`pretrain_state`) on the label-free
  structure of all 15,625 graphs — no accuracy of any graph outside the 128 / 512 is read.

Recipe of the full-data runs: lr 5e-3 with cosine decay, 6 epochs × 2 random splits per graph for PSC, 12
epochs for the whole-graph baseline (the same number of graph passes); the shipped weights instead train 40
epochs × 1 split on all graphs (``graphopt predictor train``).

Runs single-threaded by default (``--threads 1``): on a shared 2-core machine, torch's OpenMP threads
oversubscribe and the small sparse ops run >10x slower with 2 threads. ``--quick`` is a ~3-minute smoke
version (fewer graphs and epochs; its figures are not comparable). Writes ``benchmarks/results/psc_nb201.json``.

    .venv/bin/python benchmarks/psc_nb201.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from graphopt.predictors.nb201_dataset import nb201_packed
from graphopt.predictors.psc import PSCConfig, predict_packed, pretrain_state, train_predictor
from scipy.stats import kendalltau, spearmanr

PAPER = {"spearman_psc": 0.983, "spearman_whole": 0.809, "kendall_128": 0.785, "kendall_512": 0.877}
REF_NOTE = {"spearman_psc": "AutoGO paper, PSC on NB-201", "spearman_whole": "AutoGO paper, whole-graph GNN",
            "kendall_128": "FLAN GIN, 128 training graphs", "kendall_512": "FLAN GIN, 512 training graphs"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (not comparable figures)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the full-data PSC run")
    ap.add_argument("--whole-epochs", type=int, default=None, help="epochs of the whole-graph baseline")
    ap.add_argument("--test", type=int, default=None, help="held-out graphs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "psc_nb201.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t_all = time.time()

    t0 = time.time()
    packed = nb201_packed(C=16, N=5, progress=lambda i, n: print(f"  lowered {i}/{n}", flush=True))
    t_data = time.time() - t0
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(len(packed))
    n_test = a.test or (500 if a.quick else 3125)
    n_train = 2000 if a.quick else len(packed) - n_test
    test = packed.subset(perm[len(packed) - n_test:])
    train_idx = perm[:n_train]
    train = packed.subset(train_idx)
    print(f"NB201: {len(packed)} graphs ({packed.num_nodes.mean():.0f} nodes avg), train {len(train)}, "
          f"held-out {len(test)}; features {t_data:.1f} s")

    ep_psc = a.epochs or (2 if a.quick else 6)
    ep_whole = a.whole_epochs or 2 * ep_psc  # same number of graph passes as PSC's 2 splits per graph per epoch
    results: dict = {"config": {}, "timing_s": {"features": round(t_data, 1)}}

    def run(name: str, tr, cfg: PSCConfig, metric: str, init_state=None) -> float:
        t = time.time()
        pred = train_predictor(tr, cfg, init_state=init_state, log=lambda s: print(f"  [{name}] {s}", flush=True))
        z = predict_packed(pred, test)
        val = float(spearmanr(z, test.y)[0] if metric == "spearman" else kendalltau(z, test.y)[0])
        other = float(kendalltau(z, test.y)[0] if metric == "spearman" else spearmanr(z, test.y)[0])
        results["timing_s"][name] = round(time.time() - t, 1)
        results["config"][name] = {k: v for k, v in cfg.__dict__.items() if k not in ("vocab", "train_info")}
        results.setdefault("secondary", {})[name] = {"kendall" if metric == "spearman" else "spearman": other}
        print(f"{name}: {metric} {val:.4f} ({time.time() - t:.0f} s)", flush=True)
        return val

    results["spearman_psc"] = run("spearman_psc", train, PSCConfig(epochs=ep_psc, splits_per_graph=2,
                                                                   seed=a.seed), "spearman")
    results["spearman_whole"] = run("spearman_whole", train, PSCConfig(mode="whole", epochs=ep_whole,
                                                                       seed=a.seed), "spearman")
    # few labels: self-supervised pretraining on the label-free structure of all NB201 graphs (their
    # accuracies are never read), shared by both runs, then fine-tuning on 128 / 512 labeled graphs
    t = time.time()
    pool = packed.subset(perm[:3000]) if a.quick else packed
    state = pretrain_state(pool, PSCConfig(pretrain_epochs=1 if a.quick else 2, seed=a.seed),
                           log=lambda s: print(f"  {s}", flush=True))
    results["timing_s"]["pretrain"] = round(time.time() - t, 1)
    for n in (128, 512):
        sub = packed.subset(train_idx[:n])
        steps = 300 if a.quick else 2000  # fixed optimizer-step budget for the small sets
        spg = 8
        epochs = max(1, round(steps * 32 / (n * spg)))
        results[f"kendall_{n}"] = run(f"kendall_{n}", sub, PSCConfig(epochs=epochs, splits_per_graph=spg,
                                                                      seed=a.seed), "kendall", init_state=state)

    results["timing_s"]["total"] = round(time.time() - t_all, 1)
    results.update({"quick": a.quick, "n_train": len(train), "n_test": len(test), "seed": a.seed,
                    "threads": a.threads, "paper": PAPER, "machine": {"cpu_count": os.cpu_count(),
                                                                     "python": platform.python_version(),
                                                                     "torch": torch.__version__}})
    print()
    print(f"{'metric':<16}{'graphopt':>10}{'reference':>11}  reference source")
    for k in ("spearman_psc", "spearman_whole", "kendall_128", "kendall_512"):
        print(f"{k:<16}{results[k]:>10.4f}{PAPER[k]:>11.3f}  {REF_NOTE[k]}")
    print(f"total {results['timing_s']['total']:.0f} s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
