"""Cost rules: FLOPs, parameters and bytes moved, per node and per graph, from the op registry.

Conventions (documented because every FLOPs figure in graphopt rests on them): one multiply-add = 2 FLOPs;
elementwise ops cost one FLOP per output element; pure data movement (reshape, transpose, slice...) costs 0
FLOPs but still reads and writes bytes; parameters are the elements of ``param`` constants a node reads.
Symbolic dims make a cost unknown (None) rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .graph import Graph, Node

ZERO_FLOP_CATEGORIES = {"shape", "memory", "cast", "compare", "quant"}


@dataclass
class Cost:
    flops: int | None = 0
    params: int = 0
    bytes_read: int | None = 0
    bytes_written: int | None = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _numel(shape) -> int | None:
    if shape is None or any(not isinstance(d, int) for d in shape):
        return None
    return math.prod(shape)


def conv_flops(node: Node) -> int | None:
    """2 * N * Cout * prod(out spatial) * (Cin/group) * prod(kernel)."""
    w, y = node.inputs[1], node.outputs[0]
    n_out = _numel(y.shape)
    if n_out is None or w is None or w.shape is None or any(not isinstance(d, int) for d in w.shape):
        return None
    per_out = math.prod(w.shape[1:])  # Cin/group * k...
    flops = 2 * n_out * per_out
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        flops += n_out
    return flops


def conv_transpose_flops(node: Node) -> int | None:
    x, w = node.inputs[0], node.inputs[1]
    n_in = _numel(x.shape) if x is not None else None
    if n_in is None or w is None or w.shape is None:
        return None
    return 2 * n_in * math.prod(w.shape[1:])  # each input element scatters Cout/group * k... MACs


def matmul_flops(node: Node) -> int | None:
    a, y = node.inputs[0], node.outputs[0]
    n_out = _numel(y.shape)
    if n_out is None or a is None or a.shape is None or not a.shape:
        return None
    k = a.shape[-1] if len(a.shape) > 1 or True else 1
    if not isinstance(k, int):
        return None
    return 2 * n_out * k


def gemm_flops(node: Node) -> int | None:
    a, y = node.inputs[0], node.outputs[0]
    n_out = _numel(y.shape)
    if n_out is None or a is None or a.shape is None:
        return None
    k = a.shape[0] if node.attrs.get("transA") else a.shape[-1]
    if not isinstance(k, int):
        return None
    return 2 * n_out * k + (n_out if len(node.inputs) > 2 and node.inputs[2] is not None else 0)


def pool_flops(node: Node) -> int | None:
    """One op per output element and window element; a window past the (padded) input counts only the elements
    it covers (a ceil-mode kernel larger than the map, as in EfficientNet's head, is a global pool)."""
    n_out = _numel(node.outputs[0].shape)
    k = node.attrs.get("kernel_shape")
    if n_out is None or not k:
        return None
    x = node.inputs[0]
    xs = x.shape if x is not None else None
    if xs is not None and len(xs) == len(k) + 2 and all(isinstance(d, int) for d in xs[2:]):
        p = node.attrs.get("pads") or [0] * (2 * len(k))
        k = [min(int(kk), xs[2 + i] + int(p[i]) + int(p[i + len(k)])) for i, kk in enumerate(k)]
    return n_out * math.prod(k)


def input_numel_flops(factor: int = 1):
    """Cost proportional to the input size (reductions, normalizations, softmax)."""

    def rule(node: Node) -> int | None:
        x = node.inputs[0]
        n = _numel(x.shape) if x is not None else None
        return None if n is None else factor * n

    return rule


def node_cost(node: Node) -> Cost:
    from .registry import get_op

    opdef = get_op(node.op)
    if opdef.flops is not None:
        flops = opdef.flops(node)
    elif opdef.category in ZERO_FLOP_CATEGORIES:
        flops = 0
    else:
        flops = sum((_numel(o.shape) or 0) for o in node.outputs) if all(
            _numel(o.shape) is not None for o in node.outputs) else None
    params = 0
    read: int | None = 0
    for v in node.inputs:
        if v is None:
            continue
        if v.kind == "param" and v.type is not None:
            params += v.type.numel() or 0
        nb = v.type.nbytes() if v.type is not None else None
        read = None if (read is None or nb is None) else read + nb
    written: int | None = 0
    for o in node.outputs:
        nb = o.type.nbytes() if o.type is not None else None
        written = None if (written is None or nb is None) else written + nb
    return Cost(flops, params, read, written)


def annotate_costs(graph: Graph) -> Cost:
    """Store ``node.meta["cost"]`` on every node and the totals in ``graph.meta["cost"]``; returns totals."""
    total = Cost()
    seen_params: set[int] = set()
    for n in graph.nodes:
        c = node_cost(n)
        n.meta["cost"] = c.to_dict()
        total.flops = None if (total.flops is None or c.flops is None) else total.flops + c.flops
        total.bytes_read = None if (total.bytes_read is None or c.bytes_read is None) else (
            total.bytes_read + c.bytes_read)
        total.bytes_written = None if (total.bytes_written is None or c.bytes_written is None) else (
            total.bytes_written + c.bytes_written)
        for v in n.inputs:
            if v is not None and v.kind == "param" and id(v) not in seen_params:
                seen_params.add(id(v))
                total.params += v.type.numel() or 0 if v.type is not None else 0
    graph.meta["cost"] = total.to_dict()
    return total


def graph_cost(graph: Graph) -> Cost:
    """Totals without touching annotations (parameters shared by several nodes count once)."""
    total = Cost()
    seen: set[int] = set()
    for n in graph.nodes:
        c = node_cost(n)
        total.flops = None if (total.flops is None or c.flops is None) else total.flops + c.flops
        for v in n.inputs:
            if v is not None and v.kind == "param" and id(v) not in seen and v.type is not None:
                seen.add(id(v))
                total.params += v.type.numel() or 0
    return total
