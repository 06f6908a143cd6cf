"""Fixed-batch relaxation: a model exported with its batch baked in (``float32[1,3,32,32]``, a Reshape to
``[1, 512]``) gets a symbolic batch, so it can be scored and optimized at any batch size.

Why: most published ONNX files, and ``torch.onnx.export`` at its defaults, fix the batch of the example input and
fold it into shape constants. Proxies, training and search feed many samples at once, which such a file refuses
(``shape '[1, 512]' is invalid for input of size 32768``).

How: dim 0 of every graph input with that fixed size becomes a symbol, then the graph is re-inferred node by
node. Before a node is inferred, the constants that would pin the batch are rewritten (Reshape targets get ``0``
or ``-1`` at the batch position, Expand shapes ``1``, full-batch Slices an open end, Resize sizes the runtime
batch); a node that still cannot take the batch is given its batch-free inputs broadcast to the batch (a
``zeros(1, 1, 8)`` concatenated to the tokens, an LSTM's initial state). Every node's output must then keep the
batch as a dim of its own, with all other dims as in the file; a node that merges the batch with another dim,
reduces over it or selects samples from it cannot be relaxed and raises :class:`BatchRelaxError` naming it.
:func:`verify_relaxed` checks the result numerically, sample by sample, against the file at its own batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.infer import ShapeInferenceError, _sym_dependent, infer_node, known_value
from graphopt.ir.registry import get_op
from graphopt.ir.verify import verify
from graphopt.pass_api import graph_pass

_OPEN_END = 2**31 - 1  # a slice end at least this large runs to the end of any batch
_HOW = ("re-export the model with a dynamic batch dimension (torch.onnx.export(..., dynamic_axes={NAME: {0: "
        "'batch'}}), or dynamo=True with dynamic_shapes) and load that file instead")
#: ops whose ``axis`` attribute mixes or selects samples when it is the batch axis
_AXIS_OPS = {"softmax", "log_softmax", "hardmax", "argmax", "argmin", "topk", "split", "gather", "gather_elements",
             "scatter_elements", "concat"}
_RNN_OPS = {"lstm": (5, 6), "gru": (5,), "rnn": (5,)}  # initial-state slots


class BatchRelaxError(GraphoptError):
    """The model's fixed batch cannot be made symbolic (the message names the node and what to do)."""


@dataclass
class RelaxReport:
    """What :func:`relax_batch` did; ``describe()`` is one line for the CLI."""

    changed: bool = False
    original_shapes: dict[str, list] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)
    batch: int | None = None
    symbol: str | None = None
    #: ONNX op type -> number of nodes whose shape constants were rewritten / whose inputs were broadcast
    constants: dict[str, int] = field(default_factory=dict)
    broadcast: dict[str, int] = field(default_factory=dict)
    max_error: float | None = None  # set by verify_relaxed

    def describe(self) -> str:
        if not self.changed:
            return "batch already symbolic (or no input with a batch dim): nothing to relax"
        names = ", ".join(self.original_shapes)
        what = []
        if self.constants:
            n = sum(self.constants.values())
            what.append(f"{_counts(self.constants)} constant{'s' * (n != 1)} rewritten")
        if self.broadcast:
            n = sum(self.broadcast.values())
            what.append(f"inputs of {_counts(self.broadcast)} broadcast to the batch")
        line = (f"input{'s' * (len(self.original_shapes) > 1)} {names}: batch fixed at {self.batch} in the file; "
                f"relaxed to a symbolic batch ({'; '.join(what) or 'no constant baked it in'})")
        if self.max_error is not None:
            line += f", checked per sample (max rel. error {self.max_error:.1e})"
        return line


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in d.items())


def fixed_batch(graph: Graph) -> int | None:
    """The batch size the graph's inputs fix (their common int dim 0), or None when any input's batch is
    symbolic or there is no input with a dim 0."""
    dims = [v.type.shape[0] for v in graph.inputs if v.type is not None and v.type.shape]
    if not dims or any(not isinstance(d, int) for d in dims):
        return None
    return dims[0]


