"""The ``graphopt`` command line (typer + rich).

MODEL is an ``.onnx`` file (external data included), a ``torch.export`` ``.pt2`` archive, a graphopt IR
``.json`` or a graphopt ``.pt`` bundle. Errors in user input print one line and exit with code 2.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    name="graphopt",
    help="Graph-centric optimizer for neural networks: lower PyTorch/ONNX models to a primitive IR, rewrite "
         "and search them, and re-emit runnable PyTorch and (NPU-ready) ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
from .commands.common import (  # noqa: E402  (re-exported for command modules)
    InputShape,
    ModelArg,
    _fmt_int,
    console,
    examples,
    load_for_cli,
    out,
    user_errors,
)
from .modelio import parse_input_shapes  # noqa: E402  (re-exported: the shapes every command takes)

__all__ = ["app", "console", "out", "ModelArg", "InputShape", "user_errors", "load_for_cli", "parse_input_shapes",
           "main"]


@app.command(epilog=examples(
    ("graphopt inspect model.onnx", "inputs/outputs, op histogram, parameters and FLOPs"),
    ("graphopt inspect model.onnx --nodes", "plus one row per node: op, shapes, FLOPs, params"),
    ("graphopt inspect model.onnx --proxies synflow,snip", "which layers drive each zero-cost score"),
    ("graphopt inspect model.onnx -s input=1,3,224,224 --json", "bind a symbolic input shape; machine-readable"),
))
@user_errors
def inspect(
    model: ModelArg,
    nodes: Annotated[bool, typer.Option("--nodes", help="Also print a per-node table (op, shapes, FLOPs, params).")]
    = False,
    input_shape: InputShape = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of tables.")] = False,
    trust_pickle: Annotated[bool, typer.Option(help="Allow pickled .pt modules (runs code from the file).")] = False,
    proxies: Annotated[str | None, typer.Option("--proxies", help="Also compute these zero-cost proxies (e.g. "
                                                "synflow,snip or all) and show each node's contribution.")] = None,
) -> None:
    """Summarize a model: inputs/outputs, op histogram, parameters and FLOPs (per node with --nodes)."""
    from .ir.cost import annotate_costs

    g = load_for_cli(model, input_shape, trust_pickle)
    total = annotate_costs(g)
    shown = g  # the graph whose costs are reported
    flops_note = None
    if total.flops is None and _only_batch_symbolic(g):
        # the usual convention (and what optimize compares): FLOPs per sample, with the batch dim bound to 1
        from .ir.infer import set_input_shapes

        shown = g.copy()
        set_input_shapes(shown, {v.name: [1, *v.type.shape[1:]] for v in shown.inputs})
        total = annotate_costs(shown)
        flops_note = "per sample (symbolic batch bound to 1)"
    hist = Counter(n.op for n in g.nodes)
    summary = {
        "model": str(model),
        "nodes": len(g),
        "inputs": {v.name: str(v.type) for v in g.inputs},
        "outputs": {v.name: str(v.type) for v in g.outputs},
        "params": total.params,
        "flops": total.flops,
        "ops": dict(hist.most_common()),
    }
    if flops_note:
        summary["flops_note"] = flops_note
    if nodes:
        summary["node_table"] = [
            {"name": n.name, "op": n.op, "inputs": [None if v is None else str(v.type) for v in n.inputs],
             "outputs": [str(o.type) for o in n.outputs], **n.meta["cost"]} for n in shown.nodes]
    if proxies:
        from .commands.score_cmd import proxy_summary

        summary["proxies"] = proxy_summary(g, proxies)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(f"[bold]{escape(str(model))}[/]  {len(g)} nodes, {_fmt_int(total.params)} params, "
              f"{_fmt_int(total.flops)} FLOPs"
              + (f" {flops_note}" if flops_note else "" if total.flops is not None
                 else " (symbolic dims: bind them with --input-shape)"))
    io = Table("kind", "name", "type", title="Inputs and outputs")
    for v in g.inputs:
        io.add_row("input", escape(v.name), escape(str(v.type)))
    for v in g.outputs:
        io.add_row("output", escape(v.name), escape(str(v.type)))
    out.print(io)
    ops = Table("op", "count", title="Op histogram")
    for k, c in hist.most_common():
        ops.add_row(k, str(c))
    out.print(ops)
    if nodes:
        t = Table("#", "node", "op", "output", "FLOPs", "params", title="Nodes")
        for i, n in enumerate(shown.nodes):
            c = n.meta["cost"]
            t.add_row(str(i), escape(n.name), n.op, escape(", ".join(str(o.type) for o in n.outputs)),
                      _fmt_int(c["flops"]),
                      _fmt_int(c["params"]))
        out.print(t)
    if proxies:
        from .commands.score_cmd import print_proxy_tables

        print_proxy_tables(summary["proxies"])


def _only_batch_symbolic(g) -> bool:
    """Every symbolic dim of every input is its dim 0 (a dynamic batch), and there is at least one."""
    shapes = [v.type.shape for v in g.inputs if v.type is not None and v.type.shape is not None]
    if len(shapes) != len(g.inputs) or not shapes:
        return False
    return all(all(isinstance(d, int) for d in s[1:]) for s in shapes) and any(
        s and not isinstance(s[0], int) for s in shapes)


@app.command(epilog=examples(
    ("graphopt convert model.onnx -o model.py", "readable standalone PyTorch source (+ model_weights.pt)"),
    ("graphopt convert model.pt2 -o model.onnx --opset 17", "torch.export archive to ONNX, checked numerically"),
    ("graphopt convert model.onnx -o model.json", "graphopt IR (+ .safetensors weights) for your own passes"),
))
@user_errors
def convert(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file: .onnx, .pt, .py or .json.")],
    opset: Annotated[int, typer.Option(help="ONNX opset for .onnx output.")] = 18,
    input_shape: InputShape = None,
    check: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the output numerically against the "
                                                                     "input model.")] = True,
    trust_pickle: Annotated[bool, typer.Option(help="Allow pickled .pt modules (runs code from the file).")] = False,
) -> None:
    """Convert between model formats through the IR (e.g. .onnx -> readable PyTorch .py)."""
    from .compare import verify
    from .ir.verify import verify as verify_ir
    from .modelio import WRITABLE, save_model

    if output.suffix.lower() not in WRITABLE:
        from .errors import GraphoptError

        raise GraphoptError(f"cannot write {output}: choose one of {', '.join(WRITABLE)}")
    g = load_for_cli(model, input_shape, trust_pickle)
    verify_ir(g)
    files = save_model(g, output, opset=opset)
    if check:
        ref = model if model.suffix == ".onnx" else g
        rep = verify(ref, _reload_written(output, files))
        console.print(f"verify: {rep}", markup=False)
        if not rep.ok:
            for f in files:
                f.unlink(missing_ok=True)
            console.print("[bold red]error:[/] the converted model does not reproduce the original; nothing written")
            raise typer.Exit(1)
    for f in files:
        out.print(f"wrote {f}")


def _reload_written(output: Path, files: list[Path]):
    """Load what was written, as a user would, so the check covers the files themselves."""
    if output.suffix == ".onnx":
        return output
    if output.suffix == ".py":
        import torch

        from .backends.torch import load_source

        module = load_source(output.read_text())()
        module.load_state_dict(torch.load(files[1], weights_only=True))
        return module.eval()
    from .modelio import load_model

    return load_model(output)


@app.command("passes", epilog=examples(
    ("graphopt passes", "every built-in pass and installed plugin, with what it requires"),
    ("graphopt passes -p my_passes", "also the passes your module my_passes registers"),
))
def list_passes(
    plugin: Annotated[list[str] | None, typer.Option("-p", "--pass-module", help="Also load passes from "
                                                     "pkg.mod or pkg.mod:fn.")] = None,
) -> None:
    """List every registered pass (built-in, plugins from entry points, and -p modules)."""
    from .pass_api import all_passes, load_pass_module

    for spec in plugin or []:
        load_pass_module(spec)
    t = Table("pass", "description", "requires", title="Graph passes")
    for name, p in all_passes().items():
        t.add_row(name, p.description, ", ".join(p.requires))
    out.print(t)


@app.command(epilog=examples(
    ("graphopt transform model.onnx -P \"(canonicalize,fold-constants,cse,dce)*,fuse-conv-bn\" -o out.onnx",
     "clean up to a fixed point, then fold BatchNorm into the convolutions"),
    ("graphopt transform net.onnx -p my_passes -P fuse-swish,dce -o net_opt.onnx", "run your own pass"),
    ("graphopt transform net.onnx -P canonicalize --print-after all -o net.json", "see the graph after each pass"),
))
@user_errors
def transform(
    model: ModelArg,
    pipeline: Annotated[str, typer.Option("--pipeline", "-P", help="Comma-separated passes; (a,b)* repeats a group "
                                                                   "to a fixed point; name[k=v] sets options.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file: .onnx, .pt, .py or .json.")],
    plugin: Annotated[list[str] | None, typer.Option("-p", "--pass-module", help="Load user passes from pkg.mod "
                                                     "or pkg.mod:fn.")] = None,
    print_after: Annotated[list[str] | None, typer.Option("--print-after", help="Dump the graph after this pass "
                                                          "('all' for every pass).")] = None,
    check: Annotated[bool, typer.Option("--verify/--no-verify", help="Check each pass numerically.")] = True,
    on_error: Annotated[str, typer.Option(help="stop: abort on a failing pass; skip: drop its result and go on.")]
    = "stop",
    input_shape: InputShape = None,
    opset: Annotated[int, typer.Option(help="ONNX opset for .onnx output.")] = 18,
) -> None:
    """Run a pass pipeline (built-in or your own) over a model and write the result."""
    from .modelio import save_model
    from .pass_api import load_pass_module
    from .pass_manager import PassManager

    for spec in plugin or []:
        load_pass_module(spec)
    g = load_for_cli(model, input_shape)
    pm = PassManager(pipeline, verify_numerics=check, on_error=on_error, print_after=set(print_after or []),
                     out=sys.stdout)
    res = pm.run(g)
    t = Table("pass", "runs", "time (ms)", "changes", "status", title="Pipeline")
    for name, s in res.summary().items():
        t.add_row(name, str(s["runs"]), f"{s['seconds'] * 1e3:.1f}",
                  ", ".join(f"{k}={v}" for k, v in s["changes"].items()) or "-",
                  "[red]failed[/]" if s["failed"] else "ok")
    console.print(t)
    for r in res.failed:
        console.print(f"[yellow]skipped:[/] {escape(str(r.error))}")
    for f in save_model(res.graph, output, opset=opset):
        out.print(f"wrote {f}")


def _register_subcommands() -> None:
    """Commands that live in their own modules (export, segments, predictor, optimize, ...)."""
    import importlib

    for mod in ("export_cmd", "segments_cmd", "predictor_cmd", "optimize_cmd", "score_cmd", "search_cmd",
                "latency_cmd"):
        try:
            m = importlib.import_module(f"graphopt.commands.{mod}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("graphopt.commands"):
                continue
            raise
        m.register(app)


_register_subcommands()


def main() -> None:
    """The ``graphopt`` console script: Python warnings print as one ``warning: ...`` line each (no source
    path and line, each distinct message once), like the CLI's own warnings."""
    import warnings

    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings API
        text = str(message)
        if text not in shown:
            shown.add(text)
            console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)

    warnings.showwarning = show
    app()


if __name__ == "__main__":
    main()
