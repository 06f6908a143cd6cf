"""``cse``: common-subexpression elimination. Merge nodes with the same op, inputs and attributes, and identical
small constants (up to 4096 elements).

Dropout and BatchNorm (stateful in training) are never merged; weights are left to ``dedup-constants``, since
merging them ties them (wrong before training).
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Node
from graphopt.ir.registry import get_op
from graphopt.pass_api import graph_pass


def _attr_key(v) -> object:
    if isinstance(v, np.ndarray):
        return ("nd", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, list | tuple):
        return tuple(_attr_key(x) for x in v)
    return v


@graph_pass("cse", "Merge identical nodes and identical small constants")
def cse(graph: Graph) -> dict[str, int]:
    merged_consts = 0
    seen_c: dict[tuple, object] = {}
    for v in list(graph.constants.values()):
        if v.kind != "const" or v.const is None or v.const.size > 4096:
            continue
        key = (v.const.dtype.str, v.const.shape, v.const.tobytes())
        if key in seen_c:
            graph.replace_all_uses(v, seen_c[key])  # type: ignore[arg-type]
            merged_consts += 1
        else:
            seen_c[key] = v
    graph.remove_unused_constants()
    merged = 0
    seen: dict[tuple, Node] = {}
    for n in graph.nodes:
        if "training" in get_op(n.op).fn.__code__.co_varnames:  # dropout/BN: stateful in training
            continue
        key = (n.op, tuple(id(v) if v is not None else None for v in n.inputs),
               tuple(sorted((k, _attr_key(a)) for k, a in n.attrs.items())), len(n.outputs))
        prev = seen.get(key)
        if prev is None:
            seen[key] = n
            continue
        for o, po in zip(n.outputs, prev.outputs, strict=True):
            graph.replace_all_uses(o, po)
        graph.erase_node(n)
        merged += 1
    return {"nodes": merged, "constants": merged_consts}
