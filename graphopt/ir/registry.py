"""The one op registry: every primitive op's schema, shape/dtype rule, cost rule and framework mappings.

An op is declared once, with ``@op(...)`` on its PyTorch implementation. That single function is the op's
semantics: the PyTorch backend calls it (and copies its source into emitted modules), and shape inference runs
it on meta tensors, so shapes can never disagree with execution. Ops follow ONNX semantics (names in snake
case, ONNX attribute names), which makes ONNX import/export a table lookup instead of a translation.

To add an op for a model graphopt does not support yet::

    from graphopt.ir.registry import op, In

    @op("my_gelu", onnx="Gelu", inputs=[In("X")], attrs={"approximate": "none"}, category="activation")
    def my_gelu(X, *, approximate="none"):
        return torch.nn.functional.gelu(X, approximate=approximate)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .graph import Node

REQUIRED = object()
"""Marker for attributes without a default."""


class UnsupportedOpError(ValueError):
    """Raised for an op type that has no registry entry; the message says how to register one."""


@dataclass(frozen=True)
class In:
    """Input slot of an op.

    ``static``: a shape-like argument (reshape target, slice starts, pads...). When it is a constant the
    implementation receives a Python list, which keeps emitted code readable and lets shape inference run
    without data. ``variadic``: the rest of the inputs (concat, sum).
    """

    name: str
    optional: bool = False
    variadic: bool = False
    static: bool = False


@dataclass
class OpDef:
    name: str
    fn: Callable[..., Any]
    inputs: list[In]
    attrs: dict[str, Any]
    onnx: str | None
    outputs: int | Callable[[dict[str, Any]], int] = 1
    category: str = "other"
    flops: Callable[[Node], int] | None = None
    infer: Callable[[Node], list] | None = None
    weight_inputs: tuple[int, ...] = ()
    onnx_export: Callable[..., Any] | None = None
    onnx_min_opset: int = 1
    value_prop: bool = False
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: whether a node of this op with constant inputs may be replaced by its result (import-time and
    #: fold-constants). False where the node *is* the information: DequantizeLinear of int8 weights (NPU
    #: compilers read the quantization off it), BatchNorm (folded into convs, not into a constant), Dropout.
    foldable: bool = True
    #: whether the inputs may be listed in any order with the same result (add, mul, max, ..., mean): pattern
    #: matching tries both orders of a binary node, and AutoGO's segment keys ignore the input slot.
    commutative: bool = False

    def num_outputs(self, attrs: dict[str, Any]) -> int:
        return self.outputs(attrs) if callable(self.outputs) else self.outputs

    def complete_attrs(self, attrs: dict[str, Any], node_name: str = "?") -> dict[str, Any]:
        """Fill defaults and reject unknown or missing attributes, naming the node."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ValueError(
                f"node {node_name} ({self.name}): unknown attribute(s) {sorted(unknown)}; "
                f"{self.name} accepts {sorted(self.attrs)}")
        out = {}
        for k, default in self.attrs.items():
            if k in attrs:
                out[k] = attrs[k]
            elif default is REQUIRED:
                raise ValueError(f"node {node_name} ({self.name}): missing required attribute {k!r}")
            else:
                out[k] = default
        return out

    def input_spec(self, index: int) -> In:
        if index < len(self.inputs):
            return self.inputs[index]
        if self.inputs and self.inputs[-1].variadic:
            return self.inputs[-1]
        raise IndexError(f"{self.name} takes at most {len(self.inputs)} inputs, got index {index}")

    def arity_ok(self, n: int) -> bool:
        required = sum(1 for s in self.inputs if not s.optional and not s.variadic)
        if self.inputs and self.inputs[-1].variadic:
            return n >= required
        return required <= n <= len(self.inputs)


_REGISTRY: dict[str, OpDef] = {}
_BY_ONNX: dict[str, str] = {}


def op(
    name: str,
    *,
    inputs: list[In],
    attrs: dict[str, Any] | None = None,
    onnx: str | None = "",
    outputs: int | Callable[[dict[str, Any]], int] = 1,
    category: str = "other",
    flops: Callable[[Node], int] | None = None,
    infer: Callable[[Node], list] | None = None,
    weight_inputs: tuple[int, ...] = (),
    onnx_min_opset: int = 1,
    value_prop: bool = False,
    replace: bool = False,
    foldable: bool = True,
    commutative: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated PyTorch function as the op ``name``.

    ``onnx=""`` derives the ONNX op type from the name (``batch_norm`` -> ``BatchNorm``) — pass it explicitly
    when the names differ, or ``None`` for ops with no single ONNX counterpart (then give ``onnx_export``
    via :func:`set_onnx_export`). ``flops`` counts multiply-adds as 2 FLOPs; ops without a rule count one FLOP
    per output element. ``weight_inputs`` are the input slots holding trainable parameters (for costs and for
    AutoGO's weighted-node tokens).
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and not replace:
            raise ValueError(f"op {name!r} is already registered (pass replace=True to override)")
        onnx_name = "".join(p.capitalize() for p in name.split("_")) if onnx == "" else onnx
        opdef = OpDef(name, fn, inputs, dict(attrs or {}), onnx_name, outputs, category, flops, infer,
                      weight_inputs, None, onnx_min_opset, value_prop, (inspect.getdoc(fn) or "").split("\n")[0],
                      foldable=foldable, commutative=commutative)
        _REGISTRY[name] = opdef
        if onnx_name:
            _BY_ONNX.setdefault(onnx_name, name)
        fn.__graphopt_op__ = name  # type: ignore[attr-defined]
        return fn

    return deco


def _ensure_loaded() -> None:
    if not _REGISTRY or "add" not in _REGISTRY:
        from . import ops  # noqa: F401  (registers the built-in ops)


def get_op(name: str) -> OpDef:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedOpError(unsupported_message(name)) from None


def unsupported_message(op_type: str, node: str | None = None, domain: str = "") -> str:
    where = f" (node {node!r})" if node else ""
    dom = f" in domain {domain!r}" if domain else ""
    return (f"unsupported op {op_type!r}{dom}{where}: graphopt has no registry rule for it. Register one with "
            f"@graphopt.ir.registry.op({_snake(op_type)!r}, onnx={op_type!r}, inputs=[...]) on a PyTorch "
            f"function that implements it (see docs/ir.md), then import that module before loading the model.")


def is_commutative(name: str) -> bool:
    """Whether op ``name`` gives the same result for any order of its inputs (False for unknown ops)."""
    return has_op(name) and get_op(name).commutative


def has_op(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    _ensure_loaded()
    return dict(_REGISTRY)


def op_for_onnx(onnx_type: str) -> str | None:
    """Registry name of the op that implements an ONNX op type, if any."""
    _ensure_loaded()
    return _BY_ONNX.get(onnx_type)


def set_onnx_export(name: str, fn: Callable[..., Any], min_opset: int = 1) -> None:
    """Attach a custom ONNX emitter to an op (used when one IR op becomes several ONNX nodes)."""
    opdef = get_op(name)
    opdef.onnx_export = fn
    opdef.onnx_min_opset = min_opset


def _snake(s: str) -> str:
    # GatherND -> gather_nd, BatchNormalization -> batch_normalization
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", s).lower()
