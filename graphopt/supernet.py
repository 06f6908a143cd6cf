"""Supernet IR helpers: choice points, elastic dimensions, path sampling and materialization.

A *supernet* is an ordinary :class:`~graphopt.ir.graph.Graph` with two additions:

* **choice points**: ``choice`` nodes (``graphopt/ir/ops/choice.py``) whose inputs are the outputs of the
  alternative subgraphs (all computed from the same boundary values). Several choice nodes may share one
  ``point`` name (NB201 cells share one architecture), so a path assigns one alternative per *name*.
* **elastic dimensions**: entries of ``graph.meta["elastic_dims"]`` (see :class:`ElasticDim`); each says
  which constants take a leading slice (weight entanglement) or which block is bypassed (depth) for a value.

A *path* is ``{point_or_dim_name: label_or_value}``. :func:`materialize` turns a supernet plus a path into a
concrete graph (no choice nodes, sliced weights) that verifies and runs through every backend. Because a
supernet is itself a valid graph, ``to_torch(supernet)`` runs the continuous mixture (``set_mixture``) or the
mean of all alternatives, which is what DARTS/XNAS-style relaxations need.

The module also builds NAS-Bench-201 networks directly in the IR (:func:`nb201_graph`), either for one
architecture or as the full supernet, with parameter names matching ``graphopt.models.nb201`` (concrete) and
:class:`graphopt.models.nb201.NB201Supernet` (supernet) so trained weights carry over by name.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from graphopt.models.nb201 import EDGE_ORDER as NB201_EDGES
from graphopt.models.nb201 import OPS as NB201_OPS

from .ir.graph import Graph, IRError, Node, Value
from .ir.types import DType, TensorType


class SupernetError(IRError):
    """A bad path or a malformed supernet; the message names the point/dimension."""


# --------------------------------------------------------------------------------------------- choice points
@dataclass
class ChoicePoint:
    """One named choice: its alternatives' labels and the choice nodes that carry it."""

    name: str
    labels: list[str]
    nodes: list[Node] = field(default_factory=list, repr=False)


@dataclass
class ElasticDim:
    """An elastic dimension (depth, width, MLP ratio, heads...).

    ``kind``: ``"slice"``: every ``(constant, axis, per_unit)`` in ``targets`` keeps its leading
    ``value * per_unit`` entries along ``axis`` (weight entanglement: the subnet uses the leading slice of the
    largest weight; ``per_unit`` may name another dimension, whose value is then the unit: MLP hidden =
    ratio x embed); ``"skip"``: ``targets`` is a list of ``(block_output, block_input, block_index)``
    value names, and a block whose index ``>= value`` is bypassed by rewiring its output's uses to its input.
    ``attr_targets`` (``(node, attr, index_or_None, per_unit)``) rewrite shape attributes/static constants.
    """

    name: str
    choices: list[int]
    kind: str
    targets: list[Any] = field(default_factory=list)
    attr_targets: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choice_points(graph: Graph) -> list[ChoicePoint]:
    """The graph's choice points (ordered by first occurrence), merging nodes that share a point name."""
    pts: dict[str, ChoicePoint] = {}
    for n in graph.nodes:
        if n.op != "choice":
            continue
        name = n.attrs.get("point") or n.name
        labels = list(n.attrs.get("labels") or [str(i) for i in range(len(n.inputs) - 1)])
        if len(labels) != len(n.inputs) - 1:
            raise SupernetError(f"choice node {n.name}: {len(labels)} labels for {len(n.inputs) - 1} alternatives")
        p = pts.setdefault(name, ChoicePoint(name, labels))
        if p.labels != labels:
            raise SupernetError(f"choice point {name!r}: nodes disagree on labels ({p.labels} vs {labels})")
        p.nodes.append(n)
    return list(pts.values())


def elastic_dims(graph: Graph) -> list[ElasticDim]:
    return [d if isinstance(d, ElasticDim) else ElasticDim(**d) for d in graph.meta.get("elastic_dims", [])]


def search_space(graph: Graph) -> dict[str, list[Any]]:
    """``{name: options}`` for every choice point and elastic dimension."""
    space: dict[str, list[Any]] = {p.name: list(p.labels) for p in choice_points(graph)}
    for d in elastic_dims(graph):
        space[d.name] = list(d.choices)
    return space


def space_size(graph: Graph) -> int:
    return int(np.prod([len(v) for v in search_space(graph).values()], dtype=np.float64))


