"""``graphopt search``: weight-sharing supernet search (XNAS, S3, DPS) over a model's space.

MODEL names the space: the zoo models ``nb201`` (XNAS/DARTS cell space), ``vit_tiny`` (S3 elastic ViT) and
``hrnet_lite`` (DPS multi-path segmentation supernet), or a model file, which is loaded and run through the
matching expansion pass (``expand-cell`` / ``expand-s3`` / ``expand-dps``) to report which regions match;
the search itself trains the CPU-sized supernet of that space (documented limitation: file models only select
the space).
Outputs in ``-o``: ``best.onnx``, ``best.pt``, ``best.py`` (+ weights), ``best.json`` (IR), ``report.json`` with
the search trajectory (surviving experts per edge for XNAS, the evolving space for S3, stage transitions for
DPS) and ``runs.sqlite`` (result store). Re-running with the same options and ``-o`` reuses the finished
result instead of searching again (resumable).

``--evaluate-epochs E`` then trains the found path and ``--baselines K`` random paths of the same space from
scratch with one identical recipe (fresh weights, ``E`` epochs of SGD + cosine on the space's data) and reports
their validation and test metric: the supernet's pick against random search. These evaluations are independent
and go through an executor (``--workers N`` local processes, or ``--executor ray``); the driver commits each to
``runs.sqlite`` as it finishes, re-queues one whose worker died (twice at most), and a re-run evaluates only what
is not committed yet. The supernet training itself stays in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .common import console, examples, out, user_errors

STRATEGY_SPACE = {"xnas": "nb201", "darts": "nb201", "s3": "vit_tiny", "dps": "hrnet_lite"}


def _budget_scale(budget: str) -> float:
    from ..search.autogo import parse_budget

    return max(0.05, parse_budget(budget) / 300.0)  # 1.0 = the 5-minute default sizes below


def _run(strategy: str, data: str | None, scale: float, seed: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Returns (graph, metrics, trajectory report)."""
    import torch

    if strategy in ("xnas", "darts"):
        from ..search.darts import darts_search
        from ..search.xnas import xnas_search

        fn = xnas_search if strategy == "xnas" else darts_search
        epochs = max(1, round(4 * scale))
        r = fn(data=data or "cifar10", C=8, N=1, epochs=epochs, n_search=1000, batch=64, seed=seed, downsample=2,
               log=lambda m: console.print(m, markup=False))
        report = {"arch": r.arch, "path": r.path, "trajectory": r.trajectory, "extra": r.extra}
        if strategy == "xnas":
            from ..supernet import NB201_EDGES

            keys = [f"e{i}{j}" for i, j in NB201_EDGES]
            report["surviving_experts"] = dict(zip(keys, r.extra["active"], strict=True))
        metrics = {"supernet_test_acc": r.supernet_acc, "seconds": r.seconds}
        from ..search.xnas import nb201_test_accuracy

        metrics["nb201_cifar10_test_acc"] = nb201_test_accuracy(r.arch)  # None when the CSV is absent
        return r.graph, metrics, report
    if strategy == "s3":
        import random

        from ..eval.data import BatchLoader
        from ..search.s3 import ElasticViT, config, s3_search, vit_params
        from ..search.supernet_train import search_splits
        from ..search.xnas import Downsampled

        torch.manual_seed(seed)
        tr, va, _ = search_splits(data or "cifar10", n_search=2000, seed=seed)
        train = Downsampled(BatchLoader(tr, 64, shuffle=True, seed=seed, drop_last=True), 2)
        val = list(Downsampled(BatchLoader(va.subset(512, seed=seed), 256), 2))
        net = ElasticViT(max_embed=64, max_depth=6, max_heads=4, max_mlp_ratio=4.0, head_dim=16, img_size=16)
        space = {"depth": [1, 2, 3], "embed": [32, 40, 48], "mlp_ratio": [1.0, 1.5, 2.0], "heads": [1, 2]}
        rng = random.Random(seed)
        limit = max(vit_params(config(space, rng, net.max_depth), net) for _ in range(200))
        r = s3_search(net, space, train, val, steps_per_phase=max(10, int(150 * scale)), evolution_steps=2,
                      n_samples=6, top_k=2, param_limit=limit, seed=seed, log=lambda m: console.print(m, markup=False))
        return r.graph, {"supernet_val_error": r.error, "params": r.params, "seconds": r.seconds}, \
            {"path": r.path, "spaces": r.spaces, "evolution": r.evolution}
    if strategy == "dps":
        from ..eval.data import BatchLoader, load_dataset
        from ..search.dps import DPSHRNet, dps_path_graph, dps_search

        sp = load_dataset(data or "cifar_paste", seed=seed, n_train=600, n_val=96, n_test=160, canvas=32,
                          size=(12, 24))
        train = list(BatchLoader(sp.train, 32, shuffle=True, seed=seed, drop_last=True))
        val = list(BatchLoader(sp.val, 48))
        it = {"i": 0}

        def nb():
            it["i"] += 1
            return train[it["i"] % len(train)]

        torch.manual_seed(seed)
        net = DPSHRNet()
        r = dps_search(net, nb, val[:1], val[1:], steps=max(4, int(40 * scale)), seed=seed,
                       log=lambda m: console.print(m, markup=False))
        return dps_path_graph(net, r.path), {"supernet_val_miou": r.val_miou, "updates": r.updates,
                                             "seconds": r.seconds}, {"path": r.path, "stages": r.stages}
    raise typer.BadParameter(f"--strategy {strategy!r}: use xnas, darts, s3 or dps")


