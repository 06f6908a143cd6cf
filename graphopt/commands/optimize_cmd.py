"""``graphopt optimize``: the main job — give a model, get better models (AutoGO)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import ModelArg, console, examples, load_for_cli, out, user_errors


def register(app: typer.Typer) -> None:
    @app.command(epilog=examples(
        ("graphopt optimize model.onnx -o out/", "5-minute search on the bundled CIFAR-10 subset"),
        ("graphopt optimize model.onnx --data cifar10 --budget 20m -o out/", "full CIFAR-10 from the shared data"),
        ("graphopt optimize mynet.py:Net -s 1,3,32,32 -o out/", "a PyTorch class from source (or a build function)"),
        ("graphopt optimize model.onnx --target ethos-u55-like --budget 20m -o out/",
         "accuracy against the NPU profile's latency estimate"),
        ("graphopt optimize model.onnx --ranker proxy:nwot --budget 5m -o out/",
         "rank mutants by a zero-cost proxy instead of fine-tuning them"),
        ("graphopt optimize model.onnx --resume 20261206-153000-ab12cd", "continue a killed run"),
    ))
    @user_errors
    def optimize(
        model: ModelArg,
        output: Annotated[Path, typer.Option("-o", "--output", help="Output folder: best.onnx, best.pt, best.py, "
                                                                    "pareto.json, report.html.")] = Path("out"),
        data: Annotated[str, typer.Option(help="cifar10 (from $GRAPHOPT_DATA_DIR or ../shared/data), "
                                               "cifar10-demo (bundled subset), an ImageFolder dir, an .npz "
                                               "with x/y, or a sequence task for token models (assoc_recall, "
                                               "selective_copy).")] = "cifar10-demo",
        objective: Annotated[str, typer.Option(help="accuracy,flops, accuracy,latency (onnxruntime, 1 thread) or "
                                                    "accuracy,npu (analytic latency on --target).")]
        = "accuracy,flops",
        target: Annotated[str | None, typer.Option(help="NPU profile (generic-npu-int8, ethos-u55-like, "
                                                        "edgetpu-like or a .toml); implies accuracy,npu.")] = None,
        budget: Annotated[str, typer.Option(help="Wall-clock budget for the search, e.g. 90s, 20m, 2h.")] = "5m",
        ranker: Annotated[str, typer.Option(help="train (short fine-tune, val accuracy), tse (training-speed "
                                                 "estimate), psc (PSC predictor, no training), ponas (train, but "
                                                 "PO-NAS picks which mutants are worth training) or proxy:NAME "
                                                 "(a zero-cost proxy, e.g. proxy:nwot; no training).")] = "train",
        ponas_oversample: Annotated[int, typer.Option(help="--ranker ponas: mutants proposed per mutant "
                                                           "trained.")] = 3,
        iterations: Annotated[int, typer.Option(help="Evolution iterations.")] = 5,
        parents: Annotated[int, typer.Option(help="Parents per iteration (grid-sampled from the front).")] = 4,
        mutants: Annotated[int, typer.Option(help="Mutants per parent.")] = 2,
        cost_window: Annotated[float, typer.Option(help="Keep mutants with cost ≤ this × the original's.")] = 1.10,
        score_steps: Annotated[int, typer.Option(help="SGD steps of the short fine-tune that scores a "
                                                      "candidate.")] = 40,
        inherit: Annotated[str, typer.Option(help="seed: every candidate is fine-tuned from the original's "
                                                  "weights (comparable scores); trained: children continue from "
                                                  "their parent's fine-tuned weights.")] = "seed",
        final_k: Annotated[int, typer.Option(help="Pareto candidates retrained at the end.")] = 3,
        final_epochs: Annotated[int, typer.Option(help="Epochs of the identical final recipe.")] = 2,
        train_size: Annotated[int | None, typer.Option(help="Use only this many training images.")] = None,
        segments: Annotated[Path | None, typer.Option(help="Segment database (default: the shipped one).")] = None,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        resume: Annotated[str | None, typer.Option(help="Resume a run: its id or folder under graphopt-runs/.")]
        = None,
        input_shape: Annotated[list[str] | None, typer.Option("--input-shape", "-s",
                                                              help="NAME=d0,d1,... for symbolic dims.")] = None,
    ) -> None:
        """Optimize a model with AutoGO: mutate segments, keep the accuracy/cost Pareto front, retrain the best.

        Every scored candidate is committed to graphopt-runs/RUN/runs.sqlite at once; Ctrl-C or a kill leaves a
        run that --resume RUN continues without re-scoring anything.
        """
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from ..errors import GraphoptError
        from ..eval.store import new_run_id
        from ..search.autogo import OptimizeConfig, parse_budget
        from ..search.autogo import optimize as run_optimize

        if target and objective == "accuracy,flops":
            objective = "accuracy,npu"
        parts = [p.strip() for p in objective.split(",")]
        if len(parts) != 2 or parts[0] != "accuracy":
            raise GraphoptError(f"--objective {objective!r}: write accuracy,flops or accuracy,latency")
        run_dir = _run_dir(resume)
        cfg = OptimizeConfig(data=data, objective=parts[1], ranker=ranker, budget_seconds=parse_budget(budget),
                             iterations=iterations, parents_per_iter=parents, mutants_per_parent=mutants,
                             cost_window=(0.0, cost_window), score_steps=score_steps, inherit=inherit, final_k=final_k,
                             final_epochs=final_epochs, train_size=train_size, seed=seed,
                             segments_db=str(segments) if segments else None, target=target,
                             ponas_oversample=ponas_oversample)
        if resume:
            cfg_file = run_dir / "config.json"
            if cfg_file.exists():
                saved = json.loads(cfg_file.read_text())
                saved["cost_window"] = tuple(saved["cost_window"])
                saved.setdefault("inherit", "trained")  # runs saved before the option existed wrote weights back
                cfg = OptimizeConfig(**saved)  # the run's own settings win, so resumed work stays comparable
        else:
            run_dir = Path("graphopt-runs") / new_run_id()
        g = load_for_cli(model, input_shape)  # a bad model file fails here, before anything is written
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                      TimeElapsedColumn(), console=console, transient=False) as prog:
            task = prog.add_task("search", total=cfg.iterations, info="scoring the original model")

            def progress(ev: dict) -> None:
                front = ev.get("front", [])
                best = max((s for s, _ in front), default=float("nan"))
                prog.update(task, completed=ev["iteration"], info=f"{ev['scored']} scored, front {len(front)}, "
                                                                   f"best score {best:.4f}")

            try:
                res = run_optimize(g, output, cfg, run_dir=run_dir, progress=progress,
                                   log=lambda s: prog.console.print(s, markup=False))
            except KeyboardInterrupt:
                console.print(f"interrupted; finished candidates are saved. Continue with --resume {run_dir.name}")
                raise typer.Exit(130) from None
            prog.update(task, completed=cfg.iterations)
        for k, v in res["summary"].items():
            out.print(f"{k}: {v}", markup=False)
        for f in res["files"]:
            out.print(f"wrote {f}")


def _run_dir(resume: str | None) -> Path:
    from ..errors import GraphoptError

    if resume is None:
        return Path("graphopt-runs")
    p = Path(resume)
    if not p.exists():
        p = Path("graphopt-runs") / resume
    if not p.exists():
        raise GraphoptError(f"--resume {resume}: no run folder {resume} or graphopt-runs/{resume}")
    return p
