"""``dce``: dead-code elimination. Remove the nodes no graph output depends on, then the unused constants.

Other rewrites leave dead producers behind (a fused chain's inner nodes, folded shape computations); this pass
removes them in one sweep, consumers first.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph, Node
from graphopt.pass_api import graph_pass


@graph_pass("dce", "Remove nodes and constants whose results are never used")
def dce(graph: Graph) -> dict[str, int]:
    live: set[int] = {id(v) for v in graph.outputs}
    dead: list[Node] = []
    for n in reversed(graph.nodes):
        if any(id(o) in live for o in n.outputs):
            live.update(id(v) for v in n.inputs if v is not None)
        else:
            dead.append(n)
    for n in dead:  # reversed topological order: consumers first
        for i in range(len(n.inputs)):
            n.set_input(i, None)
        for o in n.outputs:
            o.uses.clear()
        graph.erase_node(n)
    consts = graph.remove_unused_constants()
    return {"nodes": len(dead), "constants": consts}