def relax_batch(graph: Graph) -> tuple[Graph, RelaxReport]:
    """A copy of ``graph`` with a symbolic batch (see the module docstring), and what changed.

    A graph whose batch is already symbolic (or that has no batched input) is returned itself, unchanged. Raises
    :class:`BatchRelaxError` naming the node when the batch cannot be separated."""
    if fixed_batch(graph) is None:
        return graph, RelaxReport()
    g = graph.copy()
    return g, _relax(g)


@graph_pass("relax-batch", "Make a fixed batch dim (1 or N) symbolic; rewrite the constants that bake it in",
            semantics_preserving=False)
def relax_batch_pass(graph: Graph, check: bool = True) -> dict[str, int]:
    """In place. Not ``semantics_preserving`` for the manager's check (the input shape changes); with ``check``
    the pass compares the result per sample itself (:func:`verify_relaxed`)."""
    if fixed_batch(graph) is None:
        return {}
    before = graph.copy() if check else None
    report = _relax(graph)
    if before is not None:
        verify_relaxed(before, graph)
    return {"inputs": len(report.original_shapes), "constants": sum(report.constants.values()),
            "broadcast": sum(report.broadcast.values())}


class _Relaxer:
    def __init__(self, graph: Graph, batch: int, symbol: str, report: RelaxReport) -> None:
        self.g, self.B, self.sym, self.report = graph, batch, symbol, report
        self.orig: dict[int, tuple | None] = {}
        self.source: Value | None = None  # a relaxed graph input
        self._batch_dim: Value | None = None  # shape(source)[0:1], created on first need

    # ------------------------------------------------------------------ helpers
    def axis_of(self, v: Value | None) -> int | None:
        """The batch axis of ``v`` in the relaxed graph (None when it carries no batch)."""
        if v is None or v.type is None or v.type.shape is None:
            return None
        dims = list(v.type.shape)
        return dims.index(self.sym) if self.sym in dims else None

    def fail(self, node: Node, why: str) -> BatchRelaxError:
        name = self.source.name if self.source is not None else "x"
        return BatchRelaxError(f"cannot relax the batch fixed at {self.B}: node {node.name} ({node.op}) {why}; "
                               + _HOW.replace("NAME", repr(name)))

    def note(self, node: Node, kind: dict[str, int]) -> None:
        op = get_op(node.op).onnx or node.op
        kind[op] = kind.get(op, 0) + 1
        if node.name not in self.report.rewritten:
            self.report.rewritten.append(node.name)

    def set_const(self, node: Node, slot: int, values: list, like: np.ndarray) -> None:
        """Point ``node``'s input ``slot`` at a new constant (the old one may be shared with other nodes)."""
        old = node.inputs[slot]
        arr = np.asarray(values, dtype=np.asarray(like).dtype).reshape(np.asarray(like).shape)
        node.set_input(slot, self.g.add_const(f"{old.name if old is not None else node.name}_relaxed", arr))

    def batch_dim(self, before: Node) -> Value:
        """A one-element int64 tensor holding the runtime batch (``Shape(x, start=0, end=1)``)."""
        if self._batch_dim is None:
            assert self.source is not None
            with self.g.inserting_before(before):
                self._batch_dim = self.g.create_node("shape", [self.source], {"start": 0, "end": 1},
                                                     name="relax_batch_size").outputs[0]
        return self._batch_dim

    def shape_with_batch(self, before: Node, dims: list[int], axis: int, hint: str) -> Value:
        """``dims`` with the runtime batch at ``axis``, as an int64 shape tensor computed in the graph."""
        bd = self.batch_dim(before)
        parts = []
        if axis > 0:
            parts.append(self.g.add_const(f"{hint}_head", np.asarray(dims[:axis], dtype=np.int64)))
        parts.append(bd)
        if axis + 1 < len(dims):
            parts.append(self.g.add_const(f"{hint}_tail", np.asarray(dims[axis + 1:], dtype=np.int64)))
        if len(parts) == 1:
            return bd
        with self.g.inserting_before(before):
            return self.g.create_node("concat", parts, {"axis": 0}, name=f"{hint}_shape").outputs[0]

    def static(self, node: Node, slot: int) -> list | None:
        """The constant value of a shape-like input as a flat list (None if absent, computed from the batch, or
        not known)."""
        if slot >= len(node.inputs) or node.inputs[slot] is None or _sym_dependent(node.inputs[slot]):
            return None
        kv = known_value(node.inputs[slot])
        return None if kv is None else [int(x) for x in np.asarray(kv).reshape(-1).tolist()]

    # -------------------------------------------------------------- the rules
    def before_infer(self, node: Node) -> None:
        """Rewrite the constants of ``node`` that pin the batch; refuse ops that mix or select samples."""
        opdef = get_op(node.op)
        data = [(i, v, self.axis_of(v)) for i, v in enumerate(node.inputs)
                if v is not None and not opdef.input_spec(i).static]
        batched = [(i, v, a) for i, v, a in data if a is not None]
        if not batched:
            return
        i0, x, p = batched[0]
        rank = len(x.type.shape)
        if node.op in _AXIS_OPS:
            axis = node.attrs.get("axis")
            axis = 0 if axis is None else axis
            if node.op in ("gather", "gather_elements", "scatter_elements") and i0 != 0:
                pass  # batched indices (an embedding lookup): per sample
            elif axis % rank == p:
                raise self.fail(node, f"works along the batch axis (axis={axis}): it mixes or selects samples")
        if node.op == "cumsum":
            ax = self.static(node, 1)
            if ax and ax[0] % rank == p:
                raise self.fail(node, "accumulates along the batch axis")
        if node.op == "layer_norm" and node.attrs.get("axis", -1) % rank <= p:
            raise self.fail(node, "normalizes over the batch axis")
        rule = getattr(self, f"_{node.op}", None)
        if rule is not None:
            rule(node, x, p)

    def _reshape(self, node: Node, x: Value, p: int) -> None:
        t = self.static(node, 1)
        ins, outs = self.orig.get(id(x)), self.orig.get(id(node.outputs[0]))
        if t is None or ins is None or outs is None:
            return  # computed from the batch already (a dynamic export), or not known: inference decides
        q = _batch_position(list(ins), list(outs), p, self.B)
        if q is None:
            raise self.fail(node, f"merges the batch with other dims ({list(ins)} -> {list(outs)})")
        new = list(t)
        if new[q] == -1 or (new[q] == 0 and q == p and not node.attrs.get("allowzero", 0)):
            pass  # already follows the batch
        elif q == p and not node.attrs.get("allowzero", 0):
            new[q] = 0  # "copy the input's dim": stays a constant
        elif -1 not in new:
            new[q] = -1
        else:
            j = new.index(-1)
            if not isinstance(outs[j], int):
                raise self.fail(node, f"infers a symbolic dim with -1 ({list(outs)}) besides the batch")
            new[j], new[q] = outs[j], -1
        if new != t:
            self.set_const(node, 1, new, known_value(node.inputs[1]))
            self.note(node, self.report.constants)

    def _expand(self, node: Node, x: Value, p: int) -> None:
        s, outs = self.static(node, 1), self.orig.get(id(node.outputs[0]))
        if s is None or outs is None:
            return
        q = p + len(outs) - len(x.type.shape)
        k = q - (len(outs) - len(s))
        if 0 <= k < len(s) and s[k] == self.B and self.B != 1:
            s[k] = 1
            self.set_const(node, 1, s, known_value(node.inputs[1]))
            self.note(node, self.report.constants)

    def _tile(self, node: Node, x: Value, p: int) -> None:
        r = self.static(node, 1)
        if r is not None and p < len(r) and r[p] != 1:
            raise self.fail(node, f"repeats the batch axis {r[p]} times (samples would be mixed)")

    def _slice(self, node: Node, x: Value, p: int) -> None:
        starts, ends = self.static(node, 1), self.static(node, 2)
        if starts is None or ends is None:
            return
        rank = len(x.type.shape)
        axes = self.static(node, 3) if len(node.inputs) > 3 and node.inputs[3] is not None else None
        steps = self.static(node, 4) if len(node.inputs) > 4 and node.inputs[4] is not None else None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        for k, (s, e, a, st) in enumerate(zip(starts, ends, axes, steps, strict=False)):
            if a % rank != p:
                continue
            s0 = max(0, min(self.B, s + self.B if s < 0 else s))
            e0 = max(0, min(self.B, e + self.B if e < 0 else e))
            if st != 1 or s0 != 0 or e0 != self.B:
                raise self.fail(node, f"selects samples {s}:{e}:{st} of the batch")
            if s == 0 and e >= _OPEN_END:
                continue
            starts[k], ends[k] = 0, int(np.iinfo(np.asarray(known_value(node.inputs[2])).dtype).max)
            self.set_const(node, 1, starts, known_value(node.inputs[1]))
            self.set_const(node, 2, ends, known_value(node.inputs[2]))
            self.note(node, self.report.constants)

    def _resize(self, node: Node, x: Value, p: int) -> None:
        sizes = self.static(node, 3)
        if sizes and p < len(sizes) and sizes[p] == self.B:
            node.set_input(3, self.shape_with_batch(node, sizes, p, f"{node.name}_sizes"))
            self.note(node, self.report.constants)

    def _rnn_states(self, node: Node, x: Value, p: int) -> None:
        axis = 0 if node.attrs.get("layout", 0) else 1
        done = False
        for slot in _RNN_OPS[node.op]:
            v = node.inputs[slot] if slot < len(node.inputs) else None
            if v is None or self.axis_of(v) is not None:
                continue
            if v.type is None or v.type.shape is None or v.type.shape[axis] != self.B \
                    or not self.broadcast(node, slot, axis):
                raise self.fail(node, f"has an initial state %{v.name} ({v.type}) that cannot follow the batch")
            done = True
        if done:
            self.note(node, self.report.broadcast)

    _lstm = _gru = _rnn = _rnn_states

    def broadcast(self, node: Node, slot: int, axis: int) -> bool:
        """Feed ``node`` its batch-free input ``slot`` expanded to the runtime batch at ``axis`` (a constant
        with B > 1 equal samples is cut to one first, which elementwise ops broadcast themselves). False when the
        input cannot be broadcast."""
        v = node.inputs[slot]
        assert v is not None and v.type is not None and v.type.shape is not None
        dims = list(v.type.shape)
        if not all(isinstance(d, int) for d in dims):
            return False
        base = v
        if dims[axis] != 1:
            if v.const is None or v.kind == "param":
                return False
            first = np.take(v.const, [0], axis=axis)
            if not np.array_equal(np.broadcast_to(first, v.const.shape), v.const,
                                  equal_nan=bool(np.issubdtype(v.const.dtype, np.inexact))):
                return False
            base = self.g.add_const(f"{v.name}_sample", first)
            if get_op(node.op).category in ("arith", "compare"):
                node.set_input(slot, base)
                return True
        ones = [1] * len(dims)
        target = self.shape_with_batch(node, ones, axis, f"{node.name}_in{slot}_batch")
        with self.g.inserting_before(node):
            e = self.g.create_node("expand", [base, target], name=f"{node.name}_in{slot}_batch")
        node.set_input(slot, e.outputs[0])
        return True

    def broadcast_inputs(self, node: Node) -> bool:
        """After ``node`` failed to take the batch: broadcast its batch-free inputs that have the fixed batch size
        where the batched input has the batch (``concat`` of a constant ``[1, 1, 8]`` with ``[batch, 16, 8]``)."""
        opdef = get_op(node.op)
        ref = next(((v, a) for i, v in enumerate(node.inputs) if v is not None and not opdef.input_spec(i).static
                    and (a := self.axis_of(v)) is not None), None)
        if ref is None:
            return False
        x, p = ref
        done = False
        for i, v in enumerate(node.inputs):
            if v is None or opdef.input_spec(i).static or i in opdef.weight_inputs \
                    or self.axis_of(v) is not None or v.type is None or v.type.shape is None:
                continue
            a = p - (len(x.type.shape) - len(v.type.shape))
            if 0 <= a < len(v.type.shape) and v.type.shape[a] == self.B and self.broadcast(node, i, a):
                done = True
        if done:
            self.note(node, self.report.broadcast)
        return done

    def check(self, node: Node) -> str | None:
        """Why ``node``'s relaxed outputs are wrong (None when each keeps the batch as its own dim)."""
        opdef = get_op(node.op)
        batched_in = any(self.axis_of(v) is not None for i, v in enumerate(node.inputs)
                         if v is not None and not opdef.input_spec(i).static)
        carried = False
        for o in node.outputs:
            old, new = self.orig.get(id(o)), None if o.type is None else o.type.shape
            if new is not None and list(new).count(self.sym) > 1:
                return f"pairs samples with each other (output {list(new)})"
            if new is not None and self.sym in new:
                carried = True
            if old is None or new is None:
                continue
            if len(old) != len(new):
                return f"changes rank with the batch ({list(old)} in the file, {list(new)} relaxed)"
            for a, b in zip(old, new, strict=True):
                if a != b and not (b == self.sym and a == self.B):
                    return f"merges the batch with other dims ({list(old)} in the file, {list(new)} relaxed)"
        if batched_in and not carried and node.op not in ("shape", "size"):
            return "drops the batch dim (it reduces over the batch or selects samples from it)"
        return None