# ------------------------------------------------------------------------------- final evaluations
#: training images for the evaluation of classification spaces (nb201, vit_tiny), and the test images it reports
EVAL_TRAIN, EVAL_VAL, EVAL_TEST = 5000, 1000, 2000
S3_SPACE = {"depth": [1, 2, 3], "embed": [32, 40, 48], "mlp_ratio": [1.0, 1.5, 2.0], "heads": [1, 2]}


def _fresh_graph(strategy: str, path: dict[str, Any], seed: int):  # noqa: ANN202 - Graph
    """``path`` materialized from a freshly initialised supernet of the space (seeded): every evaluated path
    starts from new weights, so the comparison is of architectures, not of supernet training."""
    import torch

    torch.manual_seed(seed)
    if strategy in ("xnas", "darts"):
        from ..models.nb201 import NB201Supernet
        from ..search.supernet_train import nb201_path_graph

        return nb201_path_graph(NB201Supernet(C=8, N=1), path)
    if strategy == "s3":
        from ..search.s3 import ElasticViT, s3_supernet_graph
        from ..supernet import materialize

        net = ElasticViT(max_embed=64, max_depth=6, max_heads=4, max_mlp_ratio=4.0, head_dim=16, img_size=16)
        return materialize(s3_supernet_graph(net), path)
    from ..search.dps import DPSHRNet, dps_path_graph

    return dps_path_graph(DPSHRNet(), path)


def _random_path(strategy: str, rng) -> dict[str, Any]:  # noqa: ANN001 - random.Random
    """A path drawn uniformly from the space the strategy searches (random-search baseline)."""
    if strategy in ("xnas", "darts"):
        from ..supernet import NB201_EDGES, NB201_OPS

        return {f"e{i}{j}": rng.choice([o for o in NB201_OPS if o != "none"]) for i, j in NB201_EDGES}
    if strategy == "s3":
        from ..search.s3 import config

        return config(S3_SPACE, rng, 6)
    from ..search.dps import random_path

    return random_path(rng)


def _eval_splits(strategy: str, data: str | None, seed: int):  # noqa: ANN202 - Splits
    from ..eval.data import load_dataset

    if strategy == "dps":
        return load_dataset(data or "cifar_paste", seed=seed, n_train=600, n_val=96, n_test=160, canvas=32,
                            size=(12, 24))
    return load_dataset(data or "cifar10", seed=seed, train_size=EVAL_TRAIN, val_size=EVAL_VAL, test_size=EVAL_TEST)


