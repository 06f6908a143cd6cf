"""IR graph → GNN input: per-node features in canonical order, producer→consumer edges, node embedding module.

Node features follow AutoGO's PSC predictor (32 dims once embedded, see :class:`NodeEmbedding`):

* **op type** — id in a vocabulary of the registry's built-in op names (``graphopt.ir.registry.all_ops()`` from
  ``graphopt.ir.ops``, sorted; see :func:`default_op_vocab`) with id 0 = ``other`` for ops not in it (fused or
  custom ops, ops added after a predictor was trained). The vocabulary is frozen into each trained predictor's
  config so later registry changes cannot shift ids;
* **resolution** — ``(Hin, Hout, Win, Wout, Cin, Cout)`` read from the node's first non-constant input and its
  first output TensorType, each normalized as ``log2(max(v, 1)) / 12`` (so 1 → 0, 4096 → 1; resolutions are
  powers of two in practice, and the log keeps 8-vs-16 and 512-vs-1024 equally far apart). Layout by rank:
  rank ≥ 4 is ``(N, C, H, W, ...)`` with trailing spatial dims folded into W; rank 3 is ``(N, C, L)`` for
  conv/pool ops and ``(N, L, C)`` (token sequences) otherwise, with H = L and W = 1; rank 2 ``(N, C)``; rank 1
  ``(C,)``; a symbolic or unknown dim counts as 1;
* **kernel size** — bucket of the largest spatial kernel dim from ``kernel_shape`` or the weight's shape
  (0 = no kernel, 1..7 = k, 8 = larger);
* **bias flag** — 1 when the op's second weight slot (the conv/gemm bias, the norm shift) is connected.

Nodes are listed in the canonical topological order of :func:`graphopt.passes.autogo.tokens.canonical_order`
(name-independent), the order in which AutoGO mining and mutation define consecutive segments; so node ``i``
of a :class:`~torch_geometric.data.Data` is canonical position ``i`` and a contiguous segment is an index range.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.registry import all_ops

__all__ = [
    "FEATURE_DIM", "KERNEL_BUCKETS", "EffectiveView", "NodeEmbedding",
    "effective_view", "PackedGraphs", "RawFeatures", "default_op_vocab",
    "graph_to_data", "kernel_bucket", "node_resolution", "normalize_resolution", "raw_features", "view_features",
]

FEATURE_DIM = 32
"""Width of an embedded node (op 16 + resolution 8 + kernel 7 + bias 1)."""
OP_DIM, RES_DIM, KERNEL_DIM = 16, 8, 7
KERNEL_BUCKETS = 9
"""0 = no kernel, 1..7 = kernel size, 8 = larger than 7."""
RES_LOG_SCALE = 12.0
"""``log2`` of the resolution that normalizes to 1.0 (4096)."""


def default_op_vocab() -> list[str]:
    """``["other", *sorted built-in primitive op names]``; index 0 is where unknown ops go.

    Built-in = registered by ``graphopt.ir.ops`` (the primitive set frontends lower to). Ops that passes or
    plugins register at import time (fused ops such as ``attention``) are left out on purpose, so the
    vocabulary — and hence trained weights — does not depend on which modules happen to be imported.
    """
    return ["other", *sorted(n for n, d in all_ops().items() if d.fn.__module__.startswith("graphopt.ir.ops"))]


def _dim(d: object) -> int:
    return d if isinstance(d, int) and d > 0 else 1


def _hwc(shape: Sequence[object] | None, spatial_first: bool) -> tuple[int, int, int]:
    """(H, W, C) of one tensor, per the layout rules of the module docstring."""
    if shape is None or len(shape) == 0:
        return 1, 1, 1
    s = [_dim(d) for d in shape]
    if len(s) >= 4:
        return s[2], math.prod(s[3:]), s[1]
    if len(s) == 3:
        return (s[2], 1, s[1]) if spatial_first else (s[1], 1, s[2])
    if len(s) == 2:
        return 1, 1, s[1]
    return 1, 1, s[0]


def node_resolution(node: Node) -> tuple[int, int, int, int, int, int]:
    """``(Hin, Hout, Win, Wout, Cin, Cout)`` of a node (raw, before normalization)."""
    from graphopt.ir.registry import get_op, has_op

    chw = has_op(node.op) and get_op(node.op).category in ("conv", "pool")
    data_in = next((v for v in node.inputs if v is not None and not v.is_const), None)
    out = node.outputs[0] if node.outputs else None
    out_shape = out.shape if out is not None else None
    hi, wi, ci = _hwc(data_in.shape if data_in is not None else out_shape, chw)
    ho, wo, co = _hwc(out_shape, chw)
    return hi, ho, wi, wo, ci, co


def normalize_resolution(res: np.ndarray) -> np.ndarray:
    """``log2(max(v, 1)) / 12`` elementwise (float32)."""
    return (np.log2(np.maximum(np.asarray(res, dtype=np.float64), 1.0)) / RES_LOG_SCALE).astype(np.float32)


def kernel_bucket(node: Node) -> int:
    """Kernel-size bucket (see module docstring)."""
    from graphopt.ir.registry import get_op, has_op

    ks = node.attrs.get("kernel_shape")
    dims: list[int] = []
    if ks:
        dims = [int(k) for k in np.atleast_1d(ks)]
    elif has_op(node.op) and get_op(node.op).category in ("conv", "pool"):
        wi = get_op(node.op).weight_inputs
        if wi and wi[0] < len(node.inputs) and node.inputs[wi[0]] is not None:
            shp = node.inputs[wi[0]].shape
            if shp is not None and len(shp) > 2:
                dims = [_dim(d) for d in shp[2:]]
    if not dims:
        return 0
    return min(max(dims), KERNEL_BUCKETS - 1)


def bias_flag(node: Node) -> int:
    from graphopt.ir.registry import get_op, has_op

    if not has_op(node.op):
        return 0
    wi = get_op(node.op).weight_inputs
    return int(len(wi) > 1 and wi[1] < len(node.inputs) and node.inputs[wi[1]] is not None)


@dataclass
class RawFeatures:
    """Un-embedded features of one graph, nodes in canonical order.

    ``op``: int64 [n] (vocabulary ids); ``res``: float32 [n, 6] normalized resolution; ``kernel``: int64 [n];
    ``bias``: float32 [n]; ``edges``: int64 [2, E] producer → consumer (one per data input slot, so ``add(x, x)``
    gives two); ``names``: node names.
    """

    op: np.ndarray
    res: np.ndarray
    kernel: np.ndarray
    bias: np.ndarray
    edges: np.ndarray
    names: list[str]

    @property
    def num_nodes(self) -> int:
        return len(self.names)


@functools.lru_cache(maxsize=8)
def _vocab_index(vocab: tuple[str, ...]) -> dict[str, int]:
    return {name: i for i, name in enumerate(vocab)}


def canonical_nodes(graph: Graph) -> list[Node]:
    """The canonical topological order shared with AutoGO mining/mutation (name-independent)."""
    from graphopt.passes.autogo.tokens import canonical_order

    return canonical_order(graph)


#: ops through which an all-zero operand makes the result all-zero (absorbing element), for :func:`effective_view`
ZERO_ABSORBING_OPS = frozenset({"mul"})


@dataclass
class EffectiveView:
    """The data-dependent part of a graph (see :func:`effective_view`).

    ``nodes``: live nodes, in the canonical order of the live subgraph; ``source``: for every removed node (by
    ``id``), the value it forwards (a pass-through ``add``: its live operand) or ``None`` (constant-valued or
    dead).
    """

    nodes: list[Node]
    source: dict[int, Value | None]

    def resolve(self, value: Value | None) -> Value | None:
        """The value that actually carries ``value``'s data (a live node's output or a graph input); ``None``
        for constants and for values of removed nodes."""
        while value is not None and value.producer is not None and id(value.producer) in self.source:
            value = self.source[id(value.producer)]
        return None if value is None or value.is_const else value

    def producer(self, value: Value | None) -> Node | None:
        v = self.resolve(value)
        return v.producer if v is not None else None


def effective_view(graph: Graph, order: Sequence[Node] | None = None) -> EffectiveView:
    """Drop what does not depend on the graph's inputs, so equal computations give equal features.

    Why: NAS cells written with a ``none`` op (NB201's ``x * 0``) keep every dead path in the lowered graph,
    and a message-passing GNN cannot tell a conv fed by ``x * 0`` from a live one; cell encoders (FLAN's GIN,
    NB201 adjacency matrices) simply omit those edges. Rules, applied in topological order:

    * a value is *constant* if it is a graph constant, or an output of a node whose inputs are all constant,
      or of a zero-absorbing op (:data:`ZERO_ABSORBING_OPS`: ``mul``) with an all-zero constant operand or a
      constant operand computed from one (``x * 0`` is 0 for finite ``x``); constant nodes are removed (what
      constant folding would do after ``x * 0 → 0``);
    * an ``add`` with one operand computed by a removed (constant) node forwards its other operand: the dead
      path at most adds a constant bias, which the features ignore as they ignore other biases;
    * nodes that do not reach a graph output through the remaining edges are removed (dead code).

    The live nodes are then put in the canonical order of the live subgraph itself (dead nodes would otherwise
    break ties differently), so two graphs that differ only in dead parts get identical features. If nothing
    is left (every output constant, e.g. an NB201 cell whose output node only receives ``none``), the producer
    of the first output is kept alone, so such graphs still share one feature graph.
    """
    nodes = list(order) if order is not None else canonical_nodes(graph)
    zero: set[int] = set()  # ids of computed values known to be all zeros
    const: set[int] = set()  # ids of computed constant values (graph constants are recognized by is_const)

    def is_const(v: Value) -> bool:
        return v.is_const or id(v) in const

    def is_zero(v: Value) -> bool:
        if id(v) in zero:
            return True
        return v.is_const and np.size(v.const) > 0 and not np.any(np.asarray(v.const))

    source: dict[int, Value | None] = {}
    for nd in nodes:
        ins = [v for v in nd.inputs if v is not None]
        absorbed = nd.op in ZERO_ABSORBING_OPS and any(is_zero(v) for v in ins)
        if absorbed or all(is_const(v) for v in ins):
            source[id(nd)] = None
            for o in nd.outputs:
                const.add(id(o))
                if absorbed:
                    zero.add(id(o))
        elif nd.op == "add" and len(ins) == 2:
            folded = [v.producer is not None and id(v.producer) in source and is_const(v) for v in ins]
            if sum(folded) == 1:
                source[id(nd)] = ins[folded.index(False)]
    view = EffectiveView([], source)
    # dead code: walk back from the outputs over resolved producers
    keep: set[int] = set()
    stack = [p for v in graph.outputs if (p := view.producer(v)) is not None]
    while stack:
        nd = stack.pop()
        if id(nd) not in keep:
            keep.add(id(nd))
            stack += [p for v in nd.inputs if (p := view.producer(v)) is not None]
    live = [nd for nd in nodes if id(nd) in keep]
    if not live:
        last = next((v.producer for v in graph.outputs if v.producer is not None), nodes[-1] if nodes else None)
        live = [last] if last is not None else []
    for nd in nodes:
        if id(nd) not in keep and id(nd) not in source:
            source[id(nd)] = None
    for nd in live:
        source.pop(id(nd), None)
    view.nodes = _live_canonical_order(graph, view, live)
    return view


def _live_canonical_order(graph: Graph, view: EffectiveView, live: list[Node]) -> list[Node]:
    """Canonical order of the live subgraph, built as a graph of its own (structure only)."""
    from graphopt.passes.autogo.tokens import canonical_order

    if len(live) == len(graph):
        return live
    sub = Graph(graph.name)
    vmap: dict[int, Value] = {id(v): sub.add_input(v.name, v.type) for v in graph.inputs}
    back: dict[int, Node] = {}
    for nd in live:  # ``live`` is in a topological order of the original graph
        ins: list[Value | None] = []
        for v in nd.inputs:
            r = view.resolve(v)
            if v is None:
                ins.append(None)
            elif r is None:  # a (folded) constant: only its presence matters for the order, not its value
                ins.append(sub.add_const(v.name, np.zeros((), np.float32)))
            else:
                ins.append(vmap[id(r)])
        new = sub.create_node(nd.op, ins, dict(nd.attrs), name=nd.name, output_names=[o.name for o in nd.outputs],
                              output_types=[o.type for o in nd.outputs], infer=False)
        back[id(new)] = nd
        for o, no in zip(nd.outputs, new.outputs, strict=True):
            vmap[id(o)] = no
    sub.set_outputs([vmap[id(r)] for v in graph.outputs if (r := view.resolve(v)) is not None and id(r) in vmap])
    return [back[id(n)] for n in canonical_order(sub)]


def raw_features(graph: Graph, vocab: Sequence[str] | None = None, order: Sequence[Node] | None = None,
                 *, effective: bool = False) -> RawFeatures:
    """Features of every node of ``graph`` in canonical order (or in ``order`` if given).

    ``effective``: only the data-dependent nodes of :func:`effective_view` (``order``, if given, must then be
    the whole graph's order; the features' ``names`` say which nodes remain).
    """
    if len(graph) == 0:
        raise ValueError(f"graph {graph.name!r} has no nodes; the PSC predictor needs at least one")
    nodes = list(order) if order is not None else canonical_nodes(graph)
    pos = {id(n): i for i, n in enumerate(nodes)}
    if len(pos) != len(graph):
        raise ValueError(f"order has {len(pos)} distinct nodes but graph {graph.name!r} has {len(graph)}")
    return view_features(effective_view(graph, nodes) if effective else EffectiveView(nodes, {}), vocab, graph.name)


def view_features(view: EffectiveView, vocab: Sequence[str] | None = None, gname: str = "graph") -> RawFeatures:
    """Features of the nodes of ``view``, in its order, with edges between their resolved producers."""
    index = _vocab_index(tuple(vocab if vocab is not None else default_op_vocab()))
    nodes = view.nodes
    pos = {id(n): i for i, n in enumerate(nodes)}
    n = len(nodes)
    op = np.array([index.get(nd.op, 0) for nd in nodes], dtype=np.int64)
    res = normalize_resolution(np.array([node_resolution(nd) for nd in nodes], dtype=np.float64).reshape(n, 6))
    kernel = np.array([kernel_bucket(nd) for nd in nodes], dtype=np.int64)
    bias = np.array([bias_flag(nd) for nd in nodes], dtype=np.float32)
    src, dst = [], []
    for j, nd in enumerate(nodes):
        for v in nd.inputs:
            p = view.producer(v)
            if p is not None:
                if id(p) not in pos:
                    raise ValueError(f"node {nd.name} reads %{v.name} from node {p.name}, which is not in "
                                     f"graph {gname!r}")
                src.append(pos[id(p)])
                dst.append(j)
    edges = np.array([src, dst], dtype=np.int64).reshape(2, -1)
    return RawFeatures(op, res, kernel, bias, edges, [nd.name for nd in nodes])


def graph_to_data(graph: Graph, vocab: Sequence[str] | None = None, order: Sequence[Node] | None = None,
                  *, effective: bool = False):
    """The graph as a ``torch_geometric.data.Data`` (fields ``x_op, x_res, x_kernel, x_bias, edge_index``,
    ``node_names``); node ``i`` is canonical position ``i`` (of the live nodes with ``effective``)."""
    from torch_geometric.data import Data

    f = raw_features(graph, vocab, order, effective=effective)
    return Data(x_op=torch.from_numpy(f.op), x_res=torch.from_numpy(f.res), x_kernel=torch.from_numpy(f.kernel),
                x_bias=torch.from_numpy(f.bias), edge_index=torch.from_numpy(f.edges), num_nodes=f.num_nodes,
                node_names=f.names)


class NodeEmbedding(nn.Module):
    """op-type embedding (16) ‖ Linear(6→8)(resolution) ‖ kernel-size embedding (7) ‖ bias flag (1) = 32 dims."""

    def __init__(self, num_ops: int) -> None:
        super().__init__()
        self.op = nn.Embedding(num_ops, OP_DIM)
        self.res = nn.Linear(6, RES_DIM)
        self.kernel = nn.Embedding(KERNEL_BUCKETS, KERNEL_DIM)

    def forward(self, x_op: torch.Tensor, x_res: torch.Tensor, x_kernel: torch.Tensor, x_bias: torch.Tensor
                ) -> torch.Tensor:
        return torch.cat([self.op(x_op), self.res(x_res), self.kernel(x_kernel), x_bias.unsqueeze(-1)], dim=-1)


# ----------------------------------------------------------------------------------------- packed features
@dataclass
class PackedGraphs:
    """Many graphs' raw features in CSR form (compact, memory-mappable, fast to batch).

    ``op`` holds ids into ``op_names`` (the cache's own op table; :meth:`op_ids` remaps them to a predictor's
    vocabulary). Node ``node_ptr[i]:node_ptr[i+1]`` belong to graph ``i`` in canonical order; ``edges`` are
    local (per-graph) indices, ``edge_ptr`` slices them.
    """

    op: np.ndarray  # int16 [T]
    res: np.ndarray  # float16 [T, 6]
    kernel: np.ndarray  # int8 [T]
    bias: np.ndarray  # int8 [T]
    node_ptr: np.ndarray  # int64 [G+1]
    edges: np.ndarray  # int32 [2, TE]
    edge_ptr: np.ndarray  # int64 [G+1]
    y: np.ndarray  # float32 [G]
    op_names: list[str]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_nodes(self) -> np.ndarray:
        return np.diff(self.node_ptr)

    def op_ids(self, vocab: Sequence[str]) -> np.ndarray:
        """``op`` remapped to ``vocab`` ids (unknown → 0, 'other')."""
        idx = {n: i for i, n in enumerate(vocab)}
        table = np.array([idx.get(n, 0) for n in self.op_names], dtype=np.int64)
        return table[self.op.astype(np.int64)]

    @staticmethod
    def from_features(feats: Sequence[RawFeatures], y: Sequence[float], vocab: Sequence[str],
                      keys: Sequence[str] | None = None) -> PackedGraphs:
        """Pack features computed with ``vocab`` ids."""
        used = sorted({int(i) for f in feats for i in np.unique(f.op)})
        remap = np.zeros(len(vocab), dtype=np.int16)
        remap[used] = np.arange(len(used), dtype=np.int16)
        nn_ = np.array([f.num_nodes for f in feats], dtype=np.int64)
        ne = np.array([f.edges.shape[1] for f in feats], dtype=np.int64)
        return PackedGraphs(
            op=remap[np.concatenate([f.op for f in feats])],
            res=np.concatenate([f.res for f in feats]).astype(np.float16),
            kernel=np.concatenate([f.kernel for f in feats]).astype(np.int8),
            bias=np.concatenate([f.bias for f in feats]).astype(np.int8),
            node_ptr=np.concatenate([[0], np.cumsum(nn_)]), edges=np.concatenate([f.edges for f in feats], 1)
            .astype(np.int32), edge_ptr=np.concatenate([[0], np.cumsum(ne)]),
            y=np.asarray(y, dtype=np.float32), op_names=[vocab[i] for i in used],
            keys=list(keys) if keys is not None else [str(i) for i in range(len(feats))])

    def subset(self, idx: Sequence[int] | np.ndarray) -> PackedGraphs:
        idx = np.asarray(idx, dtype=np.int64)
        nsl = [np.arange(self.node_ptr[i], self.node_ptr[i + 1]) for i in idx]
        esl = [np.arange(self.edge_ptr[i], self.edge_ptr[i + 1]) for i in idx]
        nodes = np.concatenate(nsl) if len(idx) else np.zeros(0, np.int64)
        eds = np.concatenate(esl) if len(idx) else np.zeros(0, np.int64)
        return PackedGraphs(self.op[nodes], self.res[nodes], self.kernel[nodes], self.bias[nodes],
                            np.concatenate([[0], np.cumsum(self.num_nodes[idx])]), self.edges[:, eds],
                            np.concatenate([[0], np.cumsum(np.diff(self.edge_ptr)[idx])]), self.y[idx],
                            list(self.op_names), [self.keys[i] for i in idx])

    def save(self, path: Path | str) -> None:
        """Atomic write (temp file + rename) of a compressed ``.npz`` (no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.npz")
        os.close(fd)
        os.chmod(tmp, 0o644)
        try:
            np.savez_compressed(tmp, op=self.op, res=self.res, kernel=self.kernel, bias=self.bias,
                                node_ptr=self.node_ptr, edges=self.edges, edge_ptr=self.edge_ptr, y=self.y,
                                op_names=np.array(self.op_names), keys=np.array(self.keys))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @staticmethod
    def load(path: Path | str) -> PackedGraphs:
        with np.load(path, allow_pickle=False) as z:
            return PackedGraphs(z["op"], z["res"], z["kernel"], z["bias"], z["node_ptr"], z["edges"], z["edge_ptr"],
                                z["y"], [str(s) for s in z["op_names"]], [str(s) for s in z["keys"]])
