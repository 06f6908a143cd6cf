"""``fuse-slices``: a Slice of a Slice on different axes -> one Slice over both.

``x[:, :, ::2][..., ::2]`` (two exporter Slices) becomes one node; both must have constant parameters and the inner
one no other user.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._util import only_used_by, rank_of, slice_params


@graph_pass("fuse-slices", "Merge a Slice of a Slice on different axes into one Slice")
def fuse_slices(graph: Graph) -> dict[str, int]:
    """``x[:, :, ::2][..., ::2]`` (two exporter Slices) becomes one Slice over both axes."""
    n = 0
    for node in graph.nodes:
        if node.op != "slice" or node.graph is not graph:
            continue
        x = node.inputs[0]
        inner = x.producer if x is not None else None
        r = rank_of(x)
        if inner is None or inner.op != "slice" or r is None or not only_used_by(graph, x, node):
            continue
        p_out, p_in = slice_params(node, r), slice_params(inner, r)
        if p_out is None or p_in is None or set(p_out) & set(p_in):
            continue
        merged = {**p_in, **p_out}
        axes = sorted(merged)
        arrs = [np.asarray([merged[a][k] for a in axes], dtype=np.int64) for k in range(3)]
        consts = [graph.add_const(f"{node.name}_{what}".replace(".", "_"), arr)
                  for what, arr in zip(("starts", "ends", "steps"), arrs, strict=True)]
        ax = graph.add_const(f"{node.name}_axes".replace(".", "_"), np.asarray(axes, dtype=np.int64))
        for i in range(len(node.inputs)):
            node.set_input(i, None)
        node.inputs = [None] * 5
        for i, v in enumerate([inner.inputs[0], consts[0], consts[1], ax, consts[2]]):
            node.set_input(i, v)
        graph.erase_node(inner)
        n += 1
    graph.remove_unused_constants()
    return {"slice": n}
