"""``expand-cell``: DARTS/NB201-style mixed ops on the edges of a cell network (the space XNAS searches).

An *edge* is a single-input, single-output region of the graph: the nodes tagged ``meta['edge']`` (graphs
built by :func:`graphopt.supernet.nb201_graph`) or, for graphs lowered from PyTorch, the nodes whose names
contain ``edge_pattern`` (default: ``<prefix>.edges.eIJ``, the module path of the zoo's NB201 cells). Each
edge becomes a ``choice`` point over ``ops`` (default: the five NB201 ops): the edge's existing subgraph is
kept as the alternative of its own op, the others are created on the same input with fresh weights. Regions
with more than one boundary input/output are skipped and reported. Limitation: an identity edge lowered to
no node at all cannot be found by name (the IR builder emits an explicit ``identity`` node for it).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.supernet import NB201_OPS, _Builder

DEFAULT_EDGE_PATTERN = r"^(?P<edge>(?:.*\.)?edges\.(?P<key>e\d\d))(?:\.|$)"


def _classify(nodes: list[Node]) -> str | None:
    tags = {n.meta.get("edge", {}).get("op") for n in nodes} - {None}
    if len(tags) == 1:
        return tags.pop()
    ops = {n.op for n in nodes}
    convs = [n for n in nodes if n.op == "conv"]
    if convs:
        k = convs[0].attrs.get("kernel_shape") or list(convs[0].inputs[1].shape[2:])  # type: ignore[union-attr]
        return f"nor_conv_{k[0]}x{k[1]}"
    if "avg_pool" in ops:
        return "avg_pool_3x3"
    if ops <= {"mul"}:
        return "none"
    if ops <= {"identity"}:
        return "skip_connect"
    return None


def _regions(graph: Graph, pattern: str) -> dict[str, list[Node]]:
    rx = re.compile(pattern)
    regions: dict[str, list[Node]] = {}
    for n in graph.nodes:
        if n.op == "choice":
            continue
        tag = n.meta.get("edge")
        if tag and "cell" in tag:
            key = f"cells.{tag['cell']}.edges.{tag['point']}"
        else:
            m = rx.match(n.name)
            if not m:
                continue
            key = m.group("edge")
        regions.setdefault(key, []).append(n)
    return regions


def _boundary(graph: Graph, nodes: list[Node]) -> tuple[list[Value], list[Value]]:
    inside = {id(n) for n in nodes}
    b_in: list[Value] = []
    b_out: list[Value] = []
    for n in nodes:
        for v in n.inputs:
            if v is None or v.is_const or (v.producer is not None and id(v.producer) in inside):
                continue
            if all(v is not x for x in b_in):
                b_in.append(v)
        for o in n.outputs:
            if any(id(u.node) not in inside for u in o.uses) or any(o is g for g in graph.outputs):
                b_out.append(o)
    return b_in, b_out


@graph_pass("expand-cell", "Turn cell edges into choice points over NB201/DARTS candidate ops (XNAS space)",
            semantics_preserving=False)
def expand_cell(graph: Graph, ops: list[str] | None = None, edge_pattern: str = DEFAULT_EDGE_PATTERN,
                shared: bool = True, seed: int = 0) -> dict[str, Any]:
    """Replace every matching edge by a ``choice`` over ``ops``.

    ``shared``: edges with the same key (``e01``...) in different cells form one choice point (NB201 cells
    share one architecture); otherwise each edge is its own point. New alternatives get PyTorch's default
    initialisation (``seed``).
    """
    import torch
    from graphopt.models.nb201 import make_op

    ops = list(ops or NB201_OPS)
    unknown = [o for o in ops if o not in NB201_OPS]
    if unknown:
        raise ValueError(f"expand-cell: unknown ops {unknown}; available: {NB201_OPS}")
    torch.manual_seed(seed)
    report: dict[str, Any] = {"edges": 0, "points": [], "skipped": []}
    points: set[str] = set()
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    for key, nodes in _regions(graph, edge_pattern).items():
        b_in, b_out = _boundary(graph, nodes)
        if len(b_in) != 1 or len(b_out) != 1:
            report["skipped"].append(f"{key}: {len(b_in)} inputs / {len(b_out)} outputs (need 1/1)")
            continue
        x, y = b_in[0], b_out[0]
        cur = _classify(nodes)
        if x.shape is None or len(x.shape) != 4 or not isinstance(x.shape[1], int):
            report["skipped"].append(f"{key}: input %{x.name} is not NCHW with a known channel count")
            continue
        channels = int(x.shape[1])
        users = sorted(y.users, key=lambda n: order.get(id(n), 1 << 30))
        anchor = users[0] if users else None
        edge_key = key.rsplit(".", 1)[-1]
        point = edge_key if shared else key
        alts: list[Value] = []
        with graph.inserting_before(anchor):
            for o in ops:
                if o == cur:
                    alts.append(y)
                    continue
                prefix = f"{key}.alt.{o}"
                sd = {f"{prefix}.{k}": v.detach().numpy().astype(np.float32)
                      for k, v in make_op(o, channels).state_dict().items() if not k.endswith("num_batches_tracked")}
                tag = {"cell": key, "point": edge_key, "src": None, "dst": None}
                alts.append(_Builder(graph, sd).nb201_op(x, o, prefix, tag))
            ch = graph.create_node("choice", [None, *alts], {"point": point, "labels": ops}, name=f"{key}.choice")
        for u in list(y.uses):
            if u.node is not ch:
                u.node.set_input(u.index, ch.output)
        for i, o in enumerate(graph.outputs):
            if o is y:
                graph.outputs[i] = ch.output
        if cur not in ops:
            report["skipped"].append(f"{key}: existing op {cur!r} not in ops; its subgraph was dropped")
        report["edges"] += 1
        points.add(point)
    # an existing edge not among ``ops`` is now dead: drop it
    from graphopt.supernet import _dce

    _dce(graph)
    graph.toposort()
    report["points"] = sorted(points)
    return report
