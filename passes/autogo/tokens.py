"""Node tokens and the canonical topological order that turns an IR graph into a token sequence.

AutoGO tokenizes a graph by writing one token per node in topological order and running BPE over the
sequences. The paper notes that topological order is not unique, so the same network can yield different
sequences (and duplicate segments). We fix one order that depends only on structure, never on node names or
on the order nodes were inserted:

* each node gets a Weisfeiler-Lehman structural key (its token, refined 3 rounds with the keys of its
  producers and consumers, hashed with BLAKE2 so it is stable across processes);
* Kahn's algorithm emits ready nodes by priority ``(positions of its producers, latest first; WL key)``, i.e.
  depth-first-like (continue the chain just emitted, which keeps conv-bn-relu runs contiguous for BPE) and
  structure-ordered among siblings.

Nodes that tie on both keys are WL-indistinguishable; in all graphs of practical interest they are
automorphic (parallel identical branches), so either choice yields the same token sequence. When they are not,
the insertion order breaks the tie (documented limitation of any WL-based canonical order).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools

from graphopt.ir.graph import Graph, Node
from graphopt.ir.registry import get_op

WL_ROUNDS = 3

_KERNEL_OPS = {"conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool"}


def _kernel(node: Node) -> tuple[int, ...] | None:
    """Spatial kernel of a node: weight dims [2:] for weighted convs, ``kernel_shape`` for pools."""
    ks = node.attrs.get("kernel_shape")
    if ks:
        return tuple(int(k) for k in ks)
    opdef = get_op(node.op)
    if node.op in _KERNEL_OPS and 1 in opdef.weight_inputs and len(node.inputs) > 1:
        w = node.inputs[1]
        if w is not None and w.shape is not None and len(w.shape) > 2:
            return tuple(int(d) if isinstance(d, int) else -1 for d in w.shape[2:])
    return None


def node_label(node: Node) -> str:
    """Op type refined the way the paper's tokens are: kernel size for kernel ops, depthwise/grouped convs
    marked (the paper has a separate Depthwise op), and weighted matmuls (linear layers) told apart from
    activation x activation matmuls (attention)."""
    op = node.op
    k = _kernel(node)
    label = op
    if k is not None:
        label += "x".join(str(d) for d in k)
    if op in ("conv", "conv_transpose"):
        g = int(node.attrs.get("group") or 1)
        if g > 1:
            x = node.inputs[0]
            cin = x.shape[1] if x is not None and x.shape is not None and len(x.shape) > 1 else None
            label += "dw" if g == cin else "g"
    elif op in ("matmul", "gemm"):
        if any(v is not None and v.kind == "param" for v in node.inputs[1:]):
            label += "w"
    return label


def node_token(node: Node, graph: Graph | None = None, inside: set[int] | None = None,
               outputs: set[int] | None = None) -> str:
    """``label(in-ops)[out-ops]``: the node's label plus the op types feeding it and consuming it, as in the
    paper (op types of neighbours, not their labels, to keep the alphabet small). Graph inputs and outputs
    appear as ``input`` / ``output``; constants (weights) are not neighbours.

    With ``inside`` (ids of the nodes of a segment) the token is the one the node has in the segment cut out
    as its own graph: producers outside read ``input``, a value used outside reads ``output`` once.
    """
    if outputs is None:
        graph = graph if graph is not None else node.graph
        outputs = {id(v) for v in graph.outputs} if graph is not None else set()
    ins = sorted("input" if v.producer is None or (inside is not None and id(v.producer) not in inside)
                 else v.producer.op for v in node.inputs if v is not None and not v.is_const)
    cons: list[str] = []
    for o in node.outputs:
        external = id(o) in outputs
        for u in o.uses:
            if inside is None or id(u.node) in inside:
                cons.append(u.node.op)
            else:
                external = True
        if external:
            cons.append("output")
    return f"{node_label(node)}({','.join(ins)})[{','.join(sorted(cons))}]"


def _h(s: str) -> str:
    return hashlib.blake2b(s.encode(), digest_size=8).hexdigest()


def _wl(nodes: list[Node], tokens: dict[int, str], inside: set[int], rounds: int = WL_ROUNDS) -> dict[int, str]:
    key = {id(n): _h(tokens[id(n)]) for n in nodes}
    preds = {id(n): [(i, v.producer, v.output_index) for i, v in enumerate(n.inputs)
                     if v is not None and v.producer is not None and id(v.producer) in inside] for n in nodes}
    succs = {id(n): [(u.index, u.node, k) for k, o in enumerate(n.outputs) for u in o.uses if id(u.node) in inside]
             for n in nodes}
    for _ in range(rounds):
        new = {}
        for n in nodes:
            p = sorted(f"{i}<{key[id(m)]}.{k}" for i, m, k in preds[id(n)])
            q = sorted(f"{k}>{key[id(m)]}.{i}" for i, m, k in succs[id(n)])
            new[id(n)] = _h(key[id(n)] + "|" + ";".join(p) + "|" + ";".join(q))
        key = new
    return key


def wl_keys(graph: Graph, rounds: int = WL_ROUNDS) -> dict[int, str]:
    """Weisfeiler-Lehman structural key per node (by ``id(node)``), independent of names and node order."""
    nodes = graph.nodes
    outs = {id(v) for v in graph.outputs}
    return _wl(nodes, {id(n): node_token(n, outputs=outs) for n in nodes}, {id(n) for n in nodes}, rounds)


def _canonical(nodes: list[Node], tokens: dict[int, str], inside: set[int], in_pos: dict[int, int],
               what: str) -> list[Node]:
    wl = _wl(nodes, tokens, inside)
    indeg: dict[int, int] = {}
    succ: dict[int, list[Node]] = {id(n): [] for n in nodes}
    for n in nodes:
        ps = {id(v.producer): v.producer for v in n.inputs
              if v is not None and v.producer is not None and id(v.producer) in inside}
        indeg[id(n)] = len(ps)
        for p in ps.values():
            succ[id(p)].append(n)
    pos: dict[int, int] = {}

    def prio(n: Node) -> tuple:
        ps = [pos[id(v.producer)] if v.producer is not None and id(v.producer) in inside else in_pos.get(id(v), -1)
              for v in n.inputs if v is not None and not v.is_const]
        return (tuple(-p for p in sorted(ps, reverse=True)) or (1,), wl[id(n)])

    tick = itertools.count()  # only orders exact ties (WL-indistinguishable nodes), see module docstring
    ready = [(prio(n), next(tick), n) for n in nodes if indeg[id(n)] == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        _, _, n = heapq.heappop(ready)
        pos[id(n)] = len(order)
        order.append(n)
        for s in succ[id(n)]:
            indeg[id(s)] -= 1
            if indeg[id(s)] == 0:
                heapq.heappush(ready, (prio(s), next(tick), s))
    if len(order) != len(nodes):
        from graphopt.ir.graph import IRError

        stuck = [n.name for n in nodes if indeg[id(n)] > 0][:5]
        raise IRError(f"{what} has a cycle through nodes {stuck}; cannot tokenize it")
    return order


def canonical_order(graph: Graph) -> list[Node]:
    """Nodes of ``graph`` in the canonical topological order described in the module docstring.

    Graph inputs keep their (semantic) order. Raises ``IRError`` if the graph has a cycle.
    """
    nodes = graph.nodes
    outs = {id(v) for v in graph.outputs}
    tokens = {id(n): node_token(n, outputs=outs) for n in nodes}
    in_pos = {id(v): -1 - i for i, v in enumerate(graph.inputs)}  # graph inputs precede every node
    return _canonical(nodes, tokens, {id(n) for n in nodes}, in_pos, f"graph {graph.name!r}")


def segment_order(nodes: list[Node], graph_outputs: set[int]) -> tuple[list[Node], list[str]]:
    """Canonical order and in-segment tokens of a node subset, as if it were cut out as its own graph.

    All boundary inputs rank equally (their order is derived from this one), so the result does not depend on
    the parent graph's node order or names.
    """
    inside = {id(n) for n in nodes}
    tokens = {id(n): node_token(n, inside=inside, outputs=graph_outputs) for n in nodes}
    order = _canonical(list(nodes), tokens, inside, {}, "segment")
    return order, [tokens[id(n)] for n in order]


def graph_tokens(graph: Graph) -> tuple[list[Node], list[str]]:
    """The graph as (nodes, tokens), both in canonical order."""
    order = canonical_order(graph)
    outs = {id(v) for v in graph.outputs}
    return order, [node_token(n, outputs=outs) for n in order]
