"""``fold-softmax-flatten``: ``Reshape(Softmax(Flatten(x)))`` back to x's shape -> ``Softmax(x)`` on the one non-unit
axis.

Old-opset Softmax (coerced to 2-D) imports as Flatten -> Softmax -> Reshape; on a ``(N, C, 1, 1)`` tensor it is just
a softmax over C, and two layout nodes go.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._util import is_graph_output, only_used_by


@graph_pass("fold-softmax-flatten", "Reshape(Softmax(Flatten(x))) back to x's shape -> Softmax(x) on the one "
                                    "non-unit axis")
def fold_softmax_flatten(graph: Graph) -> dict[str, int]:
    """Old-opset Softmax (coerced to 2-D) imports as Flatten -> Softmax -> Reshape; on a (N, C, 1, 1) tensor
    it is just a softmax over C."""
    n = 0
    for sm in graph.nodes_by_op().get("softmax", []):
        f = sm.inputs[0].producer if sm.inputs[0] is not None else None
        users = sm.outputs[0].users
        if f is None or f.op != "flatten" or len(users) != 1 or users[0].op != "reshape":
            continue
        rs = users[0]
        x = f.inputs[0]
        xs = x.type.shape if x is not None and x.type is not None else None
        if xs is None or not x.type.is_static or rs.outputs[0].type is None or rs.outputs[0].type.shape != xs:
            continue
        if not only_used_by(graph, f.outputs[0], sm) or is_graph_output(graph, sm.outputs[0]):
            continue
        a = int(f.attrs.get("axis", 1)) % len(xs)
        if int(sm.attrs.get("axis", -1)) % 2 != 1:
            continue
        non_unit = [i for i in range(a, len(xs)) if xs[i] != 1]
        if len(non_unit) > 1:
            continue
        axis = non_unit[0] if non_unit else a
        sm.attrs = {**sm.attrs, "axis": axis - len(xs)}
        sm.set_input(0, x)
        graph.erase_node(f)
        graph.replace_all_uses(rs.outputs[0], sm.outputs[0])
        graph.erase_node(rs)
        from graphopt.ir.infer import infer_node

        infer_node(sm)
        n += 1
    graph.remove_unused_constants()
    return {"softmax": n}