def sample_path(graph: Graph, rng: random.Random | int | None = None) -> dict[str, Any]:
    """A uniformly random path (one option per choice point / elastic dimension)."""
    r = rng if isinstance(rng, random.Random) else random.Random(rng)
    return {k: r.choice(v) for k, v in search_space(graph).items()}


def _index(p: ChoicePoint, value: Any) -> int:
    if isinstance(value, str):
        if value not in p.labels:
            raise SupernetError(f"choice point {p.name!r}: unknown option {value!r}; options are {p.labels}")
        return p.labels.index(value)
    i = int(value)
    if not 0 <= i < len(p.labels):
        raise SupernetError(f"choice point {p.name!r}: index {i} out of range 0..{len(p.labels) - 1}")
    return i


def _dce(g: Graph) -> None:
    live: set[int] = {id(v) for v in g.outputs}
    for n in reversed(g.nodes):
        if any(id(o) in live for o in n.outputs):
            live.update(id(v) for v in n.inputs if v is not None)
        else:
            for i in range(len(n.inputs)):
                n.set_input(i, None)
            for o in n.outputs:
                o.uses.clear()
            g.erase_node(n)
    g.remove_unused_constants()


def materialize(graph: Graph, path: Mapping[str, Any], *, verify: bool = True) -> Graph:
    """The concrete graph of ``path``: every choice resolved, unused alternatives and weights removed.

    Every choice point and elastic dimension must be given (a missing one is an error naming it); extra keys
    are rejected so a typo cannot silently pick a default.
    """
    space = search_space(graph)
    missing = [k for k in space if k not in path]
    extra = [k for k in path if k not in space]
    if missing or extra:
        raise SupernetError(f"path for supernet {graph.name!r}: missing {missing}, unknown {extra}; "
                            f"the space is {space}")
    g = graph.copy()
    for p in choice_points(g):
        idx = _index(p, path[p.name])
        for n in p.nodes:
            chosen = n.inputs[1 + idx]
            assert chosen is not None
            g.replace_all_uses(n.output, chosen)
    for d in elastic_dims(g):
        v = path[d.name]
        if v not in d.choices:
            raise SupernetError(f"elastic dim {d.name!r}: value {v!r} not in {d.choices}")
        _apply_elastic(g, d, v, path)
    _dce(g)
    g.meta.pop("elastic_dims", None)
    g.meta["path"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in path.items()}
    from .ir.infer import infer_graph

    infer_graph(g)
    if verify:
        from .ir.verify import verify as _verify

        _verify(g)
    return g


def _size(value: float, per_unit: float | str, path: Mapping[str, Any]) -> int:
    """``value * per_unit``; a string ``per_unit`` names another dimension (MLP hidden = ratio * embed)."""
    unit = float(path[per_unit]) if isinstance(per_unit, str) else float(per_unit)
    return int(round(float(value) * unit))


def _apply_elastic(g: Graph, d: ElasticDim, value: Any, path: Mapping[str, Any]) -> None:
    if d.kind == "slice":
        for cname, axis, per_unit in d.targets:
            c = g.constants.get(cname)
            if c is None or c.const is None:
                raise SupernetError(f"elastic dim {d.name!r}: constant {cname!r} not in graph {g.name!r}")
            keep = _size(value, per_unit, path)
            sl = [slice(None)] * c.const.ndim
            sl[axis] = slice(0, keep)
            c.const = np.ascontiguousarray(c.const[tuple(sl)])
            c.type = TensorType(DType.from_any(c.const.dtype), c.const.shape)
        for node_name, attr, index, per_unit in d.attr_targets:
            n = g.find_node(node_name)
            if attr.startswith("input:"):  # a static constant input (reshape target)
                slot = int(attr.split(":")[1])
                v = n.inputs[slot]
                assert v is not None and v.const is not None
                arr = np.array(v.const, copy=True)
                arr[index] = _size(value, per_unit, path)
                nv = g.add_const(v.name + "_e", arr, v.kind)
                n.set_input(slot, nv)
            else:
                cur = n.attrs[attr]
                if index is None:
                    n.attrs[attr] = _size(value, per_unit, path)
                else:
                    cur = list(cur)
                    cur[index] = _size(value, per_unit, path)
                    n.attrs[attr] = cur
    elif d.kind == "skip":
        vals = {v.name: v for v in g.values()}
        # last block first, so a run of bypassed blocks chains back to the last kept one
        for out_name, in_name, block_index in sorted(d.targets, key=lambda t: -t[2]):
            if block_index >= int(value):
                if out_name not in vals or in_name not in vals:
                    raise SupernetError(f"elastic dim {d.name!r}: values {out_name!r}/{in_name!r} not in graph")
                g.replace_all_uses(vals[out_name], vals[in_name])
    else:
        raise SupernetError(f"elastic dim {d.name!r}: unknown kind {d.kind!r} (use 'slice' or 'skip')")


