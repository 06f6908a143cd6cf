"""Shape and dtype inference by running each op's own implementation on meta tensors.

Why: an op's PyTorch function *is* its semantics, so executing it on ``device="meta"`` tensors yields exactly
the shapes the backend will produce, for every op, with no second set of hand-written rules to drift.

Symbolic dims: each symbol gets a large sentinel integer for the meta run and is mapped back afterwards; a dim
derived arithmetically from a symbol (``batch*3``) becomes a fresh symbol named after the node. Small integer
tensors computed from shapes (``Shape -> Gather -> Concat -> Reshape``) are propagated as *known values* so
dynamic-shape graphs exported by torch/ONNX still infer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .graph import Graph, IRError, Node, Value
from .registry import get_op
from .types import DType, TensorType

_SENTINEL_BASE = 7_000_003
_KNOWN_MAX_NUMEL = 4096
# a known integer in [_SENTINEL_MIN, 2**62) came from a symbol (a sentinel, or one shifted by a small offset);
# 2**62 and above are "to the end" markers (INT64_MAX slice ends), not symbols
_SENTINEL_MIN = _SENTINEL_BASE - 1_000_000


class ShapeInferenceError(IRError):
    pass


def _sentinels(graph: Graph | None) -> dict[str, int]:
    if graph is None:
        return {}
    table = graph.meta.setdefault("_sym_sentinels", {})
    return table


def _sentinel_for(table: dict[str, int], sym: str) -> int:
    if sym not in table:
        table[sym] = _SENTINEL_BASE + 1009 * len(table)
    return table[sym]


def known_value(v: Value | None) -> np.ndarray | None:
    """The array a value is known to hold at compile time (a constant, or a propagated shape computation)."""
    if v is None:
        return None
    if v.const is not None:
        return v.const
    return v.meta.get("_known")


def _sym_dependent(v: Value | None) -> bool:
    return v is not None and v.const is None and bool(v.meta.get("_known_sym"))


def infer_node(node: Node) -> None:
    """Fill the output types of ``node`` (and known values of small shape tensors)."""
    opdef = get_op(node.op)
    if not opdef.arity_ok(len(node.inputs)):
        raise ShapeInferenceError(
            f"node {node.name} ({node.op}) has {len(node.inputs)} inputs; expected "
            f"{', '.join(s.name + ('?' if s.optional else '*' if s.variadic else '') for s in opdef.inputs)}")
    for i, v in enumerate(node.inputs):
        if v is not None and v.type is None:
            raise ShapeInferenceError(f"node {node.name} ({node.op}): input {i} %{v.name} has no type; "
                                      f"infer its producer first")
    if opdef.infer is not None:
        types = opdef.infer(node)
        for o, t in zip(node.outputs, types, strict=False):
            o.type = t
        _try_known(node, opdef, _sentinels(node.graph))
        return
    infer_by_meta(node)


def infer_by_meta(node: Node) -> list[TensorType | None]:
    """The generic rule: run the op's function on meta tensors (symbols as sentinels), set and return the
    output types. Ops with an ``infer`` refinement call this first and adjust what the meta run cannot see."""

    opdef = get_op(node.op)
    table = _sentinels(node.graph)
    try:
        args = _meta_args(node, opdef, table)
    except _SymbolicOverflow:
        return _infer_small(node, opdef, table)
    if args is None:
        # A shape-like argument computed at run time: rank/dims are not known statically.
        dt = next((v.type.dtype for v in node.inputs if v is not None and v.type is not None), DType.float32)
        for o in node.outputs:
            o.type = TensorType(dt, None)
        _try_known(node, opdef, table)
        return [o.type for o in node.outputs]
    rev = {s: k for k, s in table.items()}
    try:
        outs = _run_meta(node, opdef, args)
    except _SymbolicOverflow:
        return _infer_small(node, opdef, table)
    for k, (o, t) in enumerate(zip(node.outputs, outs, strict=True)):
        dims: list[int | str] = []
        for d_i, d in enumerate(t.shape):
            d = int(d)
            if d in rev:
                dims.append(rev[d])
            elif d >= _SENTINEL_BASE:
                # A dim derived from symbols (e.g. batch*16): remember its sentinel so later ops (a reshape back
                # with -1) compute with the same number instead of a fresh, unrelated one.
                fresh = f"{node.name}_o{k}_d{d_i}"
                table[fresh] = d
                dims.append(fresh)
            else:
                dims.append(d)
        o.type = TensorType(DType.from_any(t.dtype), tuple(dims))
    _try_known(node, opdef, table)
    return [o.type for o in node.outputs]


class _SymbolicOverflow(Exception):
    """The sentinel sizes of several symbolic dims multiply past int64 (``batch x seq x seq`` attention masks)."""


def _meta_args(node: Node, opdef, table: dict[str, int], translate: dict[int, int] | None = None) -> list | None:
    """The op's arguments for a meta run (None when a static argument is only known at run time).

    ``translate`` maps the sentinels inside known static values (a reshape target ``[batch, seq, 4, 16]``) to
    another table's; a derived symbolic number it does not know raises :class:`_SymbolicOverflow`."""
    args: list[Any] = []
    unknown_static = False
    for i, v in enumerate(node.inputs):
        spec = opdef.input_spec(i)
        if v is None:
            args.append(None)
            continue
        kv = known_value(v)
        if spec.static and kv is not None:
            vals = np.asarray(kv).tolist()
            if translate is not None and _sym_dependent(v):
                vals = _translate(vals, translate)
            args.append(vals)
            continue
        unknown_static = unknown_static or spec.static
        args.append(_meta_tensor(v, table))
    return None if unknown_static else args


