"""Constant folding: evaluate nodes whose inputs are all compile-time constants."""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.infer import is_known_static, known_value
from graphopt.ir.registry import get_op
from graphopt.pass_api import graph_pass


def _evaluate(node):
    import torch

    opdef = get_op(node.op)
    args = []
    for i, v in enumerate(node.inputs):
        if v is None:
            args.append(None)
            continue
        arr = np.asarray(known_value(v))
        if opdef.input_spec(i).static:
            args.append(arr.tolist())
        else:
            args.append(torch.from_numpy(np.asarray(arr).copy(order="C")))
    with torch.no_grad():
        res = opdef.fn(*args, **node.attrs)
    outs = list(res) if isinstance(res, tuple | list) else [res]
    return [torch.as_tensor(t).numpy().copy() for t in outs]


@graph_pass("fold-constants", "Evaluate nodes whose inputs are constants (and shape computations on static "
                              "shapes) into constants")
def fold_constants(graph: Graph, max_elements: int = 1 << 24) -> dict[str, int]:
    folded = 0
    for n in graph.nodes:
        if not get_op(n.op).foldable or n.graph is not graph:
            continue
        if n.op == "shape":
            ok = is_known_static(n.outputs[0])
        else:
            ok = bool(n.inputs) and all(v is None or v.is_const for v in n.inputs)
        if not ok:
            continue
        if any(o.type is None or not o.type.is_static or (o.type.numel() or 0) > max_elements for o in n.outputs):
            continue
        if n.op == "shape":
            results = [np.asarray(known_value(n.outputs[0]), dtype=np.int64)]
        else:
            try:
                results = _evaluate(n)
            except Exception:  # noqa: BLE001 - an op that cannot run on CPU constants stays
                continue
        kind = "param" if any(v is not None and v.kind == "param" for v in n.inputs) else "const"
        for o, arr in zip(n.outputs, results, strict=True):
            k = kind if arr.dtype.kind == "f" else "const"
            c = graph.add_const(o.name + "_folded" if o.name in graph.constants else o.name + "_c", arr, k)
            graph.replace_all_uses(o, c)
        if not any(o.uses for o in n.outputs):
            graph.erase_node(n)
        folded += 1
    removed = graph.remove_unused_constants()
    return {"nodes": folded, "constants-removed": removed}
