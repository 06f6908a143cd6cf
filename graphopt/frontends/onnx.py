"""ONNX frontend: an ONNX model of any opset from 6 upward -> graphopt IR (opset-18 forms).

Why a hand-written converter instead of ``onnx.version_converter``: the converter fails on many old files
(opset-6 broadcast attributes, legacy BatchNormalization), and the IR's registry already follows ONNX
semantics, so importing is mostly a table lookup plus a few rewrites of legacy forms (attribute -> input,
"coerce to 2D" softmax, Upsample -> resize...). Each node's types come from the registry's inference, so a
model imports with a type on every value. Nodes whose inputs are all constants are folded by running the
op's own PyTorch implementation, so weights stored as small subgraphs (``ConstantOfShape`` in the model-zoo
"light" files) end up as IR constants.

Limits (documented choices): control flow (If/Loop/Scan) and non-default domains are unsupported unless an
op is registered with ``onnx="<domain>.<OpType>"``; optional outputs of training-mode ops (BatchNormalization
running stats, MaxPool indices) are unsupported when used; model-local functions are inlined with
``onnx.inliner``.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import USER_ERRORS, ModelLoadError
from ..ir.graph import Graph, Value
from ..ir.infer import ShapeInferenceError
from ..ir.limits import LimitExceededError, check_bytes, check_depth, check_dims, check_nodes, current_limits
from ..ir.registry import OpDef, UnsupportedOpError, get_op, op_for_onnx, unsupported_message
from ..ir.types import DType, TensorType

FOLD_MAX_ELEMENTS = 64 * 1024 * 1024
"""Constant subgraphs are folded only when each output has at most this many elements."""

DEFAULT_DOMAINS = ("", "ai.onnx")
CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})
LEGACY_BROADCAST_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater",
                                  "Less", "PRelu"})
REDUCE_OPS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                        "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})
_KIND_RANK = {"const": 0, "buffer": 1, "param": 2}


def load_onnx(
    path_or_model: str | os.PathLike | Any,
    *,
    input_shapes: dict[str, list[int | str]] | None = None,
    opset_hint: int | None = None,
) -> Graph:
    """Import an ONNX model (a path or an ``onnx.ModelProto``) into the IR.

    ``input_shapes`` fixes graph input shapes (``{"x": [1, 3, 224, 224]}``; symbols allowed) before
    inference. ``opset_hint`` is the default-domain opset assumed when the model declares none (ONNX itself
    says 1; old hand-made files often mean something newer). External data is read relative to the model's
    folder and must stay inside it.
    """
    model, base, label, owned = _read_model(path_or_model)
    check_model_limits(model, label)
    _load_external_data(model, base, label)
    if len(model.functions):
        try:
            import onnx.inliner

            model = onnx.inliner.inline_local_functions(model)
        except Exception as e:  # noqa: BLE001 - named in the message
            raise ModelLoadError(f"{label}: cannot inline the model's local functions ({e})") from e
        check_nodes(f"{label} (after inlining its local functions)", len(model.graph.node))
    opset = None
    for o in model.opset_import:
        if o.domain in DEFAULT_DOMAINS:
            opset = int(o.version)
    if opset is None:
        opset = int(opset_hint) if opset_hint is not None else 1
    name = model.graph.name or (Path(label).stem if base is not None else "onnx_model")
    imp = _Importer(Graph(name), opset, label, release=owned)
    imp.graph.meta.update({"source": "onnx", "onnx_opset": opset, "onnx_producer": model.producer_name})
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # folding runs many small fills; thread wake-ups would dominate (seconds per model)
    try:
        imp.run(model.graph, input_shapes)
    finally:
        torch.set_num_threads(threads)
    return imp.graph


# ------------------------------------------------------------------------------------------------- reading
def _read_model(src: Any) -> tuple[Any, Path | None, str, bool]:
    """The model proto, the folder its external data lives in, a label for messages, and whether we own it."""
    import onnx
    from google.protobuf.message import DecodeError

    owned = True
    if isinstance(src, onnx.ModelProto):
        model, base, label = src, None, f"<ModelProto {src.graph.name or 'unnamed'}>"
        owned = False  # never mutate the caller's proto
    elif isinstance(src, str | os.PathLike):
        path = Path(src)
        label = str(path)
        if not path.exists():
            raise ModelLoadError(f"{path}: no such file")
        if path.is_dir():
            raise ModelLoadError(f"{path}: is a folder; pass the .onnx file inside it")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelLoadError(f"{path}: cannot read ({e})") from e
        if not data:
            raise ModelLoadError(f"{path}: the file is empty")
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as e:
            if "MaxDepth" in str(e):
                raise LimitExceededError(
                    f"{path}: messages are nested deeper than protobuf decodes (100 levels, about 32 nested "
                    f"If/Loop/Scan bodies); a subgraph-depth bomb or a corrupt file") from e
            raise ModelLoadError(f"{path}: not a readable ONNX model (protobuf decoding failed: {e}); the file "
                                 f"is truncated or corrupt") from e
        base = path.resolve().parent
    else:
        raise TypeError(f"load_onnx takes a path or an onnx.ModelProto, got {type(src).__name__}")
    if not model.HasField("graph") or (not len(model.graph.node) and not len(model.graph.output)):
        raise ModelLoadError(f"{label}: holds no graph (the file is truncated, corrupt or not an ONNX model)")
    if not len(model.graph.output):
        raise ModelLoadError(f"{label}: the graph declares no outputs (the file is truncated or corrupt)")
    return model, base, label, owned


def _all_tensors(graph) -> list:
    out = list(graph.initializer)
    for sp in graph.sparse_initializer:
        out += [sp.values, sp.indices]
    for n in graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                out.append(a.t)
            out.extend(a.tensors)
            if a.HasField("sparse_tensor"):
                out += [a.sparse_tensor.values, a.sparse_tensor.indices]
    return out


_PACKED_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6}


def _elem_bits(elem_type: int) -> int | None:
    """Bits per element of an ONNX element type (None for strings and unknown types: no byte count)."""
    import onnx

    try:
        name = onnx.TensorProto.DataType.Name(int(elem_type))
        if name in ("STRING", "UNDEFINED"):
            return None
        return _PACKED_BITS.get(name) or 8 * onnx.helper.tensor_dtype_to_np_dtype(int(elem_type)).itemsize
    except (ValueError, KeyError, TypeError):
        return None


def _expected_bytes(t) -> int | None:
    """The bytes a tensor's dims and type call for (packed types round up), or None when unknown."""
    bits = _elem_bits(t.data_type)
    if bits is None or any(d < 0 for d in t.dims):
        return None
    n = 1
    for d in t.dims:
        n *= d
    return (n * bits + 7) // 8


