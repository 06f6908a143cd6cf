"""Core of the ATen -> IR lowering: the rule table, the per-program lowering context, and the driver loop.

One table maps an ATen overload (``torch.ops.aten.add.Tensor``) or a whole packet (``torch.ops.aten.add``) or a
Python callable (``operator.mul`` on SymInts) to a small rule ``rule(ctx, node) -> result`` that emits IR nodes
through the context. Results are a ``Value`` (one tensor), a tuple of ``Value | None`` (multi-output ATen ops;
``None`` marks an output graphopt does not compute, e.g. batch-norm's saved mean), a :class:`Sym` (a SymInt under
dynamic shapes), or a Python scalar. Users add rules with :func:`register_lowering`.

The driver lowers only the FX nodes that the user outputs depend on (so runtime asserts, buffer-mutation
bookkeeping and dead code never need a rule), folds subgraphs whose inputs are all literals (``arange``,
``full``, causal masks) into constants, checks every lowered value against the FX node's FakeTensor
(shape mismatch -> :class:`LoweringError`; a dtype mismatch is fixed with a ``cast``, since torch's result dtype
is the reference), and finally removes dead IR nodes and unused constants.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from ...errors import GraphoptError
from ...ir.graph import Graph, Node, Value
from ...ir.registry import UnsupportedOpError, get_op
from ...ir.types import DType, TensorType

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
FOLD_LIMIT = 1 << 18
"""Largest tensor (elements) a literal-only subgraph is folded into; bigger ones stay as nodes."""
SMALL_CONST = 1024
"""``full_like``-style fills up to this many elements become constants; larger ones ``constant_of_shape``."""


class LoweringError(GraphoptError):
    """The FX program cannot be lowered faithfully (the message names the FX node and the reason)."""


LoweringRule = Callable[["LoweringContext", fx.Node], Any]
_RULES: dict[Any, LoweringRule] = {}


def register_lowering(*targets: Any, replace: bool = False) -> Callable[[LoweringRule], LoweringRule]:
    """Register ``rule(ctx, node)`` as the lowering of the given ATen overloads / packets / callables.

    Example (a custom op ``mylib::swish``)::

        @register_lowering(torch.ops.mylib.swish.default)
        def _swish(ctx, node):
            x = ctx.v(node.args[0])
            return ctx.op("mul", [x, ctx.op("sigmoid", [x])])

    A rule for an overload wins over a rule for its packet. Pass ``replace=True`` to override a built-in rule.
    """

    def deco(fn: LoweringRule) -> LoweringRule:
        for t in targets:
            if t in _RULES and not replace:
                raise ValueError(f"a lowering for {t} is already registered (pass replace=True to override)")
            _RULES[t] = fn
        return fn

    return deco


def find_rule(target: Any) -> LoweringRule | None:
    rule = _RULES.get(target)
    if rule is None and isinstance(target, torch._ops.OpOverload):
        rule = _RULES.get(target.overloadpacket)
    return rule


def registered_targets() -> list[Any]:
    return list(_RULES)


@dataclass
class Sym:
    """A SymInt of a dynamic-shape program: its sympy expression and an int64[1] IR value computing it."""

    expr: Any
    value: Value


def sym_expr(x: Any) -> Any:
    """The sympy expression of an int, a ``torch.SymInt`` or a :class:`Sym` (for exact dim comparisons)."""
    import sympy

    if isinstance(x, Sym):
        return x.expr
    if isinstance(x, torch.SymInt):
        return x.node.expr
    return sympy.Integer(int(x))


def is_static(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy copy of a real tensor (bfloat16 through ml_dtypes, which the IR uses for that dtype)."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(DType.bfloat16.to_numpy()).copy()
    return t.numpy().copy()


def user_frame(node: fx.Node) -> str:
    """The innermost user source line that produced ``node`` (from its recorded stack trace), or ''."""
    st = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in st.strip().splitlines()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("File "):
            code = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("File ") else ""
            return f"{lines[i]}: {code}" if code else lines[i]
    return ""


_HELPER_OPS = {"transpose", "reshape", "cast", "unsqueeze", "squeeze", "identity", "shape", "concat",
               "constant_of_shape", "expand", "slice"}
_PATH_CLEAN = [(re.compile(r"^L\['self'\]\.?"), ""), (re.compile(r"^L__self__\.?"), ""),
               (re.compile(r"\[(\d+)\]"), r".\1"), (re.compile(r"\['([^']+)'\]"), r".\1"), (re.compile(r"@\d+"), ""),
               (re.compile(r"^\."), "")]


def _clean_path(path: str) -> str:
    for pat, rep in _PATH_CLEAN:
        path = pat.sub(rep, path)
    return path


class LoweringContext:
    """State of one lowering: the IR graph being built, the FX-node -> IR mapping, and emit helpers."""

    def __init__(self, graph: Graph, sym_names: dict[Any, str]) -> None:
        self.graph = graph
        self.env: dict[str, Any] = {}
        self.sym_names = sym_names
        self.node: fx.Node | None = None
        self._names_used: set[str] = set()
        self._name_count: dict[str, int] = {}
        self._claimed_paths: set[str] = set()

    # ------------------------------------------------------------------------------------------ FX access
    def fake(self, a: Any) -> Any:
        """The FakeTensor (or SymInt / list) an FX argument had at export time."""
        if isinstance(a, fx.Node):
            return a.meta.get("val")
        return a

    def shape(self, a: Any) -> tuple:
        """Export-time shape of an FX tensor argument (ints and ``torch.SymInt``)."""
        f = self.fake(a)
        if not isinstance(f, torch.Tensor):
            raise self.error(f"expected a tensor argument, got {type(f).__name__}")
        return tuple(f.shape)

    def rank(self, a: Any) -> int:
        return len(self.shape(a))

    def out_fake(self, i: int | None = None) -> Any:
        assert self.node is not None
        val = self.node.meta.get("val")
        return val if i is None else val[i]

    def out_shape(self, i: int | None = None) -> tuple:
        return tuple(self.out_fake(i).shape)

    def out_dtype(self, i: int | None = None) -> DType:
        return DType.from_any(self.out_fake(i).dtype)

    def lookup(self, a: Any) -> Any:
        """Map an FX argument to what it was lowered to (recursively through lists)."""
        if isinstance(a, fx.Node):
            if a.name not in self.env:
                raise self.error(f"input {a.name!r} was not lowered")
            return self.env[a.name]
        if isinstance(a, list | tuple):
            return type(a)(self.lookup(x) for x in a)
        return a

    def error(self, msg: str) -> LoweringError:
        n = self.node
        where = f"FX node {n.name!r} ({n.target})" if n is not None else "lowering"
        frame = user_frame(n) if n is not None else ""
        return LoweringError(f"{where}: {msg}" + (f"\n  from {frame}" if frame else ""))

    # ------------------------------------------------------------------------------------------- values
    def v(self, a: Any, dtype: DType | str | None = None) -> Value:
        """An IR value for an FX argument: tensors as lowered, Python scalars as 0-d constants, SymInts as their
        int64[1] value; cast to ``dtype`` when given and different."""
        x = self.lookup(a) if isinstance(a, fx.Node) else a
        dt = DType.from_any(dtype) if dtype is not None else None
        if isinstance(x, Sym):
            x = x.value
        if isinstance(x, Value):
            return self.cast(x, dt) if dt is not None else x
        if isinstance(x, bool | int | float):
            if dt is None:
                dt = DType.bool if isinstance(x, bool) else DType.int64 if isinstance(x, int) else DType.float32
            return self.scalar(x, dt)
        if isinstance(x, torch.SymInt | torch.SymFloat):
            raise self.error("a symbolic scalar reached a tensor operand; only SymInts from sym_size are supported")
        if x is None:
            raise self.error("a required tensor operand is None")
        raise self.error(f"cannot use {type(x).__name__} {x!r} as a tensor operand")

    def maybe_v(self, a: Any, dtype: DType | str | None = None) -> Value | None:
        return None if a is None else self.v(a, dtype)

    def scalar(self, x: Any, dtype: DType | str, hint: str = "") -> Value:
        dt = DType.from_any(dtype)
        return self.const(np.asarray(x, dtype=dt.to_numpy()), hint or self._hint("c"))

    def const(self, array: Any, hint: str = "", kind: str = "const") -> Value:
        return self.graph.add_const(hint or self._hint("c"), np.asarray(array), kind)

    def int_list(self, xs: Iterable[int], hint: str = "") -> Value:
        return self.const(np.asarray(list(xs), dtype=np.int64).reshape(-1), hint or self._hint("shape"))

    def _hint(self, suffix: str) -> str:
        # No dots: the PyTorch backend turns dotted constant names into submodule paths (kept for FQN weights).
        return f"{self.node.name}_{suffix}" if self.node is not None else suffix

    def cast(self, x: Value, dtype: DType | str) -> Value:
        dt = DType.from_any(dtype)
        if x.type is not None and x.type.dtype == dt:
            return x
        if x.is_const and x.kind == "const":
            assert x.const is not None
            return self.const(x.const.astype(dt.to_numpy()), self._hint(f"as_{dt.value}"))
        return self.op("cast", [x], {"to": dt.value})

    def ints(self, items: Iterable[Any]) -> list[int] | Value:
        """A shape-like list: plain ints when static, else an int64 tensor (concat of constants and SymInt
        values) for an op's static input."""
        vals = [self.lookup(i) if isinstance(i, fx.Node) else i for i in items]
        if all(is_static(v) for v in vals):
            return [int(v) for v in vals]
        pieces: list[Value] = []
        run: list[int] = []
        for v in vals:
            if is_static(v):
                run.append(int(v))
                continue
            if run:
                pieces.append(self.int_list(run))
                run = []
            if isinstance(v, Sym):
                pieces.append(v.value)
            elif isinstance(v, Value):
                pieces.append(self.op("reshape", [self.cast(v, DType.int64), self.int_list([1])]))
            else:
                raise self.error(f"unsupported shape element {v!r}")
        if run:
            pieces.append(self.int_list(run))
        return pieces[0] if len(pieces) == 1 else self.op("concat", pieces, {"axis": 0})

    def static_input(self, xs: list[int] | Value, hint: str = "") -> Value:
        """Turn :meth:`ints` output into an op input (a constant for static lists)."""
        return xs if isinstance(xs, Value) else self.int_list(xs, hint)

    def dim(self, d: Any) -> int | str:
        """An IR dim for a FakeTensor dim: ints stay, symbols get their graph names (``batch``)."""
        if is_static(d):
            return int(d)
        expr = sym_expr(d)
        if expr.is_number:
            return int(expr)
        if expr in self.sym_names:
            return self.sym_names[expr]
        s = str(expr)
        for sym, name in self.sym_names.items():
            s = re.sub(rf"\b{re.escape(str(sym))}\b", name, s)
        return s.replace(" ", "")

    def tensor_type(self, fake: torch.Tensor) -> TensorType:
        return TensorType(DType.from_any(fake.dtype), tuple(self.dim(d) for d in fake.shape))

    # -------------------------------------------------------------------------------------------- emit
    def _scope_name(self, op: str) -> tuple[str, bool]:
        assert self.node is not None
        stack = self.node.meta.get("nn_module_stack") or {}
        if not stack:
            return "", False
        path, typ = list(stack.values())[-1]
        tname = typ if isinstance(typ, str) else f"{getattr(typ, '__module__', '')}.{getattr(typ, '__qualname__', '')}"
        return _clean_path(str(path)), tname.startswith("torch.nn.modules.")

    def _node_name(self, op: str) -> str:
        path, leaf = self._scope_name(op)
        if leaf and path and op not in _HELPER_OPS and path not in self._claimed_paths:
            self._claimed_paths.add(path)
            hint = path
        elif leaf and path and op not in _HELPER_OPS:
            hint = path
        else:
            hint = f"{path}.{op}" if path else op
        if hint not in self._names_used:
            self._names_used.add(hint)
            return hint
        k = self._name_count.get(hint, 0)
        while True:
            k += 1
            cand = f"{hint}_{k}"
            if cand not in self._names_used:
                self._name_count[hint] = k
                self._names_used.add(cand)
                return cand

    def emit(self, op: str, inputs: list[Value | None], attrs: dict[str, Any] | None = None, *,
             num_outputs: int | None = None) -> Node:
        """Create an IR node (named after the module that produced the FX node) and infer its types."""
        while inputs and inputs[-1] is None and get_op(op).input_spec(len(inputs) - 1).optional:
            inputs = inputs[:-1]
        name = self._node_name(op)
        try:
            return self.graph.create_node(op, inputs, attrs or {}, name=name, num_outputs=num_outputs)
        except GraphoptError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the FX node named
            raise self.error(f"emitting {op}: {e}") from e

    def op(self, op: str, inputs: list[Value | None], attrs: dict[str, Any] | None = None) -> Value:
        return self.emit(op, inputs, attrs).outputs[0]


