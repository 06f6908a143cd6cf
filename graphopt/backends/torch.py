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
from ..ir.types import DType

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


def module_keys(names: list[str]) -> dict[str, str]:
    """The attribute path of each constant in the emitted module.

    It is the constant's own dotted name, so state_dict keys are the graph's constant names, except where
    ``nn.Module`` cannot hold that path:
    - a component that is an ``nn.Module`` attribute (``half``, ``train``, ``to``, ...; ``register_buffer``
      refuses those) gets a ``_`` suffix — graphopt's own ONNX export names GELU's 0.5 ``half``;
    - an empty component becomes ``_``;
    - a tensor whose name is also a module path of another (``a`` and ``a.b``, as ONNX initializer names
      allow) gets a ``_`` suffix.
    """
    import torch

    reserved = set(dir(torch.nn.Module)) | {"training"}
    keys = {n: ".".join("_" if not p else p + "_" if p in reserved else p for p in n.split(".")) for n in names}
    prefixes = {".".join(k.split(".")[:i]) for k in keys.values() for i in range(1, k.count(".") + 1)}
    taken = set(keys.values()) | prefixes
    for n, k in keys.items():
        if k in prefixes or (k != n and list(keys.values()).count(k) > 1):
            while k in taken:
                k += "_"
            taken.add(k)
            keys[n] = k
    return keys


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
    fused, absorbed = _plan_fast_paths(graph)
    used_fns: list[FunctionType] = []
    used_ids: set[int] = set()
    for n in graph.nodes:
        if id(n) in fused or id(n) in absorbed:
            continue
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
        if id(n) in absorbed:
            continue
        if id(n) in fused:
            for v in fused[id(n)][0]:
                if v.is_const:
                    tensor_uses[id(v)] = v
            continue
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
    keys = module_keys(list(graph.constants))
    for name, v in state:
        assert v.type is not None
        shape = list(v.type.shape or ())
        dt = v.type.dtype.value
        if v.kind == "param" and v.type.dtype.is_float:
            init_lines.append(f"_register(self, {keys[name]!r}, torch.nn.Parameter(torch.empty({shape}, "
                              f"dtype=torch.{dt})))")
        else:
            init_lines.append(f"_register(self, {keys[name]!r}, torch.empty({shape}, dtype=torch.{dt}), buffer=True)")
    for name, v in inline:
        init_lines.append(f"_register(self, {keys[name]!r}, {_lit(v.const)}, buffer=True, persistent=False)")

    body: list[str] = []
    for name, v in state + inline:
        local = _ident(name, taken)
        var[id(v)] = local
        body.append(f"{local} = {_attr_path(keys[name])}")

    # One statement per emitted node: (line, values it reads, values it defines).
    steps: list[tuple[str, list[Value], list[Value]]] = []
    for n in graph.nodes:
        if id(n) in absorbed:
            continue
        if id(n) in fused:
            reads, expr = fused[id(n)]
            outs = [_ident(o.name, taken) for o in n.outputs]
            for o, name in zip(n.outputs, outs, strict=True):
                var[id(o)] = name
            steps.append((f"{outs[0]} = {expr(var)}", reads, n.outputs))
            continue
        opdef = get_op(n.op)
        fn = opdef.fn
        call_args = []
        reads = []
        for i, v in enumerate(n.inputs):
            if v is None:
                call_args.append("None")
            elif opdef.input_spec(i).static and v.is_const:
                call_args.append(_lit(np.asarray(v.const).tolist()))
            else:
                call_args.append(var[id(v)])
                reads.append(v)
        kwargs = [f"{k}={_lit(a)}" for k, a in n.attrs.items() if not _is_default(opdef.attrs.get(k), a)]
        if "training" in inspect.signature(fn).parameters:
            kwargs.append("training=self.training")
        outs = [_ident(o.name, taken) for o in n.outputs]
        for o, name in zip(n.outputs, outs, strict=True):
            var[id(o)] = name
        lhs = outs[0] if len(outs) == 1 else ", ".join(outs)
        steps.append((f"{lhs} = {fn.__name__}({', '.join(call_args + kwargs)})", reads, n.outputs))
    body += _with_frees(steps, var, {id(v) for v in graph.outputs})
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


# ------------------------------------------------------------------------------------- codegen fast paths
# Training speed of the emitted module matters (issue: forward+backward within 10% of the original). Two
# patterns that frontends produce from ordinary PyTorch code are much slower when emitted node by node, so they
# are emitted as the single call the original used. Both are exact rewrites of the graph's semantics:
#   * transpose(W, [1, 0]) -> matmul(x, .) [-> add(., b)]  ==>  F.linear(x, W, b)   (nn.Linear, fused addmm)
#   * gather(x, k) with a constant scalar k                ==>  x.select(axis, k)  (a view: ``qkv[0]``),
#     gather with a constant ascending run a..a+n-1         ==>  x.narrow(axis, a, n)
#   gather's general form is index_select, whose backward scatters into a zero tensor of the input's size.
# Intermediates of a fused chain must have no other use and not be graph outputs.


