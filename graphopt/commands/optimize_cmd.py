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
        ("graphopt optimize model.onnx --recipe scratch -o out/",
         "retrain every candidate from scratch (the AutoGO paper's protocol)"),
        ("graphopt optimize model.onnx --device cuda --budget 1h -o out/", "train candidates on a GPU"),
        ("graphopt optimize model.onnx --workers 4 --budget 20m -o out/",
         "score 4 candidates at once in worker processes (one thread each)"),
        ("graphopt optimize model.onnx --executor ray --address auto --budget 1h -o out/",
         "score candidates on a running Ray cluster (every CPU of it)"),
        ("graphopt optimize model.onnx --resume 20261206-153000-ab12cd", "continue a killed run"),
    ))
    @user_errors
    def optimize(
        ctx: typer.Context,
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
        recipe: Annotated[str, typer.Option(help="distill (default: a trained model's weights are kept; each "
                                                 "replaced segment first learns to reproduce the original's "
                                                 "activations, then the network fine-tunes against the "
                                                 "original's logits), finetune (inherited weights, labels only) "
                                                 "or scratch (every candidate re-initialised, the AutoGO paper's "
                                                 "protocol).")] = "distill",
        lr: Annotated[float | None, typer.Option(help="Fine-tune learning rate (SGD); default per recipe: distill "
                                                      "0.001, finetune 0.02, scratch 0.05. Lower it if training "
                                                      "diverges.")] = None,
        distill_steps: Annotated[int, typer.Option(help="--recipe distill: segment-local distillation steps per "
                                                        "candidate (x4 for the finalists).")] = 60,
        device: Annotated[str, typer.Option(help="auto (a CUDA GPU when PyTorch sees one), cpu or cuda.")] = "auto",
        iterations: Annotated[int | None, typer.Option(help="Evolution iterations (default: as many as the "
                                                            "budget allows).")] = None,
        parents: Annotated[int, typer.Option(help="Parents per iteration (grid-sampled from the front).")] = 4,
        mutants: Annotated[int, typer.Option(help="Mutants per parent.")] = 2,
        cost_window: Annotated[float, typer.Option(help="Keep mutants with cost ≤ this × the original's.")] = 1.10,
        score_steps: Annotated[int, typer.Option(help="SGD steps of the short fine-tune that scores a "
                                                      "candidate.")] = 40,
        inherit: Annotated[str, typer.Option(help="seed: every candidate is fine-tuned from the original's "
                                                  "weights (comparable scores); trained: children continue from "
                                                  "their parent's fine-tuned weights.")] = "seed",
        final_k: Annotated[int, typer.Option(help="Pareto candidates retrained at the end.")] = 3,
        max_drop: Annotated[float, typer.Option(help="The pick: the cheapest finalist whose validation accuracy is "
                                                     "at most this many points below the original's after the same "
                                                     "final training (else the most accurate at no more cost).")]
        = 0.5,
        final_epochs: Annotated[float, typer.Option(help="Epochs of the identical final recipe (fewer if the "
                                                         "budget ends first).")] = 2,
        train_size: Annotated[int | None, typer.Option(help="Use only this many training images.")] = None,
        val_fraction: Annotated[float, typer.Option(help="Share of each class of the training data held out as "
                                                         "the validation split that every selection reads.")]
        = 0.1,
        segments: Annotated[Path | None, typer.Option(help="Segment database (default: the shipped one).")] = None,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        shrink_share: Annotated[float | None, typer.Option(
            help="Share of mutations that remove the least important inner channels of a conv chain, keeping the "
                 "trained weights of the rest (default 0.5 with distill/finetune, 0 with scratch); the others "
                 "replace segments (AutoGO).")] = None,
        workers: Annotated[int, typer.Option(help="Candidates scored at once, one thread each. 1 (default): one "
                                                  "at a time in this process; N: N worker processes (--executor "
                                                  "local); with --executor ray: caps the cluster's CPUs, and sizes "
                                                  "the local instance started without --address.")] = 1,
        executor: Annotated[str, typer.Option(help="local (worker processes on this machine) or ray (a Ray "
                                                   "cluster; pip install 'graphopt[ray]').")] = "local",
        address: Annotated[str | None, typer.Option(help="--executor ray: 'auto' or HOST:PORT of a running "
                                                         "cluster; without it a local Ray instance is started.")]
        = None,
        sync_generations: Annotated[bool, typer.Option(
            "--sync-generations", help="With several workers, wait for each iteration's candidates before picking "
                                       "the next parents: the same candidates and scores as --workers 1 for the "
                                       "same seed, with workers idle at iteration ends. Default: steady state "
                                       "(the next mutants are proposed while others are scored).")] = False,
        resume: Annotated[str | None, typer.Option(help="Resume a run: its id or folder under graphopt-runs/.")]
        = None,
        input_shape: Annotated[list[str] | None, typer.Option("--input-shape", "-s",
                                                              help="NAME=d0,d1,... for symbolic dims.")] = None,
    ) -> None:
        """Optimize a model with AutoGO: mutate segments, keep the accuracy/cost Pareto front, retrain the best.

        A trained model in, a cheaper model of the same accuracy out. Candidates are scored and picked on a
        validation split carved from the training data (10% per class); the test split is evaluated once, for
        the original and the pick, and both are printed. The original gets the same final fine-tune as the
        candidates. A model exported with a fixed batch (torch.onnx's default) is relaxed to a symbolic batch,
        checked per sample, and best.onnx keeps the fixed input shape. The budget covers everything (search,
        final training, outputs).

        Every scored candidate is committed to graphopt-runs/RUN/runs.sqlite at once; Ctrl-C or a kill leaves a
        run that --resume RUN continues without re-scoring anything (the run's saved settings are used; a
        differing setting given with --resume is refused, except --workers, --executor and --address).

        --workers N (or --executor ray) scores candidates in parallel: the driver proposes mutants and commits
        every result; a worker that dies has its candidate scored again (twice at most, then it is recorded as
        failed with the error).
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
                             ponas_oversample=ponas_oversample, recipe=recipe, lr=lr, distill_steps=distill_steps,
                             device=device, val_fraction=val_fraction, max_drop=max_drop / 100, workers=workers,
                             executor=executor, address=address, sync_generations=sync_generations,
                             shrink_share=shrink_share)
        if resume:
            cfg_file = run_dir / "config.json"
            if cfg_file.exists():
                saved = json.loads(cfg_file.read_text())
                saved["cost_window"] = tuple(saved["cost_window"])
                saved.setdefault("inherit", "trained")  # runs saved before the option existed wrote weights back
                saved.setdefault("recipe", "finetune")  # runs saved before recipes existed fine-tuned on labels
                given = _explicit_options(ctx)
                # the run's own settings win, so resumed work stays comparable; say so rather than ignore a flag
                clash = [f"--{k.replace('_', '-')} {getattr(cfg, k)!r} (the run has {saved[k]!r})"
                         for k in given if k in saved and k not in RUNTIME_FIELDS
                         and _norm(saved[k]) != _norm(getattr(cfg, k))]
                if clash:
                    raise GraphoptError(f"--resume {resume}: a resumed run keeps the settings it started with; "
                                        f"{'; '.join(clash)}. Drop these options, or start a new run")
                # where candidates are scored is not a setting of the search: this invocation's choice holds
                saved.update({k: getattr(cfg, k) for k in RUNTIME_FIELDS})
                cfg = OptimizeConfig(**{k: v for k, v in saved.items() if k in OptimizeConfig.__dataclass_fields__})
                console.print(f"resuming {run_dir.name} with its saved settings (config.json)")
        else:
            run_dir = Path("graphopt-runs") / new_run_id()
        g = load_for_cli(model, input_shape)  # a bad model file fails here, before anything is written
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                      TimeElapsedColumn(), console=console, transient=False) as prog:
            import time

            t0 = time.monotonic()
            task = prog.add_task("budget", total=cfg.budget_seconds, info="scoring the original model")

            def progress(ev: dict) -> None:
                front = ev.get("front", [])
                best = max((s for s, _ in front), default=float("nan"))
                prog.update(task, completed=min(cfg.budget_seconds, time.monotonic() - t0),
                            info=f"iteration {ev['iteration'] + 1}: {ev['scored']} scored, front {len(front)}, "
                                 f"best score {best:.4f}")

            try:
                res = run_optimize(g, output, cfg, run_dir=run_dir, progress=progress,
                                   log=lambda s: prog.console.print(s, markup=False))
            except KeyboardInterrupt:
                console.print(f"interrupted; finished candidates are saved. Continue with --resume {run_dir.name}")
                raise typer.Exit(130) from None
            prog.update(task, completed=cfg.budget_seconds)
        for k, v in res["summary"].items():
            out.print(f"{k}: {v}", markup=False)
        for f in res["files"]:
            out.print(f"wrote {f}")


#: settings of where candidates are scored, not of the search: a resumed run takes them from its command line
RUNTIME_FIELDS = ("workers", "executor", "address")

#: CLI option name -> OptimizeConfig field, where they differ
_FIELD = {"parents": "parents_per_iter", "mutants": "mutants_per_parent", "budget": "budget_seconds",
          "segments": "segments_db"}


def _explicit_options(ctx: typer.Context) -> list[str]:
    """OptimizeConfig fields whose option the user typed on the command line (not left at its default)."""
    from click.core import ParameterSource

    names = [n for n in ctx.params if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    return [_FIELD.get(n, n) for n in names if n not in ("model", "output", "resume", "input_shape")]


def _norm(v: object) -> object:
    return list(v) if isinstance(v, tuple | list) else v


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