def _translate(vals: Any, translate: dict[int, int]) -> Any:
    if isinstance(vals, list):
        return [_translate(x, translate) for x in vals]
    if isinstance(vals, int) and _SENTINEL_MIN <= abs(vals) < 2**62:
        if abs(vals) not in translate:
            raise _SymbolicOverflow
        return translate[abs(vals)] * (1 if vals > 0 else -1)
    return vals


def _run_meta(node: Node, opdef, args: list) -> list:
    import torch

    try:
        # Meta device: value-producing ops (constant_of_shape, range) whose static operands hold symbolic
        # sentinels (~7e6 per symbol) would otherwise allocate their whole output for real.
        with torch.no_grad(), torch.device("meta"):
            res = opdef.fn(*args, **node.attrs)
    except Exception as e:  # noqa: BLE001 - re-raised with the node named
        if "overflow" in str(e) and any(v is not None and v.type is not None and v.type.symbols()
                                        for v in node.inputs):
            raise _SymbolicOverflow from e
        shapes = ", ".join("None" if v is None else str(v.type) for v in node.inputs)
        raise ShapeInferenceError(
            f"node {node.name} ({node.op}) cannot take inputs ({shapes}) with attributes {node.attrs}: {e}"
        ) from e
    outs = list(res) if isinstance(res, tuple | list) else [res]
    if len(outs) != len(node.outputs):
        raise ShapeInferenceError(f"node {node.name} ({node.op}) produced {len(outs)} outputs, "
                                  f"the node declares {len(node.outputs)}")
    return [t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in outs]


# Two small sentinel tables for graphs whose big sentinels overflow (``batch x heads x seq x seq``): a dim that
# differs between the two runs came from a symbol; one equal in both is static.
_SMALL_BASES = (10_007, 20_011)


