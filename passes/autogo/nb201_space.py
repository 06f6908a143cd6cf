"""AutoGO segment mutation restricted to the NAS-Bench-201 space, and IR graph → NB201 arch string.

Why a restricted mutation: a benchmark that looks up the true accuracy of every queried candidate in the
NB201 table needs every candidate to *be* an NB201 network. Free AutoGO mutation (:func:`.mutate.mutate`)
replaces any 1-3 segments of one place in the graph by any database segment, which leaves the space at once
(one cell differs from the other 14, or a segment from another model appears). Here:

* **segments** = the six edges of the cell, in arch-string order ``e01, e02, e12, e03, e13, e23`` (the
  "consecutive segments" of a run). An edge's segment is its op subgraph: ``relu→conv→batch_norm``
  (``nor_conv_1x1``/``nor_conv_3x3``), ``avg_pool`` (``avg_pool_3x3``), ``mul(x, 0)`` (``none``) or the empty
  segment (``skip_connect``, the identity);
* **source run**: 1 to ``max_run`` (3) consecutive edges; as in :func:`.mutate.mutate`, with probability
  ``low_flops_frac`` (0.5) one of the ``low_flops_k`` cheapest runs, otherwise a uniform run;
* **replacement**: for each edge of the run a uniform op of the five (at least one edge changes), each
  non-empty op instantiated from the **segment database** — the record whose op labels are the op's and whose
  boundary resolution equals the edge's (the default database, mined with NB201 cells, holds all of them at
  the three stage resolutions); the identity has no database record (a segment needs a node);
* the same replacement is stitched into **every** cell (NB201 cells share one genotype), nodes of unchanged
  edges (and their weights) are kept, the graph is verified and mapped back to its arch string with
  :func:`graph_to_arch`, which must equal the intended one.

:func:`parse_nb201` reads the macro skeleton of ``graphopt.models.nb201`` (stem conv→bn; stages of cells
separated by residual reduction blocks) and matches each cell exactly: a parse is accepted only when the
cell's nodes are closed (every node reads only the cell input or cell nodes; every value except the cell
output is used only inside the cell), so a graph that is not an NB201 network raises :class:`NotNB201`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.ir.cost import node_cost
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.registry import get_op
from graphopt.ir.verify import verify

from .resolution import fresh_param, instantiate
from .segdb import SegmentDB, SegmentRecord, load_default_db, resolution

__all__ = ["CELL_EDGES", "NB201_OPS", "CellParse", "EdgeParse", "NB201Mutant", "NB201Space", "NotNB201", "Proposal",
           "arch_ops", "arch_string", "graph_to_arch", "parse_nb201"]

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
CELL_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""(source node, target node) of the six cell edges in arch-string order (the segment order of a cell)."""
OP_LABELS: dict[str, tuple[str, ...]] = {
    "none": ("mul",), "skip_connect": (), "nor_conv_1x1": ("relu", "conv1x1", "batch_norm"),
    "nor_conv_3x3": ("relu", "conv3x3", "batch_norm"), "avg_pool_3x3": ("avg_pool3x3",)}
"""Segment op labels (:func:`.tokens.node_label`) of each NB201 op."""


class NotNB201(ValueError):
    """The graph is not a NAS-Bench-201 network (the message says which part does not match)."""


def arch_string(ops: Sequence[str]) -> str:
    """NB201 string from six ops in :data:`CELL_EDGES` order."""
    if len(ops) != 6 or any(o not in NB201_OPS for o in ops):
        raise ValueError(f"arch_string: need 6 ops from {NB201_OPS} in order e01,e02,e12,e03,e13,e23, got {ops}")
    e = dict(zip(CELL_EDGES, ops, strict=True))
    return "+".join("|" + "|".join(f"{e[(i, j)]}~{i}" for i in range(j)) + "|" for j in range(1, 4))


def arch_ops(arch: str) -> list[str]:
    """Six ops in :data:`CELL_EDGES` order from an NB201 string (validated)."""
    from graphopt.models.nb201 import parse_arch

    by_edge = {(src, dst): op for dst, src, op in parse_arch(arch)}
    return [by_edge[e] for e in CELL_EDGES]


