"""Shape specialization: bind symbolic dims (e.g. batch=1) so static-shape targets (NPUs) can run."""

from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.ir.infer import set_input_shapes
from graphopt.pass_api import graph_pass


@graph_pass("specialize-shapes", "Bind symbolic input dims to integers (default: every symbol to 1) and re-infer")
def specialize_shapes(graph: Graph, default: int = 1, **dims: int) -> dict[str, int]:
    """``specialize-shapes[batch=8]`` binds ``batch``; unnamed symbols get ``default``."""
    shapes = {}
    bound = 0
    for v in graph.inputs:
        if v.type is None or v.type.shape is None:
            continue
        new = []
        for d in v.type.shape:
            if isinstance(d, str):
                new.append(int(dims.get(d, default)))
                bound += 1
            else:
                new.append(d)
        shapes[v.name] = new
    if bound:
        set_input_shapes(graph, shapes)
    return {"dims": bound}