def _batch_position(ins: list, outs: list, p: int, batch: int) -> int | None:
    """Where a reshape from ``ins`` to ``outs`` (the file's shapes) puts the batch at ``ins[p]``: the output dim
    with the same number of elements before it and the batch's size; ``p`` itself when several fit."""

    def before(dims: list, k: int) -> Any:
        head = dims[:k]
        return math.prod(head) if all(isinstance(d, int) for d in head) else tuple(head)

    fits = [q for q in range(len(outs)) if outs[q] == batch and before(outs, q) == before(ins, p)]
    if not fits:
        return None
    return p if p in fits else fits[0]


def _fresh_symbol(graph: Graph) -> str:
    used = {d for v in graph.values() if v.type is not None and v.type.shape is not None
            for d in v.type.shape if isinstance(d, str)}
    name, k = "batch", 0
    while name in used:
        k += 1
        name = f"batch{k}"
    return name


def _relax(graph: Graph) -> RelaxReport:
    from graphopt.ir.types import TensorType

    batch = fixed_batch(graph)
    assert batch is not None
    sym = _fresh_symbol(graph)
    report = RelaxReport(batch=batch, symbol=sym)
    r = _Relaxer(graph, batch, sym, report)
    r.orig = {id(v): (None if v.type is None or v.type.shape is None else tuple(v.type.shape))
              for v in graph.values()}
    for v in graph.inputs:
        if v.type is not None and v.type.shape and v.type.shape[0] == batch:
            report.original_shapes[v.name] = list(v.type.shape)
            v.type = TensorType(v.type.dtype, (sym, *v.type.shape[1:]))
            if r.source is None:
                r.source = v
    if r.source is None:
        return report
    report.changed = True
    graph.meta.pop("_sym_sentinels", None)
    for node in graph.nodes:  # a snapshot: nodes inserted before `node` are inferred when created
        r.before_infer(node)
        try:
            infer_node(node)
            why = r.check(node)
        except ShapeInferenceError as e:
            why = f"cannot take the batch ({str(e).split(': ', 1)[-1]})"
        if why is not None and r.broadcast_inputs(node):
            try:
                infer_node(node)
                why = r.check(node)
            except ShapeInferenceError as e:
                why = f"cannot take the batch ({str(e).split(': ', 1)[-1]})"
        if why is not None:
            raise r.fail(node, why)
    graph.remove_unused_constants()
    verify(graph)
    return report