# ------------------------------------------------------------------------------------------------------ parse
@dataclass(eq=False)
class EdgeParse:
    """One cell edge: its op, its nodes (empty for skip_connect) and the value it contributes."""

    src: int
    dst: int
    op: str
    nodes: list[Node]
    out: Value


@dataclass(eq=False)
class CellParse:
    """One matched cell: input/output values, the six edges, the three adds (node 2, node 3 inner/outer)."""

    index: int
    input: Value
    output: Value
    edges: dict[tuple[int, int], EdgeParse]
    adds: list[Node]

    @property
    def ops(self) -> list[str]:
        return [self.edges[e].op for e in CELL_EDGES]

    @property
    def arch(self) -> str:
        return arch_string(self.ops)

    @property
    def nodes(self) -> list[Node]:
        return [n for e in CELL_EDGES for n in self.edges[e].nodes] + self.adds


def _is_zero_const(v: Value | None) -> bool:
    return v is not None and v.is_const and v.const is not None and v.const.size == 1 and float(
        v.const.reshape(-1)[0]) == 0.0


def _single_use(v: Value, op: str) -> Node | None:
    if len(v.uses) != 1 or v.uses[0].index != 0 or v.uses[0].node.op != op:
        return None
    return v.uses[0].node


def _edge_patterns(s: Value) -> list[tuple[str, list[Node], Value]]:
    """Every way one NB201 edge op can be applied to ``s`` in the graph: ``(op, nodes, output)``."""
    out: list[tuple[str, list[Node], Value]] = [("skip_connect", [], s)]
    for u in s.users:
        if len(u.outputs) != 1 or not u.inputs or u.inputs[0] is not s:
            continue
        if u.op == "mul" and len(u.inputs) == 2 and _is_zero_const(u.inputs[1]):
            out.append(("none", [u], u.outputs[0]))
        elif (u.op == "avg_pool" and list(u.attrs.get("kernel_shape") or []) == [3, 3]
              and list(u.attrs.get("strides") or [1, 1]) == [1, 1]):
            out.append(("avg_pool_3x3", [u], u.outputs[0]))
        elif u.op == "relu":
            c = _single_use(u.outputs[0], "conv")
            if c is None or int(c.attrs.get("group") or 1) != 1 or list(c.attrs.get("strides") or [1, 1]) != [1, 1]:
                continue
            k = tuple(int(d) for d in c.inputs[1].shape[2:]) if c.inputs[1] is not None else ()
            b = _single_use(c.outputs[0], "batch_norm")
            if b is not None and k in ((1, 1), (3, 3)):
                out.append((f"nor_conv_{k[0]}x{k[1]}", [u, c, b], b.outputs[0]))
    return out


def _adds(a: Value, b: Value) -> list[Node]:
    return [u for u in a.users if u.op == "add" and len(u.inputs) == 2 and u.inputs[0] is a and u.inputs[1] is b]


def _closed(x: Value, nodes: list[Node], output: Value) -> bool:
    ids = {id(n) for n in nodes}
    if len(ids) != len(nodes):
        return False
    for n in nodes:
        for v in n.inputs:
            if v is None or v.is_const or v is x:
                continue
            if v.producer is None or id(v.producer) not in ids:
                return False
        for o in n.outputs:
            if o is not output and any(id(u.node) not in ids for u in o.uses):
                return False
    return all(id(u.node) in ids for u in x.uses)


def _parse_cell(x: Value, index: int) -> CellParse | None:
    """The unique closed cell with input ``x`` (module doc), or None."""
    p0 = _edge_patterns(x)
    for e01 in p0:
        n1 = e01[2]
        p1 = _edge_patterns(n1)
        for e02, e12 in itertools.product(p0, p1):
            for a2 in _adds(e02[2], e12[2]):
                n2 = a2.outputs[0]
                p2 = _edge_patterns(n2)
                for e03, e13 in itertools.product(p0, p1):
                    for a3 in _adds(e03[2], e13[2]):
                        for e23 in p2:
                            for a4 in _adds(a3.outputs[0], e23[2]):
                                found = dict(zip(CELL_EDGES, (e01, e02, e12, e03, e13, e23), strict=True))
                                edges = {e: EdgeParse(e[0], e[1], *found[e]) for e in CELL_EDGES}
                                cell = CellParse(index, x, a4.outputs[0], edges, [a2, a3, a4])
                                if _closed(x, cell.nodes, cell.output):
                                    return cell
    return None


