"""Architecture graphs for the PO-NAS encoder: a generic ``(x, edge_index)`` form plus NB201 converters.

The encoder only needs a ``torch_geometric.data.Data`` with one-hot (or any float) node features ``x`` and a
directed ``edge_index``; :func:`graph_from_dag` builds one from node type names, so IR graphs can be fed the
same way (:func:`ir_graph`). NB201 cells are turned into *op-on-node* DAGs (the usual NB201 GNN encoding): node 0 = cell
input, nodes 1..6 = the six edge operations in ``(e01, e02, e03, e12, e13, e23)`` order, node 7 = cell output;
op (i→j) feeds every op (j→k), ops out of node 0 read the input, ops into node 3 feed the output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch_geometric.data import Data

__all__ = ["NB201_OPS", "NB201_VOCAB", "NB201_EDGES", "graph_from_dag", "ir_graph", "nb201_graph", "parse_nb201"]

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_VOCAB: tuple[str, ...] = ("input", "output", *NB201_OPS)
NB201_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def graph_from_dag(node_types: Sequence[str], edges: Sequence[tuple[int, int]], vocab: Sequence[str]) -> Data:
    """``Data(x=one_hot(node_types over vocab), edge_index=edges)`` for a directed graph."""
    index = {t: i for i, t in enumerate(vocab)}
    unknown = sorted({t for t in node_types if t not in index})
    if unknown:
        raise ValueError(f"graph_from_dag: node types {unknown} are not in the vocabulary {list(vocab)}")
    n = len(node_types)
    for s, d in edges:
        if not (0 <= s < n and 0 <= d < n):
            raise ValueError(f"graph_from_dag: edge ({s}, {d}) refers to a node outside 0..{n - 1}")
    x = torch.zeros(n, len(vocab))
    x[torch.arange(n), torch.tensor([index[t] for t in node_types], dtype=torch.long)] = 1.0
    ei = (
        torch.tensor(list(edges), dtype=torch.long).t().contiguous()
        if edges
        else torch.zeros(2, 0, dtype=torch.long)
    )
    return Data(x=x, edge_index=ei, num_nodes=n)


def parse_nb201(arch_str: str) -> dict[tuple[int, int], str]:
    """``{(from, to): op}`` of an NB201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    parts = arch_str.strip().split("+")
    if len(parts) != 3:
        raise ValueError(f"parse_nb201: {arch_str!r} must have 3 '+'-separated nodes")
    ops: dict[tuple[int, int], str] = {}
    for j, part in enumerate(parts, start=1):
        items = [t for t in part.split("|") if t]
        if len(items) != j:
            raise ValueError(f"parse_nb201: node {j} of {arch_str!r} must have {j} inputs, got {items}")
        for item in items:
            op, _, src = item.partition("~")
            if op not in NB201_OPS or not src.isdigit() or int(src) >= j:
                raise ValueError(f"parse_nb201: bad edge {item!r} in {arch_str!r}")
            ops[(int(src), j)] = op
    return ops


def nb201_graph(arch_str: str) -> Data:
    """Op-on-node DAG (8 nodes) of an NB201 cell, node features one-hot over :data:`NB201_VOCAB`."""
    ops = parse_nb201(arch_str)
    types = ["input"] + [ops[e] for e in NB201_EDGES] + ["output"]
    out_node = len(types) - 1
    edges: list[tuple[int, int]] = []
    for a, (i, j) in enumerate(NB201_EDGES, start=1):
        if i == 0:
            edges.append((0, a))
        if j == 3:
            edges.append((a, out_node))
        for b, (k, _m) in enumerate(NB201_EDGES, start=1):
            if k == j:
                edges.append((a, b))
    return graph_from_dag(types, edges, NB201_VOCAB)


def ir_graph(graph, vocab: Sequence[str] | None = None) -> Data:
    """Any graphopt IR graph as an encoder input, so PO-NAS ranks mutants of arbitrary models, not only cells.

    Nodes are the IR's primitive ops in canonical order with producer → consumer edges; the float features are
    the PSC predictor's raw ones (:func:`graphopt.predictors.gnn_features.raw_features`), made dense for the GAT:
    one-hot op type over ``vocab`` (default: the registry's built-in ops, id 0 = other), the six normalised
    resolutions, one-hot kernel-size bucket and the bias flag. Resolution matters here: AutoGO mutants of one
    network often differ only in channel counts or strides.
    """
    from graphopt.predictors.gnn_features import KERNEL_BUCKETS, default_op_vocab, raw_features

    vocab = list(vocab) if vocab is not None else default_op_vocab()
    f = raw_features(graph, vocab)
    n = f.num_nodes
    op = torch.zeros(n, len(vocab))
    op[torch.arange(n), torch.from_numpy(f.op)] = 1.0
    kernel = torch.zeros(n, KERNEL_BUCKETS)
    kernel[torch.arange(n), torch.from_numpy(f.kernel)] = 1.0
    x = torch.cat([op, torch.from_numpy(f.res), kernel, torch.from_numpy(f.bias).unsqueeze(1)], dim=1)
    return Data(x=x, edge_index=torch.from_numpy(f.edges), num_nodes=n)
