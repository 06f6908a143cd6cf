"""``strip-dropout``: remove every Dropout node (the identity at inference), for inference and export pipelines.

A Dropout stays only where removing it would make a graph output alias a graph input or another output.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._util import is_graph_output


@graph_pass("strip-dropout", "Remove Dropout nodes (the identity at inference)")
def strip_dropout(graph: Graph) -> dict[str, int]:
    """Why a separate pass from canonicalize: canonicalize keeps a non-zero-ratio Dropout because the graph may
    still be trained; export pipelines are inference-only and drop them all."""
    n = 0
    for node in graph.nodes_by_op().get("dropout", []):
        x, out = node.inputs[0], node.outputs[0]
        if x is None or (is_graph_output(graph, out) and (x.producer is None or is_graph_output(graph, x))):
            continue  # the graph output would alias a graph input or another output
        graph.replace_all_uses(out, x)
        graph.erase_node(node)
        n += 1
    return {"dropout": n}