def _parse_reduction(x: Value) -> Value | None:
    """Output of the residual reduction block reading ``x`` (shortcut avg_pool/2 → conv1x1 → add), or None."""
    for u in x.users:
        if u.op == "avg_pool" and list(u.attrs.get("strides") or []) == [2, 2]:
            c = _single_use(u.outputs[0], "conv")
            if c is not None and len(c.outputs[0].uses) == 1 and c.outputs[0].uses[0].node.op == "add":
                return c.outputs[0].uses[0].node.outputs[0]
    return None


def parse_nb201(graph: Graph) -> list[CellParse]:
    """Match the macro skeleton of an NB201 network and every cell; raises :class:`NotNB201`.

    Skeleton: graph input → stem conv → batch_norm, then stages of cells separated by reduction blocks (the
    same number of cells in every stage, at least one stage), then the head.
    """
    if len(graph.inputs) != 1:
        raise NotNB201(f"graph {graph.name!r}: an NB201 network has one input, this one has {len(graph.inputs)}")
    conv = _single_use(graph.inputs[0], "conv")
    bn = _single_use(conv.outputs[0], "batch_norm") if conv is not None else None
    if bn is None:
        raise NotNB201(f"graph {graph.name!r}: input does not feed a stem conv → batch_norm")
    x = bn.outputs[0]
    cells: list[CellParse] = []
    stages: list[int] = [0]
    while True:
        cell = _parse_cell(x, len(cells))
        if cell is not None:
            cells.append(cell)
            stages[-1] += 1
            x = cell.output
            continue
        red = _parse_reduction(x) if stages[-1] else None
        if red is None:
            break
        x = red
        stages.append(0)
    if not cells or stages[-1] == 0:
        where = x.producer.name if x.producer is not None else x.name
        raise NotNB201(f"graph {graph.name!r}: no NB201 cell matches after value %{x.name} (node {where}); "
                       f"stages found so far: {stages}")
    if len(set(stages)) != 1:
        raise NotNB201(f"graph {graph.name!r}: stages hold different numbers of cells {stages}")
    return cells


def graph_to_arch(graph: Graph) -> str:
    """The NB201 arch string of ``graph`` (all cells must share it); raises :class:`NotNB201`."""
    cells = parse_nb201(graph)
    archs = {c.arch for c in cells}
    if len(archs) != 1:
        raise NotNB201(f"graph {graph.name!r}: cells have different genotypes {sorted(archs)}; not an NB201 network")
    return archs.pop()


# --------------------------------------------------------------------------------------------------- mutation
@dataclass
class Proposal:
    """A chosen mutation before it is built: the replaced run of edges and the child's six ops."""

    parent_arch: str
    edges: list[tuple[int, int]]
    old_ops: list[str]
    new_ops: list[str]
    ops: list[str]
    selection: str

    @property
    def arch(self) -> str:
        return arch_string(self.ops)


@dataclass
class NB201Mutant:
    """A mutated NB201 graph with its arch string and lineage."""

    graph: Graph
    arch: str
    parent_arch: str
    edges: list[tuple[int, int]]
    old_ops: list[str]
    new_ops: list[str]
    selection: str
    db_segments: list[int] = field(default_factory=list)

    @property
    def lineage(self) -> dict[str, Any]:
        """JSON-safe record of the mutation (which edge segments were replaced by which)."""
        return {"pass": "autogo.nb201_mutate", "parent_arch": self.parent_arch, "arch": self.arch,
                "edges": [f"e{s}{d}" for s, d in self.edges], "old_ops": self.old_ops, "new_ops": self.new_ops,
                "selection": self.selection, "db_segments": self.db_segments}