def set_mixture(graph: Graph, weights: Mapping[str, Sequence[float] | np.ndarray]) -> None:
    """Make choice points run as continuous mixtures with the given per-point weights (in place)."""
    pts = {p.name: p for p in choice_points(graph)}
    for name, w in weights.items():
        if name not in pts:
            raise SupernetError(f"set_mixture: no choice point {name!r}; points are {sorted(pts)}")
        arr = np.asarray(w, dtype=np.float32)
        if arr.shape != (len(pts[name].labels),):
            raise SupernetError(f"set_mixture: point {name!r} needs {len(pts[name].labels)} weights, got {arr.shape}")
        cname = f"arch.{name}"
        old = graph.constants.get(cname)
        if old is not None:
            old.const = arr
        else:
            old = graph.add_const(cname, arr, "buffer")
            if old.name != cname:
                raise SupernetError(f"set_mixture: name {cname!r} is taken by a non-constant value")
        for n in pts[name].nodes:
            n.attrs["selected"] = -1
            n.set_input(0, old)


# ------------------------------------------------------------------------------------------ NB201 in the IR
class _Builder:
    """Emit conv/BN/pool nodes with weights from a state dict (numpy arrays), keeping torch's names."""

    def __init__(self, g: Graph, sd: Mapping[str, Any]) -> None:
        self.g, self.sd = g, sd

    def w(self, name: str, kind: str = "param") -> Value:
        if name in self.g.constants:
            return self.g.constants[name]
        if name not in self.sd:
            raise SupernetError(f"weights: no entry {name!r} in the state dict")
        arr = self.sd[name]
        arr = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
        v = self.g.add_const(name, arr.astype(np.float32), kind)
        if v.name != name:
            raise SupernetError(f"weights: name clash for {name!r}")
        return v

    def conv(self, x: Value, prefix: str, k: int, stride: int = 1, pad: int = 0, name: str = "") -> Value:
        return self.g.create_node("conv", [x, self.w(prefix + ".weight")],
                                  {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4,
                                   "dilations": [1, 1], "group": 1}, name=name or prefix).output

    def bn(self, x: Value, prefix: str) -> Value:
        ins = [x, self.w(prefix + ".weight"), self.w(prefix + ".bias"), self.w(prefix + ".running_mean", "buffer"),
               self.w(prefix + ".running_var", "buffer")]
        return self.g.create_node("batch_norm", ins, {"epsilon": 1e-5, "momentum": 0.9}, name=prefix).output

    def relu(self, x: Value, name: str) -> Value:
        return self.g.create_node("relu", [x], name=name).output

    def rcb(self, x: Value, prefix: str, k: int, stride: int, pad: int) -> Value:
        """ReLU -> Conv -> BN with torch names ``prefix.1`` (conv) and ``prefix.2`` (BN)."""
        y = self.relu(x, prefix + ".0")
        y = self.conv(y, prefix + ".1", k, stride, pad)
        return self.bn(y, prefix + ".2")

    def nb201_op(self, x: Value, op_name: str, prefix: str, tag: dict[str, Any]) -> Value:
        """One NB201 candidate op (tagged in ``node.meta['edge']`` so ``expand-cell`` finds the edge)."""
        before = {id(n) for n in self.g.nodes}
        if op_name == "none":
            zero = self.g.add_const(prefix + ".zero", np.array(0.0, dtype=np.float32))
            y = self.g.create_node("mul", [x, zero], name=prefix + ".zero").output
        elif op_name == "skip_connect":
            y = self.g.create_node("identity", [x], name=prefix + ".skip").output
        elif op_name == "nor_conv_1x1":
            y = self.rcb(x, prefix, 1, 1, 0)
        elif op_name == "nor_conv_3x3":
            y = self.rcb(x, prefix, 3, 1, 1)
        elif op_name == "avg_pool_3x3":
            y = self.g.create_node("avg_pool", [x], {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1] * 4,
                                                     "count_include_pad": 0}, name=prefix + ".pool").output
        else:
            raise SupernetError(f"unknown NB201 op {op_name!r}; valid ops: {NB201_OPS}")
        for n in self.g.nodes:
            if id(n) not in before:
                n.meta["edge"] = dict(tag, op=op_name)
        return y


