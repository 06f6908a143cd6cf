"""PyTorch frontend: lower an ``nn.Module``, a ``torch.export.ExportedProgram`` or a ``.pt2`` archive to the IR.

Pipeline::

    torch.export.export(model, example_inputs, strict=False)      # non-strict: plain Python runs as usual
      -> ep.run_decompositions(decomposition_table())             # functional core ATen, minus kept ops
      -> one table of ATen-op lowering rules (torch_lowering/rules.py) -> Graph

Why this decomposition table: core ATen (``torch.export.default_decompositions()``) is functional and small, but
it splits ops graphopt has as single primitives into many nodes (``linear`` -> ``permute`` + ``addmm``,
``silu`` -> ``sigmoid`` + ``mul``, ``hardswish`` -> 5 nodes, ``scaled_dot_product_attention`` -> ~40 nodes with
``expand``/``clone``/``bmm``, ``group_norm`` -> reshapes and reductions). :data:`KEPT_OPS` are removed from the
table, so they reach the lowering intact and map to one IR op each (attention becomes the 5-op math form).
Everything else follows core ATen. ``decompose=False`` lowers the export (training) IR directly, which keeps
even more high-level ops but is not functionalized; in-place ops are then rebound as their functional forms.

Fallback: when ``torch.export`` rejects the model (typically data-dependent control flow such as
``if x.mean() > 0``), :func:`trace_real` records one real execution on the example inputs with ``make_fx``
(functionalized, same decomposition table), which specializes such branches to the path the example takes; a
``UserWarning`` says so. (``torch.export.draft_export`` was tried first and rejected: it silently took the wrong
branch in about one run in eight.) With ``dynamic_batch=True`` dim 0 of every tensor input is one
``torch.export.Dim`` and becomes the IR symbol ``"batch"``.

Naming: graph inputs are the forward's argument names; parameters (kind ``param``), buffers (``buffer``) and
lifted tensor constants (``const``) are constants named by their ``state_dict`` FQN (``layer1.0.bn1.running_mean``);
nodes are named after the module that produced them (``layer1.0.conv1``). Batch norm exported in training mode is
one ``batch_norm`` node (the op updates running statistics itself when run in training mode, so the exported
running-stat updates are dropped); ``graph.meta["training"]`` records the mode the program was captured in.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..ir.graph import Graph
from ..ir.registry import UnsupportedOpError
from .torch_lowering import LoweringContext, LoweringError, ProgramLowering, Sym, dead_code_elimination
from .torch_lowering import register_lowering as register_lowering
from .torch_lowering.context import to_numpy

__all__ = ["KEPT_OPS", "CaptureError", "LoweringError", "UnsupportedOpError", "decomposition_table", "export_module",
           "from_torch", "load_pt2", "lower_exported_program", "register_lowering", "trace_real"]

aten = torch.ops.aten

KEPT_OPS = (
    aten.linear.default, aten.matmul.default, aten.einsum.default, aten.scaled_dot_product_attention.default,
    aten.silu.default, aten.hardswish.default, aten.hardsigmoid.default, aten.mish.default, aten.softplus.default,
    aten.prelu.default, aten.group_norm.default, aten.layer_norm.default, aten.instance_norm.default,
    aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default, aten.pixel_shuffle.default,
    aten.pixel_unshuffle.default, aten.roll.default,
    aten.upsample_nearest1d.vec, aten.upsample_nearest2d.vec, aten._upsample_nearest_exact2d.vec,
    aten.upsample_linear1d.vec, aten.upsample_bilinear2d.vec, aten.upsample_bicubic2d.vec,
    aten.reflection_pad1d.default, aten.reflection_pad2d.default, aten.reflection_pad3d.default,
    aten.replication_pad1d.default, aten.replication_pad2d.default, aten.replication_pad3d.default,
)
"""ATen ops kept out of the decomposition because each maps to one IR op (see the module docstring)."""

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def decomposition_table() -> dict:
    """Core-ATen decompositions minus :data:`KEPT_OPS`."""
    table = torch.export.default_decompositions()
    for op in KEPT_OPS:
        try:
            table.pop(op)
        except KeyError:
            pass
    return table


def _as_args(example_inputs: Any) -> tuple:
    if example_inputs is None:
        raise ValueError("lowering an nn.Module needs example_inputs (a tuple of tensors matching forward's "
                         "positional arguments)")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of tensors, got {type(example_inputs).__name__}")
    return example_inputs


class CaptureError(LoweringError):
    """``torch.export`` could not capture the module (``__cause__`` holds torch's exception)."""


def export_module(model: torch.nn.Module, example_inputs: Any, *, dynamic_batch: bool = False,
                  strict: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` the module; failures become :class:`CaptureError` with an actionable message."""
    args = _as_args(example_inputs)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() >= 1 else None for a in args)
        sizes = {int(a.shape[0]) for a in args if isinstance(a, torch.Tensor) and a.dim() >= 1}
        if sizes & {0, 1}:
            raise ValueError("dynamic_batch=True needs example inputs with batch size >= 2 (torch.export "
                             "specializes sizes 0 and 1 to constants)")
    name = type(model).__name__
    try:
        # torch prints the partial graph of a failed export to stderr; the fallback or our error replaces it.
        with contextlib.redirect_stderr(io.StringIO()):
            return torch.export.export(model, args, dynamic_shapes=dynamic_shapes, strict=strict)
    except Exception as e:  # noqa: BLE001 - classified below
        first = (str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__).rstrip(".")
        if dynamic_batch and ("Constraints violated" in str(e) or "specialized" in str(e)):
            raise LoweringError(
                f"torch.export cannot keep the batch dimension of {name} dynamic: {first}. The model's code fixes "
                f"the batch size (e.g. a reshape with a literal batch); use dynamic_batch=False or write the "
                f"reshape with x.shape[0] / -1") from e
        if "register a pytree" in str(e) or "not a known type" in str(e):
            raise LoweringError(
                f"torch.export could not capture {name}: {first}. The model takes or returns a non-tensor object; "
                f"make forward return tensors (for Hugging Face models build the config with use_cache=False, or "
                f"wrap the model in a module that returns the tensors you need)") from e
        raise CaptureError(f"torch.export could not capture {name}: {type(e).__name__}: {first}") from e


def from_torch(
    model_or_program: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: tuple | None = None,
    *,
    dynamic_batch: bool = False,
    strict: bool = False,
    decompose: bool = True,
    name: str | None = None,
) -> Graph:
    """Lower a module (captured with ``example_inputs``) or an ``ExportedProgram`` to a verified-shape IR graph.

    The module is captured in the mode it is in (``.eval()`` drops dropout and uses running BN statistics;
    ``.train()`` keeps ``dropout``/batch-statistics BN). Raises :class:`UnsupportedOpError` for an ATen op without
    a lowering rule (naming the op, the FX node and the user source line) and :class:`LoweringError` when
    capture or lowering fails.
    """
    if isinstance(model_or_program, torch.export.ExportedProgram):
        ep = model_or_program
        training = _program_trains(ep)
        gname = name or "exported_program"
    elif isinstance(model_or_program, torch.nn.Module):
        training = model_or_program.training
        gname = name or type(model_or_program).__name__.lower()
        try:
            ep = export_module(model_or_program, example_inputs, dynamic_batch=dynamic_batch, strict=strict)
        except CaptureError as e:
            return _fallback(model_or_program, example_inputs, e, dynamic_batch, gname)
    else:
        raise TypeError(f"from_torch takes an nn.Module or a torch.export.ExportedProgram, got "
                        f"{type(model_or_program).__name__} (for a .pt2 file use load_pt2)")
    if decompose:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ep = ep.run_decompositions(decomposition_table())
    # a module captured in eval mode whose forward still asks for batch statistics (F.batch_norm(training=True))
    # keeps asking for them; a program alone cannot tell that from a train-mode capture
    g = lower_exported_program(ep, name=gname, eval_mode=isinstance(model_or_program, torch.nn.Module)
                               and not model_or_program.training)
    g.meta["training"] = bool(training)
    return g


def _fallback(model: torch.nn.Module, example_inputs: Any, err: CaptureError, dynamic_batch: bool,
              name: str) -> Graph:
    if dynamic_batch:
        raise LoweringError(f"{err}. The tracing fallback records static shapes only; pass dynamic_batch=False to "
                            f"use it") from err.__cause__
    try:
        g = trace_real(model, example_inputs, name)
    except (UnsupportedOpError, LoweringError):
        raise
    except Exception as e2:  # noqa: BLE001 - the export failure is the more relevant one
        raise LoweringError(f"{err}; tracing it as a fallback failed too ({type(e2).__name__}: {e2})") \
            from err.__cause__
    warnings.warn(f"{err}. Lowered it by tracing one real execution instead (make_fx), which specializes "
                  f"data-dependent control flow to the path the example inputs take: the IR is valid only for inputs "
                  f"that take the same branches.", UserWarning, stacklevel=3)
    g.meta["training"] = bool(model.training)
    return g


def load_pt2(path: str | os.PathLike) -> Graph:
    """Lower a ``torch.export.save`` archive (the IR keeps its dynamic dims as symbols)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such .pt2 file")
    _check_pt2_archive(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ep = torch.export.load(str(p))
    return from_torch(ep, name=p.stem)


def _check_pt2_archive(p: Path) -> None:
    """Name what the file is when it is not a torch.export archive: torch.export.load fails on a non-zip with a
    bare ``BadZipFile`` and on a ``torch.save`` zip with "check the warnings above", neither of which says what to
    do."""
    import zipfile

    from ..errors import ModelLoadError

    how = ("re-export the model with torch.export.save(torch.export.export(model, example_inputs), PATH), or give "
           "graphopt an .onnx file")
    if not zipfile.is_zipfile(p):
        raise ModelLoadError(f"{p}: not a torch.export archive (a .pt2 file is the zip archive torch.export.save "
                             f"writes; this one is not a zip: a pickle renamed to .pt2, or a truncated copy?); {how}")
    try:
        with zipfile.ZipFile(p) as z:
            names = [n.rsplit("/", 1)[-1] for n in z.namelist()]
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"{p}: corrupt .pt2 zip archive ({e}); {how}") from e
    if "data.pkl" in names and not {"archive_format", "serialized_exported_program.json"} & set(names):
        raise ModelLoadError(f"{p}: a torch.save file (a state dict or a pickled module) named .pt2, not a "
                             f"torch.export archive; {how}, or name a pickled module .pt and pass --trust-pickle")


def _program_trains(ep: torch.export.ExportedProgram) -> bool:
    """Whether the program normalizes with batch statistics or applies dropout (it was captured in train mode)."""
    for n in ep.graph.nodes:
        if n.op != "call_function":
            continue
        t = n.target
        if t is aten._native_batch_norm_legit_functional.default and bool(n.args[5]):
            return True
        if t in (aten.batch_norm.default, aten.native_batch_norm.default,
                 aten._native_batch_norm_legit.default) and bool(n.args[5]):
            return True
        if t in (aten.native_dropout.default, aten.dropout.default) and bool(n.args[2]) and float(n.args[1]) > 0:
            return True
    return False


@dataclass
class _Binding:
    """What one FX placeholder stands for: a graph input, a weight (FQN + tensor) or a specialized Python value."""

    placeholder: str
    kind: str  # "input" | "param" | "buffer" | "const" | "value"
    name: str = ""
    value: Any = None


def lower_exported_program(ep: torch.export.ExportedProgram, name: str = "graph", eval_mode: bool = False) -> Graph:
    """Lower an (already decomposed, if wanted) ``ExportedProgram`` with the rule table.

    ``eval_mode``: the program was captured from a module in eval mode, so a batch norm that still says
    ``training=True`` was forced by the model's code and is lowered with batch statistics."""
    from torch.export.graph_signature import InputKind, OutputKind

    sig = ep.graph_signature
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    bindings = []
    kinds = {InputKind.PARAMETER: "param", InputKind.BUFFER: "buffer", InputKind.CONSTANT_TENSOR: "const"}
    for spec in sig.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            ph = placeholders.get(getattr(spec.arg, "name", ""))
            if ph is None:
                continue
            if isinstance(ph.meta.get("val"), torch.Tensor):
                bindings.append(_Binding(ph.name, "input", ph.name))
            else:
                bindings.append(_Binding(ph.name, "value", value=getattr(spec.arg, "value", ph.meta.get("val"))))
            continue
        if spec.kind not in kinds:
            raise LoweringError(f"program input {spec.arg} of kind {spec.kind.name} (custom objects, effect tokens) "
                                f"has no IR form")
        t = ep.state_dict.get(spec.target)
        if t is None:
            t = ep.constants.get(spec.target)
        if not isinstance(t, torch.Tensor):
            raise LoweringError(f"{spec.kind.name.lower()} {spec.target!r} has no tensor in the program")
        bindings.append(_Binding(spec.arg.name, kinds[spec.kind], spec.target, t))

    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    user_args = []
    for spec, arg in zip(sig.output_specs, list(out_node.args[0]), strict=True):
        if spec.kind == OutputKind.USER_OUTPUT:
            user_args.append(arg)
        elif spec.kind == OutputKind.BUFFER_MUTATION:
            if not str(spec.target).endswith(_RUNNING_STATS):
                warnings.warn(f"the model updates buffer {spec.target!r} in place; the IR does not carry that state "
                              f"update (only its use in this call)", UserWarning, stacklevel=3)
        elif spec.kind == OutputKind.USER_INPUT_MUTATION:
            warnings.warn(f"the model mutates its input {spec.target!r} in place; the IR does not", UserWarning,
                          stacklevel=3)
    g = _lower_fx(ep.graph, bindings, user_args, name, eval_mode)
    g.meta["source"] = "torch.export"
    return g


def trace_real(model: torch.nn.Module, example_inputs: Any, name: str | None = None) -> Graph:
    """Fallback capture: ``make_fx`` in real mode over ``functional_call`` (functionalized, same decompositions).

    Why not ``torch.export.draft_export``: its real-tensor propagation picked the wrong side of a data-dependent
    branch in about one run in eight here, silently. Real-mode ``make_fx`` runs the model once on the example
    inputs and records the ops actually executed, so data-dependent branches are specialized to the example's
    path deterministically (shapes are static). Buffers are cloned, so tracing never changes the model's state.
    """
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.utils import _pytree as pytree

    args = _as_args(example_inputs)
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = {k: v.clone() for k, v in model.named_buffers(remove_duplicate=False)}

    def call(p: dict, b: dict, *a: Any) -> Any:
        return torch.func.functional_call(model, {**p, **b}, a)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = make_fx(torch.func.functionalize(call, remove="mutations_and_views"),
                     decomposition_table=decomposition_table(), tracing_mode="real", _error_on_data_dependent_ops=False,
                     record_stack_traces=True)(params, buffers, *args)
    try:
        arg_names = [p for p in inspect.signature(model.forward).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        arg_names = []
    leaves = pytree.tree_leaves((params, buffers, args))
    labels = ([("param", k) for k in params] + [("buffer", k) for k in buffers]
              + [("input", arg_names[i] if i < len(arg_names) else f"input_{i}") for i in range(len(args))])
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(leaves) or len(leaves) != len(labels):
        raise LoweringError(f"tracing {type(model).__name__}: inputs must be tensors (got {len(leaves)} leaves for "
                            f"{len(labels)} parameters, buffers and inputs)")
    bindings = []
    for ph, leaf, (kind, nm) in zip(placeholders, leaves, labels, strict=True):
        bindings.append(_Binding(ph.name, kind, nm, leaf if kind != "input" else None))
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    from .torch_lowering.context import _flat_nodes

    g = _lower_fx(gm.graph, bindings, _flat_nodes(out_node.args), name or type(model).__name__.lower(),
                  not model.training)
    g.meta["source"] = "make_fx(real)"
    return g


def _lower_fx(fx_graph: Any, bindings: list[_Binding], user_args: list[Any], name: str,
              eval_mode: bool = False) -> Graph:
    """Bind placeholders, lower the nodes the outputs need, set outputs, remove dead code."""
    import torch.fx as fx

    placeholders = {n.name: n for n in fx_graph.nodes if n.op == "placeholder"}
    g = Graph(name)
    g.meta["_eval_capture"] = eval_mode  # read by the batch norm rules, removed below
    sym_names: dict[Any, str] = {}
    used: set[str] = set()
    for b in bindings:
        if b.kind != "input":
            continue
        fake = placeholders[b.placeholder].meta.get("val")
        for i, d in enumerate(getattr(fake, "shape", ())):
            if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol and d.node.expr not in sym_names:
                nm = "batch" if i == 0 and "batch" not in used else f"{b.name}_dim{i}"
                sym_names[d.node.expr] = nm
                used.add(nm)
    ctx = LoweringContext(g, sym_names)
    # User inputs first, so they keep the forward's argument names; weights keep their FQNs.
    for b in bindings:
        if b.kind == "input":
            ctx.env[b.placeholder] = g.add_input(b.name, ctx.tensor_type(placeholders[b.placeholder].meta["val"]))
        elif b.kind == "value":
            ctx.env[b.placeholder] = b.value
    for b in bindings:
        if b.kind in ("param", "buffer", "const"):
            ctx.env[b.placeholder] = g.add_const(b.name, to_numpy(b.value), b.kind)

    ProgramLowering(ctx).run(fx_graph, [a for a in user_args if isinstance(a, fx.Node)])
    g.meta.pop("_eval_capture", None)

    outputs = []
    seen: set[int] = set()
    for a in user_args:
        if isinstance(a, fx.Node):
            v = ctx.env.get(a.name)
        elif isinstance(a, bool | int | float):
            v = a
        else:
            if a is not None:
                warnings.warn(f"model output {a!r} is not a tensor; the IR graph omits it", UserWarning, stacklevel=4)
            continue
        if isinstance(v, Sym):
            v = v.value
        if isinstance(v, bool | int | float):
            v = g.add_const("output_const", torch.tensor(v).numpy())
        if v is None:
            raise LoweringError(f"model output {a} was not lowered")
        if v.producer is None or id(v) in seen:
            v = g.create_node("identity", [v], name=g.unique_node_name("output")).outputs[0]
        seen.add(id(v))
        outputs.append(v)
    g.set_outputs(outputs)
    dead_code_elimination(g)
    g.meta["torch_version"] = torch.__version__
    return g
