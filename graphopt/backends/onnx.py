"""ONNX backend: IR graph -> ``onnx.ModelProto`` (opset 11 and newer; 18 by default).

Why direct proto construction: IR ops already follow ONNX semantics, so emission is one ONNX node per IR node
(op type from ``OpDef.onnx``, attributes as they are) built with ``onnx.helper``/``numpy_helper`` — no
tracing and no re-serialization, which keeps emission far faster than ``torch.onnx.export`` of the same model.
Opset-dependent forms are produced here when an older opset is chosen (axes as attributes before 13/18,
LayerNormalization decomposed below 17, Gelu in its Erf form below 20, ...); ops needing a newer opset with
no fallback raise :class:`OnnxExportError` naming the node and the minimal opset. ``dropout`` is exported as
``Identity`` (ONNX export is inference-only).

Custom emitters: ``set_onnx_export(op_name, fn)`` with ``fn(em: OnnxEmitter, node) -> None``; ``fn`` writes
nodes with ``em.node(...)`` and must define ``em.outputs(node)``.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphoptError
from ..ir.graph import Graph, Node, Value
from ..ir.registry import OpDef, get_op
from ..ir.types import DType, TensorType

MIN_OPSET = 11
EXTERNAL_DATA_THRESHOLD = int(1.9 * 1024**3)
"""Total constant bytes above which initializers go to an external data file (protobuf's 2 GB limit)."""
_EXTERNAL_MIN_BYTES = 1024


class OnnxExportError(GraphoptError):
    """The graph cannot be written at the requested opset (or at all); the message names the node."""


# ---------------------------------------------------------------------------------------------- schemas
@cache
def _schema(op_type: str, opset: int, domain: str = ""):
    import onnx

    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


@lru_cache(maxsize=1)
def _first_opsets() -> dict[tuple[str, str], int]:
    import onnx

    out: dict[tuple[str, str], int] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        key = (s.domain, s.name)
        out[key] = min(out.get(key, 1 << 30), int(s.since_version))
    return out


def _first_opset(op_type: str, domain: str = "") -> int | None:
    """The opset that introduced ``op_type`` (None for unknown ops)."""
    return _first_opsets().get((domain, op_type))


@cache
def _attr_opset(op_type: str, attr: str, opset: int) -> int | None:
    """First opset after ``opset`` whose schema of ``op_type`` has attribute ``attr``."""
    import onnx

    top = onnx.defs.onnx_opset_version()
    for v in range(opset + 1, top + 1):
        s = _schema(op_type, v)
        if s is not None and attr in s.attributes:
            return v
    return None


def _split_onnx_name(onnx_name: str) -> tuple[str, str]:
    """``"com.microsoft.Gelu"`` -> (``"com.microsoft"``, ``"Gelu"``); plain names are the default domain."""
    if "." in onnx_name:
        dom, _, t = onnx_name.rpartition(".")
        return dom, t
    return "", onnx_name


# ---------------------------------------------------------------------------------------------- emitter
class OnnxEmitter:
    """Builds the ONNX graph; custom ``onnx_export`` functions receive it with the IR node to lower."""

    def __init__(self, graph: Graph, opset: int) -> None:
        import onnx

        self.onnx = onnx
        self.graph = graph
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self.domains: set[str] = set()
        self._taken: set[str] = {v.name for v in graph.values()}
        self._scalars: dict[tuple, str] = {}

    # ------------------------------------------------------------ naming and constants
    def name(self, v: Value | None) -> str:
        return "" if v is None else v.name

    def inputs(self, node: Node) -> list[str]:
        names = [self.name(v) for v in node.inputs]
        while names and names[-1] == "":
            names.pop()
        return names

    def outputs(self, node: Node) -> list[str]:
        return [o.name for o in node.outputs]

    def fresh(self, hint: str) -> str:
        """A value name not used in the graph (for intermediate values of decompositions)."""
        cand, i = hint, 0
        while cand in self._taken:
            i += 1
            cand = f"{hint}_{i}"
        self._taken.add(cand)
        return cand

    def const(self, array: Any, hint: str) -> str:
        """Add an initializer and return its name."""
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scalar(self, value: float | int, dtype: DType | None, hint: str = "c") -> str:
        """A shared 0-d initializer of ``dtype`` (float32 when unknown)."""
        dt = (dtype or DType.float32).to_numpy()
        key = (float(value), dt.str)
        if key not in self._scalars:
            self._scalars[key] = self.const(np.asarray(value, dtype=dt), hint)
        return self._scalars[key]

    def ints(self, values: list[int], hint: str) -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    # ------------------------------------------------------------ nodes
    def node(self, op_type: str, inputs: list[str], outputs: list[str], *, name: str | None = None,
             domain: str = "", **attrs: Any) -> None:
        """Append one ONNX node; ``None`` attributes are left out."""
        from onnx import helper

        while inputs and inputs[-1] == "":
            inputs = inputs[:-1]
        proto = helper.make_node(op_type, inputs, outputs, name=name or outputs[0], domain=domain or None)
        schema = _schema(op_type, self.opset, domain) if not domain else None
        for k, v in attrs.items():
            if v is None:
                continue
            atype = schema.attributes[k].type if schema is not None and k in schema.attributes else None
            proto.attribute.append(_make_attr(k, v, atype))
        if domain:
            self.domains.add(domain)
        self.nodes.append(proto)

    def tmp(self, node: Node, suffix: str) -> str:
        return self.fresh(f"{node.name}_{suffix}")

    def reduce(self, op_type: str, x: str, axes: list[int] | None, out: str, *, keepdims: int = 1,
               name: str | None = None) -> None:
        """A ReduceX node in the form the opset wants (axes attribute before 18, ReduceSum before 13)."""
        since = 13 if op_type == "ReduceSum" else 18
        if self.opset >= since:
            ins = [x] + ([self.ints(axes, f"{out}_axes")] if axes is not None else [])
            self.node(op_type, ins, [out], name=name, keepdims=keepdims)
        else:
            self.node(op_type, [x], [out], name=name, axes=axes, keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int], out: str) -> None:
        if self.opset >= 13:
            self.node("Unsqueeze", [x, self.ints(axes, f"{out}_axes")], [out])
        else:
            self.node("Unsqueeze", [x], [out], axes=axes)


