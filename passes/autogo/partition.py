"""Partition a graph into segments with a mined vocabulary (optionally masking random pieces).

A *segment* is a weakly connected, convex set of nodes: one connected component of one BPE piece of the
graph's canonical token sequence (see :mod:`.mine` for why pieces are convex). Segments come out ordered by
their first node's canonical position, which is what "consecutive segments" means for mutation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.ir.cost import node_cost
from graphopt.ir.graph import Graph, Node

from .mine import Vocabulary
from .tokens import graph_tokens


@dataclass(eq=False)
class Segment:
    """One segment of a partition: ``nodes`` in canonical order, ``positions`` their canonical indices."""

    nodes: list[Node]
    positions: list[int]
    piece: int | None = None
    """Merge rank of the vocabulary piece it came from (None for a single-node piece)."""
    index: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def flops(self) -> int:
        """FLOPs of the segment's nodes at the graph's batch size (0 where shapes are symbolic)."""
        return sum(node_cost(n).flops or 0 for n in self.nodes)

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"Segment#{self.index}({', '.join(n.op for n in self.nodes)})"


def _components(nodes: list[Node]) -> list[list[int]]:
    """Weakly connected components (as index lists, each sorted) of the subgraph induced by ``nodes``."""
    where = {id(n): i for i, n in enumerate(nodes)}
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, n in enumerate(nodes):
        for v in n.inputs:
            if v is not None and v.producer is not None and id(v.producer) in where:
                a, b = find(i), find(where[id(v.producer)])
                if a != b:
                    parent[max(a, b)] = min(a, b)
    comps: dict[int, list[int]] = {}
    for i in range(len(nodes)):
        comps.setdefault(find(i), []).append(i)
    return sorted(comps.values(), key=lambda c: c[0])


def partition(graph: Graph, vocab: Vocabulary, rng=None, sparsity: float = 0.5,
              *, order: tuple[list[Node], list[str]] | None = None) -> list[Segment]:
    """Segments of ``graph`` under ``vocab``.

    With ``rng`` (a ``numpy.random.Generator``), each multi-node vocabulary piece is masked with probability
    ``sparsity`` (paper: ``segment_sparsity=0.5``), which varies the cut between calls; without it the
    partition is the deterministic full-vocabulary one used for mining. ``order`` may pass a precomputed
    :func:`~.tokens.graph_tokens` result.
    """
    nodes, tokens = order if order is not None else graph_tokens(graph)
    masked = vocab.random_mask(rng, sparsity) if rng is not None else None
    spans = vocab.encode(tokens, masked)
    syms = vocab.symbols(tokens)
    segs: list[Segment] = []
    for a, b in spans:
        piece = vocab.piece_rank(syms[a:b])
        span_nodes = nodes[a:b]
        for comp in _components(span_nodes) if b - a > 1 else [[0]]:
            segs.append(Segment([span_nodes[i] for i in comp], [a + i for i in comp], piece))
    segs.sort(key=lambda s: s.positions[0])
    for i, s in enumerate(segs):
        s.index = i
    return segs
