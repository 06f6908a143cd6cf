"""``convert-opset[opset=N]``: make a graph expressible in ONNX opset N.

The IR uses opset-18 forms; the ONNX backend writes the older attribute/input forms of ops that merely changed
signature (Reduce* axes, Split, Squeeze, Clip...). This pass handles ops that do not *exist* in opset N: each is
replaced by its decomposition (``gelu`` below 20, ``layer_norm`` below 17, ``group_norm`` below 21, ``mish`` below
18, ``hard_swish`` below 14, ``attention`` below 23, ``col2im`` of non-overlapping blocks below 18). An op with
neither is an error naming the nodes. The target opset is recorded in ``graph.meta["opset"]`` for the exporter and
later passes.
"""

from __future__ import annotations

import functools

from graphopt.ir.graph import Graph
from graphopt.ir.registry import get_op
from graphopt.pass_api import PassError, get_pass, graph_pass

DECOMPOSITIONS: dict[str, str] = {
    "gelu": "decompose-gelu",
    "layer_norm": "decompose-layernorm",
    "group_norm": "decompose-group-norm",
    "mish": "decompose-mish",
    "hard_swish": "decompose-hard-swish",
    "attention": "decompose-attention",
    "col2im": "decompose-col2im",
}
"""IR op -> the pass that rewrites it into ops of older opsets."""

MIN_OPSET, MAX_OPSET = 11, 23


def min_opset(op: str) -> int:
    """First ONNX opset that has the op type this IR op exports as (1 for ops without a single ONNX op).

    Older *forms* (Reduce* axes as attributes, Split, Squeeze...) are the ONNX backend's job; only the op type's
    existence matters here.
    """
    name = get_op(op).onnx
    if not name or "." in name:
        return 1
    return _first_opsets().get(name, 1)


@functools.lru_cache(maxsize=1)
def _first_opsets() -> dict[str, int]:
    import onnx

    out: dict[str, int] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain in ("", "ai.onnx"):
            out[s.name] = min(out.get(s.name, 1 << 30), int(s.since_version))
    return out


@graph_pass("convert-opset", "Rewrite ops that do not exist in ONNX opset N into ones that do; records the target "
                             "opset in graph.meta['opset']")
def convert_opset(graph: Graph, opset: int = 18) -> dict[str, int]:
    opset = int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise PassError(f"convert-opset: opset {opset} is outside the supported range {MIN_OPSET}..{MAX_OPSET}")
    changes: dict[str, int] = {}
    for _ in range(3):  # a decomposition may emit ops that need another round (none today; cheap to allow)
        too_new: dict[str, list[str]] = {}
        for n in graph.nodes:
            if min_opset(n.op) > opset:
                too_new.setdefault(n.op, []).append(n.name)
        if not too_new:
            break
        missing = {op: names for op, names in too_new.items() if op not in DECOMPOSITIONS}
        if missing:
            desc = "; ".join(f"{op} (needs opset {min_opset(op)}; nodes {', '.join(names[:5])})"
                             for op, names in sorted(missing.items()))
            raise PassError(f"convert-opset: cannot express in opset {opset}: {desc}. Export with --opset "
                            f"{max(min_opset(op) for op in missing)} or rewrite these nodes first")
        for op in too_new:
            res = get_pass(DECOMPOSITIONS[op])(graph)
            for k, v in res.items():
                changes[k] = changes.get(k, 0) + v
            left = [n.name for n in graph.nodes if n.op == op]
            if left:
                raise PassError(f"convert-opset: {DECOMPOSITIONS[op]} could not rewrite {op} nodes "
                                f"{', '.join(left[:5])} (unsupported attributes or unknown shapes)")
    graph.meta["opset"] = opset
    return changes