def _make_attr(key: str, v: Any, atype: int | None):
    from onnx import AttributeProto, helper, numpy_helper

    if isinstance(v, np.ndarray):
        return helper.make_attribute(key, numpy_helper.from_array(v))
    if isinstance(v, np.generic):
        v = v.item()
    if atype == AttributeProto.FLOAT:
        v = float(v)
    elif atype == AttributeProto.INT:
        v = int(v)
    elif atype == AttributeProto.FLOATS:
        v = [float(x) for x in v]
    elif atype == AttributeProto.INTS:
        v = [int(x) for x in v]
    elif isinstance(v, list | tuple):
        v = [x.item() if isinstance(x, np.generic) else x for x in v]
    return helper.make_attribute(key, v, attr_type=atype) if atype is not None else helper.make_attribute(key, v)


# --------------------------------------------------------------------------------------- per-op lowering
_Lowering = Callable[[OnnxEmitter, Node], bool]
_LOWER: dict[str, _Lowering] = {}


def _lowers(*ops: str) -> Callable[[_Lowering], _Lowering]:
    def deco(fn: _Lowering) -> _Lowering:
        for o in ops:
            _LOWER[o] = fn
        return fn

    return deco


def _const_list(em: OnnxEmitter, node: Node, index: int, what: str) -> list | None:
    v = node.inputs[index] if index < len(node.inputs) else None
    if v is None:
        return None
    if not v.is_const:
        raise OnnxExportError(f"node {node.name} ({node.op}): {what} is computed at run time, but opset "
                              f"{em.opset} needs it as an attribute; export at a newer opset")
    return np.asarray(v.const).reshape(-1).tolist()