def _infer_small(node: Node, opdef, table: dict[str, int]) -> list[TensorType | None]:
    """Infer ``node`` with small per-symbol sentinels (two runs) when the big ones overflow int64."""
    syms = list(table)
    runs = []
    for base in _SMALL_BASES:
        small = {sym: base + 2 * i for i, sym in enumerate(syms)}
        try:
            args = _meta_args(node, opdef, small, translate={table[s]: small[s] for s in syms})
            outs = None if args is None else _run_meta(node, opdef, args)
        except _SymbolicOverflow:
            shapes = ", ".join("None" if v is None else str(v.type) for v in node.inputs)
            raise ShapeInferenceError(
                f"node {node.name} ({node.op}): the symbolic dims of its inputs ({shapes}) are too many to "
                f"infer; bind some with --input-shape") from None
        if outs is None:
            dt = next((v.type.dtype for v in node.inputs if v is not None and v.type is not None), DType.float32)
            for o in node.outputs:
                o.type = TensorType(dt, None)
            return [o.type for o in node.outputs]
        runs.append((small, outs))
    (small_a, outs_a), (small_b, outs_b) = runs
    sym_a = {v: k for k, v in small_a.items()}
    for k, (o, ta, tb) in enumerate(zip(node.outputs, outs_a, outs_b, strict=True)):
        dims: list[int | str] = []
        for d_i, (da, db) in enumerate(zip(ta.shape, tb.shape, strict=True)):
            da, db = int(da), int(db)
            if da == db:
                dims.append(da)
            elif da in sym_a and small_b[sym_a[da]] == db:
                dims.append(sym_a[da])
            else:  # derived from symbols: a fresh one with its own (big) sentinel
                fresh = f"{node.name}_o{k}_d{d_i}"
                table.pop(fresh, None)
                _sentinel_for(table, fresh)
                dims.append(fresh)
        o.type = TensorType(DType.from_any(ta.dtype), tuple(dims))
    return [o.type for o in node.outputs]


def symbol_of(graph: Graph | None, value: int, offset: int = 0) -> str | None:
    """The symbolic dim whose meta-run sentinel is ``value`` (a fresh derived symbol for ``value − offset``
    when ``offset`` is non-zero), or None when ``value`` is not a sentinel. Why: ops whose semantics clamp a
    symbolic *value* against a static dim (``slice``) lose the symbol in the meta run; their ``infer``
    refinement asks here to get it back."""
    table = _sentinels(graph)
    rev = {s: k for k, s in table.items()}
    if value not in rev:
        return None
    if offset == 0:
        return rev[value]
    fresh = f"{rev[value]}_minus_{offset}"
    table.setdefault(fresh, value - offset)
    return fresh


def _meta_tensor(v: Value, table: dict[str, int]):
    import torch

    assert v.type is not None
    if v.type.shape is None:
        raise ShapeInferenceError(f"value %{v.name} has unknown rank; pass --input-shape or fix its producer")
    shape = [d if isinstance(d, int) else _sentinel_for(table, d) for d in v.type.shape]
    try:
        return torch.empty(shape, dtype=v.type.dtype.to_torch(), device="meta")
    except RuntimeError as e:  # e.g. a dim product overflowing int64 storage size (a shape bomb)
        if "overflow" in str(e) and v.type.symbols():
            raise _SymbolicOverflow from e  # only the sentinels are too big: retried with small ones
        raise ShapeInferenceError(f"value %{v.name} has an impossible shape {v.type}: {e}") from None


def _try_known(node: Node, opdef, table: dict[str, int]) -> None:
    """Evaluate tiny integer shape computations so later reshapes see their target."""
    import torch

    for o in node.outputs:
        o.meta.pop("_known", None)
        o.meta.pop("_known_sym", None)
    if node.op == "shape":
        v = node.inputs[0]
        if v is not None and v.type is not None and v.type.shape is not None:
            shape = [d if isinstance(d, int) else _sentinel_for(table, d) for d in v.type.shape]
            start, end = node.attrs.get("start", 0), node.attrs.get("end")
            arr = np.asarray(shape[start:end] if end is not None else shape[start:], dtype=np.int64)
            node.outputs[0].meta["_known"] = arr
            node.outputs[0].meta["_known_sym"] = any(isinstance(d, str) for d in v.type.shape)
        return
    if not opdef.value_prop:
        return
    # Only tiny, statically shaped results are worth knowing; checking the already-inferred output types first
    # also keeps a sentinel-sized ``range`` from being materialized here.
    for o in node.outputs:
        n = None if o.type is None else o.type.numel()
        if n is None or n > _KNOWN_MAX_NUMEL:
            return
    vals = []
    sym = False
    for i, v in enumerate(node.inputs):
        if v is None:
            vals.append(None)
            continue
        kv = known_value(v)
        if kv is None or np.asarray(kv).size > _KNOWN_MAX_NUMEL:
            return
        sym = sym or _sym_dependent(v)
        if opdef.input_spec(i).static:
            vals.append(np.asarray(kv).tolist())
        else:
            try:  # a copy: constants may be read-only (safetensors, ONNX raw data) and torch warns on those
                vals.append(torch.as_tensor(np.array(kv, copy=True)))
            except TypeError:  # a dtype torch cannot take from numpy (bfloat16): no known value
                return
    try:
        with torch.no_grad():
            res = opdef.fn(*vals, **node.attrs)
    except Exception:  # noqa: BLE001 - a failed propagation only loses a known value
        return
    outs = list(res) if isinstance(res, tuple | list) else [res]
    if sym and node.op in _SYMBOL_FITS:
        outs = [_SYMBOL_FITS[node.op](vals, outs[0])]
    for o, t in zip(node.outputs, outs, strict=False):
        if isinstance(t, torch.Tensor) and t.numel() <= _KNOWN_MAX_NUMEL:
            o.meta["_known"] = t.numpy().copy()
            o.meta["_known_sym"] = sym