def _single_use(v: Value, graph_outs: set[int]) -> bool:
    return len(v.uses) == 1 and id(v) not in graph_outs


def _plan_fast_paths(graph: Graph) -> tuple[dict[int, Any], set[int]]:
    """Nodes to emit as one expression (node id -> (values it reads, ``f(var) -> str``)) and the nodes absorbed
    into them (not emitted)."""
    fused: dict[int, Any] = {}
    absorbed: set[int] = set()
    outs = {id(v) for v in graph.outputs}
    for n in graph.nodes:
        if n.op == "matmul" and id(n) not in absorbed:
            _plan_linear(n, outs, fused, absorbed)
        elif n.op == "gather":
            _plan_gather(n, fused)
    return fused, absorbed


def _plan_linear(mm, outs: set[int], fused: dict[int, Any], absorbed: set[int]) -> None:
    a, t = mm.inputs
    tn = t.producer if t is not None else None
    if (a is None or tn is None or tn.op != "transpose" or list(tn.attrs.get("perm") or []) != [1, 0]
            or not _single_use(t, outs) or a.type is None or a.type.rank is None or a.type.rank < 2):
        return
    w = tn.inputs[0]
    if w is None or w.type is None or w.type.rank != 2 or w.dtype != a.dtype:
        return
    y = mm.outputs[0]
    bias = None
    add = y.uses[0].node if _single_use(y, outs) else None
    if add is not None and add.op == "add" and add.inputs[0] is not add.inputs[1]:
        b = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
        # A 1-D bias of the output width broadcasts exactly like F.linear's bias (and changes no shape).
        if (b is not None and b.type is not None and b.type.shape == (w.type.shape[0],) and b.dtype == y.dtype
                and add.outputs[0].type == y.type):
            bias = b
    absorbed.add(id(tn))
    if bias is None:
        fused[id(mm)] = ([a, w], lambda var: f"F.linear({var[id(a)]}, {var[id(w)]})")
    else:
        absorbed.add(id(mm))
        fused[id(add)] = ([a, w, bias], lambda var: f"F.linear({var[id(a)]}, {var[id(w)]}, {var[id(bias)]})")


def _plan_gather(n, fused: dict[int, Any]) -> None:
    data, idx = n.inputs
    if data is None or idx is None or idx.const is None or data.type is None or data.type.rank is None:
        return
    k = np.asarray(idx.const)
    if k.dtype.kind not in "iu" or k.ndim > 1 or k.size == 0:
        return
    axis = int(n.attrs.get("axis", 0)) % data.type.rank
    size = data.type.shape[axis]
    ks = [int(i) for i in k.reshape(-1)]
    if isinstance(size, int):
        if any(not -size <= i < size for i in ks):
            return  # keep gather's own error for an out-of-range index
        ks = [i % size for i in ks]
    elif any(i < 0 for i in ks):
        return
    if k.ndim == 0:
        fused[id(n)] = ([data], lambda var: f"{var[id(data)]}.select({axis}, {ks[0]})")
    elif ks == list(range(ks[0], ks[0] + len(ks))):
        fused[id(n)] = ([data], lambda var: f"{var[id(data)]}.narrow({axis}, {ks[0]}, {len(ks)})")


def _with_frees(steps: list[tuple[str, list[Value], list[Value]]], var: dict[int, str],
                keep: set[int]) -> list[str]:
    """The statements with ``del`` after each activation's last use (as torch.fx's codegen does).

    Why: a generated forward keeps every intermediate in a local until it returns; releasing them at their last
    use lets the caching allocator reuse warm memory instead of faulting in fresh pages (ViT-tiny batch-1
    inference was ~1.5x slower than the original without this). Tensors autograd saves stay alive regardless.
    """
    last: dict[int, int] = {}
    for k, (_, reads, outs) in enumerate(steps):
        for v in [*outs, *reads]:  # an output nobody reads is released right after its statement
            if v.producer is not None and id(v) not in keep:
                last[id(v)] = k
    free_at: dict[int, list[str]] = {}
    for vid, k in last.items():
        free_at.setdefault(k, []).append(var[vid])
    lines = []
    for k, (line, _, _) in enumerate(steps):
        lines.append(line)
        if k in free_at:
            lines.append("del " + ", ".join(free_at[k]))
    return lines


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
    src = to_python_source(graph, class_name)
    cls = load_source(src, class_name)
    model = cls()
    sd = {}
    graph_name = {k: n for n, k in module_keys(list(graph.constants)).items()}
    for name in model.state_dict(keep_vars=True):
        v = graph.constants.get(graph_name.get(name, name))
        if v is None or v.const is None:
            raise KeyError(f"state entry {name!r} has no constant in graph {graph.name!r}")
        sd[name] = _tensor_of(v.const)
    model.load_state_dict(sd, strict=True)
    model.graphopt_source = src
    return model


def _tensor_of(arr: np.ndarray):
    """A torch copy of a constant; bfloat16 arrays (ml_dtypes, see ir.types) travel as their int16 bits."""
    import torch

    arr = np.asarray(arr).copy(order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
    if arr.dtype == DType.bfloat16.to_numpy():
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(arr.copy())