def _nb201_cell(b: _Builder, x: Value, ci: int, arch: dict[tuple[int, int], str] | None,
                ops: Sequence[str]) -> Value:
    nodes = [x]
    for j in range(1, 4):
        acc: Value | None = None
        for i in range(j):
            ekey = f"e{i}{j}"
            tag = {"cell": ci, "src": i, "dst": j, "point": ekey}
            if arch is not None:
                out = b.nb201_op(nodes[i], arch[(i, j)], f"cells.{ci}.edges.{ekey}", tag)
            else:
                alts = [b.nb201_op(nodes[i], o, f"cells.{ci}.edges.{ekey}.ops.{k}", tag) for k, o in enumerate(ops)]
                out = b.g.create_node("choice", [None, *alts], {"point": ekey, "labels": list(ops)},
                                      name=f"cells.{ci}.edges.{ekey}.choice").output
            acc = out if acc is None else b.g.create_node("add", [acc, out], name=f"cells.{ci}.node{j}.add").output
        assert acc is not None
        nodes.append(acc)
    return nodes[-1]


def nb201_graph(arch: str | None = None, *, C: int = 16, N: int = 5, num_classes: int = 10,
                state_dict: Mapping[str, Any] | None = None, image_size: int = 32, batch: int | str = "N",
                seed: int = 0) -> Graph:
    """NB201 network as an IR graph: one architecture (``arch`` string) or, with ``arch=None``, the supernet.

    Weights come from ``state_dict`` (``graphopt.models.nb201`` names for an architecture,
    ``NB201Supernet`` names for the supernet); without one a freshly initialised torch model (``seed``)
    provides them. Each edge's nodes carry ``meta['edge'] = {cell, src, dst, point, op}``.
    """
    import torch

    from graphopt.models.nb201 import parse_arch

    if state_dict is None:
        torch.manual_seed(seed)
        if arch is None:
            from graphopt.models.nb201 import NB201Supernet

            state_dict = NB201Supernet(C=C, N=N, num_classes=num_classes).state_dict()
        else:
            from graphopt.models.nb201 import NB201Net

            state_dict = NB201Net(arch, C=C, N=N, num_classes=num_classes).state_dict()
    arch_map = None if arch is None else {(src, dst): o for dst, src, o in parse_arch(arch)}
    g = Graph("nb201_supernet" if arch is None else "nb201")
    b = _Builder(g, state_dict)
    x = g.add_input("x", TensorType(DType.float32, (batch, 3, image_size, image_size)))
    y = b.bn(b.conv(x, "stem.0", 3, 1, 1), "stem.1")
    ci = 0
    for stage in range(3):
        if stage > 0:
            p = f"cells.{ci}"
            a = b.rcb(y, p + ".conv_a", 3, 2, 1)
            a = b.rcb(a, p + ".conv_b", 3, 1, 1)
            s = g.create_node("avg_pool", [y], {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0] * 4},
                              name=p + ".downsample.0").output
            s = b.conv(s, p + ".downsample.1", 1, 1, 0)
            y = g.create_node("add", [s, a], name=p + ".add").output
            ci += 1
        for _ in range(N):
            y = _nb201_cell(b, y, ci, arch_map, NB201_OPS)
            ci += 1
    y = g.create_node("relu", [b.bn(y, "lastact.0")], name="lastact.1").output
    y = g.create_node("global_avg_pool", [y], name="gap").output
    y = g.create_node("flatten", [y], {"axis": 1}, name="flatten").output
    y = g.create_node("gemm", [y, b.w("classifier.weight"), b.w("classifier.bias")], {"transB": 1},
                      name="classifier").output
    g.set_outputs([y])
    g.meta["space"] = "nb201"
    return g


def nb201_path_to_arch(path: Mapping[str, Any]) -> str:
    """``{'e01': op, ...}`` -> NB201 arch string."""
    ops = {(int(k[1]), int(k[2])): (v if isinstance(v, str) else NB201_OPS[int(v)]) for k, v in path.items()
           if len(k) == 3 and k[0] == "e"}
    if set(ops) != set(NB201_EDGES):
        raise SupernetError(f"nb201 path needs edges {[f'e{i}{j}' for i, j in NB201_EDGES]}, got {sorted(path)}")
    return "+".join("|" + "|".join(f"{ops[(i, j)]}~{i}" for i in range(j)) + "|" for j in range(1, 4))


def nb201_arch_to_path(arch: str) -> dict[str, str]:
    from graphopt.models.nb201 import parse_arch

    return {f"e{src}{dst}": o for dst, src, o in parse_arch(arch)}