@dataclass(frozen=True)
class EvalJob:
    """What an evaluation worker needs besides the path's graph: the data (shared once) and the recipe."""

    data: Any  # graphopt.eval.executors.Shared of the Splits
    epochs: float
    seed: int


def evaluate_task(blob: bytes, job: EvalJob) -> dict[str, Any]:
    """Train one packed path from its fresh weights (``job.epochs``, SGD + cosine, batch 64) and return its
    validation and test metric. Inputs larger than the graph's (a 16x16 ViT on 32x32 images) are average-pooled
    down to it, as the search fed them."""
    import torch
    from torch import nn

    from ..backends.torch import to_torch
    from ..eval.train import TrainConfig, default_threads, evaluate, primary_metric, train_model
    from ..search.evolution import unpack_graph

    t0 = time.perf_counter()
    torch.set_num_threads(default_threads())
    g = unpack_graph(blob)
    splits = job.data.get()
    model: nn.Module = to_torch(g)
    h = g.inputs[0].type.shape[-1] if g.inputs[0].type is not None and g.inputs[0].type.shape else None
    factor = splits.info.input_shape[-1] // h if isinstance(h, int) and h < splits.info.input_shape[-1] else 1
    if factor > 1:
        model = nn.Sequential(nn.AvgPool2d(factor), model)
    res = train_model(model, splits.train, TrainConfig(epochs=job.epochs, batch_size=64, seed=job.seed,
                                                         eval_every=0))
    task = splits.info.task
    out = {"val": primary_metric(evaluate(model, splits.val, batch_size=256), task),
           "test": primary_metric(evaluate(model, splits.test, batch_size=256), task),
           "metric": {"classification": "accuracy", "segmentation": "miou"}.get(task, task),
           "train_status": res.status, "train_seconds": res.train_time, "epochs": job.epochs}
    out["_timings"] = {"worker_s": time.perf_counter() - t0, "pid": os.getpid()}
    return out


def _evaluate(strategy: str, found: dict[str, Any], data: str | None, seed: int, epochs: float, baselines: int,
              store, key: str, executor: str, workers: int, address: str | None) -> list[dict[str, Any]]:  # noqa: ANN001
    """The found path and ``baselines`` random paths, trained identically; each committed to ``store`` by this
    process as it finishes (what is already committed is reused)."""
    import random

    from ..eval.executors import Shared, TaskFailed
    from ..search.evolution import RETRYABLE, pack_graph

    rng = random.Random(seed + 1000)
    paths = [("found", found)] + [(f"random-{i}", _random_path(strategy, rng)) for i in range(baselines)]
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for role, path in paths:
        h = f"{key}:eval:{epochs:g}:{role}"
        rec = store.get(h)
        if rec is not None and store.is_done(h):
            rows[role] = {"role": role, "path": path, **(rec.metrics or {})}
            continue
        if rec is None:
            store.add_pending(h, lineage=[role, path])
        store.mark_running(h)
        todo.append((h, role, path, pack_graph(_fresh_graph(strategy, path, seed))))
    if todo:
        splits = _eval_splits(strategy, data, seed)
        console.print(f"evaluating {len(todo)} paths ({epochs:g} epochs each, {len(splits.train)} training samples)"
                      + (f" on {executor} ({workers} workers)" if executor == "ray" or workers > 1 else ""),
                      markup=False)

        def commit(h: str, role: str, path: dict, res: dict[str, Any], attempts: int) -> None:
            timings = {**res.pop("_timings", {}), "attempts": attempts}
            store.finish(h, res, timings=timings)
            rows[role] = {"role": role, "path": path, **res}
            console.print(f"  {role}: val {res['val']:.4f}, test {res['test']:.4f} ({res['metric']})", markup=False)

        if executor == "local" and workers == 1:
            job = EvalJob(Shared.inline(splits, "data"), epochs, seed)
            for h, role, path, blob in todo:
                try:
                    commit(h, role, path, evaluate_task(blob, job), 1)
                except Exception as e:
                    store.fail(h, f"{type(e).__name__}: {e}")
                    raise
        else:
            from ..search.autogo import start_executor

            ex = start_executor(executor, workers, address)
            try:
                job = EvalJob(ex.share(splits, "data"), epochs, seed)
                pending = {ex.submit_task(evaluate_task, (blob, job)): [h, role, path, blob, 1]
                           for h, role, path, blob in todo}
                while pending:
                    for fut in ex.wait(list(pending)):
                        h, role, path, blob, attempts = item = pending.pop(fut)
                        exc = fut.exception()
                        if exc is None:
                            commit(h, role, path, dict(fut.result()), attempts)
                        elif isinstance(exc, TaskFailed) and exc.reason in RETRYABLE and attempts < 2:
                            store.fail(h, str(exc))
                            store.mark_running(h)  # counts the next attempt
                            item[4] += 1
                            pending[ex.submit_task(evaluate_task, (blob, job))] = item
                        else:
                            store.fail(h, f"{type(exc).__name__}: {exc}" if not isinstance(exc, TaskFailed)
                                       else f"{exc} (attempt {attempts})")
                            console.print(f"  {role}: failed ({exc})", markup=False)
            finally:
                ex.shutdown(wait=False, cancel_futures=True)
    return [rows[r] for r, _ in paths if r in rows]


