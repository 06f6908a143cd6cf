"""``graphopt predictor``: train and apply the PSC (Prefix–Segment–Context) accuracy predictor (AutoGO)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ModelArg, console, examples, load_for_cli, out, user_errors


def register(app: typer.Typer) -> None:
    predictor = typer.Typer(help="PSC accuracy predictor (AutoGO): train it on NAS-Bench-201, score models.",
                            no_args_is_help=True)

    @predictor.command("train", epilog=examples(
        ("graphopt predictor train", "reproduce the shipped weights (models/weights/psc_nb201.pt)"),
        ("graphopt predictor train --limit 500 --epochs 5 -o psc_small.pt", "a quick run on 500 networks"),
        ("graphopt predictor train --mode whole -o whole.pt", "the whole-graph GNN baseline"),
    ))
    @user_errors
    def train(
        output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the weights (.pt).")]
        = Path("models/weights/psc_nb201.pt"),
        data: Annotated[str, typer.Option(help="Training data: nb201 (all 15,625 NAS-Bench-201 cells, CIFAR-10 "
                                               "200-epoch test accuracy).")] = "nb201",
        epochs: Annotated[int, typer.Option(help="Training epochs.")] = 40,
        splits_per_graph: Annotated[int, typer.Option(help="Random (P, S, C) splits drawn per graph per epoch.")]
        = 1,
        lr: Annotated[float, typer.Option(help="Adam learning rate, cosine-decayed (paper: 1e-4 without decay; "
                                               "5e-3 reaches the paper's ranking quality in far fewer CPU "
                                               "steps).")] = 5e-3,
        batch_size: Annotated[int, typer.Option(help="Splits per batch.")] = 32,
        mode: Annotated[str, typer.Option(help="psc, or whole (the whole-graph GNN baseline).")] = "psc",
        cells: Annotated[int, typer.Option("--cells", help="NB201 cells per stage (N); the zoo default is 5.")] = 5,
        limit: Annotated[int | None, typer.Option(help="Use only the first N networks (quick runs).")] = None,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        effective: Annotated[bool, typer.Option(help="Read only the data-dependent graph (dead `x * 0` paths "
                                                     "removed); --no-effective reads every lowered node.")] = True,
        threads: Annotated[int, typer.Option(help="torch intra-op threads (1 by default: the small sparse ops "
                                                  "run slower multi-threaded on a busy machine).")] = 1,
    ) -> None:
        """Train the predictor and save weights + config (defaults reproduce models/weights/psc_nb201.pt).

        All 15,625 networks, 40 epochs: about 20-30 min on 2 cores, after a one-time feature build (~10 min,
        cached in ~/.cache/graphopt). Deterministic for a given seed.
        """
        import torch

        from ..errors import GraphoptError
        from ..predictors.nb201_dataset import nb201_packed
        from ..predictors.psc import PSCConfig, train_predictor

        if data != "nb201":
            raise GraphoptError(f"--data {data!r}: only 'nb201' is available")
        if mode not in ("psc", "whole"):
            raise GraphoptError(f"--mode {mode!r}: choose psc or whole")
        if threads:
            torch.set_num_threads(threads)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console.print("building/loading NB201 features (first run: a few minutes, then cached)...")
        with Progress(TextColumn("[bold]lowering NB201 networks"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console) as prog:
            task = prog.add_task("lower", total=None)
            packed = nb201_packed(C=16, N=cells, limit=limit, effective=effective,
                                  progress=lambda i, n: prog.update(task, completed=i, total=n))
            prog.update(task, completed=len(packed), total=len(packed))  # also when read from the cache
        cfg = PSCConfig(mode=mode, epochs=epochs, splits_per_graph=splits_per_graph, lr=lr, batch_size=batch_size,
                        seed=seed, effective=effective)
        pred = train_predictor(packed, cfg, log=lambda s: console.print("  " + s, markup=False))
        pred.cfg.train_info.update({"data": data, "cells_per_stage": cells, "limit": limit})
        pred.save(output)
        out.print(f"wrote {output} ({len(packed)} graphs, {pred.cfg.train_info['seconds']} s)")

    @predictor.command("score", epilog=examples(
        ("graphopt predictor score model.onnx", "predicted accuracy with the shipped NB201 weights"),
        ("graphopt predictor score model.onnx --weights psc_small.pt", "with weights you trained"),
    ))
    @user_errors
    def score(
        model: ModelArg,
        weights: Annotated[Path | None, typer.Option(help="Predictor weights (default: the shipped NB201 "
                                                          "ones).")] = None,
        input_shape: Annotated[list[str] | None, typer.Option("--input-shape", "-s",
                                                              help="NAME=d0,d1,... for symbolic dims.")] = None,
    ) -> None:
        """Predicted accuracy of a model (mean PSC over its splits)."""
        from ..predictors.psc import PSCPredictor, default_weights_path

        pred = PSCPredictor.load(weights or default_weights_path())
        g = load_for_cli(model, input_shape)
        out.print(f"{pred.score_graph(g):.3f}")

    app.add_typer(predictor, name="predictor")