# ---------------------------------------------------------------------------------------------------- driver
DROP_TARGETS: set[Any] = set()
"""FX targets that compute nothing the IR needs (asserts, metadata checks)."""


def _needed(outputs: list[fx.Node]) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(outputs)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return seen


def _flat_nodes(args: Any) -> list[Any]:
    out: list[Any] = []

    def rec(a: Any) -> None:
        if isinstance(a, list | tuple):
            for x in a:
                rec(x)
        elif isinstance(a, dict):
            for x in a.values():
                rec(x)
        else:
            out.append(a)

    rec(args)
    return out


def _inplace_functional(target: Any) -> Any:
    """``aten.relu_.default`` -> ``aten.relu.default`` (for programs that were not functionalized)."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    name = target.overloadpacket.__name__
    if not name.endswith("_") or name.startswith("_"):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    if packet is None:
        return None
    return getattr(packet, target._overloadname, None)


class ProgramLowering:
    """Lowers one FX graph whose placeholders are already bound to IR values in ``ctx.env``."""

    def __init__(self, ctx: LoweringContext) -> None:
        self.ctx = ctx

    def run(self, fx_graph: fx.Graph, outputs: list[fx.Node]) -> None:
        needed = _needed(outputs)
        for n in fx_graph.nodes:
            if n.op != "call_function" or n not in needed:
                continue
            self.lower_node(n)

    def lower_node(self, n: fx.Node) -> None:
        ctx = self.ctx
        ctx.node = n
        target = n.target
        if target in DROP_TARGETS:
            ctx.env[n.name] = None
            return
        if self._try_fold(n):
            return
        rule = find_rule(target)
        rebind = None
        if rule is None:
            functional = _inplace_functional(target)
            if functional is not None and find_rule(functional) is not None:
                rule = find_rule(functional)
                rebind = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
        if rule is None:
            raise UnsupportedOpError(unsupported_message(n))
        res = rule(ctx, n)
        res = self._check(n, res)
        ctx.env[n.name] = res
        if rebind is not None and rebind.op != "placeholder":
            ctx.env[rebind.name] = res

    # ------------------------------------------------------------------------------------------ folding
    def _try_fold(self, n: fx.Node) -> bool:
        """Evaluate nodes whose inputs are all literals or ``const`` constants (never params/buffers)."""
        target = n.target
        if not isinstance(target, torch._ops.OpOverload):
            return False
        if torch.Tag.nondeterministic_seeded in target.tags or target.overloadpacket in _NO_FOLD:
            return False
        vals = _flat_nodes(n.meta.get("val"))
        if not vals or not all(isinstance(t, torch.Tensor) for t in vals):
            return False
        for t in vals:
            if any(not is_static(d) for d in t.shape) or t.numel() > FOLD_LIMIT:
                return False
        env = self.ctx.env
        for a in _flat_nodes((n.args, n.kwargs)):
            if isinstance(a, fx.Node):
                e = env.get(a.name)
                if not (isinstance(e, Value) and e.kind == "const" and e.const is not None
                        and e.const.size <= FOLD_LIMIT):
                    return False
            elif isinstance(a, torch.SymInt | torch.SymFloat | torch.SymBool):
                return False

        def real(a: Any) -> Any:
            if isinstance(a, fx.Node):
                c = env[a.name].const
                if c.dtype == DType.bfloat16.to_numpy():
                    return torch.from_numpy(c.view(np.int16).copy()).view(torch.bfloat16)
                return torch.from_numpy(np.array(c, copy=True))
            if isinstance(a, list | tuple):
                return type(a)(real(x) for x in a)
            return a

        try:
            with torch.no_grad():
                out = target(*real(n.args), **{k: real(v) for k, v in n.kwargs.items()})
        except Exception:  # noqa: BLE001 - folding is an optimization; lower normally instead
            return False
        ctx = self.ctx
        ctx.node = n
        if isinstance(out, torch.Tensor):
            ctx.env[n.name] = ctx.const(to_numpy(out), ctx._hint("folded"))
        else:
            ctx.env[n.name] = tuple(ctx.const(to_numpy(t), ctx._hint(f"folded{i}")) for i, t in enumerate(out))
        return True

    # ------------------------------------------------------------------------------------------- checks
    def _check(self, n: fx.Node, res: Any) -> Any:
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor):
            if isinstance(res, bool | int | float):
                res = self.ctx.scalar(res, DType.from_any(val.dtype))
            if not isinstance(res, Value):
                raise self.ctx.error(f"lowering rule returned {type(res).__name__}, expected one IR value")
            return self._check_value(res, val)
        if isinstance(val, list | tuple) and isinstance(res, list | tuple):
            if len(res) != len(val):
                raise self.ctx.error(f"lowering rule returned {len(res)} results, the op has {len(val)}")
            return tuple(self._check_value(r, f) if isinstance(r, Value) and isinstance(f, torch.Tensor) else r
                         for r, f in zip(res, val, strict=True))
        return res

    def _check_value(self, v: Value, fake: torch.Tensor) -> Value:
        ctx = self.ctx
        want = DType.from_any(fake.dtype)
        if v.type is None:
            return v
        if v.type.dtype != want:
            v = ctx.cast(v, want)
        shape = v.type.shape
        if shape is None:
            return v
        if len(shape) != fake.dim():
            raise ctx.error(f"lowered to rank {len(shape)} ({v.type}) but torch computes rank {fake.dim()} "
                            f"{list(fake.shape)}: the lowering rule is wrong for this case")
        for a, b in zip(shape, fake.shape, strict=True):
            if is_static(b) and is_static(a) and a != b:
                raise ctx.error(f"lowered to shape {list(shape)} but torch computes {list(fake.shape)}")
        return v


_NO_FOLD: set[Any] = set()


def unsupported_message(n: fx.Node) -> str:
    frame = user_frame(n)
    tgt = n.target
    tname = str(tgt) if isinstance(tgt, torch._ops.OpOverload) else getattr(tgt, "__name__", str(tgt))
    return (
        f"graphopt has no lowering for {tname} (FX node {n.name!r})"
        + (f", produced by {frame}" if frame else "")
        + ". Register one with @graphopt.frontends.torch.register_lowering("
        + (f"torch.ops.{tgt.namespace}.{tgt._opname}.{tgt._overloadname}"
           if isinstance(tgt, torch._ops.OpOverload) else tname)
        + ") on a function (ctx, node) that emits IR ops with ctx.op(...) "
        "(see graphopt/frontends/torch_lowering/rules.py for examples); if the IR lacks the op, add it with "
        "@graphopt.ir.registry.op first."
    )


def dead_code_elimination(graph: Graph) -> int:
    """Erase nodes none of whose outputs is used (all IR ops are pure) and unused constants."""
    outs = {id(v) for v in graph.outputs}
    removed = 0
    for node in reversed(graph.nodes):
        if all(not o.uses and id(o) not in outs for o in node.outputs):
            graph.erase_node(node)
            removed += 1
    graph.remove_unused_constants()
    return removed


OPERATOR_TARGETS = (operator.add, operator.sub, operator.mul, operator.floordiv, operator.mod, operator.neg,
                    operator.truediv)
