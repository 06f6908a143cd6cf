"""``fuse-reshapes``: a chain of Reshape/Flatten/Squeeze/Unsqueeze whose result shape is static -> one Reshape.

The outer node is rewritten in place (it keeps its name and output value); the inner one goes when nothing else
reads it.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._util import is_graph_output

RESHAPE_FAMILY = ("reshape", "flatten", "squeeze", "unsqueeze")


@graph_pass("fuse-reshapes", "Collapse chains of Reshape/Flatten/Squeeze/Unsqueeze with a static result into one "
                             "Reshape")
def fuse_reshapes(graph: Graph) -> dict[str, int]:
    """Why beyond canonicalize's reshape-chain rule: exporters emit ``Unsqueeze(Reshape(x))`` and
    ``Flatten(Squeeze(x))`` too; any two data-preserving shape ops compose into one Reshape to the final shape."""
    n = 0
    for node in graph.nodes:
        if node.graph is not graph or node.op not in RESHAPE_FAMILY:
            continue
        x = node.inputs[0]
        inner = x.producer if x is not None else None
        out = node.outputs[0].type
        if inner is None or inner.op not in RESHAPE_FAMILY or out is None or not out.is_static:
            continue
        shape = [int(d) for d in out.shape]  # type: ignore[union-attr]
        target = graph.add_const(f"{node.name}_shape".replace(".", "_"), np.asarray(shape, dtype=np.int64))
        src = inner.inputs[0]
        node.op = "reshape"  # in place: same output value and name
        for i in range(len(node.inputs)):
            node.set_input(i, None)
        node.inputs = [None, None]
        node.set_input(0, src)
        node.set_input(1, target)
        node.attrs = {"allowzero": 1 if 0 in shape else 0}
        if not inner.outputs[0].uses and not is_graph_output(graph, inner.outputs[0]):
            graph.erase_node(inner)
        n += 1
    graph.remove_unused_constants()
    return {"reshape-chain": n}
