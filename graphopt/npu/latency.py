"""Analytic NPU latency: a per-node roofline from a target profile's ``[perf]`` figures.

Why analytic: a search scores hundreds of candidates for a chip that is not on this machine, so it needs a cost
that reacts to what NPUs care about — MACs on the array, bytes moved, channel alignment, ops that fall back to
the host — without the hardware. The model (documented so it can be checked and tuned per target):

* MAC ops (category ``conv``/``matmul``): ``max(MACs / (macs_per_cycle * clock * util), bytes / bandwidth)``
  with ``util = C / ceil_to(C, channel_alignment)`` for the output channels, so a 20-channel conv on a
  16-aligned array pays for 32.
* Other accepted ops: ``max(elements / (vector_ops_per_cycle * clock), bytes / bandwidth)``; shape-only ops
  (reshape, squeeze, ...) are free.
* Ops the profile does not accept run on the host at ``host_gflops`` and pay ``fallback_overhead_us`` plus
  the transfer of their inputs and outputs.

Bytes are counted at the profile's activation dtype (int8 → 1 byte per element). The figure is an estimate
for ranking candidates, not a promise of measured latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph, Node
from .profiles import Profile

_FREE = {"shape", "memory"}  # categories that are views/metadata on an NPU (reshape, squeeze, transpose folded)
_DTYPE_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "fp16": 2, "fp32": 4}


@dataclass
class LatencyReport:
    total_us: float
    per_node_us: dict[str, float] = field(default_factory=dict)
    fallback_nodes: list[str] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return self.total_us / 1e3


def _numel(shape) -> int:
    n = 1
    for d in shape or ():
        n *= d if isinstance(d, int) else 1
    return n


def _node_bytes(node: Node, itemsize: int) -> int:
    total = 0
    for v in list(node.inputs) + list(node.outputs):
        if v is not None and v.type is not None and v.type.shape is not None:
            total += _numel(v.type.shape) * itemsize
    return total


def _accepted(node: Node, profile: Profile) -> bool:
    from ..ir.registry import get_op

    opdef = get_op(node.op)
    if opdef.category in _FREE or opdef.category == "quant":
        return True
    return opdef.onnx is not None and profile.allows(opdef.onnx)


def channel_utilization(node: Node, category: str, profile: Profile) -> float:
    """Share of the MAC array a conv/matmul keeps busy: its output channels over the channels rounded up to the
    profile's ``channel_alignment`` (1.0 when unknown or unaligned profiles)."""
    out = node.outputs[0].type
    if out is None or not out.shape or len(out.shape) < 2 or profile.channel_alignment <= 1:
        return 1.0
    ch = out.shape[1] if category == "conv" else out.shape[-1]
    if not isinstance(ch, int) or ch <= 0:
        return 1.0
    a = profile.channel_alignment
    return ch / (-(-ch // a) * a)


def node_latency_us(node: Node, profile: Profile, on_npu: bool | None = None) -> tuple[float, bool]:
    """(estimated microseconds, runs on the NPU) for one node of a statically shaped graph. ``on_npu`` overrides
    where it runs (a placement that sends a node with a violated limit to the host); by default a node runs on
    the NPU when the profile accepts its op."""
    from ..ir.cost import node_cost
    from ..ir.registry import get_op

    perf = profile.perf
    itemsize = _DTYPE_BYTES.get(profile.activation_dtype, 4)
    clock = perf.clock_mhz * 1e6
    nbytes = _node_bytes(node, itemsize)
    mem_s = nbytes / (perf.bandwidth_gbps * 1e9)
    opdef = get_op(node.op)
    flops = node_cost(node).flops or 0
    if not (_accepted(node, profile) if on_npu is None else on_npu):
        return (flops / (perf.host_gflops * 1e9) + mem_s) * 1e6 + perf.fallback_overhead_us, False
    if opdef.category in _FREE:
        return 0.0, True
    if opdef.category in ("conv", "matmul"):
        util = channel_utilization(node, opdef.category, profile)
        compute_s = (flops / 2) / (perf.macs_per_cycle * clock * util)
    else:
        elems = sum(_numel(o.type.shape) for o in node.outputs if o.type is not None and o.type.shape is not None)
        compute_s = elems / (perf.vector_ops_per_cycle * clock)
    return max(compute_s, mem_s) * 1e6, True


def estimate_latency(graph: Graph, profile: Profile) -> LatencyReport:
    """Sum of per-node roofline times; symbolic dims count as 1 (bind shapes first for a real figure)."""
    rep = LatencyReport(0.0)
    for n in graph.nodes:
        us, on_npu = node_latency_us(n, profile)
        rep.per_node_us[n.name] = us
        rep.total_us += us
        if not on_npu:
            rep.fallback_nodes.append(n.name)
    return rep