def register(app: typer.Typer) -> None:
    @app.command(epilog=examples(
        ("graphopt search nb201 --strategy xnas -o out/", "XNAS on the NAS-Bench-201 supernet"),
        ("graphopt search nb201 --strategy darts -o out/", "the DARTS baseline on the same supernet"),
        ("graphopt search vit_tiny --strategy s3 --budget 10m -o out/", "S3 over ViT widths and depths"),
        ("graphopt search hrnet_lite --strategy dps -o out/", "DPS on the HRNet-lite supernet"),
        ("graphopt search nb201 --strategy xnas --evaluate-epochs 5 --baselines 3 --workers 2 -o out/",
         "then train the found cell and 3 random ones from scratch, 2 at a time"),
    ))
    @user_errors
    def search(
        model: Annotated[str, typer.Argument(help="Space: nb201, vit_tiny, hrnet_lite, or a model file whose "
                                                  "regions the matching expand pass checks.")],
        strategy: Annotated[str, typer.Option(help="xnas (with darts baseline: --strategy darts), s3 or dps.")]
        = "xnas",
        output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")] = Path("out"),
        data: Annotated[str | None, typer.Option(help="Dataset (default: cifar10; cifar_paste for dps).")] = None,
        budget: Annotated[str, typer.Option(help="Approximate budget (sizes scale with it), e.g. 90s, 5m.")] = "5m",
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        evaluate_epochs: Annotated[float, typer.Option(help="After the search, train the found path and the "
                                                            "baselines from scratch for this many epochs and report "
                                                            "their validation and test metric (0: no evaluation).")]
        = 0.0,
        baselines: Annotated[int, typer.Option(help="--evaluate-epochs: random paths of the same space trained "
                                                    "beside the found one.")] = 2,
        workers: Annotated[int, typer.Option(help="--evaluate-epochs: paths trained at once (worker processes, "
                                                  "one thread each; with --executor ray, caps the cluster).")] = 1,
        executor: Annotated[str, typer.Option(help="--evaluate-epochs: local (worker processes) or ray.")] = "local",
        address: Annotated[str | None, typer.Option(help="--executor ray: 'auto' or HOST:PORT of a running "
                                                         "cluster; without it a local Ray instance.")] = None,
    ) -> None:
        """Search a weight-sharing supernet and emit the chosen path as a concrete model."""
        from ..errors import GraphoptError
        from ..eval.store import ResultStore
        from ..modelio import save_model

        strategy = strategy.lower()
        if strategy not in STRATEGY_SPACE:
            raise GraphoptError(f"--strategy {strategy!r}: use xnas, darts, s3 or dps")
        expanded: dict[str, Any] | None = None
        if Path(model).suffix:
            expanded = _check_file(Path(model), strategy)
        elif model != STRATEGY_SPACE[strategy]:
            raise GraphoptError(f"--strategy {strategy} searches the {STRATEGY_SPACE[strategy]} space; "
                                f"MODEL {model!r} does not match (use {STRATEGY_SPACE[strategy]} or a model file)")
        if executor not in ("local", "ray"):
            raise GraphoptError(f"--executor {executor!r}: choose local or ray")
        if workers < 1 or baselines < 0 or evaluate_epochs < 0:
            raise GraphoptError("--workers must be >= 1, --baselines and --evaluate-epochs >= 0")
        output.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(json.dumps([model, strategy, data, budget, seed]).encode()).hexdigest()[:16]
        with ResultStore.open(output / "runs.sqlite") as store:
            rec = store.get(key)
            if rec is not None and store.is_done(key) and (output / "best.json").is_file():
                out.print(f"[green]already done[/] ({key}); outputs in {output}")
                if evaluate_epochs > 0:
                    report = json.loads((output / "report.json").read_text())
                    _evaluate_and_report(report, output, strategy, data, seed, evaluate_epochs, baselines, store,
                                         key, executor, workers, address)
                return
            store.add_pending(key, lineage=[strategy, model])
            store.mark_running(key)
            try:
                graph, metrics, report = _run(strategy, data, _budget_scale(budget), seed)
            except Exception as e:
                store.fail(key, f"{type(e).__name__}: {e}")
                raise
            files = []
            for suffix in (".json", ".onnx", ".pt", ".py"):
                try:
                    files += save_model(graph, output / f"best{suffix}")
                except Exception as e:  # noqa: BLE001 - report which format failed, keep the others
                    console.print(f"[yellow]could not write best{suffix}: {escape(str(e))}[/]")
            report = {"strategy": strategy, "model": model, "budget": budget, "seed": seed, "metrics": metrics,
                      "expanded": expanded, **report}
            (output / "report.json").write_text(json.dumps(report, indent=1, default=str))
            store.finish(key, metrics, graph_path=output / "best.json")
            for f in files + [output / "report.json"]:
                out.print(f"wrote {f}")
            out.print(json.dumps(metrics, default=str))
            if evaluate_epochs > 0:
                _evaluate_and_report(report, output, strategy, data, seed, evaluate_epochs, baselines, store, key,
                                     executor, workers, address)


