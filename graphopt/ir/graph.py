"""The computation-graph IR: ``Graph`` of ``Node``s connected by SSA ``Value``s.

Design (borrowed from torch.fx and onnx_ir): nodes live in one doubly linked list kept in a valid topological
order, so insertion before/after a node, erasure and replacement are O(1); every value knows its producer and
its uses, so rewrites never scan the graph. Constants (weights, buffers, small literals) are values that hold an
array and have no producer. Annotations (cost, proxy scores, rewrite provenance) go in the free ``meta`` dicts.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import DType, TensorType

ValueKind = str
"""``"input"`` (graph input), ``"param"`` (trainable weight), ``"buffer"`` (non-trainable state such as BN
running stats), ``"const"`` (literal, e.g. a reshape target), or ``"act"`` (produced by a node)."""


class IRError(ValueError):
    """A structural problem in a graph; the message names the node/value and what to do."""


@dataclass(eq=False)
class Use:
    node: Node
    index: int


@dataclass(eq=False)
class Value:
    """An SSA value. ``producer`` is None for graph inputs and constants."""

    name: str
    type: TensorType | None = None
    kind: ValueKind = "act"
    const: np.ndarray | None = None
    producer: Node | None = None
    output_index: int = 0
    uses: list[Use] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def users(self) -> list[Node]:
        """Distinct consumer nodes, in use order."""
        seen: dict[int, Node] = {}
        for u in self.uses:
            seen.setdefault(id(u.node), u.node)
        return list(seen.values())

    @property
    def shape(self):
        return None if self.type is None else self.type.shape

    @property
    def dtype(self) -> DType | None:
        return None if self.type is None else self.type.dtype

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}" if self.type is not None else f"%{self.name}"


@dataclass(eq=False)
class Node:
    """One primitive op application. ``inputs`` may contain None for omitted optional inputs."""

    op: str
    inputs: list[Value | None]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    graph: Graph | None = field(default=None, repr=False)
    _prev: Node | None = field(default=None, repr=False)
    _next: Node | None = field(default=None, repr=False)

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise IRError(f"node {self.name} ({self.op}) has {len(self.outputs)} outputs; use .outputs")
        return self.outputs[0]

    @property
    def prev(self) -> Node | None:
        return self._prev if self._prev is not None and self._prev.op != "<root>" else None

    @property
    def next(self) -> Node | None:
        return self._next if self._next is not None and self._next.op != "<root>" else None

    def input_producers(self) -> list[Node]:
        return [v.producer for v in self.inputs if v is not None and v.producer is not None]

    def users(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for o in self.outputs:
            for u in o.uses:
                seen.setdefault(id(u.node), u.node)
        return list(seen.values())

    def set_input(self, index: int, value: Value | None) -> None:
        """Rewire one input, keeping use lists exact."""
        old = self.inputs[index]
        if old is not None:
            old.uses = [u for u in old.uses if not (u.node is self and u.index == index)]
        self.inputs[index] = value
        if value is not None:
            value.uses.append(Use(self, index))

    def __repr__(self) -> str:
        ins = ", ".join("None" if v is None else f"%{v.name}" for v in self.inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        attrs = "" if not self.attrs else " {" + ", ".join(f"{k}={_short(v)}" for k, v in self.attrs.items()) + "}"
        return f"{outs} = {self.op}({ins}){attrs}  # {self.name}"


def _copy_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Copy a meta dict with its nested containers (dict/list/set/tuple) duplicated.

    Leaves (arrays, strings, and any object such as a Node a pass may keep there) are shared, not deep-copied:
    arrays are treated as immutable like constants, and deep-copying a Node would drag a whole graph along.
    """
    return _copy_container(meta)


def _copy_container(v: Any) -> Any:
    if isinstance(v, dict | list):
        out = copy.copy(v)  # keeps the container's own type (OrderedDict, defaultdict, ...)
        for k in (out.keys() if isinstance(out, dict) else range(len(out))):
            out[k] = _copy_container(out[k])
        return out
    if isinstance(v, set):
        return set(v)
    if type(v) is tuple:
        return tuple(_copy_container(x) for x in v)
    return v


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}" if v.size > 8 else repr(v.tolist())
    return repr(v)


