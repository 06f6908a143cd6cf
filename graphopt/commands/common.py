"""Pieces shared by all CLI commands: argument types, error handling, model loading."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
out = Console()

ModelArg = Annotated[Path, typer.Argument(help="Model file: .onnx, .pt2 (torch.export.save), .json (graphopt IR), "
                                               ".pt (graphopt bundle), or PyTorch source model.py[:NAME] (an "
                                               "nn.Module class or a function building one; needs --input-shape "
                                               "or example_inputs in the file).", show_default=False)]
InputShape = Annotated[list[str] | None, typer.Option(
    "--input-shape", "-s", help="Bind input shapes: NAME=d0,d1,... (repeat per input) or just d0,d1,... for a "
                                "single-input model. Needed where dims are symbolic and a static shape is "
                                "wanted.")]


def examples(*lines: tuple[str, str]) -> str:
    """A ``--help`` epilog of runnable examples, each with why you would run it.

    Each command line is followed by a dimmed comment saying why; brackets are escaped because the epilog is
    rich markup.
    """
    return "Examples:\n\n" + "\n".join(f"  {escape(cmd)}\n    [dim]# {escape(why)}[/dim]" for cmd, why in lines)


def user_errors(fn):
    """Turn user-input errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..errors import USER_ERRORS
        from ..pass_api import PassError

        try:
            return fn(*args, **kwargs)
        except (*USER_ERRORS, PassError) as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def load_for_cli(model: Path, input_shape: list[str] | None = None, trust_pickle: bool = False):
    from ..ir.infer import set_input_shapes
    from ..modelio import is_python_spec, load_model, parse_input_shapes

    if is_python_spec(model):  # the shapes build the example inputs; a bare d0,d1,... names the only input ("")
        return load_model(model, input_shapes=parse_input_shapes(input_shape, [""]))
    g = load_model(model, trust=trust_pickle)
    if model.suffix == ".json":  # hand-editable: verify before any command trusts it (frontends verify their own)
        from ..ir.verify import verify

        verify(g)
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
