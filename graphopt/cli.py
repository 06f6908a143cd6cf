"""The ``graphopt`` command line (typer + rich).

MODEL is an ``.onnx`` file (external data included), a ``torch.export`` ``.pt2`` archive, a graphopt IR
``.json`` or a graphopt ``.pt`` bundle. Errors in user input print one line and exit with code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="graphopt",
    help="Graph-centric optimizer for neural networks: lower PyTorch/ONNX models to a primitive IR, rewrite "
         "and search them, and re-emit runnable PyTorch and (NPU-ready) ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ModelArg = Annotated[Path, typer.Argument(help="Model file: .onnx, .pt2 (torch.export.save), .json (graphopt IR) "
                                               "or .pt (graphopt bundle).", show_default=False)]
InputShape = Annotated[list[str] | None, typer.Option(
    "--input-shape", "-s", help="Bind input shapes: NAME=d0,d1,... (repeat per input) or just d0,d1,... for a "
                                "single-input model. Needed where dims are symbolic and a static shape is "
                                "wanted.")]


def user_errors(fn):
    """Turn user-input errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import USER_ERRORS
        from .pass_api import PassError

        try:
            return fn(*args, **kwargs)
        except (*USER_ERRORS, PassError) as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_input_shapes(specs: list[str] | None, graph_inputs: list[str] | None = None) -> dict[str, list]:
    """``["x=1,3,32,32"]`` → ``{"x": [1, 3, 32, 32]}``; a bare ``1,3,32,32`` names the only input."""
    from .errors import GraphoptError

    shapes: dict[str, list] = {}
    for s in specs or []:
        name, sep, dims = s.rpartition("=")
        if not sep:
            if not graph_inputs or len(graph_inputs) != 1:
                raise GraphoptError(f"--input-shape {s!r}: name the input (NAME=d0,d1,...); the model's inputs are "
                                    f"{', '.join(graph_inputs or []) or 'unknown'}")
            name = graph_inputs[0]
        try:
            shapes[name] = [int(d) if d.strip().lstrip("-").isdigit() else d.strip() for d in dims.split(",")]
        except ValueError as e:
            raise GraphoptError(f"--input-shape {s!r}: dims must be integers or symbol names") from e
        if any(isinstance(d, int) and d < 0 for d in shapes[name]):
            raise GraphoptError(f"--input-shape {s!r}: negative dimension")
    return shapes


def load_for_cli(model: Path, input_shape: list[str] | None = None, trust_pickle: bool = False):
    from .ir.infer import set_input_shapes
    from .modelio import load_model

    g = load_model(model, trust=trust_pickle)
    if input_shape:
        set_input_shapes(g, parse_input_shapes(input_shape, [v.name for v in g.inputs]))
    return g


def _fmt_int(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


@app.command()
@user_errors
def inspect(
    model: ModelArg,
    nodes: Annotated[bool, typer.Option("--nodes", help="Also print a per-node table (op, shapes, FLOPs, params).")]
    = False,
    input_shape: InputShape = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of tables.")] = False,
    trust_pickle: Annotated[bool, typer.Option(help="Allow pickled .pt modules (runs code from the file).")] = False,
) -> None:
    """Summarize a model: inputs/outputs, op histogram, parameters and FLOPs (per node with --nodes)."""
    from .ir.cost import annotate_costs

    g = load_for_cli(model, input_shape, trust_pickle)
    total = annotate_costs(g)
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
    if nodes:
        summary["node_table"] = [
            {"name": n.name, "op": n.op, "inputs": [None if v is None else str(v.type) for v in n.inputs],
             "outputs": [str(o.type) for o in n.outputs], **n.meta["cost"]} for n in g.nodes]
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(f"[bold]{model}[/]  {len(g)} nodes, {_fmt_int(total.params)} params, {_fmt_int(total.flops)} FLOPs"
              + ("" if total.flops is not None else " (symbolic dims: bind them with --input-shape)"))
    io = Table("kind", "name", "type", title="Inputs and outputs")
    for v in g.inputs:
        io.add_row("input", v.name, str(v.type))
    for v in g.outputs:
        io.add_row("output", v.name, str(v.type))
    out.print(io)
    ops = Table("op", "count", title="Op histogram")
    for k, c in hist.most_common():
        ops.add_row(k, str(c))
    out.print(ops)
    if nodes:
        t = Table("#", "node", "op", "output", "FLOPs", "params", title="Nodes")
        for i, n in enumerate(g.nodes):
            c = n.meta["cost"]
            t.add_row(str(i), n.name, n.op, ", ".join(str(o.type) for o in n.outputs), _fmt_int(c["flops"]),
                      _fmt_int(c["params"]))
        out.print(t)


@app.command()
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
        if output.suffix == ".onnx":
            rep = verify(ref, output)
        else:
            rep = verify(ref, g.copy())
        console.print(f"verify: {rep}")
        if not rep.ok:
            for f in files:
                f.unlink(missing_ok=True)
            console.print("[bold red]error:[/] the converted model does not reproduce the original; nothing written")
            raise typer.Exit(1)
    for f in files:
        out.print(f"wrote {f}")


@app.command("passes")
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


@app.command()
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
        console.print(f"[yellow]skipped:[/] {r.error}")
    for f in save_model(res.graph, output, opset=opset):
        out.print(f"wrote {f}")


def _register_subcommands() -> None:
    """Commands that live in their own modules (export, segments, predictor, optimize, ...)."""
    import importlib

    for mod in ("export_cmd", "segments_cmd", "predictor_cmd", "optimize_cmd", "score_cmd", "search_cmd"):
        try:
            m = importlib.import_module(f"graphopt.commands.{mod}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("graphopt.commands"):
                continue
            raise
        m.register(app)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