class Graph:
    """A function from ``inputs`` to ``outputs``; ``constants`` are the arrays it closes over."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.constants: dict[str, Value] = {}
        self.meta: dict[str, Any] = {}
        self._root = Node("<root>", [], [], name="<root>")
        self._root._prev = self._root._next = self._root
        self._insert_point: tuple[Node, bool] = (self._root, True)  # (anchor, before)
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._counter = itertools.count()
        self._len = 0

    # ---------------------------------------------------------------- naming
    def unique_name(self, hint: str) -> str:
        """A value/node name not used yet in this graph (names are identifiers on disk and in ONNX)."""
        base = hint or "v"
        if base not in self._names:
            self._names.add(base)
            return base
        while True:
            cand = f"{base}_{next(self._counter)}"
            if cand not in self._names:
                self._names.add(cand)
                return cand

    def unique_node_name(self, hint: str) -> str:
        """Node names live in their own namespace (a node and its output may share a name, as in ONNX)."""
        base = hint or "node"
        cand = base
        while cand in self._node_names:
            cand = f"{base}_{next(self._counter)}"
        self._node_names.add(cand)
        return cand

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise IRError(f"name {name!r} already used in graph {self.name!r}")
        self._names.add(name)
        return name

    # ------------------------------------------------------------ construction
    def add_input(self, name: str, type: TensorType | None) -> Value:
        v = Value(self.unique_name(name), type, kind="input")
        self.inputs.append(v)
        return v

    def add_const(self, name: str, array: np.ndarray | Any, kind: ValueKind = "const") -> Value:
        """Register an array the graph closes over (a weight when ``kind`` is ``param``/``buffer``)."""
        arr = np.asarray(array)
        if arr.dtype == np.dtype("O"):
            raise IRError(f"constant {name!r} has object dtype; pass a numeric array")
        v = Value(self.unique_name(name), TensorType(DType.from_any(arr.dtype), arr.shape), kind=kind, const=arr)
        self.constants[v.name] = v
        return v

    def set_outputs(self, values: Iterable[Value]) -> None:
        self.outputs = list(values)

    def create_node(
        self,
        op: str,
        inputs: Iterable[Value | None],
        attrs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        num_outputs: int | None = None,
        output_names: list[str] | None = None,
        output_types: list[TensorType | None] | None = None,
        infer: bool = True,
    ) -> Node:
        """Create a node at the current insertion point (end of graph by default).

        With ``infer`` the registry's shape-and-dtype rule fills output types; frontends that already know the
        types (torch.export, ONNX value_info) may pass ``output_types`` and ``infer=False``.
        """
        from .registry import get_op  # local: registry imports graph types

        opdef = get_op(op)
        ins = list(inputs)
        if num_outputs is None:
            num_outputs = len(output_names) if output_names else opdef.num_outputs(attrs or {})
        node_name = self.unique_node_name(name or op)
        outs = []
        for i in range(num_outputs):
            hint = output_names[i] if output_names and output_names[i] else (
                node_name if num_outputs == 1 else f"{node_name}_out{i}")
            outs.append(Value(self.unique_name(hint), None if output_types is None else output_types[i]))
        node = Node(op, [], outs, dict(attrs or {}), node_name)
        node.attrs = opdef.complete_attrs(node.attrs, node_name)
        for o_i, o in enumerate(outs):
            o.producer, o.output_index = node, o_i
        for i, v in enumerate(ins):
            node.inputs.append(None)
            node.set_input(i, v)
        self._link(node)
        if infer:
            from .infer import infer_node

            infer_node(node)
        return node

    def _link(self, node: Node) -> None:
        anchor, before = self._insert_point
        if before:
            prev, nxt = anchor._prev, anchor
        else:
            prev, nxt = anchor, anchor._next
        node._prev, node._next = prev, nxt
        prev._next = node  # type: ignore[union-attr]
        nxt._prev = node  # type: ignore[union-attr]
        node.graph = self
        self._len += 1
        if not before:
            self._insert_point = (node, False)

    @contextlib.contextmanager
    def inserting_before(self, node: Node | None) -> Iterator[None]:
        """Create nodes right before ``node`` (like torch.fx); ``None`` means at the end of the graph."""
        saved = self._insert_point
        self._insert_point = (node or self._root, True)
        try:
            yield
        finally:
            self._insert_point = saved

    @contextlib.contextmanager
    def inserting_after(self, node: Node) -> Iterator[None]:
        saved = self._insert_point
        self._insert_point = (node, False)
        try:
            yield
        finally:
            self._insert_point = saved

    # ------------------------------------------------------------- traversal
    @property
    def nodes(self) -> list[Node]:
        """Nodes in topological order (a snapshot: safe to mutate the graph while iterating)."""
        out = []
        n = self._root._next
        while n is not self._root:
            out.append(n)
            n = n._next  # type: ignore[assignment]
        return out

    def __len__(self) -> int:
        return self._len

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.constants.values()
        for n in self.nodes:
            yield from n.outputs

    def find_node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in graph {self.name!r}")

    def nodes_by_op(self) -> dict[str, list[Node]]:
        """Index nodes by op type (pattern matchers start from this instead of scanning per pattern)."""
        idx: dict[str, list[Node]] = {}
        for n in self.nodes:
            idx.setdefault(n.op, []).append(n)
        return idx

    # -------------------------------------------------------------- mutation
    def replace_all_uses(self, old: Value, new: Value) -> int:
        """Point every use of ``old`` (including graph outputs) at ``new``; returns the number rewired."""
        if old is new:
            return 0
        count = 0
        for u in list(old.uses):
            u.node.set_input(u.index, new)
            count += 1
        for i, o in enumerate(self.outputs):
            if o is old:
                self.outputs[i] = new
                count += 1
        return count

    def erase_node(self, node: Node) -> None:
        """Unlink a node whose outputs are unused."""
        for o in node.outputs:
            if o.uses or any(o is g for g in self.outputs):
                users = ", ".join(n.name for n in o.users) or "graph output"
                raise IRError(f"cannot erase node {node.name} ({node.op}): output %{o.name} is used by {users}")
        for i in range(len(node.inputs)):
            node.set_input(i, None)
        assert node._prev is not None and node._next is not None
        node._prev._next = node._next
        node._next._prev = node._prev
        node._prev = node._next = None
        node.graph = None
        self._node_names.discard(node.name)
        self._len -= 1
        if self._insert_point[0] is node:
            self._insert_point = (self._root, True)

    def remove_unused_constants(self) -> int:
        dead = [k for k, v in self.constants.items() if not v.uses and not any(v is o for o in self.outputs)]
        for k in dead:
            del self.constants[k]
        return len(dead)

    def move_before(self, node: Node, anchor: Node) -> None:
        """Relink ``node`` right before ``anchor`` (used by toposort)."""
        node._prev._next = node._next  # type: ignore[union-attr]
        node._next._prev = node._prev  # type: ignore[union-attr]
        node._prev, node._next = anchor._prev, anchor
        anchor._prev._next = node  # type: ignore[union-attr]
        anchor._prev = node

    def toposort(self) -> None:
        """Restore a topological order after rewires, stably (original order wins among ready nodes)."""
        nodes = self.nodes
        pos = {id(n): i for i, n in enumerate(nodes)}
        indeg = {id(n): 0 for n in nodes}
        succ: dict[int, list[Node]] = {id(n): [] for n in nodes}
        for n in nodes:
            for p in {id(p): p for p in n.input_producers()}.values():
                if id(p) not in indeg:
                    raise IRError(f"node {n.name} uses a value of node {p.name}, which is not in the graph")
                indeg[id(n)] += 1
                succ[id(p)].append(n)
        import heapq

        ready = [(pos[id(n)], n) for n in nodes if indeg[id(n)] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, n = heapq.heappop(ready)
            order.append(n)
            for s in succ[id(n)]:
                indeg[id(s)] -= 1
                if indeg[id(s)] == 0:
                    heapq.heappush(ready, (pos[id(s)], s))
        if len(order) != len(nodes):
            stuck = [n.name for n in nodes if indeg[id(n)] > 0][:5]
            raise IRError(f"graph {self.name!r} has a cycle through nodes {stuck}")
        r = self._root
        prev = r
        for n in order:
            prev._next, n._prev = n, prev
            prev = n
        prev._next, r._prev = r, prev

    # -------------------------------------------------------------- analysis
    def subgraph(self, nodes: Iterable[Node], name: str = "subgraph") -> tuple[Graph, list[Value], list[Value]]:
        """Extract ``nodes`` as a new graph; returns it with the boundary inputs/outputs of the original.

        Boundary inputs are non-constant values used inside but produced outside; boundary outputs are values
        produced inside and used outside (or graph outputs). Constants are copied in.
        """
        wanted = {id(x) for x in nodes}  # built once: ``nodes`` may be a one-shot iterator
        node_list = [n for n in self.nodes if id(n) in wanted]
        inside = {id(n) for n in node_list}
        graph_outs = {id(v) for v in self.outputs}
        b_in: list[Value] = []
        seen_in: set[int] = set()
        b_out: list[Value] = []
        for n in node_list:
            for v in n.inputs:
                if v is None or v.is_const or (v.producer is not None and id(v.producer) in inside):
                    continue
                if id(v) not in seen_in:
                    seen_in.add(id(v))
                    b_in.append(v)
            for o in n.outputs:
                if id(o) in graph_outs or any(id(u.node) not in inside for u in o.uses):
                    b_out.append(o)
        sub = Graph(name)
        vmap: dict[int, Value] = {}
        for v in b_in:
            vmap[id(v)] = sub.add_input(v.name, v.type)
        for n in node_list:
            ins = []
            for v in n.inputs:
                if v is None:
                    ins.append(None)
                elif id(v) in vmap:
                    ins.append(vmap[id(v)])
                else:
                    assert v.is_const
                    vmap[id(v)] = sub.add_const(v.name, v.const, v.kind)
                    ins.append(vmap[id(v)])
            nn_ = sub.create_node(n.op, ins, dict(n.attrs), name=n.name, output_names=[o.name for o in n.outputs],
                                  output_types=[o.type for o in n.outputs], infer=False)
            nn_.meta = _copy_meta(n.meta)
            for o, no in zip(n.outputs, nn_.outputs, strict=True):
                vmap[id(o)] = no
        sub.set_outputs([vmap[id(v)] for v in b_out])
        return sub, b_in, b_out

    def copy(self) -> Graph:
        """Deep structural copy; constant arrays are shared (treat them as immutable).

        ``meta`` dicts are copied with their containers (dicts, lists, sets) duplicated, so a copy that grows
        e.g. ``_sym_sentinels`` or appends to a provenance list does not change the original.
        """
        g = Graph(self.name)
        g.meta = _copy_meta(self.meta)
        vmap: dict[int, Value] = {}
        for v in self.inputs:
            nv = g.add_input(v.name, v.type)
            nv.meta = _copy_meta(v.meta)
            vmap[id(v)] = nv
        for v in self.constants.values():
            nv = g.add_const(v.name, v.const, v.kind)
            nv.type = v.type
            nv.meta = _copy_meta(v.meta)
            vmap[id(v)] = nv
        for n in self.nodes:
            nn_ = g.create_node(n.op, [None if v is None else vmap[id(v)] for v in n.inputs], dict(n.attrs),
                                name=n.name, output_names=[o.name for o in n.outputs],
                                output_types=[o.type for o in n.outputs], infer=False)
            nn_.meta = _copy_meta(n.meta)
            for o, no in zip(n.outputs, nn_.outputs, strict=True):
                no.meta = _copy_meta(o.meta)
                vmap[id(o)] = no
        g.outputs = [vmap[id(v)] for v in self.outputs]
        return g

    def to_networkx(self):
        """A ``networkx.MultiDiGraph`` over nodes (keyed by name) with op/attrs/shape data, for analysis."""
        import networkx as nx

        G = nx.MultiDiGraph(name=self.name)
        for n in self.nodes:
            G.add_node(n.name, op=n.op, attrs=n.attrs, meta=n.meta,
                       out_shapes=[o.shape for o in n.outputs])
        for n in self.nodes:
            for i, v in enumerate(n.inputs):
                if v is not None and v.producer is not None:
                    G.add_edge(v.producer.name, n.name, src_index=v.output_index, dst_index=i, value=v.name)
        return G

    def __repr__(self) -> str:
        return self.format()

    def format(self, max_nodes: int | None = None) -> str:
        """Readable text dump (what ``--print-after`` shows)."""
        lines = [f"graph {self.name}(" + ", ".join(repr(v) for v in self.inputs) + ") {"]
        for v in self.constants.values():
            lines.append(f"  const %{v.name}: {v.type} ({v.kind})")
        for i, n in enumerate(self.nodes):
            if max_nodes is not None and i >= max_nodes:
                lines.append(f"  ... {len(self) - max_nodes} more nodes")
                break
            outs = ", ".join(repr(o) for o in n.outputs)
            lines.append(f"  {outs} = {n.op}(" + ", ".join("None" if v is None else f"%{v.name}" for v in n.inputs)
                         + ")" + ("" if not n.attrs else " {" + ", ".join(f"{k}={_short(a)}" for k, a in
                                                                        n.attrs.items()) + "}"))
        lines.append("  return " + ", ".join(f"%{v.name}" for v in self.outputs))
        lines.append("}")
        return "\n".join(lines)
