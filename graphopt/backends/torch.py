"""PyTorch backend: IR graph -> readable Python source -> ``nn.Module`` with real parameters.

The module is *generated code*, not an interpreter: each node becomes one line calling the op's registry
implementation, whose source (and the helpers it uses) is copied into the file. So the in-memory module and
``to_python_source()`` are the same text (the emitted file is what the tests run), forward runs at the speed
of hand-written code, and the file runs standalone with only ``torch`` installed.

Parameters keep their graph names as ``state_dict`` keys (``layer1.0.conv1.weight``): dotted names become a
hierarchy of container modules, so a state dict of the original model loads into the emitted one.
"""

from __future__ import annotations

import ast
import inspect
import keyword
import linecache
import math
import re
import textwrap
from types import FunctionType, ModuleType
from typing import Any

import numpy as np

from ..ir.graph import Graph, Value
from ..ir.registry import get_op

_INLINE_MAX = 16
_counter = [0]


def _ident(name: str, taken: set[str]) -> str:
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit():
        s = "v_" + s
    if keyword.iskeyword(s) or s in ("self", "torch", "F", "math"):
        s += "_"
    base, i = s, 1
    while s in taken:
        s = f"{base}_{i}"
        i += 1
    taken.add(s)
    return s


def _lit(v: Any) -> str:
    """Python literal for an attribute value (tensors become torch.tensor(...) expressions)."""
    if isinstance(v, np.ndarray):
        dt = "bool" if v.dtype == np.bool_ else str(v.dtype)
        return f"torch.tensor({_lit(v.tolist())}, dtype=torch.{dt})"
    if isinstance(v, np.generic):
        return _lit(v.item())
    if isinstance(v, float):
        if math.isnan(v):
            return "float('nan')"
        if math.isinf(v):
            return "float('inf')" if v > 0 else "float('-inf')"
        return repr(v)
    if isinstance(v, list | tuple):
        inner = ", ".join(_lit(x) for x in v)
        return f"[{inner}]"
    return repr(v)


def _attr_path(name: str) -> str:
    parts = name.split(".")
    expr = "self"
    for p in parts:
        expr = f"{expr}.{p}" if p.isidentifier() and not keyword.iskeyword(p) else f"getattr({expr}, {p!r})"
    return expr


def _function_source(fn: FunctionType) -> str:
    """The function's source without its registry decorator."""
    src = textwrap.dedent(inspect.getsource(fn))
    tree = ast.parse(src)
    fdef = tree.body[0]
    assert isinstance(fdef, ast.FunctionDef)
    fdef.decorator_list = []
    return ast.unparse(fdef)


def _collect_helpers(fns: list[FunctionType]) -> list[FunctionType]:
    """The op functions plus every module-level helper function they reference, dependencies first."""
    ordered: list[FunctionType] = []
    seen: set[str] = set()

    def names_of(code) -> set[str]:
        out = set(code.co_names)
        for c in code.co_consts:
            if hasattr(c, "co_names"):
                out |= names_of(c)
        return out

    def visit(fn: FunctionType) -> None:
        if fn.__name__ in seen:
            prev = next(f for f in ordered if f.__name__ == fn.__name__) if any(
                f.__name__ == fn.__name__ for f in ordered) else None
            if prev is not None and prev is not fn:
                raise ValueError(f"two op helpers are both named {fn.__name__!r} "
                                 f"({prev.__module__} and {fn.__module__}); rename one")
            return
        seen.add(fn.__name__)
        for name in sorted(names_of(fn.__code__)):
            dep = fn.__globals__.get(name)
            if isinstance(dep, FunctionType) and dep.__module__.startswith("graphopt.") and dep is not fn:
                visit(dep)
        ordered.append(fn)

    for fn in fns:
        visit(fn)
    return ordered


