"""Placement: which nodes of a legalized graph the target runs, which fall back to the host, and what that costs.

Like Arm Vela's summary ("CPU operators = 10 (37.0%)"), an export for a target writes the model with every node
placed: on the NPU when it meets the profile, on the host otherwise. A node goes to the host when it still
violates the profile after legalization (the op is missing, an attribute is past a limit, a tensor is too big),
or when onnxruntime's quantizer left it in float on a target whose ``float_fallback`` is not ``allow``. For each
host node the report gives the constraints it violates and the rewrite that would bring it onto the NPU: a
graphopt legalizer that exists for the op but needs ops the profile lacks, or what to change in the model or
the profile.

Shares are of FLOPs (:func:`graphopt.ir.cost.node_cost`) and of the analytic latency estimate
(:func:`graphopt.npu.latency.node_latency_us`, host nodes at the profile's ``host_gflops`` plus the hand-over
overhead); ``transfers`` counts tensors that cross between the two.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ..ir.graph import Graph, Node
from .legalize import legalizers, onnx_type
from .profiles import Profile

#: what to change for each profile rule a node can violate, when no graphopt rewrite gets it onto the NPU
#: (rule facts of the profile schema, shown with the node's own detail)
RULE_FIXES: dict[str, str] = {
    "op-not-supported": "replace the op in the source model with ones {target} runs, or add it to the profile's "
                        "[ops] if the hardware has it",
    "kernel_max": "use a smaller kernel (graphopt tiles a Conv kernel only with dilation 1 and explicit pads)",
    "kernel_area_max": "use a smaller kernel (graphopt tiles a Conv kernel only with dilation 1 and explicit pads)",
    "stride_max": "use a smaller stride (graphopt splits it into conv x pool strides when such a split exists)",
    "dilation_max": "use dilation 1 (or a target that allows dilated kernels)",
    "pad_max": "pad explicitly with a Pad before the op, or use less padding",
    "group": "use standard or depthwise convolutions (graphopt splits grouped ones where the target has Slice and "
             "Concat)",
    "channels_max": "split the layer's channels (fewer channels per layer)",
    "axis": "move the axis with a Transpose/Reshape around the op",
    "op_axes": "move the axes the op acts on with a Transpose/Reshape around it",
    "step_max": "use a slice step of 1",
    "input_numel_max": "make the op's input smaller (e.g. a lower input resolution)",
    "max_rank": "reshape the tensor to fewer dims around the op",
    "attrs": "use an attribute value the target allows",
    "const_inputs": "make the input a constant (fold it at export, or bake it into the model)",
    "static_shapes": "bind the symbolic dims with --input-shape",
    "max_effective_rank": "reshape so that at most the innermost {max_effective_rank} dims exceed 1",
    "max_dim": "make the dimension smaller (e.g. a lower input resolution) or split the tensor",
    "max_tensor_bytes": "lower the input resolution or split the layer so the tensor fits",
    "float_fallback": "a rewrite into ops onnxruntime's quantizer quantizes, or a profile whose target runs it in "
                      "float (float_fallback = \"allow\")",
}


@dataclass
class HostNode:
    node: str
    op: str
    constraints: list[dict[str, str]]
    fix: str
    flops: int = 0
    latency_us: float = 0.0


@dataclass
class Placement:
    """Where each node runs: ``devices`` maps node name -> ``npu`` | ``host``."""

    target: str
    devices: dict[str, str] = field(default_factory=dict)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)  # npu/host: nodes, flops, latency_us, shares
    transfers: int = 0
    host_nodes: list[HostNode] = field(default_factory=list)
    input_violations: list[dict[str, str]] = field(default_factory=list)

    @property
    def host_count(self) -> int:
        return int(self.totals.get("host", {}).get("nodes", 0))

    @property
    def npu_count(self) -> int:
        return int(self.totals.get("npu", {}).get("nodes", 0))

    def summary(self) -> str:
        """One line, Vela-style: counts and shares of each side."""
        n, h = self.totals.get("npu", {}), self.totals.get("host", {})
        total = self.npu_count + self.host_count
        if not self.host_count:
            return (f"all {total} ops on {self.target} (100% of FLOPs), 0 on the host")
        return (f"{self.target}: {self.npu_count} ops on the NPU ({_pct(n.get('flops_share'))} of FLOPs, "
                f"{_pct(n.get('latency_share'))} of est. latency); {self.host_count} on the host "
                f"({self.host_count / max(total, 1):.1%} of ops, {_pct(h.get('flops_share'))} of FLOPs, "
                f"{_pct(h.get('latency_share'))} of est. latency); {self.transfers} NPU<->host transfers")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("devices")
        d["summary"] = self.summary()
        d["host_ops"] = dict(sorted(_count(h.op for h in self.host_nodes).items()))
        return d


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.1%}"


def _count(items) -> dict[str, int]:  # noqa: ANN001
    c: dict[str, int] = defaultdict(int)
    for i in items:
        c[i] += 1
    return c


def place(graph: Graph, profile: Profile, violations: list[dict[str, str]],
          float_islands: list[tuple[str, str]] | None = None) -> Placement:
    """Place every node of ``graph`` (legalized, static shapes) for ``profile``.

    ``violations`` are :func:`graphopt.npu.legalize.check`'s (as dicts); ``float_islands`` the (name, ONNX op)
    nodes onnxruntime's quantizer left in float, host-placed unless the profile's ``float_fallback`` is
    ``allow``. Islands that are not graph nodes (added by the quantizer) are listed without cost."""
    from ..ir.cost import node_cost
    from .latency import node_latency_us

    by_node: dict[str, list[dict[str, str]]] = defaultdict(list)
    res = Placement(profile.name)
    for v in violations:
        if v["node"].startswith("input:"):
            res.input_violations.append(dict(v))
        else:
            by_node[v["node"]].append({"rule": v["rule"], "detail": v["detail"]})
    island_ops = dict(float_islands or [])
    if float_islands and profile.float_fallback != "allow":
        for name, _op in float_islands:
            by_node[name] = [c for c in by_node[name] if c["rule"] != "float_fallback"]  # said better below
            by_node[name].append({"rule": "float_fallback", "detail": ""})
        _explain_islands(graph, by_node, island_ops)
    table = legalizers(profile)
    totals = {d: {"nodes": 0, "flops": 0, "latency_us": 0.0} for d in ("npu", "host")}
    seen: set[str] = set()
    for node in graph.nodes:
        on_host = node.name in by_node
        dev = "host" if on_host else "npu"
        res.devices[node.name] = dev
        seen.add(node.name)
        flops = int(node_cost(node).flops or 0)
        us, _ = node_latency_us(node, profile, on_npu=not on_host)
        t = totals[dev]
        t["nodes"] += 1
        t["flops"] += flops
        t["latency_us"] += us
        if on_host:
            res.host_nodes.append(HostNode(node.name, onnx_type(node.op), by_node[node.name],
                                           suggest_fix(node, by_node[node.name], profile, table), flops, us))
    for name, cons in by_node.items():  # quantizer-added nodes left in float: no IR node, no cost
        if name not in seen:
            op = island_ops.get(name, "?")
            res.devices[name] = "host"
            totals["host"]["nodes"] += 1
            res.host_nodes.append(HostNode(name, op, cons, _rule_fix(cons[0]["rule"], op, profile)))
    all_flops = totals["npu"]["flops"] + totals["host"]["flops"]
    all_us = totals["npu"]["latency_us"] + totals["host"]["latency_us"]
    for t in totals.values():
        t["flops_share"] = t["flops"] / all_flops if all_flops else 0.0
        t["latency_share"] = t["latency_us"] / all_us if all_us else 0.0
    if not all_flops:
        totals["npu"]["flops_share"] = 1.0 if not totals["host"]["nodes"] else 0.0
    res.totals = totals
    res.transfers = _transfers(graph, res.devices)
    return res


def _explain_islands(graph: Graph, by_node: dict[str, list[dict[str, str]]], island_ops: dict[str, str]) -> None:
    """Why each node left in float is: an op onnxruntime's quantizer has no int8 form of, or a quantizable op
    that reads a tensor from a node running in float on the host (it follows that node there)."""
    from .quantize import quantizer_ops

    qops = quantizer_ops()
    nodes = {n.name: n for n in graph.nodes}
    for name, cons in by_node.items():
        for c in cons:
            if c["rule"] != "float_fallback" or c["detail"]:
                continue
            op = island_ops.get(name, "?")
            node = nodes.get(name)
            src = None
            if node is not None and op in qops:
                src = next((i.producer for i in node.inputs if i is not None and i.producer is not None
                            and i.producer.name in by_node and i.producer.name != name), None)
            if src is not None:
                c["detail"] = (f"stays float: it reads %{src.outputs[0].name} from {src.name} "
                               f"({onnx_type(src.op)}), which runs in float on the host")
                c["follows"] = src.name
            elif op in qops:
                c["detail"] = "onnxruntime's quantizer left it in float here (see the Q/DQ around it)"
            else:
                c["detail"] = f"onnxruntime's quantizer has no int8 form of {op}: it stays float"


def _transfers(graph: Graph, devices: dict[str, str]) -> int:
    """Tensors produced on one side and read on the other (each counted once per tensor)."""
    n = 0
    for node in graph.nodes:
        dev = devices.get(node.name)
        for o in node.outputs:
            if any(devices.get(u.node.name, dev) != dev for u in o.uses):
                n += 1
    return n


def _rule_fix(rule: str, op: str, profile: Profile) -> str:
    text = RULE_FIXES.get(rule, "change the model or the profile so the node meets the rule")
    return text.format(target=profile.name, op=op, max_effective_rank=profile.max_effective_rank)


_BUILDS_CACHE: dict[tuple, bool] = {}


def _builds(node: Node, cand: Any, profile: Profile) -> bool:
    """Whether ``cand`` can rewrite ``node`` at all (its shapes and attributes), tried on a copy of the graph:
    a legalizer's ``applies`` is only a first filter (a pool is "global" only when its window covers the input).
    Cached per profile, op, attributes and input shapes."""
    key = (profile.path or profile.name, node.op, cand.name, repr(sorted(node.attrs.items())),
           tuple(None if i is None or i.type is None else (str(i.type), i.is_const) for i in node.inputs))
    if key not in _BUILDS_CACHE:
        copy = node.graph.copy()
        twin = next((n for n in copy.nodes if n.name == node.name), None)
        try:
            _BUILDS_CACHE[key] = twin is not None and bool(cand.apply(copy, twin))
        except Exception:  # noqa: BLE001 - a rewrite that fails on this node does not apply to it
            _BUILDS_CACHE[key] = False
        if len(_BUILDS_CACHE) > 4096:
            _BUILDS_CACHE.clear()
    return _BUILDS_CACHE[key]


def suggest_fix(node: Node, constraints: list[dict[str, str]], profile: Profile, table: dict | None = None) -> str:
    """The rewrite that would move ``node`` onto the NPU: a graphopt legalizer for its op that needs ops the
    profile lacks (the ops are named), else what to change per violated rule."""
    table = legalizers(profile) if table is None else table
    op = onnx_type(node.op)
    notes = []
    for cand in table.get(node.op, []):
        try:
            if not cand.applies(node):
                continue
            emits = cand.emits(node) if callable(cand.emits) else cand.emits
        except Exception:  # noqa: BLE001, S112 - a candidate that cannot judge this node is no suggestion
            continue
        missing = [o for o in dict.fromkeys(emits) if not profile.allows(o)]
        if missing and _builds(node, cand, profile):
            notes.append(f"graphopt's rewrite {cand.name!r} would run it as {', '.join(dict.fromkeys(emits))} but "
                         f"{profile.name} lacks {', '.join(missing)}")
        if len(notes) == 2:
            break
    follows = next((c["follows"] for c in constraints if c.get("follows")), None)
    if follows is not None and len(constraints) == 1:
        return f"none needed for this node: it runs on the NPU once {follows} does (see that node's fix)"
    rules = list(dict.fromkeys(c["rule"] for c in constraints if not c.get("follows")))
    fixes = [_rule_fix(r, op, profile) for r in rules]
    return "; ".join(notes + fixes)
