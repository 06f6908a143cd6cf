"""``dedup-constants``: merge constants with identical dtype, shape and bytes, weights included, then run ``cse`` to
merge the nodes that became identical.

Merging weights ties them, so this is an inference/export pass (see :func:`dedup_constants`).
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import graph_pass


@graph_pass("dedup-constants", "Merge constants with identical dtype, shape and bytes (weights included), then "
                               "merge the nodes that became identical")
def dedup_constants(graph: Graph) -> dict[str, int]:
    """Why separate from ``cse``: cse merges small literals only; this also merges weights, which ties them, so it
    belongs in inference/export pipelines, not before training."""
    import hashlib

    from .cse import cse

    seen: dict[tuple, Value] = {}
    merged = 0
    for v in list(graph.constants.values()):
        if v.const is None or not v.uses:
            continue
        a = np.ascontiguousarray(v.const)  # 1-d even for a scalar: the key takes the true shape below
        key = (a.dtype.str, np.shape(v.const), hashlib.blake2b(a.view(np.uint8).reshape(-1), digest_size=16).digest())
        prev = seen.get(key)
        if prev is None:
            seen[key] = v
            continue
        if not np.array_equal(prev.const, a):
            continue
        graph.replace_all_uses(v, prev)
        if v.kind == "param" or prev.kind == "param":
            prev.kind = "param" if prev.kind == "param" or v.kind == "param" else prev.kind
        merged += 1
    graph.remove_unused_constants()
    nodes = cse(graph).get("nodes", 0) if merged else 0
    return {"constants": merged, "nodes": nodes}
