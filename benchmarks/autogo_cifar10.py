"""AutoGO on CIFAR-10 (issue 5, benchmark 2): optimize ResNet-20 / MobileNetV2, then retrain the original and
the best Pareto candidates with one identical recipe, from scratch, over several seeds.

    .venv/bin/python benchmarks/autogo_cifar10.py [--models resnet20,mobilenetv2] [--budget 20m]
        [--epochs 10] [--seeds 3] [--train-size N] [--final-k 2]

Protocol (documented so the figure can be reproduced):
1. The zoo model (eval mode) is lowered to the IR; ``graphopt.search.autogo.optimize`` searches on CIFAR-10
   from the shared data (val split out of train) with the ``train`` ranker for ``--budget``.
2. The original and the ``--final-k`` most accurate Pareto candidates with fewer FLOPs are re-initialized
   (the same initializers AutoGO's mutation uses: Kaiming-normal conv weights, PyTorch-default linear weights,
   identity normalizations) and trained with one recipe: SGD momentum 0.9 nesterov, lr 0.05, cosine, wd 5e-4,
   batch 128, crop + flip, ``--epochs`` epochs, ``--seeds`` seeds; CIFAR-10 test accuracy is reported.
3. Target (issue): a candidate with >= 15% fewer FLOPs and <= 0.3 points lower accuracy, or >= 0.5 points
   higher accuracy at no more FLOPs. Paper (HiAML): -19.5% FLOPs, +0.43 points.

Recorded figure (``benchmarks/results/autogo_cifar10.json``), a reduced recipe that fits this 2-core machine:
``--models resnet20 --budget 900 --iterations 20 --train-size 10000 --epochs 10 --seeds 6 --final-k 2
--inherit seed --score-steps 40`` (15 min search + 18 trainings of 3-4.5 min): original 65.29 ± 0.45,
candidate1 (same FLOPs; six mutations, among them layer2.0's slice/pad shortcut replaced by a depthwise+SE
block and its first 3x3 conv by a 1x1) 66.64 ± 0.77, paired +1.35 ± 0.45 points, t-test p 0.03; candidate2
(-11.9% FLOPs) -1.26 points. ``autogo_cifar10_window1.json``: the same with ``--cost-window 0,1.0 --seeds 3
--final-k 1``: the search's front reached -34.7% FLOPs (81 candidates; that one candidate dominated the rest
on the short fine-tune's score, .302 vs the seed's .251), but trained from scratch it lost 2.68 ± 0.69 points
(62.86 vs 65.54): the 40-step score favours small networks that learn fast early, so the FLOPs branch of the
target (>= 15% fewer, <= 0.3 points lost) is not met. MobileNetV2 (181 MFLOPs vs
82, depthwise convs), first attempt (2026-12-06, ``--models mobilenetv2 --budget 1200 --seeds 3 --final-k 1``,
other flags as above): the original and all 7 mutants scored 0.100, chance level, because 40 steps at lr 0.02
teach the randomly initialised MobileNetV2 nothing (measured on the original: 40 steps 0.100, 40 at lr 0.05
0.176, 120 steps 0.293 in 110 s, 120 at lr 0.05 0.313). That search picked at random, so it was stopped after
the original's first training (65.56 %, 53 min on the busy machine); ``optimize`` now warns when the original
scores at chance. Second run (``autogo_cifar10_mobilenetv2.json``): ``--models mobilenetv2 --budget 2400
--iterations 20 --train-size 10000 --epochs 10 --seeds 3 --final-k 1 --threads 2 --inherit seed
--score-steps 120``. The search scored 19 candidates in 2,394 s. Its pick at no more FLOPs (-0.6%) replaces
features.2's depthwise conv-BN-ReLU6 and features.16's residual add by avg-pool + add segments; its 120-step
score was .320 against the seed's .293. Trained from scratch it lost on every seed: original 63.81 ± 1.51
(65.56 / 62.90 / 62.98), candidate 61.43 ± 1.73, paired -2.38 ± 0.13 points (t-test p .003). No front member
had >= 15% fewer FLOPs. Target not met for MobileNetV2: the short fine-tune from the seed's weights rewards
mutants that learn fast early, not the network that trains best (as with ResNet-20's -34.7% candidate).
``autogo_cifar10_inherit_trained.json``
is the same run with ``--inherit trained`` (budget 600, 2 seeds), kept because it shows why that ranker is
biased (every mutant outscored the seed; its picks lost 1.7 points).

Besides the ``--final-k`` best-scored candidates at no more FLOPs, the best-scored front member with >= 15%
fewer FLOPs (the target's other branch) is trained too, labelled ``cand-15%``, when the front has one.
``--cost-window LO,HI`` sets the search's FLOPs window relative to the seed (default 0,1.10; ``0,1.0`` spends
the budget only on candidates that are not larger). Seeds pair up (seed s = the same init stream and data order
for every model), so each candidate also gets its paired per-seed differences, their mean ± standard error and
a paired t-test p-value: a "+0.5 points" that is inside seed noise shows as such. Finished trainings are
looked up across every cached run by (graph hash, seed, epochs, train size), so the original is trained once
per recipe.

``--proxy-check`` ranks every candidate the search scored by zero-cost proxies (as held and re-initialised)
against the search's own score; on the recorded ResNet-20 run (87 candidates) every ρ is ≤ 0.31 (snip .28 /
.31, grad_norm .23 / .25, jacob_cov .17 / .11, zen .14, nwot .10, synflow .04, params -.18).

Prints a table and writes ``benchmarks/results/autogo_cifar10.json`` (after each model, marked ``partial``
until the end). The search's run directory and every finished training (one JSONL row per model/candidate/seed)
are kept in ``benchmarks/.cache/autogo_cifar10/<model>-b<budget>-i<iter>-n<train size>-<inherit>-s<steps>/``:
a killed run, restarted with the same settings, resumes the search from its result store and skips finished
trainings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

CACHE = Path(__file__).parent / ".cache" / "autogo_cifar10"
PROXY_CHECK = ["nwot", "synflow", "snip", "grad_norm", "jacob_cov", "zen", "params", "flops"]
DEFAULT_WINDOW = (0.0, 1.10)  # OptimizeConfig.cost_window's default (FLOPs relative to the seed)


def reinit(graph, seed: int):
    """A copy of ``graph`` with every trainable parameter freshly initialized (buffers reset to identity)."""
    from graphopt.passes.autogo.resolution import fresh_param

    from graphopt.ir.registry import get_op

    g = graph.copy()
    rng = np.random.default_rng(seed)
    for n in g.nodes:
        opdef = get_op(n.op)
        for j, v in enumerate(n.inputs):
            if v is None or v.const is None or v.kind not in ("param", "buffer"):
                continue
            slot = opdef.input_spec(j).name
            v.const = fresh_param(n.op, slot, tuple(v.const.shape), v.const.dtype, rng, n.attrs)
    return g


def train_eval(graph, splits, epochs: float, seed: int, threads: int) -> float:
    from graphopt.backends.torch import to_torch
    from graphopt.eval.train import TrainConfig, seed_everything, train_model

    seed_everything(seed)
    m = to_torch(reinit(graph, seed))
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, seed=seed, threads=threads, evaluate_test=True,
                      eval_every=0)
    res = train_model(m, splits, cfg)
    return float(res.test["accuracy"]) if res.ok and res.test else float("nan")


def proxy_check(work: Path, graphs: dict, names: list[str]) -> dict:
    """Spearman ρ between zero-cost proxies and the search's own score over every candidate it scored.

    Evidence for ``--ranker proxy:<name>`` on mutants of one network: each proxy is computed (one CIFAR-10
    minibatch of 64, seed 0) on the candidate as the search held it (seed weights + fresh replaced segments)
    and re-initialised (:func:`reinit`, seed 0), and ranked against the 40-step fine-tune score.
    """
    import sqlite3

    from graphopt.predictors.proxies import finite_or
    from graphopt.predictors.proxies.passes import proxy_batch, score_graph

    with sqlite3.connect(work / "run" / "runs.sqlite") as c:
        rows = [(h, json.loads(m)) for h, m in c.execute("SELECT hash, metrics FROM candidates WHERE status='done'")]
    batch = proxy_batch(graphs[rows[0][0]], "cifar10", 64, 0)
    score = [m["score"] for _, m in rows]
    out: dict[str, dict] = {}
    for mode in ("inherited", "reinit"):
        vals = {p: [] for p in names}
        for h, _ in rows:
            g = graphs[h] if mode == "inherited" else reinit(graphs[h], 0)
            res = score_graph(g, names, batch, seed=0)
            for p in names:
                vals[p].append(finite_or(res[p].score))
        out[mode] = {p: float(stats.spearmanr(vals[p], score).statistic) for p in names}
    print(f"  proxies vs the search score over {len(rows)} candidates (Spearman rho):")
    for p in names:
        print(f"    {p:10s} inherited weights {out['inherited'][p]:+.3f}   re-initialised {out['reinit'][p]:+.3f}")
    return {"n_candidates": len(rows), "spearman_vs_search_score": out}


def run_model(name: str, args: argparse.Namespace) -> dict:
    from graphopt.models import example_inputs, get

    from graphopt.eval.data import load_dataset
    from graphopt.frontends.torch import from_torch
    from graphopt.search.autogo import OptimizeConfig, optimize

    net = get(name, seed=0).eval()
    g = from_torch(net, tuple(example_inputs(name, batch=2)), dynamic_batch=True)
    window = tuple(float(v) for v in args.cost_window.split(","))
    cfg = OptimizeConfig(data="cifar10", budget_seconds=args.budget, iterations=args.iterations, final_k=args.final_k,
                         final_epochs=1, train_size=args.train_size, seed=0, inherit=args.inherit,
                         score_steps=args.score_steps, cost_window=window)
    # the search and every finished training are kept under benchmarks/.cache, keyed by the settings, so a
    # killed run resumes where it stopped instead of losing hours of CPU
    work = CACHE / (f"{name}-b{args.budget:g}-i{args.iterations}-n{args.train_size or 'all'}-{args.inherit}"
                    f"-s{args.score_steps}" + ("" if window == DEFAULT_WINDOW else f"-w{window[0]:g}_{window[1]:g}"))
    t0 = time.monotonic()
    if (work / "out" / "pareto.json").exists() and (work / "summary.json").exists():
        res = json.loads((work / "summary.json").read_text())
        search_s = res["search_seconds"]
        print(f"  search re-used from {work}")
    else:
        if (work / "out").exists():
            shutil.rmtree(work / "out")
        res = optimize(g, work / "out", cfg, run_dir=work / "run", log=lambda s: print("  " + s))
        search_s = time.monotonic() - t0
        (work / "summary.json").write_text(json.dumps({"summary": res["summary"], "search_seconds": search_s}))
    if args.search_only:
        return {"model": name, "rows": [], "search_seconds": search_s, "cache": str(work), "search_only": True}
    doc = json.loads((work / "out" / "pareto.json").read_text())
    from graphopt.ir.serialize import load as load_graph

    graphs = {p.stem: load_graph(p) for p in (work / "run" / "graphs").glob("*.json")}
    seed_row = doc["seed"]
    checked = proxy_check(work, graphs, PROXY_CHECK) if args.proxy_check else None
    ranked = [r for r in sorted(doc["front"], key=lambda r: -r["score"]) if r["hash"] != seed_row["hash"]]
    picks = [(f"candidate{i + 1}", r) for i, r in enumerate([r for r in ranked if r["cost"] <= seed_row["cost"]]
                                                            [: args.final_k])]
    # the target's FLOPs branch needs >= 15% fewer FLOPs: also train the best-scored such candidate, if any
    small = [r for r in ranked if r["cost"] <= 0.85 * seed_row["cost"]]
    if small and small[0]["hash"] not in {r["hash"] for _, r in picks}:
        picks.append(("cand-15%", small[0]))
    splits = load_dataset("cifar10", seed=0, train_size=args.train_size)
    # finished trainings of any cached run: the key (graph hash, seed, epochs, train size) fixes the recipe, so
    # the original trained for one search's report is the same training for another's
    trained: dict[str, float] = {}
    for jl in sorted(CACHE.glob("*/trainings.jsonl")):
        for line in jl.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                trained.setdefault(r["key"], r["acc"])
    models = [("original", seed_row), *picks]
    # seed-major order: an interrupted run leaves complete pairs (original and every pick on the same seeds)
    for s in range(args.seeds):
        for label, row in models:
            key = json.dumps([row["hash"], s, args.epochs, args.train_size])
            if key not in trained:
                t1 = time.monotonic()
                graph = g if label == "original" else graphs[row["hash"]]
                acc = train_eval(graph, splits, args.epochs, s, args.threads)
                trained[key] = acc
                with open(work / "trainings.jsonl", "a") as fh:
                    fh.write(json.dumps({"key": key, "acc": acc, "seconds": time.monotonic() - t1}) + "\n")
                print(f"  {label} seed {s}: test {100 * acc:.2f} ({time.monotonic() - t1:.0f} s)", flush=True)
    rows = []
    for label, row in models:
        accs = [trained[json.dumps([row["hash"], s, args.epochs, args.train_size])] for s in range(args.seeds)]
        rows.append({"model": name, "which": label, "hash": row["hash"], "flops": row["cost"],
                     "search_score": row["score"],
                     "flops_change_pct": 100 * (row["cost"] / seed_row["cost"] - 1),
                     "test_acc_mean": 100 * statistics.mean(accs),
                     "test_acc_std": 100 * (statistics.stdev(accs) if len(accs) > 1 else 0.0),
                     "accs": accs})
        print(f"  {label}: FLOPs {row['cost']:.4g} ({rows[-1]['flops_change_pct']:+.1f}%), test "
              f"{rows[-1]['test_acc_mean']:.2f} ± {rows[-1]['test_acc_std']:.2f}")
    base = rows[0]["test_acc_mean"]
    for r in rows[1:]:  # seeds pair up (same seed = same init stream and data order): paired differences
        d = [100 * (a - b) for a, b in zip(r["accs"], rows[0]["accs"], strict=True)]
        r["paired_diff_points"] = d
        r["paired_diff_mean"] = statistics.mean(d)
        r["paired_diff_sem"] = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        r["paired_t_pvalue"] = float(stats.ttest_rel(r["accs"], rows[0]["accs"]).pvalue) if len(d) > 1 else None
    met = any((r["flops_change_pct"] <= -15 and r["test_acc_mean"] >= base - 0.3)
              or (r["flops_change_pct"] <= 0 and r["test_acc_mean"] >= base + 0.5) for r in rows[1:])
    return {"model": name, "rows": rows, "search_seconds": search_s, "candidates": res["summary"]["candidates scored"],
            "target_met": met, "cache": str(work), "proxy_check": checked}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet20,mobilenetv2")
    ap.add_argument("--budget", type=float, default=1200.0, help="search seconds per model")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--epochs", type=float, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--final-k", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--inherit", choices=["seed", "trained"], default="seed",
                    help="search ranker's weights: from the seed for every candidate, or from the trained parent")
    ap.add_argument("--score-steps", type=int, default=40, help="SGD steps of the search's scoring fine-tune")
    ap.add_argument("--cost-window", default="0,1.10",
                    help="search FLOPs window relative to the seed, LO,HI (e.g. 0,1.0: no candidate above the seed)")
    ap.add_argument("--proxy-check", action="store_true",
                    help="also rank every scored candidate by zero-cost proxies against the search's score")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--search-only", action="store_true",
                    help="stop after the search (kept in the cache; a later run with the same settings trains)")
    ap.add_argument("--out", type=Path, default=RESULTS / "autogo_cifar10.json")
    args = ap.parse_args()
    run = Run.start(args.out.name)  # the --out name says which registered results file this run produces
    torch.set_num_threads(args.threads)
    results = []

    def write(partial: bool) -> None:
        doc = {"config": vars(args) | {"out": str(args.out)}, "results": results,
               "paper": {"hiaml_flops_change_pct": -19.5, "hiaml_acc_change_points": 0.43}}
        if partial:  # progress only; the results file is written whole at the end
            tmp = args.out.with_suffix(".partial.json")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc, indent=1))
        else:
            run.write(doc, args.out)
            args.out.with_suffix(".partial.json").unlink(missing_ok=True)

    for name in args.models.split(","):
        print(f"== {name}")
        results.append(run_model(name, args))
        write(partial=True)
    print(f"\n{'model':<14}{'which':<12}{'FLOPs':>12}{'ΔFLOPs':>9}{'test acc':>16}")
    for r in results:
        for row in r["rows"]:
            paired = ""
            if "paired_diff_mean" in row:
                paired = (f"   paired Δ {row['paired_diff_mean']:+.2f} ± {row['paired_diff_sem']:.2f} (sem), "
                          f"t-test p {row['paired_t_pvalue']:.2f}")
            print(f"{row['model']:<14}{row['which']:<12}{row['flops']:>12.4g}{row['flops_change_pct']:>+8.1f}%"
                  f"{row['test_acc_mean']:>10.2f} ± {row['test_acc_std']:.2f}{paired}")
        if r.get("search_only"):
            continue
        print(f"{r['model']}: target met: {r['target_met']}   (paper HiAML: -19.5% FLOPs, +0.43 points)")
    write(partial=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