def _evaluate_and_report(report: dict[str, Any], output: Path, strategy: str, data: str | None, seed: int,
                         epochs: float, baselines: int, store, key: str, executor: str, workers: int,
                         address: str | None) -> None:  # noqa: ANN001
    from ..ir.serialize import atomic_write_bytes

    rows = _evaluate(strategy, report["path"], data, seed, epochs, baselines, store, key, executor, workers, address)
    base = [r["test"] for r in rows if r["role"] != "found"]
    found = next((r for r in rows if r["role"] == "found"), None)
    report["evaluation"] = {"epochs": epochs, "protocol": "fresh weights, identical recipe (SGD + cosine, batch 64)",
                            "rows": rows}
    if found is not None and base:
        report["evaluation"]["found_minus_random_test"] = found["test"] - sum(base) / len(base)
        out.print(f"found path: test {found['test']:.4f}; random paths: mean test {sum(base) / len(base):.4f} "
                  f"({len(base)})")
    atomic_write_bytes(output / "report.json", json.dumps(report, indent=1, default=str).encode())


def _check_file(path: Path, strategy: str) -> dict[str, Any]:
    from ..errors import GraphoptError
    from ..modelio import load_model
    from ..pass_api import get_pass

    g = load_model(path)
    pass_name = {"xnas": "expand-cell", "darts": "expand-cell", "s3": "expand-s3", "dps": "expand-dps"}[strategy]
    rep = get_pass(pass_name).fn(g)
    if not rep.get("edges", rep.get("blocks", 0)):
        raise GraphoptError(f"{path}: {pass_name} found no matching region ({rep}); this model has no "
                            f"{STRATEGY_SPACE[strategy]}-style region to search")
    return rep
