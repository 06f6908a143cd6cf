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
"""

from __future__ import annotations

import hashlib
import json
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


def register(app: typer.Typer) -> None:
    @app.command(epilog=examples(
        ("graphopt search nb201 --strategy xnas -o out/", "XNAS on the NAS-Bench-201 supernet"),
        ("graphopt search nb201 --strategy darts -o out/", "the DARTS baseline on the same supernet"),
        ("graphopt search vit_tiny --strategy s3 --budget 10m -o out/", "S3 over ViT widths and depths"),
        ("graphopt search hrnet_lite --strategy dps -o out/", "DPS on the HRNet-lite supernet"),
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
        output.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(json.dumps([model, strategy, data, budget, seed]).encode()).hexdigest()[:16]
        with ResultStore.open(output / "runs.sqlite") as store:
            rec = store.get(key)
            if rec is not None and store.is_done(key) and (output / "best.json").is_file():
                out.print(f"[green]already done[/] ({key}); outputs in {output}")
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
