"""``graphopt optimize`` on the trained ResNet-20, beside what a user would do instead, in one script.

Protocol (issue "optimize on trained models"):
- The model: the bundled trained ResNet-20 (``models/weights/resnet20_cifar10.pt``, trained on the 45,000-image
  ``cifar10`` training split at seed 0; the record beside the weights has its recipe and accuracy).
- Data: ``--data cifar10`` (the shared full CIFAR-10). graphopt's validation split is the 5,000 images the
  reference model never saw (``load_dataset`` seed 0, 10% per class); every selection reads it; the test split
  is evaluated once per reported model.
- **graphopt**: ``optimize`` with ``--recipe distill`` (the default), per objective (``accuracy,flops`` and
  ``accuracy,npu`` on ``--target``), per budget, per seed. Its report holds the *original with the same final
  fine-tune* (the same-budget control: same epochs, recipe and teacher as the candidates) and the val-selected
  pick.
- **Torch-Pruning** (DepGraph, L2-magnitude importance, uniform ratio per layer): pruned until its FLOPs are
  10/25/40% below the original's (``--ratios``), then fine-tuned with the same recipe as graphopt's finalists
  (SGD lr 0.01, cosine, knowledge distillation from the original, the same number of epochs the finalists of
  the same seed got). ResNet-20's option-A shortcuts zero-pad channels, which DepGraph does not trace, so the
  residual stream is kept and the blocks' inner channels are pruned (conv1/bn1 of each block; as Li et al.
  prune CIFAR ResNets). It is also pruned to the FLOPs of graphopt's pick (matched FLOPs).
- Costs of every model: FLOPs (graphopt's registry rules, batch 1) and the ``--target`` profile's latency
  estimate (:mod:`graphopt.npu.latency`, BatchNorm folded as export will).

Every finished unit (one graphopt run, one pruning + fine-tune) is saved under ``benchmarks/.cache/`` and reused,
so a killed run loses nothing; the results JSON is written whole at the end. ``--quick`` is a smoke run on the
bundled demo subset with tiny budgets: its figures are never quoted.

    python benchmarks/optimize_trained.py --budgets 30m,2h --objectives flops,npu --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import Run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache" / "optimize_trained"  # --cache; keyed by the measured code's hash
WEIGHTS = ROOT / "models" / "weights" / "resnet20_cifar10.pt"
PUBLISHED = {"AutoGO (HiAML, paper)": "-19.5% FLOPs at +0.43 points (full retraining on GPUs)"}


def trained_resnet20() -> torch.nn.Module:
    from graphopt.models import get

    net = get("resnet20", seed=0)
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return net.eval()


def costs(graph, target: str) -> dict[str, float]:
    from graphopt.search.autogo import _cost_fn

    return {"flops": _cost_fn("flops")(graph), "npu_ms": _cost_fn("npu", target)(graph)}


def code_key() -> str:
    """A short digest of the measured code: a cache written by other code is never reused."""
    import hashlib

    import _results

    hashes = _results.code_hashes(_results.BENCHMARKS["optimize_trained.json"].modules)
    return hashlib.sha1(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:10]


def _cached(key: str, fn) -> dict[str, Any]:
    path = CACHE / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    res = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str))
    tmp.replace(path)
    return res


def run_graphopt(args, objective: str, budget: str, seed: int) -> dict[str, Any]:
    from graphopt.frontends.torch import from_torch
    from graphopt.modelio import load_model
    from graphopt.search.autogo import AS_GIVEN, OptimizeConfig, optimize, parse_budget

    key = f"{args.data}-{objective}-{budget}-s{seed}-{args.recipe}{'-quick' if args.quick else ''}"
    work = CACHE / key

    def go() -> dict[str, Any]:
        g = from_torch(trained_resnet20(), (torch.zeros(2, 3, 32, 32),), dynamic_batch=True)
        cfg = OptimizeConfig(data=args.data, objective="npu" if objective == "npu" else "flops",
                             target=args.target if objective == "npu" else None, budget_seconds=parse_budget(budget),
                             seed=seed, recipe=args.recipe, final_k=args.final_k, final_epochs=args.final_epochs,
                             train_size=args.train_size)
        t0 = time.monotonic()
        # a killed search resumes from its result store in work/run
        optimize(g, work / "out", cfg, run_dir=work / "run", log=lambda s: print("    " + s, flush=True))
        doc = json.loads((work / "out" / "pareto.json").read_text())
        best_g, seed_g = load_model(work / "out" / "best.onnx"), g  # as handed back, and the model given
        fin = doc["finalists"]
        return {"objective": objective, "budget": budget, "seed": seed, "wall_s": time.monotonic() - t0,
                "original": {**costs(seed_g, args.target), "val": doc["seed"]["val_accuracy"],
                             "test": doc["seed"]["test_accuracy"]},
                "best": {**costs(best_g, args.target), "val": doc["best"]["val_accuracy"],
                         "test": doc["best"]["test_accuracy"], "hash": doc["best"]["hash"],
                         "is_original": doc["best"]["hash"] in (doc["seed"]["hash"], AS_GIVEN)},
                "as_given": {"val": fin[AS_GIVEN]["val_accuracy"], "test": fin[AS_GIVEN]["test_accuracy"]},
                "final_epochs": max(float(f.get("final_epochs") or 0.0) for f in fin.values()),
                "candidates": doc["stats"]["scored"], "mutations": doc["stats"]["mutations"]}

    return _cached(key, go)


def prune_to(ratio_flops: float):
    """The trained ResNet-20 pruned by Torch-Pruning until its FLOPs are <= ``ratio_flops`` x the original's."""
    import torch_pruning as tp
    from graphopt.models.resnet_cifar import BasicBlock

    net = trained_resnet20()
    x = torch.zeros(1, 3, 32, 32)
    base, _ = tp.utils.count_ops_and_params(net, x)
    ignored = [net.fc, net.conv1] + [b.conv2 for b in net.modules() if isinstance(b, BasicBlock)]
    pruner = tp.pruner.MagnitudePruner(net, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.9,
                                       iterative_steps=180, ignored_layers=ignored)
    for _ in range(180):
        if tp.utils.count_ops_and_params(net, x)[0] <= ratio_flops * base:
            break
        pruner.step()
    return net.eval()