def _rank(node: Node, v: Value | None) -> int:
    if v is None or v.type is None or v.type.shape is None:
        raise OnnxExportError(f"node {node.name} ({node.op}): the rank of %{getattr(v, 'name', '?')} is unknown; "
                              f"this opset form needs it (bind input shapes or use a newer opset)")
    return len(v.type.shape)


@_lowers("squeeze", "unsqueeze")
def _squeeze(em: OnnxEmitter, node: Node) -> bool:
    if em.opset >= 13:
        return False
    axes = _const_list(em, node, 1, "axes")
    op_type = "Squeeze" if node.op == "squeeze" else "Unsqueeze"
    em.node(op_type, em.inputs(node)[:1], em.outputs(node), name=node.name, axes=axes or None)
    return True


def _lower_reduce(em: OnnxEmitter, node: Node) -> bool:
    opdef = get_op(node.op)
    since = 13 if opdef.onnx == "ReduceSum" else 18
    if em.opset >= since:
        return False
    axes = _const_list(em, node, 1, "axes")
    if not axes and node.attrs.get("noop_with_empty_axes"):
        em.node("Identity", em.inputs(node)[:1], em.outputs(node), name=node.name)
        return True
    em.node(opdef.onnx or "", em.inputs(node)[:1], em.outputs(node), name=node.name, axes=axes or None,
            keepdims=node.attrs.get("keepdims", 1))
    return True