class NB201Space:
    """NB201-restricted segment mutation over a segment database (module doc)."""

    def __init__(self, db: SegmentDB | None = None) -> None:
        self.db = db if db is not None else load_default_db()[0]
        self._templates: dict[tuple[str, tuple], SegmentRecord] = {}
        self._instances: dict[tuple[int, str], Graph] = {}

    def template(self, op: str, res: tuple) -> SegmentRecord:
        """The database segment of NB201 op ``op`` at boundary resolution ``res`` (C, H, W)."""
        key = (op, tuple(res))
        if key not in self._templates:
            labels = list(OP_LABELS[op])
            found = [r for r in self.db.query(1, 1, [list(res)], [list(res)], mode="exact")
                     if r.ops == labels and (op != "none" or any(
                         _is_zero_const(v) for n in r.graph().nodes for v in n.inputs[1:]))]
            if not found:
                raise KeyError(f"segment database has no {op} segment ({' '.join(labels)}) at resolution {res}; "
                               f"rebuild it with NB201 cells in the corpus (`graphopt segments build`)")
            self._templates[key] = max(found, key=lambda r: r.count)
        return self._templates[key]

    def _instance(self, rec: SegmentRecord, src: Value) -> Graph:
        """``rec`` instantiated (shape-inferred) for input ``src``, cached per (segment, input type): shape
        inference is the slow part, and the 15 cells share three resolutions."""
        key = (rec.id, str(src.type))
        if key not in self._instances:
            self._instances[key] = instantiate(rec.graph(), None, [src.type], np.random.default_rng(0),
                                               name=f"segment{rec.id}")
        return self._instances[key]

    def propose(self, cells: list[CellParse], rng: np.random.Generator, *, max_run: int = 3,
                low_flops_frac: float = 0.5, low_flops_k: int = 5) -> Proposal:
        """Choose the source run and its replacement ops (steps 1-2 of the module doc) without building."""
        parent_ops = cells[0].ops
        if any(c.ops != parent_ops for c in cells):
            raise NotNB201("cells have different genotypes; not an NB201 network")
        flops = [sum(node_cost(n).flops or 0 for c in cells for n in c.edges[e].nodes) for e in CELL_EDGES]
        runs = [(i, L, sum(flops[i:i + L])) for i in range(6) for L in range(1, max_run + 1) if i + L <= 6]
        if rng.random() < low_flops_frac:
            cheap = sorted(runs, key=lambda r: (r[2], r[0], r[1]))[:low_flops_k]
            i, L, _ = cheap[int(rng.integers(len(cheap)))]
            selection = "low-flops"
        else:
            i, L, _ = runs[int(rng.integers(len(runs)))]
            selection = "random"
        old = parent_ops[i:i + L]
        while True:
            new = [NB201_OPS[int(k)] for k in rng.integers(len(NB201_OPS), size=L)]
            if new != old:
                break
        ops = list(parent_ops)
        ops[i:i + L] = new
        return Proposal(cells[0].arch, list(CELL_EDGES[i:i + L]), old, new, ops, selection)

    def apply(self, graph: Graph, cells: list[CellParse], proposal: Proposal, rng: np.random.Generator, *,
              check_types: bool = False) -> NB201Mutant:
        """Stitch ``proposal`` into every cell of ``graph``, verify, and map the result back to its arch string
        (which must be the proposal's)."""
        child, segs = self._rebuild(graph, cells, dict(zip(CELL_EDGES, proposal.ops, strict=True)), rng)
        verify(child, check_types=check_types)
        arch = graph_to_arch(child)
        if arch != proposal.arch:  # the stitching must land exactly on the intended genotype
            raise AssertionError(f"NB201 mutation produced {arch}, expected {proposal.arch}")
        return NB201Mutant(child, arch, proposal.parent_arch, proposal.edges, proposal.old_ops, proposal.new_ops,
                           proposal.selection, segs)

    def mutate(self, graph: Graph, rng: np.random.Generator, *, max_run: int = 3, low_flops_frac: float = 0.5,
               low_flops_k: int = 5, cells: list[CellParse] | None = None, check_types: bool = False
               ) -> NB201Mutant:
        """One NB201-restricted AutoGO mutation of ``graph`` (module doc). ``cells`` may pass a cached parse."""
        cells = cells if cells is not None else parse_nb201(graph)
        prop = self.propose(cells, rng, max_run=max_run, low_flops_frac=low_flops_frac, low_flops_k=low_flops_k)
        return self.apply(graph, cells, prop, rng, check_types=check_types)

    def _rebuild(self, parent: Graph, cells: list[CellParse], ops: dict[tuple[int, int], str],
                 rng: np.random.Generator) -> tuple[Graph, list[int]]:
        """Copy ``parent``, re-emitting every cell with ``ops`` (kept edges keep their nodes and weights)."""
        k = int(parent.meta.get("nb201_mutations", 0)) + 1
        g = Graph(parent.name)
        g.meta = {kk: v for kk, v in parent.meta.items() if not kk.startswith("_")}
        g.meta["nb201_mutations"] = k
        vmap: dict[int, Value] = {}
        for v in parent.inputs:
            vmap[id(v)] = g.add_input(v.name, v.type)
        segs: set[int] = set()

        def const(v: Value) -> Value:
            if id(v) not in vmap:
                nv = g.constants.get(v.name) or g.add_const(v.name, v.const, v.kind)
                vmap[id(v)] = nv
            return vmap[id(v)]

        def copy(n: Node, ins: list[Value | None]) -> Value:
            nn_ = g.create_node(n.op, ins, dict(n.attrs), name=n.name, output_names=[o.name for o in n.outputs],
                                output_types=[o.type for o in n.outputs], infer=False)
            nn_.meta = dict(n.meta)
            for o, no in zip(n.outputs, nn_.outputs, strict=True):
                vmap[id(o)] = no
            return nn_.outputs[0]

        def emit_edge(c: CellParse, e: EdgeParse, op: str, src: Value) -> Value:
            if op == e.op:  # kept segment: same nodes, same weights, new source
                local: dict[int, Value] = {}
                out = src
                for j, n in enumerate(e.nodes):
                    ins = [None if v is None else const(v) if v.is_const else
                           (src if j == 0 and i == 0 else local[id(v)]) for i, v in enumerate(n.inputs)]
                    out = copy(n, ins)
                    local[id(n.outputs[0])] = out
                return out
            if op == "skip_connect":
                return src
            rec = self.template(op, resolution(src.shape))
            segs.add(rec.id)
            rep = self._instance(rec, src)
            prefix = f"nb201mut{k}.c{c.index}.e{e.src}{e.dst}"
            rmap: dict[int, Value] = {id(rep.inputs[0]): src}
            for rn in rep.nodes:
                ins = []
                for v in rn.inputs:
                    if v is None:
                        ins.append(None)
                    elif id(v) in rmap:
                        ins.append(rmap[id(v)])
                    else:  # fresh weights per cell (instance arrays are only shapes/literals)
                        arr = v.const if v.kind == "const" else fresh_param(
                            rn.op, get_op(rn.op).input_spec(len(ins)).name, tuple(v.const.shape), v.const.dtype,
                            rng, rn.attrs)
                        rmap[id(v)] = g.add_const(f"{prefix}.{v.name}", arr, v.kind)
                        ins.append(rmap[id(v)])
                nn_ = g.create_node(rn.op, ins, dict(rn.attrs), name=f"{prefix}.{rn.name}",
                                    output_types=[o.type for o in rn.outputs], infer=False)
                nn_.meta = {"provenance": {"pass": "autogo.nb201_mutate", "db_segment": rec.id,
                                           "edge": f"e{e.src}{e.dst}", "op": op}}
                for o, no in zip(rn.outputs, nn_.outputs, strict=True):
                    rmap[id(o)] = no
            return rmap[id(rep.outputs[0])]

        def emit_cell(c: CellParse) -> None:
            vals = [vmap[id(c.input)]]
            adds = iter(c.adds)
            for j in range(1, 4):
                acc: Value | None = None
                for src, dst in CELL_EDGES:
                    if dst != j:
                        continue
                    e = c.edges[(src, dst)]
                    out = emit_edge(c, e, ops[(src, dst)], vals[src])
                    acc = out if acc is None else copy(next(adds), [acc, out])
                vals.append(acc)  # type: ignore[arg-type]
            vmap[id(c.output)] = vals[3]

        cell_of = {id(n): c for c in cells for n in c.nodes}
        done: set[int] = set()
        for n in parent.nodes:
            c = cell_of.get(id(n))
            if c is None:
                copy(n, [None if v is None else const(v) if v.is_const else vmap[id(v)] for v in n.inputs])
            elif c.index not in done:
                done.add(c.index)
                emit_cell(c)
        g.set_outputs([vmap[id(v)] for v in parent.outputs])
        return g, sorted(segs)