def run_pruning(args, ratio_flops: float, seed: int, epochs: float, label: str) -> dict[str, Any]:
    from graphopt.eval.data import load_dataset
    from graphopt.eval.train import TrainConfig, evaluate, train_model
    from graphopt.frontends.torch import from_torch
    from graphopt.search.autogo import RECIPE_LR

    key = f"{args.data}-tp-{ratio_flops:.4f}-s{seed}-e{epochs:g}{'-quick' if args.quick else ''}"

    def go() -> dict[str, Any]:
        net = prune_to(ratio_flops)
        splits = load_dataset(args.data, seed=seed, train_size=args.train_size)
        t0 = time.monotonic()
        res = None
        if epochs > 0:
            cfg = TrainConfig(epochs=epochs, batch_size=64, lr=RECIPE_LR["distill"], schedule="cosine", seed=seed,
                              grad_clip=5.0, eval_every=0)
            res = train_model(net, splits, cfg, teacher=trained_resnet20())
        val = evaluate(net, splits.val)["accuracy"]  # noqa: F841 - reported; the pruned model is not selected on it
        test = evaluate(net, splits.test)["accuracy"]
        g = from_torch(net.eval(), (torch.zeros(2, 3, 32, 32),), dynamic_batch=True)
        return {"label": label, "ratio_flops": ratio_flops, "seed": seed, "epochs": epochs, **costs(g, args.target),
                "val": val, "test": test, "status": res.status if res else "no fine-tune",
                "wall_s": time.monotonic() - t0}

    return _cached(key, go)