@_lowers("split")
def _split(em: OnnxEmitter, node: Node) -> bool:
    x = node.inputs[0]
    axis = int(node.attrs.get("axis", 0))
    n_out = len(node.outputs)
    sv = node.inputs[1] if len(node.inputs) > 1 else None
    if sv is not None and sv.is_const and np.asarray(sv.const).size == 0:
        sv = None
    if em.opset >= 18:
        if sv is None:
            em.node("Split", [em.name(x)], em.outputs(node), name=node.name, axis=axis, num_outputs=n_out)
        else:
            em.node("Split", [em.name(x), em.name(sv)], em.outputs(node), name=node.name, axis=axis)
        return True
    sizes: list[int] | None = None
    if sv is None:
        # Before opset 18 Split divides equally only; spell out ceil-sized chunks (the opset-18 rule) when uneven.
        dim = None if x is None or x.shape is None else x.shape[axis]
        if isinstance(dim, int) and dim % n_out:
            chunk = -(-dim // n_out)
            sizes = [min(chunk, dim - i * chunk) for i in range(n_out)]
    if em.opset >= 13:
        ins = [em.name(x)]
        if sv is not None:
            ins.append(em.name(sv))
        elif sizes is not None:
            ins.append(em.ints(sizes, f"{node.name}_split"))
        em.node("Split", ins, em.outputs(node), name=node.name, axis=axis)
    else:
        if sv is not None:
            sizes = [int(s) for s in _const_list(em, node, 1, "split") or []]
        em.node("Split", [em.name(x)], em.outputs(node), name=node.name, axis=axis, split=sizes)
    return True


@_lowers("scatter_nd", "scatter_elements")
def _scatter(em: OnnxEmitter, node: Node) -> bool:
    """Opset 16 knows the ``reduction`` attribute but only add/mul; max/min came with 18, and a checker passes an
    opset-16 file that onnxruntime then refuses, so refuse it here with the fix."""
    red = node.attrs.get("reduction", "none")
    if red in ("max", "min") and em.opset < 18:
        raise OnnxExportError(f"node {node.name} ({node.op}): reduction={red!r} needs opset >= 18; export with "
                              f"opset=18")
    return False


@_lowers("dropout")
def _dropout(em: OnnxEmitter, node: Node) -> bool:
    em.node("Identity", em.inputs(node)[:1], em.outputs(node), name=node.name)
    return True


@_lowers("layer_norm")
def _layer_norm(em: OnnxEmitter, node: Node) -> bool:
    if em.opset >= 17:
        return False
    x, scale, bias = (node.inputs + [None, None])[:3]
    rank = _rank(node, x)
    axis = int(node.attrs.get("axis", -1)) % rank
    axes = list(range(axis, rank))
    dt = x.dtype if x is not None else None
    xn = em.name(x)
    mean, d, d2, var, ve, std, norm = (em.tmp(node, s) for s in ("mean", "centered", "sq", "var", "var_eps", "std",
                                                                  "norm"))
    em.reduce("ReduceMean", xn, axes, mean, name=mean)
    em.node("Sub", [xn, mean], [d])
    em.node("Mul", [d, d], [d2])
    em.reduce("ReduceMean", d2, axes, var, name=var)
    em.node("Add", [var, em.scalar(node.attrs.get("epsilon", 1e-5), dt, "eps")], [ve])
    em.node("Sqrt", [ve], [std])
    out = em.outputs(node)[0]
    if scale is None and bias is None:
        em.node("Div", [d, std], [out], name=node.name)
        return True
    em.node("Div", [d, std], [norm])
    if bias is None:
        em.node("Mul", [norm, em.name(scale)], [out], name=node.name)
    else:
        scaled = em.tmp(node, "scaled")
        em.node("Mul", [norm, em.name(scale)], [scaled])
        em.node("Add", [scaled, em.name(bias)], [out], name=node.name)
    return True


@_lowers("gelu")
def _gelu(em: OnnxEmitter, node: Node) -> bool:
    if em.opset >= 20:
        return False
    x = node.inputs[0]
    dt = x.dtype if x is not None else None
    xn, out = em.name(x), em.outputs(node)[0]
    inner, act, onep, half = (em.tmp(node, s) for s in ("inner", "act", "one_plus", "half_x"))
    if node.attrs.get("approximate", "none") == "tanh":
        x3, x3c, poly = em.tmp(node, "x3"), em.tmp(node, "x3c"), em.tmp(node, "poly")
        em.node("Pow", [xn, em.scalar(3.0, dt, "three")], [x3])
        em.node("Mul", [x3, em.scalar(0.044715, dt, "gelu_c")], [x3c])
        em.node("Add", [xn, x3c], [poly])
        em.node("Mul", [poly, em.scalar(math.sqrt(2.0 / math.pi), dt, "sqrt_2_pi")], [inner])
        em.node("Tanh", [inner], [act])
    else:
        em.node("Div", [xn, em.scalar(math.sqrt(2.0), dt, "sqrt2")], [inner])
        em.node("Erf", [inner], [act])
    em.node("Add", [act, em.scalar(1.0, dt, "one")], [onep])
    em.node("Mul", [xn, em.scalar(0.5, dt, "half")], [half])
    em.node("Mul", [half, onep], [out], name=node.name)
    return True


@_lowers("mish")
def _mish(em: OnnxEmitter, node: Node) -> bool:
    if em.opset >= 18:
        return False
    sp, th = em.tmp(node, "softplus"), em.tmp(node, "tanh")
    xn = em.inputs(node)[0]
    em.node("Softplus", [xn], [sp])
    em.node("Tanh", [sp], [th])
    em.node("Mul", [xn, th], em.outputs(node), name=node.name)
    return True


@_lowers("silu")
def _silu(em: OnnxEmitter, node: Node) -> bool:
    """ONNX has no SiLU: ``x * Sigmoid(x)``."""
    sg = em.tmp(node, "sigmoid")
    xn = em.inputs(node)[0]
    em.node("Sigmoid", [xn], [sg])
    em.node("Mul", [xn, sg], em.outputs(node), name=node.name)
    return True


@_lowers("hard_swish")
def _hard_swish(em: OnnxEmitter, node: Node) -> bool:
    if em.opset >= 14:
        return False
    hs = em.tmp(node, "hsig")
    xn = em.inputs(node)[0]
    em.node("HardSigmoid", [xn], [hs], alpha=1.0 / 6.0, beta=0.5)
    em.node("Mul", [xn, hs], em.outputs(node), name=node.name)
    return True


@_lowers("softmax", "log_softmax", "hardmax")
def _softmax(em: OnnxEmitter, node: Node) -> bool:
    if em.opset >= 13:
        return False
    x = node.inputs[0]
    rank = _rank(node, x)
    axis = int(node.attrs.get("axis", -1)) % max(rank, 1)
    op_type = get_op(node.op).onnx or ""
    if axis == rank - 1 or rank <= 1:
        em.node(op_type, em.inputs(node)[:1], em.outputs(node), name=node.name, axis=max(rank - 1, 0))
        return True
    # Before opset 13 the op normalizes a flattened 2-D view: move the axis last, apply, move it back.
    perm = [i for i in range(rank) if i != axis] + [axis]
    inv = [perm.index(i) for i in range(rank)]
    t, y = em.tmp(node, "last"), em.tmp(node, "norm")
    em.node("Transpose", [em.name(x)], [t], perm=perm)
    em.node(op_type, [t], [y], axis=rank - 1)
    em.node("Transpose", [y], em.outputs(node), name=node.name, perm=inv)
    return True


@_lowers("resize")
def _resize(em: OnnxEmitter, node: Node) -> bool:
    """Resize before opset 13 needs ``roi`` and ``scales`` present (empty when unused), and before opset 18 it
    has no ``axes`` attribute: spatial-only scales/sizes (the torch frontend's form) are widened to every axis,
    batch and channel kept (their sizes read from the static shape, else from ``Shape`` at run time)."""
    axes = node.attrs.get("axes")
    widen = axes is not None and em.opset < 18
    if em.opset >= 13 and not widen:
        return False
    x, roi, scales, sizes = (node.inputs + [None] * 4)[:4]
    dt = x.dtype if x is not None and x.dtype is not None and x.dtype.is_float else DType.float32
    sc_n = em.name(scales) if scales is not None else None
    sz_n = em.name(sizes) if sizes is not None else None
    if widen:
        rank = _rank(node, x)
        ax = [int(a) % rank for a in axes]
        if ax != list(range(rank - len(ax), rank)):
            raise OnnxExportError(f"node {node.name} (resize): axes={axes} (not the trailing axes) has no form before "
                                  f"opset 18; export with opset=18")
        lead = rank - len(ax)
        if scales is not None and len(_const_list(em, node, 2, "scales") or []) > 0:
            sc = _const_list(em, node, 2, "scales")
            sc_n = em.const(np.asarray([1.0] * lead + [float(v) for v in sc], dtype=np.float32), f"{node.name}_scales")
        elif sizes is not None:
            sz = [int(v) for v in _const_list(em, node, 3, "sizes") or []]
            shape = list(x.type.shape) if x.type is not None and x.type.shape is not None else []
            if all(isinstance(d, int) for d in shape[:lead]):
                sz_n = em.ints([int(d) for d in shape[:lead]] + sz, f"{node.name}_sizes")
            else:  # dynamic batch: the leading sizes come from the input's shape at run time
                shp, head = em.tmp(node, "shape"), em.tmp(node, "lead")
                em.node("Shape", [em.name(x)], [shp])
                em.node("Slice", [shp, em.ints([0], f"{node.name}_s0"), em.ints([lead], f"{node.name}_s1")], [head])
                sz_n = em.tmp(node, "sizes")
                em.node("Concat", [head, em.ints(sz, f"{node.name}_spatial")], [sz_n], axis=0)
    if em.opset < 13 or sz_n is not None:  # scales must be present (empty) when sizes are given, before 13
        roi_n = em.name(roi) if roi is not None else em.const(np.zeros(0, dtype=dt.to_numpy()), f"{node.name}_roi")
        if sc_n is None:
            sc_n = em.const(np.zeros(0, dtype=np.float32), f"{node.name}_scales0")
        ins = [em.name(x), roi_n, sc_n] + ([sz_n] if sz_n is not None else [])
    else:
        ins = [em.name(x), em.name(roi) if roi is not None else "", sc_n or ""]
    em.node("Resize", ins, em.outputs(node), name=node.name, **_schema_attrs(em, node, "Resize", skip={"axes"}))
    return True


@_lowers("pad")
def _pad(em: OnnxEmitter, node: Node) -> bool:
    axes_v = node.inputs[3] if len(node.inputs) > 3 else None
    if em.opset >= 18 or axes_v is None:
        return False
    x = node.inputs[0]
    rank = _rank(node, x)
    pads = _const_list(em, node, 1, "pads") or []
    axes = [int(a) % rank for a in (_const_list(em, node, 3, "axes") or [])]
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a], full[a + rank] = int(pads[i]), int(pads[i + len(axes)])
    ins = [em.name(x), em.ints(full, f"{node.name}_pads")]
    if node.inputs[2] is not None:
        ins.append(em.name(node.inputs[2]))
    em.node("Pad", ins, em.outputs(node), name=node.name, mode=node.attrs.get("mode", "constant"))
    return True