# ----------------------------------------------------------------------------------------------- the check
def verify_relaxed(original: Graph, relaxed: Graph, batch: int = 3, *, tol: float = 1e-4, atol: float = 1e-6,
                   seed: int = 0, report: RelaxReport | None = None) -> float:
    """Max scale-relative error of ``relaxed`` run on ``batch`` samples at once against ``original`` run at its
    own fixed batch on the same samples; raises :class:`BatchRelaxError` above ``tol``.

    The original runs in onnxruntime (what the file is for; PyTorch if it does not export), the relaxed graph in
    the PyTorch backend (what proxies and training run) and, when the original exported, in onnxruntime too (what
    an exported result runs). Per output and sample the error is ``max|a - b|`` against the reference's scale
    ``max|a|`` (the rule of :mod:`graphopt.compare`: fails above ``tol * scale + atol``; the value returned is
    ``max|a - b| / scale``); integer and bool outputs must be equal. ``batch`` is moved off the file's own batch
    size, so another size really runs.
    """
    from graphopt.compare import prepare_model, random_inputs, run_model

    fixed = fixed_batch(original)
    sym = relaxed_symbol(relaxed)
    if fixed is None or sym is None:
        raise BatchRelaxError("verify_relaxed needs a graph with a fixed batch and its relaxed form")
    if batch == fixed:
        batch += 1
    types = [v.type for v in original.inputs]
    batched = [t.shape is not None and len(t.shape) > 0 and t.shape[0] == fixed for t in types]
    chunks = [random_inputs(types, seed=seed + k) for k in range(-(-batch // fixed))]  # each at the file's batch
    for c in chunks[1:]:
        c[:] = [x if b else chunks[0][j] for j, (x, b) in enumerate(zip(c, batched, strict=True))]
    rel_inputs = [np.concatenate([c[j] for c in chunks], axis=0)[:batch] if b else chunks[0][j]
                  for j, b in enumerate(batched)]
    ref_model = _onnx_session(original, prepare_model)
    refs = [run_model(ref_model or prepare_model(original), c) for c in chunks]
    runs = [("PyTorch", run_model(prepare_model(relaxed), rel_inputs))]
    if ref_model is not None:
        try:
            runs.append(("onnxruntime", run_model(_onnx_session(relaxed, prepare_model, strict=True), rel_inputs)))
        except Exception as e:  # noqa: BLE001 - the file ran in onnxruntime, so its relaxed form must too
            raise BatchRelaxError(f"the relaxed graph does not run in onnxruntime: {str(e).splitlines()[0]}") from e
    worst = 0.0
    for backend, outs in runs:
        for k, v in enumerate(relaxed.outputs):
            shape = [] if v.type is None or v.type.shape is None else list(v.type.shape)
            q = shape.index(sym) if sym in shape else None
            for i in range(batch):
                ref, got = refs[i // fixed][k], outs[k]
                if q is not None:
                    ref, got = np.take(ref, i % fixed, axis=q), np.take(got, i, axis=q)
                diff, scale = _error_and_scale(ref, got)
                if diff > tol * scale + atol:
                    raise BatchRelaxError(
                        f"the relaxed graph ({backend}, batch {batch}) differs from the file on sample {i} of "
                        f"output %{v.name}: max abs error {diff:.3g} on outputs of scale {scale:.3g} (allowed "
                        f"{tol:g} x scale + {atol:g}); " + _HOW.replace("NAME", repr(original.inputs[0].name)))
                worst = max(worst, diff / max(scale, atol))
    if report is not None:
        report.max_error = worst
    return worst


def relaxed_symbol(graph: Graph) -> str | None:
    """The symbolic batch of a relaxed graph (dim 0 of its first input), None when that dim is an int."""
    for v in graph.inputs:
        if v.type is not None and v.type.shape and isinstance(v.type.shape[0], str):
            return v.type.shape[0]
    return None


def _onnx_session(graph: Graph, prepare_model: Any, strict: bool = False) -> Any:
    """An onnxruntime session of ``graph``; None when it does not export or load (unless ``strict``)."""
    try:
        from graphopt.backends.onnx import to_onnx

        return prepare_model(to_onnx(graph))
    except Exception:
        if strict:
            raise
        return None


def _error_and_scale(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """``(max|ref - got|, max|ref|)`` over finite entries (equal NaNs/infinities agree; a shape or integer
    mismatch is an infinite error)."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return math.inf, 0.0
    if not np.issubdtype(ref.dtype, np.inexact):
        return (0.0 if np.array_equal(ref, got) else math.inf), 0.0
    a, b = ref.astype(np.float64), got.astype(np.float64)
    if a.size == 0:
        return 0.0, 0.0
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff = float(np.max(np.where(same, 0.0, np.abs(a - b))))
    finite = np.abs(a[np.isfinite(a)])
    return (diff if math.isfinite(diff) else math.inf), (float(finite.max()) if finite.size else 0.0)