def _ms(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.4f}"
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="30m,2h")
    ap.add_argument("--objectives", default="flops,npu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ratios", default="0.10,0.25,0.40", help="FLOPs reductions for Torch-Pruning")
    ap.add_argument("--target", default="ethos-u55-like")
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--recipe", default="distill")
    ap.add_argument("--final-k", type=int, default=2)
    ap.add_argument("--final-epochs", type=float, default=3.0)
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: demo data, 40 s budget, one seed")
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder of finished units, reused by a re-run of the same code (default benchmarks/.cache/"
                         "optimize_trained/<code digest>)")
    args = ap.parse_args()
    global CACHE
    CACHE = args.cache if args.cache is not None else CACHE / code_key()
    if args.quick:
        args.data, args.budgets, args.objectives, args.seeds, args.ratios = "cifar10-demo", "40s", "flops", "0", "0.25"
        args.final_epochs, args.final_k, args.train_size = 0.2, 1, 400
    run = Run.start("optimize_trained.json", quick=args.quick)
    if not WEIGHTS.exists():
        sys.exit(f"{WEIGHTS} is missing: train it with python -m graphopt.models.train_reference resnet20")
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    for budget in args.budgets.split(","):
        for objective in args.objectives.split(","):
            for seed in seeds:
                print(f"graphopt optimize: objective {objective}, budget {budget}, seed {seed}", flush=True)
                r = run_graphopt(args, objective, budget, seed)
                rows.append({"method": "graphopt", **r})
                tp_matched = run_pruning(args, r["best"]["flops"] / r["original"]["flops"], seed, r["final_epochs"],
                                         "torch-pruning at graphopt's FLOPs")
                rows.append({"method": "torch-pruning", "objective": objective, "budget": budget, **tp_matched})
    for seed in seeds:
        epochs = max((r["final_epochs"] for r in rows if r["method"] == "graphopt" and r["seed"] == seed),
                     default=args.final_epochs)
        for ratio in (float(x) for x in args.ratios.split(",")):
            print(f"torch-pruning: -{ratio:.0%} FLOPs, seed {seed}, {epochs:g} epochs", flush=True)
            rows.append({"method": "torch-pruning", "objective": "flops", "budget": None,
                         **run_pruning(args, 1 - ratio, seed, epochs, f"torch-pruning -{ratio:.0%} FLOPs")})
    table = summarize(rows)
    for line in table:
        print(line)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    doc = {"protocol": __doc__, "settings": settings, "rows": rows, "table": table, "published": PUBLISHED}
    print(f"wrote {run.write(doc, args.out)}")


def summarize(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| method | objective | budget | FLOPs vs original | NPU ms vs original | val | test | n |",
           "|---|---|---|---|---|---|---|---|"]
    go = [r for r in rows if r["method"] == "graphopt"]
    for key in sorted({(r["objective"], r["budget"]) for r in go}):
        grp = [r for r in go if (r["objective"], r["budget"]) == key]
        out.append(f"| original as given | {key[0]} | {key[1]} | +0.0% | +0.0% | "
                   f"{_ms([r['as_given']['val'] for r in grp])} | {_ms([r['as_given']['test'] for r in grp])} | "
                   f"{len(grp)} |")
        for who, label in (("original", "original + same fine-tune"), ("best", "graphopt pick (val)")):
            fl = [r[who]["flops"] / r["original"]["flops"] - 1 for r in grp]
            ms = [r[who]["npu_ms"] / r["original"]["npu_ms"] - 1 for r in grp]
            out.append(f"| {label} | {key[0]} | {key[1]} | {statistics.mean(fl):+.1%} | {statistics.mean(ms):+.1%} | "
                       f"{_ms([r[who]['val'] for r in grp])} | {_ms([r[who]['test'] for r in grp])} | {len(grp)} |")
    base = {r["seed"]: r["original"] for r in go}
    for label in sorted({r["label"] for r in rows if r["method"] == "torch-pruning"}):
        grp = [r for r in rows if r["method"] == "torch-pruning" and r["label"] == label]
        fl = [r["flops"] / base[r["seed"]]["flops"] - 1 for r in grp if r["seed"] in base]
        ms = [r["npu_ms"] / base[r["seed"]]["npu_ms"] - 1 for r in grp if r["seed"] in base]
        out.append(f"| {label} | - | - | {statistics.mean(fl):+.1%} | {statistics.mean(ms):+.1%} | "
                   f"{_ms([r['val'] for r in grp])} | {_ms([r['test'] for r in grp])} | {len(grp)} |")
    return out


if __name__ == "__main__":
    main()