@_lowers("group_norm")
def _group_norm(em: OnnxEmitter, node: Node) -> bool:
    if em.opset >= 21:
        return False
    x, scale, bias = node.inputs[:3]
    rank = _rank(node, x)
    groups = int(node.attrs["num_groups"])
    dt = x.dtype if x is not None else None
    xn = em.name(x)
    g3, n3, xs, normed, scaled = (em.tmp(node, s) for s in ("grouped", "inorm", "shape", "normed", "scaled"))
    em.node("Reshape", [xn, em.ints([0, groups, -1], f"{node.name}_gshape")], [g3])
    ones = em.const(np.ones(groups, dtype=(dt or DType.float32).to_numpy()), f"{node.name}_ones")
    zeros = em.const(np.zeros(groups, dtype=(dt or DType.float32).to_numpy()), f"{node.name}_zeros")
    em.node("InstanceNormalization", [g3, ones, zeros], [n3], epsilon=float(node.attrs.get("epsilon", 1e-5)))
    em.node("Shape", [xn], [xs])
    em.node("Reshape", [n3, xs], [normed])
    chan = []
    for v, hint in ((scale, "scale"), (bias, "bias")):
        if v is not None and v.is_const:
            chan.append(em.const(np.asarray(v.const).reshape([-1] + [1] * (rank - 2)), f"{node.name}_{hint}"))
        else:
            out = em.tmp(node, f"{hint}_c")
            em.unsqueeze(em.name(v), list(range(1, rank - 1)), out)
            chan.append(out)
    em.node("Mul", [normed, chan[0]], [scaled])
    em.node("Add", [scaled, chan[1]], em.outputs(node), name=node.name)
    return True


