"""``graphopt segments``: build and inspect AutoGO segment databases.

    graphopt segments build model_a.onnx zoo:resnet20 nb201:200 -o segments.db
    graphopt segments build --default -o models/data/segments.db     # the shipped database, reproducibly
    graphopt segments show segments.db [--top 20] [--segment 3] [--json]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import _fmt_int, examples, user_errors


def register(app: typer.Typer) -> None:
    """Add the ``segments`` sub-app to the main CLI."""
    from rich.console import Console
    from rich.table import Table

    from ..errors import GraphoptError

    console = Console(stderr=True)
    out = Console()
    seg = typer.Typer(help="AutoGO segment mining: build a segment database from a corpus of models, inspect one.",
                      no_args_is_help=True)

    @seg.command("build", epilog=examples(
        ("graphopt segments build a.onnx b.onnx -o seg.db", "mine segments from your own models"),
        ("graphopt segments build --default -o seg.db", "rebuild the shipped database (zoo + NB201 cells)"),
    ))
    @user_errors
    def build(
        corpus: Annotated[list[str] | None, typer.Argument(
            help="Corpus items: model files (.onnx/.pt2/.json/.pt), zoo:NAME (a graphopt.models model), "
                 "nb201:N (N NAS-Bench-201 networks at evenly spaced indices) or nb201:ARCH_STR.",
            show_default=False)] = None,
        output: Annotated[Path, typer.Option("-o", "--output", help="Database file to write (SQLite).")]
        = Path("segments.db"),
        default: Annotated[bool, typer.Option("--default", help="Use the default corpus (every zoo model + 200 "
                                                                "NB201 networks), as for the shipped database.")]
        = False,
        vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size (node tokens + merges; paper: 2000).")]
        = 2000,
        max_piece_len: Annotated[int, typer.Option(help="Longest piece in nodes (paper's largest segment: 16).")]
        = 16,
        min_frequency: Annotated[int, typer.Option(help="Fewest corpus occurrences for a BPE merge.")] = 2,
    ) -> None:
        """Mine a BPE vocabulary over the corpus and store its unique segments (dedup by isomorphism)."""
        from graphopt.passes.autogo import SegmentDB, mine
        from graphopt.passes.autogo.corpus import DEFAULT_CORPUS, corpus_graphs

        items = list(corpus or [])
        if default:
            items = DEFAULT_CORPUS + items
        if not items:
            raise GraphoptError("segments build: give corpus items (files, zoo:NAME, nb201:N) or --default")
        if vocab_size < 1:
            raise GraphoptError(f"--vocab-size must be positive, got {vocab_size}")
        from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        t0 = time.perf_counter()
        names, graphs = [], []
        with Progress(SpinnerColumn(), TextColumn("[bold]loading corpus"), MofNCompleteColumn(),
                      TextColumn("{task.fields[last]}"), TimeElapsedColumn(), console=console) as prog:
            task = prog.add_task("load", total=None, last="")
            for name, g in corpus_graphs(items):
                names.append(name)
                graphs.append(g)
                prog.update(task, advance=1, last=escape(f"{name}: {len(g)} nodes"))
        t1 = time.perf_counter()
        vocab = mine(graphs, vocab_size, max_piece_len=max_piece_len, min_frequency=min_frequency)
        t2 = time.perf_counter()
        db = SegmentDB.build(graphs, vocab, names)
        t3 = time.perf_counter()
        # No timings in the file: the same command rebuilds a byte-identical database.
        db.info.update(corpus=items, vocab_size=vocab_size, max_piece_len=max_piece_len, min_frequency=min_frequency)
        db.save(output)
        multi = sum(1 for r in db if r.n_nodes > 1)
        out.print(f"wrote {output}: {len(db)} unique segments ({multi} multi-node) from {len(graphs)} graphs, "
                  f"{len(vocab.alphabet)} node tokens + {len(vocab.merges)} merges; "
                  f"{output.stat().st_size / 1e6:.2f} MB; load {t1 - t0:.1f}s, mine {t2 - t1:.1f}s, "
                  f"dedup {t3 - t2:.1f}s", highlight=False, soft_wrap=True)

    @seg.command("show", epilog=examples(
        ("graphopt segments show seg.db --top 10 --min-nodes 3", "the most frequent multi-node segments"),
        ("graphopt segments show seg.db --segment 42", "one segment in full, with its IR"),
    ))
    @user_errors
    def show(
        db_path: Annotated[Path, typer.Argument(help="Segment database (SQLite).", show_default=False)],
        top: Annotated[int, typer.Option(help="How many segments to list (most frequent first).")] = 20,
        segment: Annotated[int | None, typer.Option(help="Show one segment in full, with its IR.")] = None,
        min_nodes: Annotated[int, typer.Option(help="Only list segments with at least this many nodes.")] = 1,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    ) -> None:
        """Summarize a segment database: size, vocabulary, most frequent segments (or one segment in full)."""
        from graphopt.passes.autogo import SegmentDB

        try:
            db = SegmentDB.open(db_path)
        except ValueError as e:
            raise GraphoptError(str(e)) from None
        if segment is not None:
            try:
                r = db.get(segment)
            except KeyError as e:
                raise GraphoptError(str(e.args[0])) from None
            doc = {k: getattr(r, k) for k in ("id", "n_nodes", "n_in", "n_out", "in_shapes", "out_shapes",
                                              "flops", "params", "count", "n_graphs", "ops", "propagatable",
                                              "sources")}
            if as_json:
                out.print_json(json.dumps({**doc, "ir": r.ir}))
                return
            for k, v in doc.items():
                out.print(f"[bold]{k}[/]: {escape(str(v))}", highlight=False)
            out.print(r.graph().format(), highlight=False, markup=False)
            return
        recs = [r for r in db if r.n_nodes >= min_nodes][:top]
        sizes = [r.n_nodes for r in db]
        summary = {"file": str(db_path), "segments": len(db), "multi_node": sum(1 for s in sizes if s > 1),
                   "nodes_min": min(sizes, default=0), "nodes_max": max(sizes, default=0),
                   "nodes_mean": round(sum(sizes) / max(len(sizes), 1), 2),
                   "propagatable": sum(1 for r in db if r.propagatable),
                   "vocab": None if db.vocab is None else {"tokens": len(db.vocab.alphabet),
                                                           "merges": len(db.vocab.merges)},
                   "info": db.info}
        if as_json:
            out.print_json(json.dumps({**summary, "top": [
                {k: getattr(r, k) for k in ("id", "ops", "in_shapes", "out_shapes", "flops", "count", "n_graphs")}
                for r in recs]}))
            return
        out.print(f"[bold]{db_path}[/]: {summary['segments']} segments ({summary['multi_node']} multi-node, "
                  f"{summary['nodes_min']}-{summary['nodes_max']} nodes, mean {summary['nodes_mean']}), "
                  f"{summary['propagatable']} resolution-propagatable; vocabulary {summary['vocab']}",
                  highlight=False)
        corpus = db.info.get("corpus")
        if corpus:
            out.print(f"corpus: {' '.join(corpus)} ({db.info.get('n_graphs')} graphs)", highlight=False)
        t = Table("#", "ops", "in", "out", "FLOPs", "count", "graphs", title="Most frequent segments")
        for r in recs:
            t.add_row(str(r.id), " ".join(r.ops), _shapes(r.in_shapes), _shapes(r.out_shapes), _fmt_int(r.flops),
                      str(r.count), str(r.n_graphs))
        out.print(t)

    app.add_typer(seg, name="segments")


def _shapes(shapes: list) -> str:
    return " ".join("x".join(str(d) for d in s) if s is not None else "?" for s in shapes)