def to_python_source(graph: Graph, class_name: str = "GraphModule") -> str:
    """Readable, standalone PyTorch source for ``graph`` (weights are loaded separately via state_dict)."""
    used_fns: list[FunctionType] = []
    used_ids: set[int] = set()
    for n in graph.nodes:
        fn = get_op(n.op).fn
        if id(fn) not in used_ids:
            used_ids.add(id(fn))
            used_fns.append(fn)
    helpers = _collect_helpers(used_fns)
    # Local variable names must never shadow a helper function of the emitted file.
    taken: set[str] = {h.__name__ for h in helpers} | {"_register"}
    var: dict[int, str] = {}
    init_lines: list[str] = []
    state: list[tuple[str, Value]] = []
    inline: list[tuple[str, Value]] = []

    args = []
    for v in graph.inputs:
        var[id(v)] = _ident(v.name, taken)
        args.append(var[id(v)])

    # Which constants are static operands only (inlined as Python lists) and which are tensors.
    tensor_uses: dict[int, Value] = {}
    for n in graph.nodes:
        opdef = get_op(n.op)
        for i, v in enumerate(n.inputs):
            if v is not None and v.is_const and not opdef.input_spec(i).static:
                tensor_uses[id(v)] = v
    for v in graph.outputs:
        if v.is_const:
            tensor_uses[id(v)] = v
    for v in graph.constants.values():
        if id(v) not in tensor_uses:
            continue
        if v.kind == "const" and v.const is not None and v.const.size <= _INLINE_MAX:
            inline.append((v.name, v))
        else:
            state.append((v.name, v))

    init_lines.append("super().__init__()")
    for name, v in state:
        assert v.type is not None
        shape = list(v.type.shape or ())
        dt = v.type.dtype.value
        if v.kind == "param" and v.type.dtype.is_float:
            init_lines.append(f"_register(self, {name!r}, torch.nn.Parameter(torch.empty({shape}, dtype=torch.{dt})))")
        else:
            init_lines.append(f"_register(self, {name!r}, torch.empty({shape}, dtype=torch.{dt}), buffer=True)")
    for name, v in inline:
        init_lines.append(f"_register(self, {name!r}, {_lit(v.const)}, buffer=True, persistent=False)")

    body: list[str] = []
    for name, v in state + inline:
        local = _ident(name, taken)
        var[id(v)] = local
        body.append(f"{local} = {_attr_path(name)}")

    for n in graph.nodes:
        opdef = get_op(n.op)
        fn = opdef.fn
        call_args = []
        for i, v in enumerate(n.inputs):
            if v is None:
                call_args.append("None")
            elif opdef.input_spec(i).static and v.is_const:
                call_args.append(_lit(np.asarray(v.const).tolist()))
            else:
                call_args.append(var[id(v)])
        kwargs = [f"{k}={_lit(a)}" for k, a in n.attrs.items() if not _is_default(opdef.attrs.get(k), a)]
        if "training" in inspect.signature(fn).parameters:
            kwargs.append("training=self.training")
        outs = [_ident(o.name, taken) for o in n.outputs]
        for o, name in zip(n.outputs, outs, strict=True):
            var[id(o)] = name
        lhs = outs[0] if len(outs) == 1 else ", ".join(outs)
        body.append(f"{lhs} = {fn.__name__}({', '.join(call_args + kwargs)})")
    rets = [var[id(v)] for v in graph.outputs]
    body.append("return " + (rets[0] if len(rets) == 1 else "(" + ", ".join(rets) + ",)"))

    parts = [
        f'"""PyTorch module generated by graphopt from graph {graph.name!r} ({len(graph)} nodes).',
        "",
        "Standalone: needs only torch. Load weights with",
        f"    model = {class_name}(); model.load_state_dict(torch.load('weights.pt', weights_only=True))",
        '"""',
        "import math",
        "",
        "import torch",
        "import torch.nn.functional as F",
        "",
        "",
        _REGISTER_SRC,
    ]
    for h in helpers:
        parts += ["", "", _function_source(h)]
    parts += ["", "", f"class {class_name}(torch.nn.Module):", "    def __init__(self):"]
    parts += ["        " + line for line in init_lines]
    parts += ["", f"    def forward(self, {', '.join(args)}):"]
    parts += ["        " + line for line in body]
    return "\n".join(parts) + "\n"


def _is_default(default: Any, value: Any) -> bool:
    if isinstance(value, np.ndarray) or isinstance(default, np.ndarray):
        return False
    try:
        return bool(default == value) and type(default) is type(value)
    except Exception:  # noqa: BLE001
        return False


_REGISTER_SRC = '''def _register(root, name, tensor, buffer=False, persistent=True):
    """Attach a parameter/buffer under its dotted name, creating container modules on the way."""
    *path, leaf = name.split(".")
    mod = root
    for p in path:
        if p not in mod._modules:
            mod.add_module(p, torch.nn.Module())
        mod = mod._modules[p]
    if buffer:
        mod.register_buffer(leaf, tensor, persistent=persistent)
    else:
        mod.register_parameter(leaf, tensor)'''


def load_source(source: str, class_name: str = "GraphModule", module_name: str | None = None) -> type:
    """Compile emitted source and return the module class (source registered for readable tracebacks)."""
    _counter[0] += 1
    fname = f"<graphopt-generated-{_counter[0]}>"
    linecache.cache[fname] = (len(source), None, source.splitlines(True), fname)
    mod = ModuleType(module_name or f"graphopt_generated_{_counter[0]}")
    mod.__file__ = fname
    exec(compile(source, fname, "exec"), mod.__dict__)  # noqa: S102 - our own generated code
    return getattr(mod, class_name)


def to_torch(graph: Graph, class_name: str = "GraphModule"):
    """An ``nn.Module`` executing ``graph``, with the graph's weights loaded (trainable parameters)."""
    import torch

    _check_names(graph)
    src = to_python_source(graph, class_name)
    cls = load_source(src, class_name)
    model = cls()
    sd = {}
    for name in model.state_dict(keep_vars=True):
        v = graph.constants.get(name)
        if v is None or v.const is None:
            raise KeyError(f"state entry {name!r} has no constant in graph {graph.name!r}")
        sd[name] = torch.from_numpy(np.ascontiguousarray(v.const).copy())
    model.load_state_dict(sd, strict=True)
    model.graphopt_source = src
    return model


def _check_names(graph: Graph) -> None:
    """Dotted names must form a tree: 'a.b' and 'a' cannot both be tensors (rename them first)."""
    names = set(graph.constants)
    for n in names:
        parts = n.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[:i]) in names:
                raise ValueError(f"constant names {'.'.join(parts[:i])!r} and {n!r} clash as module paths; "
                                 f"rename one (graphopt.passes 'sanitize-names' does this)")
        if any(p == "" for p in parts):
            raise ValueError(f"constant name {n!r} has an empty path component; rename it")