def _is_sentinel(a: Any) -> Any:
    return (a >= _SENTINEL_MIN) & (a < 2**62)


def _min_symbol_fits(vals: list, out: Any) -> Any:
    """``min(64, seq)`` (a static bound and a symbol) is ``seq``: the model only works when the symbol fits its
    bounds, the assumption torch.export guards too. Without it the sentinel (~7e6) loses to the bound and a
    later reshape to ``[batch, min(64, seq), ...]`` gets a static 64 where the data has ``seq``."""
    import torch

    ts = [t for t in vals if isinstance(t, torch.Tensor)]
    if not ts or any(t.dtype.is_floating_point for t in ts):
        return out
    shape = torch.broadcast_shapes(*(t.shape for t in ts))
    big = torch.iinfo(torch.int64).max
    sym = torch.zeros(shape, dtype=torch.bool)
    best = torch.full(shape, big, dtype=torch.int64)
    for t in ts:
        t = t.to(torch.int64).expand(shape)
        m = _is_sentinel(t)
        sym |= m
        best = torch.where(m, torch.minimum(best, t), best)
    return torch.where(sym, best, out.to(torch.int64)).to(out.dtype)


#: value-propagation refinements for ops whose result on sentinels would lose a symbol
_SYMBOL_FITS = {"min": _min_symbol_fits}


def infer_graph(graph: Graph) -> None:
    """Re-infer every node in order (after a frontend builds the graph or a pass rewrites it)."""
    for n in graph.nodes:
        infer_node(n)


def is_known_static(v: Value) -> bool:
    """A known value that does not depend on symbolic dims (safe to fold into a constant)."""
    return known_value(v) is not None and not _sym_dependent(v)


def set_input_shapes(graph: Graph, shapes: dict[str, list[int | str]]) -> None:
    """Bind graph input shapes (e.g. ``--input-shape x=1,3,224,224``) and re-infer the whole graph.

    Why: symbolic dims stay symbolic by default; NPU export and latency measurement need them fixed.
    """
    by_name = {v.name: v for v in graph.inputs}
    for name, shape in shapes.items():
        if name not in by_name:
            raise IRError(f"--input-shape names input {name!r}, but the graph's inputs are "
                          f"{', '.join(by_name) or '(none)'}")
        v = by_name[name]
        old = v.type
        if old is not None and old.shape is not None and len(old.shape) != len(shape):
            raise IRError(f"--input-shape {name}: rank {len(shape)} given, the model's input has rank "
                          f"{len(old.shape)} ({old})")
        if old is not None and old.shape is not None:
            for i, (a, b) in enumerate(zip(old.shape, shape, strict=True)):
                if isinstance(a, int) and isinstance(b, int) and a != b:
                    raise IRError(f"--input-shape {name}: dim {i} is fixed to {a} in the model, got {b}; only "
                                  f"symbolic dims can be bound: re-export the model with dim {i} dynamic "
                                  f"(torch.export dynamic_shapes, or a dim_param in ONNX)")
        v.type = TensorType(old.dtype if old is not None else DType.float32, tuple(shape))
    graph.meta.pop("_sym_sentinels", None)
    infer_graph(graph)