def _check_tensor(t, where: str) -> None:
    """Refuse a tensor whose dims break the limits, or whose inline bytes disagree with its dims."""
    import onnx

    bits = _elem_bits(t.data_type)
    check_dims(f"{where}: tensor {t.name!r}", list(t.dims), max(1, (bits or 8) // 8))
    if t.data_location == onnx.TensorProto.EXTERNAL or not t.HasField("raw_data"):
        return  # external data is checked before it is read; typed fields are checked when decoded
    want = _expected_bytes(t)
    if want is not None and len(t.raw_data) != want:
        raise ModelLoadError(f"{where}: tensor {t.name!r} declares dims {list(t.dims)} "
                             f"({onnx.TensorProto.DataType.Name(t.data_type)}), which need {want:,} bytes, but "
                             f"holds {len(t.raw_data):,} bytes of data (the file is truncated or corrupt)")


def _check_type(tp, where: str, *, count_bytes: bool) -> None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return
    tt = tp.tensor_type
    dims = [int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim]
    bits = _elem_bits(tt.elem_type) if count_bytes else None
    check_dims(where, dims, max(1, (bits or 8) // 8) if count_bytes else 0)


def _check_text(where: str, what: str, texts: list) -> None:
    """Protobuf hands back ``bytes`` for string fields holding invalid UTF-8; names must be text."""
    for t in texts:
        if not isinstance(t, str):
            raise ModelLoadError(f"{where}: a {what} name or type ({t[:40]!r}) is not valid UTF-8 (the file is "
                                 f"corrupt)")


def check_model_limits(model, label: str) -> None:
    """Check an ``onnx.ModelProto`` against :func:`graphopt.ir.limits.current_limits` before importing anything.

    Walks every graph, subgraph (If/Loop/Scan bodies) and local function iteratively (no recursion, so a deep
    file cannot exhaust the stack): node count (``max_nodes``), nesting (``max_subgraph_depth``), static dims
    of inputs/outputs/value_info (``max_dim``; inputs also ``max_tensor_bytes`` since running the model
    allocates them), and every initializer and attribute tensor (``max_dim``, ``max_tensor_bytes``, and inline
    bytes matching the dims). Raises :class:`~graphopt.ir.limits.LimitExceededError` or ``ModelLoadError``.
    """
    lim = current_limits()
    total = 0
    _check_text(label, "model", [model.producer_name, model.domain] + [o.domain for o in model.opset_import])
    stack: list[tuple[Any, int, str]] = [(model.graph, 0, label)]
    for f in model.functions:
        _check_text(label, "function", [f.name, f.domain, *f.input, *f.output, *f.attribute])
        stack.append((f, 0, f"{label}: function {f.domain}.{f.name}"))
    while stack:
        g, depth, where = stack.pop()
        check_depth(where, depth, lim)
        total += len(g.node)
        check_nodes(label, total, lim)
        if hasattr(g, "initializer"):  # a GraphProto (FunctionProtos have no value types or initializers)
            _check_text(where, "graph", [g.name] + [v.name for v in (*g.input, *g.output, *g.value_info,
                                                                      *g.initializer)])
            for vi in g.input:
                _check_type(vi.type, f"{where}: input {vi.name!r}", count_bytes=depth == 0)
            for vi in list(g.output) + list(g.value_info):
                _check_type(vi.type, f"{where}: value {vi.name!r}", count_bytes=False)
            for t in g.initializer:
                _check_tensor(t, where)
            for sp in g.sparse_initializer:
                _check_tensor(sp.values, where)
                _check_tensor(sp.indices, where)
                bits = _elem_bits(sp.values.data_type)
                check_dims(f"{where}: sparse tensor {sp.values.name!r} (dense form)", list(sp.dims),
                           max(1, (bits or 8) // 8), lim)
        for n in g.node:
            _check_text(where, "node", [n.name, n.op_type, n.domain, *n.input, *n.output,
                                        *(a.name for a in n.attribute)])
            node_where = f"{where}: node {n.name or '(unnamed)'!r} ({n.op_type})"
            for a in n.attribute:
                if a.HasField("t"):
                    _check_tensor(a.t, node_where)
                for t in a.tensors:
                    _check_tensor(t, node_where)
                if a.HasField("sparse_tensor"):
                    _check_tensor(a.sparse_tensor.values, node_where)
                    _check_tensor(a.sparse_tensor.indices, node_where)
                    bits = _elem_bits(a.sparse_tensor.values.data_type)
                    check_dims(f"{node_where}: sparse attribute {a.name!r} (dense form)",
                               list(a.sparse_tensor.dims), max(1, (bits or 8) // 8), lim)
                for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    sub = (f"{label}: subgraph {sg.name!r} (attribute {a.name!r} of node {n.name or '(unnamed)'!r} "
                           f"({n.op_type}))")
                    stack.append((sg, depth + 1, sub))


def _load_external_data(model, base: Path | None, label: str) -> None:
    """Inline external tensor data, refusing locations outside the model's folder (no path traversal)."""
    import onnx

    for t in _all_tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if base is None:
            raise ModelLoadError(f"{label}: tensor {t.name!r} keeps its data in external file {loc!r}; load the "
                                 f"model from its path so the file can be found")
        if not loc:
            raise ModelLoadError(f"{label}: tensor {t.name!r} has external data without a location")
        p = Path(loc)
        if p.is_absolute() or p.drive or loc.startswith(("/", "\\")):
            raise ModelLoadError(f"{label}: tensor {t.name!r} refers to external data at absolute path {loc!r}; "
                                 f"external data must be a relative path inside the model's folder {base}")
        target = (base / p).resolve()
        if not target.is_relative_to(base):
            raise ModelLoadError(f"{label}: tensor {t.name!r} refers to external data {loc!r}, which resolves to "
                                 f"{target}, outside the model's folder {base}; refusing to read it")
        if not target.is_file():
            raise ModelLoadError(f"{label}: external data file {loc!r} of tensor {t.name!r} is missing "
                                 f"(looked in {base})")
        size = target.stat().st_size
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else size - offset
        except ValueError:
            raise ModelLoadError(f"{label}: external data of tensor {t.name!r} has a non-integer offset or length "
                                 f"({info.get('offset')!r}, {info.get('length')!r}); the file is corrupt") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelLoadError(f"{label}: external data of tensor {t.name!r} wants bytes {offset}..{offset + length}"
                                 f" of {loc!r}, which has {size} bytes (truncated file?)")
        want = _expected_bytes(t)
        if want is not None and length != want:
            raise ModelLoadError(f"{label}: tensor {t.name!r} declares dims {list(t.dims)}, which need {want:,} bytes, "
                                 f"but its external data in {loc!r} is {length:,} bytes (truncated or corrupt)")
        check_bytes(f"{label}: external data of tensor {t.name!r}", length)
        with open(target, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def _to_array(t, label: str, release: bool = False) -> np.ndarray:
    """Decode a tensor into a writable array; ``release`` drops the proto's bytes (when we own the proto)."""
    from onnx import numpy_helper

    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - any decoding problem is a corrupt tensor
        raise ModelLoadError(f"{label}: cannot decode tensor {t.name!r} ({e}); the file is truncated or "
                             f"corrupt") from e
    if arr.dtype == np.dtype("O"):
        raise UnsupportedOpError(f"{label}: tensor {t.name!r} holds strings; graphopt supports numeric tensors only")
    try:
        DType.from_any(arr.dtype)
    except TypeError as e:
        raise UnsupportedOpError(f"{label}: tensor {t.name!r}: {e}") from None
    if not arr.flags.writeable:  # a view of the proto's bytes: own the data (torch refuses read-only arrays)
        arr = arr.copy()
        if release and t.HasField("raw_data"):
            t.ClearField("raw_data")  # our own parsed model: do not keep the bytes twice
    return arr


def _sparse_to_dense(sp, label: str) -> np.ndarray:
    """Densify a SparseTensorProto; indices are validated (out of range or negative -> a load error)."""
    vals = _to_array(sp.values, label).reshape(-1)
    idx = _to_array(sp.indices, label)
    dims = [int(d) for d in sp.dims]
    name = sp.values.name
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{label}: sparse tensor {name!r} has negative dims {dims} (the file is corrupt)")
    check_dims(f"{label}: sparse tensor {name!r} (dense form)", dims, vals.dtype.itemsize)
    if idx.dtype.kind not in "iu":
        raise ModelLoadError(f"{label}: sparse tensor {name!r} has {idx.dtype} indices; ONNX requires int64")
    flat = idx.ndim == 1
    if not (flat or (idx.ndim == 2 and idx.shape[1] == len(dims))) or len(idx) != len(vals):
        raise ModelLoadError(f"{label}: sparse tensor {name!r}: {len(vals)} values with indices of shape "
                             f"{list(idx.shape)} do not fit dims {dims} (the file is corrupt)")
    idx = idx.astype(np.int64)
    bound = np.asarray([math.prod(dims)] if flat else dims, dtype=np.int64)  # fits: check_dims passed
    if idx.size and ((idx < 0).any() or (idx >= bound).any()):
        raise ModelLoadError(f"{label}: sparse tensor {name!r} has indices outside its dims {dims} (the file is "
                             f"corrupt)")
    dense = np.zeros(dims, dtype=vals.dtype)
    if flat:
        dense.reshape(-1)[idx] = vals
    else:
        dense[tuple(idx.T)] = vals
    return dense


def _attr_value(a, label: str, node_label: str) -> Any:
    import onnx

    A = onnx.AttributeProto
    if a.type == A.FLOAT:
        return float(a.f)
    if a.type == A.INT:
        return int(a.i)
    if a.type == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == A.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == A.INTS:
        return [int(x) for x in a.ints]
    if a.type == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.type == A.TENSOR:
        return _to_array(a.t, label)
    if a.type == A.SPARSE_TENSOR:
        return _sparse_to_dense(a.sparse_tensor, label)
    if a.type in (A.GRAPH, A.GRAPHS):
        raise UnsupportedOpError(f"{node_label}: attribute {a.name!r} holds a subgraph; graphopt does not support "
                                 f"control flow or subgraph attributes")
    if a.type == A.UNDEFINED:  # very old files: infer from the populated field
        for field, conv in (("ints", list), ("floats", list), ("i", int), ("f", float)):
            v = getattr(a, field)
            if (isinstance(v, int | float) and a.HasField(field)) or (not isinstance(v, int | float) and len(v)):
                return conv(v)
        if a.HasField("s"):
            return a.s.decode("utf-8", errors="replace")
    raise UnsupportedOpError(f"{node_label}: attribute {a.name!r} has unsupported type "
                             f"{A.AttributeType.Name(a.type)}")


@functools.lru_cache(maxsize=4096)
def _schema(op_type: str, opset: int, domain: str) -> Any:
    """The ONNX schema of ``op_type`` at ``opset`` (None when ONNX does not define it): attribute types."""
    import onnx.defs

    if domain not in DEFAULT_DOMAINS:
        return None
    try:
        return onnx.defs.get_schema(op_type, max(1, opset), "")
    except Exception:  # noqa: BLE001 - SchemaError: unknown op or opset; handled by the importer's own checks
        return None


def _onnx_dtype(elem_type: int, what: str) -> DType:
    try:
        return DType.from_any(int(elem_type))
    except TypeError as e:
        raise UnsupportedOpError(f"{what}: {e}") from None


# ----------------------------------------------------------------------------------------------- importing
class _Importer:
    """State of one import: the graph being built and the ONNX-name -> IR value environment."""

    def __init__(self, graph: Graph, opset: int, label: str, *, release: bool = False) -> None:
        self.graph = graph
        self.release = release
        self.opset = opset
        self.label = label
        self.env: dict[str, Value] = {}
        self.consumed: set[str] = set()

    # ---------------------------------------------------------------- top level
    def run(self, gp, input_shapes: dict[str, list[int | str]] | None) -> None:
        g = self.graph
        for t in gp.initializer:
            self.env[t.name] = g.add_const(t.name or "init", _to_array(t, self.label, self.release), "const")
        for sp in gp.sparse_initializer:
            self.env[sp.values.name] = g.add_const(sp.values.name, _sparse_to_dense(sp, self.label), "const")
        shapes = dict(input_shapes or {})
        real_inputs = [i for i in gp.input if i.name not in self.env]
        unknown = set(shapes) - {i.name for i in real_inputs}
        if unknown:
            raise ModelLoadError(f"{self.label}: input_shapes names {sorted(unknown)}, but the model's inputs are "
                                 f"{', '.join(i.name for i in real_inputs) or '(none)'}")
        for vi in real_inputs:
            self.env[vi.name] = g.add_input(vi.name, self._input_type(vi, shapes.get(vi.name)))
        defined = {**{t.name: "an initializer" for t in gp.initializer},
                   **{sp.values.name: "a sparse initializer" for sp in gp.sparse_initializer},
                   **{i.name: "a graph input" for i in gp.input}}
        for n in gp.node:  # ONNX graphs are SSA: a second definition would silently rebind the name
            for o in n.output:
                if o and o in defined:
                    raise ModelLoadError(f"{self._node_label(n)}: output {o!r} is already defined by {defined[o]}; "
                                         f"each value name may be defined once (the file is corrupt)")
                if o:
                    defined[o] = f"node {n.name or '(unnamed)'!r} ({n.op_type})"
        nodes = self._sorted_nodes(gp)
        for n in nodes:
            self.consumed.update(x for x in n.input if x)
        self.consumed.update(o.name for o in gp.output)
        for i, n in enumerate(nodes):
            try:
                self._convert(n, i)
            except USER_ERRORS:
                raise
            except (KeyError, IndexError, TypeError, ValueError, AttributeError, AssertionError, OverflowError,
                    ZeroDivisionError, RuntimeError) as e:
                # A node whose inputs/attributes do not have the form its op takes (missing, extra, wrong
                # type): a corrupt or hand-edited file. Name the node instead of leaking a Python error.
                raise ModelLoadError(f"{self._node_label(n)}: malformed node: its inputs or attributes do not "
                                     f"fit {n.op_type} at opset {self.opset} ({type(e).__name__}: {e})") from e
        outs = []
        for o in gp.output:
            if o.name not in self.env:
                raise ModelLoadError(f"{self.label}: graph output {o.name!r} is not produced by any node (the file "
                                     f"is truncated or corrupt)")
            outs.append(self.env[o.name])
        g.set_outputs(outs)
        g.remove_unused_constants()
        self._assign_kinds()

    def _input_type(self, vi, override: list[int | str] | None) -> TensorType:
        what = f"{self.label}: input {vi.name!r}"
        if not vi.type.HasField("tensor_type"):
            raise UnsupportedOpError(f"{what} is not a tensor (sequence/map inputs are not supported)")
        tt = vi.type.tensor_type
        dtype = _onnx_dtype(tt.elem_type, what)
        dims: list[int | str] | None = None
        if tt.HasField("shape"):
            dims = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value >= 0:
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param") and d.dim_param:
                    dims.append(d.dim_param)
                else:
                    dims.append(f"{vi.name}_d{i}")
        if override is not None:
            override = [int(d) if not isinstance(d, str) else d for d in override]
            if dims is not None and len(dims) != len(override):
                raise ModelLoadError(f"{what}: input_shapes gives rank {len(override)}, the model declares rank "
                                     f"{len(dims)} ({dims})")
            for i, (a, b) in enumerate(zip(dims or [], override, strict=False)):
                if isinstance(a, int) and isinstance(b, int) and a != b:
                    raise ModelLoadError(f"{what}: input_shapes sets dim {i} to {b}, the model fixes it to {a}")
            dims = override
        if dims is None:
            raise ModelLoadError(f"{what} has no declared shape; pass input_shapes={{{vi.name!r}: [...]}}")
        return TensorType(dtype, tuple(dims))

    def _sorted_nodes(self, gp) -> list:
        """Nodes in a topological order (ONNX requires one; repair files that are merely unsorted)."""
        known = set(self.env)
        nodes = list(gp.node)
        ok = True
        for n in nodes:
            if any(x and x not in known for x in n.input):
                ok = False
                break
            known.update(o for o in n.output if o)
        if ok:
            return nodes
        producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
        order, state = [], [0] * len(nodes)
        for start in range(len(nodes)):
            stack = [(start, 0)]
            while stack:
                i, k = stack.pop()
                if k == 0:
                    if state[i] == 2:
                        continue
                    if state[i] == 1:
                        raise ModelLoadError(f"{self.label}: the graph has a cycle through node "
                                             f"{nodes[i].name or nodes[i].op_type!r}")
                    state[i] = 1
                ins = [x for x in nodes[i].input if x]
                while k < len(ins):
                    x = ins[k]
                    k += 1
                    if x in self.env:
                        continue
                    if x not in producer:
                        raise ModelLoadError(f"{self.label}: value {x!r} used by node "
                                             f"{nodes[i].name or nodes[i].op_type!r} ({nodes[i].op_type}) is not "
                                             f"defined anywhere (the file is truncated or corrupt)")
                    j = producer[x]
                    if state[j] == 1:
                        raise ModelLoadError(f"{self.label}: the graph has a cycle through node "
                                             f"{nodes[j].name or nodes[j].op_type!r}")
                    if state[j] == 0:
                        stack.append((i, k))
                        stack.append((j, 0))
                        break
                else:
                    state[i] = 2
                    order.append(nodes[i])
        return order

    def _assign_kinds(self) -> None:
        """Weights of weighted ops are ``param``, BN statistics ``buffer``, every other constant ``const``."""
        for n in self.graph.nodes:
            od = get_op(n.op)
            for i, v in enumerate(n.inputs):
                if v is None or not v.is_const or v.dtype is None or not v.dtype.is_float:
                    continue
                if n.op == "batch_norm" and i in (3, 4):
                    kind = "buffer"
                elif i in od.weight_inputs:
                    kind = "param"
                else:
                    continue
                if _KIND_RANK[kind] > _KIND_RANK.get(v.kind, 0):
                    v.kind = kind

    # ---------------------------------------------------------------- per node
    def _node_label(self, n) -> str:
        return f"{self.label}: node {n.name or '(unnamed)'!r} ({n.op_type})"

    def _convert(self, n, index: int) -> None:
        label = self._node_label(n)
        nname = n.name or f"{n.op_type}_{index}"
        if n.domain not in DEFAULT_DOMAINS:
            op = op_for_onnx(f"{n.domain}.{n.op_type}")
            if op is None:
                raise UnsupportedOpError(unsupported_message(n.op_type, nname, n.domain))
            self.emit(op, self.ins(n), self.attrs(n, label), n)
            return
        if n.op_type in CONTROL_FLOW:
            raise UnsupportedOpError(unsupported_message(n.op_type, nname) + " Control flow (If/Loop/Scan) is not "
                                     "supported: export the model with the branch/loop unrolled for fixed inputs.")
        attrs = self.attrs(n, label)
        for k in ("consumed_inputs",):
            attrs.pop(k, None)
        if self.opset < 7 and n.op_type in LEGACY_BROADCAST_OPS | {"Gemm"}:
            self._legacy_broadcast(n, attrs)
            return
        handler = _HANDLERS.get(n.op_type)
        if handler is not None:
            handler(self, n, attrs)
            return
        op = op_for_onnx(n.op_type)
        if op is None:
            raise UnsupportedOpError(unsupported_message(n.op_type, nname))
        self.emit(op, self.ins(n), attrs, n)

    def attrs(self, n, label: str) -> dict[str, Any]:
        schema = _schema(n.op_type, self.opset, n.domain)
        out = {}
        for a in n.attribute:
            spec = schema.attributes.get(a.name) if schema is not None else None
            if spec is not None and a.type != spec.type and a.type != 0:  # 0: UNDEFINED (old files), inferred
                import onnx

                names = onnx.AttributeProto.AttributeType
                raise ModelLoadError(f"{label}: attribute {a.name!r} has type {names.Name(a.type)}, but "
                                     f"{n.op_type} at opset {self.opset} declares {names.Name(spec.type)} (the file "
                                     f"is corrupt)")
            out[a.name] = _attr_value(a, self.label, label)
        return out

    def ins(self, n) -> list[Value | None]:
        out: list[Value | None] = []
        for x in n.input:
            if not x:
                out.append(None)
                continue
            v = self.env.get(x)
            if v is None:
                raise ModelLoadError(f"{self._node_label(n)}: input {x!r} is not defined (the file is truncated "
                                     f"or corrupt)")
            out.append(v)
        while out and out[-1] is None:
            out.pop()
        return out

    def const(self, name: str, array: Any) -> Value:
        return self.graph.add_const(name, np.asarray(array), "const")

    def used(self, name: str) -> bool:
        return bool(name) and name in self.consumed

    def require_unused_outputs(self, n, first: int, what: str) -> None:
        for o in list(n.output)[first:]:
            if self.used(o):
                raise UnsupportedOpError(f"{self._node_label(n)}: output {o!r} ({what}) is used, which graphopt "
                                         f"does not support (inference graphs only)")

    def emit(self, op: str, inputs: list[Value | None], attrs: dict[str, Any], n, *,
             outputs: list[str] | None = None, name: str | None = None) -> list[Value]:
        """Add one IR node (or fold it into constants when every input is a constant)."""
        opdef = get_op(op)
        label = self._node_label(n)
        unknown = set(attrs) - set(opdef.attrs)
        if unknown:
            raise UnsupportedOpError(f"{label}: attribute(s) {sorted(unknown)} are not supported by graphopt's "
                                     f"{op!r} (it accepts {sorted(opdef.attrs)})")
        if not opdef.arity_ok(len(inputs)):
            raise UnsupportedOpError(f"{label}: {len(inputs)} inputs do not fit graphopt's {op!r} "
                                     f"({', '.join(s.name for s in opdef.inputs)})")
        outs = list(outputs if outputs is not None else n.output)
        nout = len(outs) if callable(opdef.outputs) else opdef.num_outputs(attrs)
        for extra in outs[nout:]:
            if self.used(extra):
                raise UnsupportedOpError(f"{label}: output {extra!r} is used, but graphopt's {op!r} has only "
                                         f"{nout} output(s)")
        outs = (outs + [""] * nout)[:nout]
        node_name = name or n.name or (outs[0] if outs and outs[0] else n.op_type)
        folded = self._try_fold(opdef, inputs, attrs, len(outs), label)
        if folded is not None:
            vals = [self.graph.add_const(o or f"{node_name}_out{i}", a, "const") for i, (o, a) in
                    enumerate(zip(outs, folded, strict=True))]
        else:
            try:
                node = self.graph.create_node(op, inputs, attrs, name=node_name,
                                              output_names=[o or f"{node_name}_out{i}" for i, o in enumerate(outs)])
            except ShapeInferenceError as e:
                if isinstance(e.__cause__, NotImplementedError):
                    raise UnsupportedOpError(f"{label}: {e.__cause__}") from e
                raise
            vals = node.outputs
        for o, v in zip(outs, vals, strict=True):
            if o:
                self.env[o] = v
        return vals

    def _try_fold(self, opdef: OpDef, inputs: list[Value | None], attrs: dict[str, Any], nout: int,
                  label: str) -> list[np.ndarray] | None:
        import torch

        if opdef.name == "shape":
            x = inputs[0]
            if x is not None and x.type is not None and x.type.is_static:
                dims = list(x.type.shape)  # type: ignore[arg-type]
                start, end = attrs.get("start", 0), attrs.get("end")
                return [np.asarray(dims[start:end] if end is not None else dims[start:], dtype=np.int64)]
            return None
        if not opdef.foldable or any(v is not None and not v.is_const for v in inputs):
            return None
        if not inputs and opdef.name not in ("constant_of_shape", "range"):
            return None
        specs = [opdef.input_spec(i) for i in range(len(inputs))]
        try:
            meta_args = [None if v is None else np.asarray(v.const).tolist() if s.static else
                         torch.empty(v.const.shape, dtype=v.dtype.to_torch(), device="meta")  # type: ignore[union-attr]
                         for v, s in zip(inputs, specs, strict=True)]
            with torch.no_grad():
                res = opdef.fn(*meta_args, **attrs)
            res = list(res) if isinstance(res, tuple | list) else [res]
            if len(res) != nout or any(r.numel() > FOLD_MAX_ELEMENTS for r in res):
                return None
            with warnings.catch_warnings():  # constants are read-only arrays; ops never write their inputs
                warnings.simplefilter("ignore", UserWarning)
                args = [None if v is None else np.asarray(v.const).tolist() if s.static else
                        torch.as_tensor(v.const) for v, s in zip(inputs, specs, strict=True)]
            with torch.no_grad():
                res = opdef.fn(*args, **attrs)
        except Exception:  # noqa: BLE001 - not foldable here; create_node reports real errors with the node named
            return None
        res = list(res) if isinstance(res, tuple | list) else [res]
        out = []
        for r in res:
            t = r if isinstance(r, torch.Tensor) else torch.as_tensor(r)
            out.append(t.detach().contiguous().numpy())  # may alias an input constant: both are immutable
        return out

    def static_const(self, n, index: int, what: str) -> np.ndarray | None:
        """The constant value of input ``index`` (None when omitted); raise if it is computed at run time."""
        if index >= len(n.input) or not n.input[index]:
            return None
        v = self.env.get(n.input[index])
        if v is None or not v.is_const:
            raise UnsupportedOpError(f"{self._node_label(n)}: {what} (input {index}) must be a constant for "
                                     f"graphopt to import this opset-{self.opset} form")
        return np.asarray(v.const)

    def rank_of(self, v: Value | None, n) -> int:
        if v is None or v.type is None or v.type.shape is None:
            raise UnsupportedOpError(f"{self._node_label(n)}: the rank of input {getattr(v, 'name', '?')!r} is "
                                     f"unknown; pass input_shapes to load_onnx")
        return len(v.type.shape)

    def shape_operand(self, v: Value, n, hint: str) -> Value:
        """A value holding ``v``'s shape: a constant when static, else a ``shape`` node."""
        if v.type is not None and v.type.is_static:
            return self.const(f"{hint}_shape", np.asarray(v.type.shape, dtype=np.int64))
        return self.emit("shape", [v], {}, n, outputs=[f"{hint}_shape"], name=f"{hint}_shape")[0]

    # ---------------------------------------------------------------- legacy (opset < 7) broadcasting
    def _legacy_broadcast(self, n, attrs: dict[str, Any]) -> None:
        broadcast = attrs.pop("broadcast", 0)
        axis = attrs.pop("axis", None)
        ins = self.ins(n)
        if n.op_type == "Gemm":
            self.emit("gemm", ins, attrs, n)
            return
        if n.op_type == "PRelu" and len(ins) == 2:
            ins[1] = self._legacy_prelu_slope(n, ins)
        elif broadcast and axis is not None and len(ins) == 2:
            ra, rb = self.rank_of(ins[0], n), self.rank_of(ins[1], n)
            axis = axis % ra if ra else 0
            trail = ra - axis - rb
            if trail > 0:
                b = ins[1]
                assert b is not None and b.type is not None and b.type.shape is not None
                if b.is_const:
                    ins[1] = self.const(f"{b.name}_bcast", np.asarray(b.const).reshape(
                        list(b.const.shape) + [1] * trail))  # type: ignore[union-attr]
                else:
                    axes = self.const(f"{n.output[0]}_bcast_axes", np.arange(rb, rb + trail, dtype=np.int64))
                    ins[1] = self.emit("unsqueeze", [b, axes], {}, n, outputs=[f"{n.output[0]}_bcast"],
                                       name=f"{n.name or n.output[0]}_bcast")[0]
        op = op_for_onnx(n.op_type)
        assert op is not None
        self.emit(op, ins, attrs, n)

    def _legacy_prelu_slope(self, n, ins: list[Value | None]) -> Value | None:
        """PRelu before opset 7 applies a 1-D slope per channel (axis 1); make it broadcast that way."""
        x, s = ins[0], ins[1]
        assert x is not None and s is not None
        rx = self.rank_of(x, n)
        if s.type is None or s.type.shape is None or len(s.type.shape) != 1 or rx < 3 or s.type.shape[0] == 1:
            return s
        if s.is_const:
            return self.const(f"{s.name}_per_channel", np.asarray(s.const).reshape([-1] + [1] * (rx - 2)))
        axes = self.const(f"{n.output[0]}_slope_axes", np.arange(1, rx - 1, dtype=np.int64))
        return self.emit("unsqueeze", [s, axes], {}, n, outputs=[f"{n.output[0]}_slope"])[0]


# ------------------------------------------------------------------------------------------------ handlers
_Handler = Callable[[_Importer, Any, dict[str, Any]], None]
_HANDLERS: dict[str, _Handler] = {}


def _handles(*op_types: str) -> Callable[[_Handler], _Handler]:
    def deco(fn: _Handler) -> _Handler:
        for t in op_types:
            _HANDLERS[t] = fn
        return fn

    return deco


@_handles("Constant")
def _constant(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    if len(attrs) != 1:
        raise ModelLoadError(f"{imp._node_label(n)}: a Constant needs exactly one value attribute, has "
                             f"{sorted(attrs)}")
    key, val = next(iter(attrs.items()))
    if key in ("value", "sparse_value"):
        arr = np.asarray(val)
    elif key == "value_float":
        arr = np.asarray(val, dtype=np.float32)
    elif key == "value_floats":
        arr = np.asarray(val, dtype=np.float32).reshape(-1)
    elif key == "value_int":
        arr = np.asarray(val, dtype=np.int64)
    elif key == "value_ints":
        arr = np.asarray(val, dtype=np.int64).reshape(-1)
    else:
        raise UnsupportedOpError(f"{imp._node_label(n)}: Constant attribute {key!r} (strings) is not supported")
    imp.env[n.output[0]] = imp.const(n.output[0] or n.name or "constant", arr)


def _attr_to_input(imp: _Importer, n, attrs: dict[str, Any], key: str, dtype=np.int64) -> Value | None:
    val = attrs.pop(key, None)
    if val is None:
        return None
    return imp.const(f"{n.output[0]}_{key}", np.asarray(val, dtype=dtype))


@_handles("Squeeze", "Unsqueeze")
def _squeeze(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    if imp.opset < 13:
        ins = ins[:1] + [_attr_to_input(imp, n, attrs, "axes")]
    op = "squeeze" if n.op_type == "Squeeze" else "unsqueeze"
    if op == "squeeze" and len(ins) == 2 and ins[1] is None:
        ins = ins[:1]
    imp.emit(op, ins, attrs, n)


@_handles(*REDUCE_OPS)
def _reduce(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    op = op_for_onnx(n.op_type)
    if op is None:
        raise UnsupportedOpError(unsupported_message(n.op_type, n.name or None))
    ins = imp.ins(n)
    axes_as_input_since = 13 if n.op_type == "ReduceSum" else 18
    if imp.opset < axes_as_input_since:
        axes = _attr_to_input(imp, n, attrs, "axes")
        ins = ins[:1] + ([axes] if axes is not None else [])
    imp.emit(op, ins, attrs, n)


@_handles("Split")
def _split(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    if imp.opset < 13:
        split = attrs.pop("split", None)
        if split is not None and len(split):
            ins = ins[:1] + [imp.const(f"{n.output[0]}_split", np.asarray(split, dtype=np.int64))]
    attrs["num_outputs"] = len(n.output)
    imp.emit("split", ins, attrs, n)


@_handles("Slice")
def _slice(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    if imp.opset < 10:
        starts = _attr_to_input(imp, n, attrs, "starts")
        ends = _attr_to_input(imp, n, attrs, "ends")
        axes = _attr_to_input(imp, n, attrs, "axes")
        ins = [ins[0], starts, ends] + ([axes] if axes is not None else [])
    imp.emit("slice", ins, attrs, n)


@_handles("Pad")
def _pad(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    x = ins[0]
    assert x is not None and x.dtype is not None
    if imp.opset < 11:
        pads = attrs.pop("pads", attrs.pop("paddings", None))
        value = attrs.pop("value", 0.0)
        if pads is None:
            raise ModelLoadError(f"{imp._node_label(n)}: Pad without 'pads'")
        ins = [x, imp.const(f"{n.output[0]}_pads", np.asarray(pads, dtype=np.int64))]
        if value:
            ins.append(imp.const(f"{n.output[0]}_value", np.asarray(value, dtype=x.dtype.to_numpy())))
    imp.emit("pad", ins, attrs, n)


@_handles("Clip")
def _clip(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    if imp.opset < 11:
        x = ins[0]
        assert x is not None and x.dtype is not None
        lo, hi = attrs.pop("min", None), attrs.pop("max", None)
        ins = [x,
               None if lo is None else imp.const(f"{n.output[0]}_min", np.asarray(lo, dtype=x.dtype.to_numpy())),
               None if hi is None else imp.const(f"{n.output[0]}_max", np.asarray(hi, dtype=x.dtype.to_numpy()))]
        while ins[-1] is None:
            ins.pop()
    imp.emit("clip", ins, attrs, n)


@_handles("Softmax", "LogSoftmax", "Hardmax")
def _softmax(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    op = op_for_onnx(n.op_type)
    if op is None:
        raise UnsupportedOpError(unsupported_message(n.op_type, n.name or None))
    ins = imp.ins(n)
    if imp.opset >= 13:
        imp.emit(op, ins, attrs, n)
        return
    x = ins[0]
    rank = imp.rank_of(x, n)
    axis = attrs.pop("axis", 1)
    axis = axis % rank if rank else 0
    if axis == rank - 1 or rank == 0:
        imp.emit(op, ins, {"axis": -1}, n)
        return
    # Opset < 13 semantics: flatten to 2-D at ``axis``, normalize each row, restore the shape.
    base = n.name or n.output[0]
    assert x is not None
    flat = imp.emit("flatten", [x], {"axis": axis}, n, outputs=[f"{base}_2d"], name=f"{base}_2d")[0]
    y = imp.emit(op, [flat], {"axis": 1}, n, outputs=[f"{base}_rows"], name=f"{base}_rows")[0]
    imp.emit("reshape", [y, imp.shape_operand(x, n, base)], {}, n, name=base)


@_handles("BatchNormalization")
def _batch_norm(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    for k in ("is_test", "consumed_inputs"):
        attrs.pop(k, None)
    spatial = attrs.pop("spatial", 1)
    if attrs.pop("training_mode", 0):
        raise UnsupportedOpError(f"{imp._node_label(n)}: training_mode=1 BatchNormalization (batch statistics) "
                                 f"is not supported; export the model in eval mode")
    ins = imp.ins(n)
    if not spatial:
        scale = ins[1]
        if scale is None or scale.shape is None or len(scale.shape) != 1:
            raise UnsupportedOpError(f"{imp._node_label(n)}: spatial=0 BatchNormalization with per-element "
                                     f"statistics is not supported")
    imp.require_unused_outputs(n, 1, "training statistics")
    imp.emit("batch_norm", ins, attrs, n, outputs=[n.output[0]])


@_handles("Dropout")
def _dropout(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    attrs.pop("is_test", None)
    ins = imp.ins(n)
    if imp.opset >= 12:
        ratio = imp.static_const(n, 1, "ratio")
        training = imp.static_const(n, 2, "training_mode")
        if training is not None and bool(np.asarray(training).reshape(-1)[0]):
            raise UnsupportedOpError(f"{imp._node_label(n)}: Dropout with training_mode=true is not supported "
                                     f"(graphopt imports inference graphs)")
        if ratio is not None:
            attrs["ratio"] = float(np.asarray(ratio).reshape(-1)[0])
        ins = ins[:1]
    x = ins[0]
    assert x is not None
    imp.emit("dropout", ins, {"ratio": float(attrs.get("ratio", 0.5))}, n, outputs=[n.output[0]])
    if len(n.output) > 1 and imp.used(n.output[1]):  # inference mask: all true
        mask = np.asarray([True])
        shp = imp.shape_operand(x, n, n.output[1])
        imp.emit("constant_of_shape", [shp], {"value": mask}, n, outputs=[n.output[1]], name=n.output[1])


@_handles("MaxPool")
def _max_pool(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    imp.require_unused_outputs(n, 1, "argmax indices")
    imp.emit("max_pool", imp.ins(n), attrs, n, outputs=[n.output[0]])


@_handles("LayerNormalization")
def _layer_norm(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    imp.require_unused_outputs(n, 1, "saved mean / inverse std")
    imp.emit("layer_norm", imp.ins(n), attrs, n, outputs=[n.output[0]])


@_handles("GroupNormalization")
def _group_norm(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    if imp.opset < 21:
        # Opset 18 takes per-group scale/bias; the IR (opset 21) takes per-channel ones.
        x = ins[0]
        groups = int(attrs.get("num_groups") or 0)
        if x is None or x.shape is None or not isinstance(x.shape[1], int):
            raise UnsupportedOpError(f"{imp._node_label(n)}: opset-18 GroupNormalization needs a static channel "
                                     f"count")
        c = x.shape[1]
        for i in (1, 2):
            v = ins[i]
            if v is not None and v.shape is not None and tuple(v.shape) == (groups,) and groups != c:
                if not v.is_const:
                    raise UnsupportedOpError(f"{imp._node_label(n)}: per-group scale/bias must be constants")
                ins[i] = imp.const(f"{v.name}_per_channel", np.repeat(np.asarray(v.const), c // groups))
    imp.emit("group_norm", ins, attrs, n)


@_handles("Upsample")
def _upsample(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    scales = attrs.pop("scales", None)
    if scales is None:
        arr = imp.static_const(n, 1, "scales")
        scales = None if arr is None else arr.astype(np.float32).reshape(-1).tolist()
    if scales is None:
        raise ModelLoadError(f"{imp._node_label(n)}: Upsample without scales")
    mode = attrs.pop("mode", "nearest")
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    x = ins[0]
    sc = imp.const(f"{n.output[0]}_scales", np.asarray(scales, dtype=np.float32))
    imp.emit("resize", [x, None, sc], {"mode": mode, "coordinate_transformation_mode": "asymmetric",
                                        "nearest_mode": "floor"}, n)


@_handles("Resize")
def _resize(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    if imp.opset < 11:  # Resize-10: (X, scales) with Upsample's asymmetric/floor semantics
        mode = attrs.pop("mode", "nearest")
        imp.emit("resize", [ins[0], None, ins[1] if len(ins) > 1 else None],
                 {"mode": mode, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, n)
        return
    ins = list(ins) + [None] * (4 - len(ins))
    for i in (1, 2, 3):  # empty placeholder tensors mean "omitted"
        v = ins[i]
        if v is not None and v.is_const and np.asarray(v.const).size == 0:
            ins[i] = None
    while ins and ins[-1] is None:
        ins.pop()
    imp.emit("resize", ins, attrs, n)


@_handles("Concat")
def _concat(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    if "axis" not in attrs:
        attrs["axis"] = 1  # opset < 4 default
    imp.emit("concat", imp.ins(n), attrs, n)


@_handles("Reshape")
def _reshape(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    if imp.opset < 5 or "shape" in attrs:
        ins = ins[:1] + [_attr_to_input(imp, n, attrs, "shape")]
    imp.emit("reshape", ins, attrs, n)


@_handles("TopK")
def _topk(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    ins = imp.ins(n)
    if imp.opset < 10:
        ins = ins[:1] + [imp.const(f"{n.output[0]}_k", np.asarray([attrs.pop("k")], dtype=np.int64))]
    imp.emit("topk", ins, attrs, n)


_CAST_NAMES = {"FLOAT": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "INT64": "int64", "INT32": "int32",
               "INT16": "int16", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool", "BFLOAT16": "bfloat16"}


@_handles("Cast")
def _cast(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    to = attrs.get("to")
    if isinstance(to, str):
        if to.upper() not in _CAST_NAMES:
            raise UnsupportedOpError(f"{imp._node_label(n)}: Cast to {to!r} is not supported")
        attrs["to"] = _CAST_NAMES[to.upper()]
    else:
        attrs["to"] = _onnx_dtype(int(to), imp._node_label(n)).value  # type: ignore[arg-type]
    imp.emit("cast", imp.ins(n), attrs, n)


@_handles("ConstantOfShape")
def _constant_of_shape(imp: _Importer, n, attrs: dict[str, Any]) -> None:
    if attrs.get("value") is not None:
        attrs["value"] = np.asarray(attrs["value"]).reshape(1)
    imp.emit("constant_of_shape", imp.ins(n), attrs, n)