@_lowers("shape")
def _shape(em: OnnxEmitter, node: Node) -> bool:
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    if em.opset >= 15 or (start == 0 and end is None):
        if em.opset < 15:
            em.node("Shape", em.inputs(node), em.outputs(node), name=node.name)
            return True
        return False
    full = em.tmp(node, "full")
    em.node("Shape", em.inputs(node), [full])
    em.node("Slice", [full, em.ints([start], f"{node.name}_start"),
                      em.ints([end if end is not None else 2**62], f"{node.name}_end")], em.outputs(node),
            name=node.name)
    return True


def _schema_attrs(em: OnnxEmitter, node: Node, op_type: str, domain: str = "",
                  skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The node's attributes converted for ONNX, dropping default-valued ones the opset does not know and
    ``skip`` (attributes the caller has folded into inputs)."""
    opdef = get_op(node.op)
    schema = _schema(op_type, em.opset, domain) if not domain else None
    out: dict[str, Any] = {}
    for k, v in node.attrs.items():
        if v is None or k in skip:
            continue
        if schema is not None and k not in schema.attributes:
            if _same(v, opdef.attrs.get(k)):
                continue
            first = _attr_opset(op_type, k, em.opset)
            need = f"opset >= {first}" if first else "a newer ONNX"
            raise OnnxExportError(f"node {node.name} ({node.op}): attribute {k}={v!r} needs {need} ({op_type}); "
                                  f"export with opset={first or 'newer'} or reset the attribute")
        out[k] = _convert_attr(node.op, k, v)
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b))) and np.shape(a) == np.shape(b)
    except Exception:  # noqa: BLE001 - incomparable means different
        return False


def _convert_attr(op: str, k: str, v: Any) -> Any:
    if op == "cast" and k == "to":
        return DType(v).to_onnx()
    if op == "constant_of_shape" and k == "value":
        return np.asarray(v).reshape(1)
    return v


# ------------------------------------------------------------------------------------------ main entry
def to_onnx(graph: Graph, *, opset: int = 18, path: str | os.PathLike | None = None,
            value_info: bool = True) -> Any:
    """Emit ``graph`` as an ONNX model at ``opset``; with ``path``, also write it there atomically.

    ``value_info`` records every intermediate value's type (symbolic dims as ``dim_param``), which lets
    readers and onnxruntime skip re-inference. Constants become initializers; if they exceed 1.9 GB in
    total they go to ``<path>.data`` (``path`` is then required).
    """
    import onnx
    from onnx import helper

    top = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= top:
        raise OnnxExportError(f"opset {opset} is not supported: choose {MIN_OPSET}..{top}")
    em = OnnxEmitter(graph, int(opset))
    for node in graph.nodes:
        _emit_node(em, node)
    outputs = _graph_outputs(em, graph)
    # Constants become initializers when an emitted node reads them (axes turned into attributes do not).
    read = {x for n in em.nodes for x in n.input}
    consts = [v for v in graph.constants.values() if v.name in read]
    total = sum(np.asarray(v.const).nbytes for v in consts) + sum(len(t.raw_data) for t in em.initializers)
    external = total > EXTERNAL_DATA_THRESHOLD
    if external and path is None:
        raise OnnxExportError(f"graph {graph.name!r} has more than {EXTERNAL_DATA_THRESHOLD / 1024**3:.1f} GB of "
                              f"constants; pass path= so they are written to an external data file")
    # Build the ModelProto in place: helper.make_graph/make_model would copy every weight twice more.
    model = onnx.ModelProto()
    opsets = [helper.make_opsetid("", int(opset))] + [helper.make_opsetid(d, 1) for d in sorted(em.domains)]
    model.ir_version = helper.find_min_ir_version_for(opsets[:1])
    model.producer_name = "graphopt"
    model.opset_import.extend(opsets)
    g = model.graph
    g.name = graph.name or "graph"
    g.node.extend(em.nodes)
    for v in consts:
        if v.const is None:
            raise OnnxExportError(f"constant %{v.name} has no array")
        _fill_tensor(g.initializer.add(), v.name, np.asarray(v.const))
    g.initializer.extend(em.initializers)
    g.input.extend(_value_info(v.name, v.type) for v in graph.inputs)
    g.output.extend(outputs)
    if value_info:
        out_names = {vi.name for vi in outputs}
        g.value_info.extend(_value_info(o.name, o.type) for node in graph.nodes for o in node.outputs
                            if o.type is not None and o.name not in out_names)
    if path is not None:
        _write(model, Path(path), external)
    return model


def _emit_node(em: OnnxEmitter, node: Node) -> None:
    opdef = get_op(node.op)
    if opdef.onnx_export is not None:
        if em.opset < opdef.onnx_min_opset:
            raise OnnxExportError(f"node {node.name} ({node.op}): its ONNX emitter needs opset >= "
                                  f"{opdef.onnx_min_opset}; export with opset={opdef.onnx_min_opset}")
        opdef.onnx_export(em, node)
        return
    lower = _LOWER.get(node.op)
    if lower is None and opdef.onnx and opdef.onnx.startswith("Reduce"):
        lower = _lower_reduce
    if lower is not None and lower(em, node):
        return
    if not opdef.onnx:
        raise OnnxExportError(f"node {node.name} ({node.op}): op {node.op!r} has no ONNX form; register an emitter "
                              f"with graphopt.ir.registry.set_onnx_export({node.op!r}, fn) or rewrite it first")
    domain, op_type = _split_onnx_name(opdef.onnx)
    need = _min_opset(opdef, op_type, domain)
    if em.opset < need:
        raise OnnxExportError(f"node {node.name} ({node.op}): ONNX {op_type} needs opset >= {need}, the export "
                              f"uses opset {em.opset}; export with opset={need}")
    attrs = _schema_attrs(em, node, op_type, domain)
    em.node(op_type, em.inputs(node), em.outputs(node), name=node.name, domain=domain, **attrs)


def _min_opset(opdef: OpDef, op_type: str, domain: str) -> int:
    need = opdef.onnx_min_opset
    if not domain:
        first = _first_opset(op_type)
        if first is not None:
            need = max(need, first)
    return need


def _graph_outputs(em: OnnxEmitter, graph: Graph) -> list:
    """Graph outputs must be distinct node outputs: inputs, constants and repeats go through Identity."""
    seen: set[str] = set()
    out = []
    for v in graph.outputs:
        name = v.name
        if v.producer is None or name in seen:
            new = em.fresh(f"{name}_out")
            em.node("Identity", [name], [new], name=new)
            name = new
        seen.add(name)
        out.append(_value_info(name, v.type))
    return out


def _value_info(name: str, t: TensorType | None):
    import onnx

    vi = onnx.ValueInfoProto()
    vi.name = name
    if t is None:
        return vi
    tt = vi.type.tensor_type
    tt.elem_type = t.dtype.to_onnx()
    if t.shape is not None:
        shp = tt.shape
        shp.SetInParent()
        for d in t.shape:
            dim = shp.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = int(d)
    return vi


def _fill_tensor(t, name: str, arr: np.ndarray) -> None:
    """Fill a TensorProto with raw little-endian bytes (one copy; numpy_helper.from_array makes two)."""
    t.name = name
    t.data_type = DType.from_any(arr.dtype).to_onnx()
    t.dims.extend(int(d) for d in arr.shape)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    t.raw_data = np.ascontiguousarray(arr).tobytes()


def _write(model, path: Path, external: bool) -> None:
    """Atomic write: temp files in the target folder, then ``os.replace`` (data file first)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[str, Path]] = []
    try:
        if external:
            data_name = f"{path.name}.data"
            fd, tmp = tempfile.mkstemp(prefix=f".{data_name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path.parent / data_name))
            with os.fdopen(fd, "wb") as f:
                offset = 0
                for t in model.graph.initializer:
                    if len(t.raw_data) < _EXTERNAL_MIN_BYTES:
                        continue
                    pad = (-offset) % 4096
                    f.write(b"\0" * pad)
                    offset += pad
                    raw = t.raw_data
                    f.write(raw)
                    t.ClearField("raw_data")
                    t.data_location = onnx.TensorProto.EXTERNAL
                    for k, val in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                        e = t.external_data.add()
                        e.key, e.value = k, val
                    offset += len(raw)
                f.flush()
                os.fsync(f.fileno())
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        temps.append((tmp, path))
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        for tmp, final in temps:
            os.chmod(tmp, _file_mode(final))  # mkstemp creates 0600; give the usual permissions
            os.replace(tmp, final)
        temps = []
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give (keep an existing file's mode)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask
