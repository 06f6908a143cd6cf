"""``fuse-pad``: an explicit constant ``Pad`` before Conv, AveragePool or MaxPool becomes the consumer's ``pads``.

Exporters (TF ``SAME`` padding, asymmetric pads) write the padding as its own node; folded, it costs no extra pass
over the tensor. Only where exact: see :func:`fuse_pad`.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import graph_pass

from ._util import only_used_by, pad_spec, rank_of, scalar_of, spatial_pads

_NONNEG_PRODUCERS = {"relu", "sigmoid", "softmax", "abs", "exp", "sqrt", "softplus"}


def _nonnegative(v: Value) -> bool:
    p = v.producer
    if p is None:
        return False
    if p.op in _NONNEG_PRODUCERS:
        return True
    if p.op == "clip":
        lo = scalar_of(p.inputs[1]) if len(p.inputs) > 1 and p.inputs[1] is not None else None
        return lo is not None and lo >= 0
    return False


@graph_pass("fuse-pad", "Fold a constant Pad into the pads of the following Conv, AveragePool or MaxPool")
def fuse_pad(graph: Graph) -> dict[str, int]:
    """Exactness conditions: Conv takes zero padding only; AveragePool takes zero padding when it has no pads of its
    own (it then counts the pad, ``count_include_pad=1``, as the explicit Pad did); MaxPool takes ``-inf`` padding,
    or zero padding of a provably non-negative input with every window overlapping real data."""
    count = {"conv": 0, "avg_pool": 0, "max_pool": 0}
    for node in graph.nodes:
        if node.op not in count or node.graph is not graph:
            continue
        x = node.inputs[0]
        pad = x.producer if x is not None else None
        if pad is None or pad.op != "pad" or not only_used_by(graph, x, node):  # type: ignore[arg-type]
            continue
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", None):
            continue
        src = pad.inputs[0]
        rank = rank_of(src)
        if rank is None or rank < 3:
            continue
        spec = pad_spec(pad, rank)
        if spec is None:
            continue
        pads, value = spec
        nd = rank - 2
        if any(pads[i] != 0 or pads[i + rank] != 0 for i in (0, 1)) or any(p < 0 for p in pads):
            continue
        add = pads[2:rank] + pads[rank + 2:]
        own = spatial_pads(node, nd)
        new_attrs = dict(node.attrs)
        if node.op == "conv":
            if value != 0.0:
                continue
        elif node.op == "avg_pool":
            if value != 0.0 or any(own) and not node.attrs.get("count_include_pad") or node.attrs.get("ceil_mode"):
                continue
            new_attrs["count_include_pad"] = 1
        else:
            k = list(node.attrs.get("kernel_shape") or [])
            dil = node.attrs.get("dilations")
            if value == -np.inf:
                pass
            elif value == 0.0 and _nonnegative(src) and not node.attrs.get("ceil_mode") \
                    and (dil is None or all(int(d) == 1 for d in dil)) \
                    and all(own[i] + add[i] < k[i] and own[i + nd] + add[i + nd] < k[i] for i in range(nd)):
                pass
            else:
                continue
        new_attrs["pads"] = [a + b for a, b in zip(own, add, strict=True)]
        node.attrs = new_attrs  # in place: same output shape, same name
        node.set_input(0, src)
        graph.erase_node(pad)
        count[node.op] += 1
    graph.remove_unused_constants()
    return count
