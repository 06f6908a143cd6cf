"""``expand-dps``: turn the branches and fusions of a multi-branch conv network into a multi-path supernet.

Works structurally on any lowered graph (e.g. the zoo's HRNet-lite through the torch frontend):

* every residual block ``relu(x + BN(conv_b(relu(BN(conv_a(x))))))`` with stride-1, ungrouped, channel-
  preserving convs becomes a ``choice`` point ``op.<block>`` over ``ops`` (the existing block is kept as the
  alternative of its own kernel, ``conv<k>``; the others are created with fresh weights in the DPS candidate
  form of :class:`graphopt.search.dps.CandidateBlock`), plus an elastic inner width ``width.<block>``
  (leading-channel slice of every alternative's first conv/BN and second conv's input);
* every ``add`` that merges another resolution into a branch (its operand comes from a ``resize`` or from a
  strided conv + BN) becomes an on/off choice ``fuse.<add>`` (``"0"`` drops the connection).

Reports the blocks and fusion points expanded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from graphopt.models.dps_block import CandidateBlock

from graphopt.ir.graph import Graph, Node, Value
from graphopt.pass_api import graph_pass
from graphopt.supernet import ElasticDim, _Builder

DPS_OPS = ["conv3", "conv5", "dw3", "dw5"]


def _prod(v: Value | None, op: str) -> Node | None:
    return v.producer if v is not None and v.producer is not None and v.producer.op == op else None


def _plain_conv(n: Node | None) -> bool:
    return (n is not None and n.op == "conv" and int(n.attrs.get("group") or 1) == 1
            and all(s == 1 for s in (n.attrs.get("strides") or [1, 1])))


def _match_block(relu: Node) -> dict[str, Any] | None:
    add = _prod(relu.inputs[0], "add")
    if add is None:
        return None
    for xi in (0, 1):
        x, body = add.inputs[xi], add.inputs[1 - xi]
        bn_b = _prod(body, "batch_norm")
        conv_b = _prod(bn_b.inputs[0], "conv") if bn_b else None
        r_a = _prod(conv_b.inputs[0], "relu") if conv_b else None
        bn_a = _prod(r_a.inputs[0], "batch_norm") if r_a else None
        conv_a = _prod(bn_a.inputs[0], "conv") if bn_a else None
        if not (_plain_conv(conv_a) and _plain_conv(conv_b)) or conv_a.inputs[0] is not x:  # type: ignore[union-attr]
            continue
        if x is None or x.shape is None or len(x.shape) != 4 or not isinstance(x.shape[1], int):
            continue
        w_a, w_b = conv_a.inputs[1], conv_b.inputs[1]  # type: ignore[union-attr]
        C = int(x.shape[1])
        if w_a is None or w_b is None or w_a.shape[0] != w_b.shape[1] or w_b.shape[0] != C:
            continue
        return {"x": x, "relu": relu, "add": add, "conv_a": conv_a, "bn_a": bn_a, "conv_b": conv_b, "bn_b": bn_b,
                "C": C, "k": int(w_a.shape[2])}
    return None


def _candidate(g: Graph, x: Value, C: int, op: str, prefix: str) -> tuple[Value, list[tuple[str, int, int]]]:
    blk = CandidateBlock(C, op)
    sd = {f"{prefix}.{k}": v.detach().numpy().astype(np.float32) for k, v in blk.state_dict().items()
          if not k.endswith("num_batches_tracked")}
    b = _Builder(g, sd)
    h = x
    k = blk.k
    if blk.kind == "dw":
        h = g.create_node("conv", [h, b.w(prefix + ".dw.weight")], {"kernel_shape": [k, k], "pads": [k // 2] * 4,
                          "group": C}, name=prefix + ".dw").output
        h = b.conv(h, prefix + ".conv_a", 1)
    else:
        h = b.conv(h, prefix + ".conv_a", k, 1, k // 2)
    h = b.relu(b.bn(h, prefix + ".bn_a"), prefix + ".relu_a")
    h = b.bn(b.conv(h, prefix + ".conv_b", 1), prefix + ".bn_b")
    out = b.relu(g.create_node("add", [x, h], name=prefix + ".add").output, prefix + ".out")
    t = [(prefix + ".conv_a.weight", 0, C), (prefix + ".conv_b.weight", 1, C)]
    t += [(f"{prefix}.bn_a.{s}", 0, C) for s in ("weight", "bias", "running_mean", "running_var")]
    return out, t


def _fusion_adds(graph: Graph, block_adds: set[int]) -> list[Node]:
    out = []
    for n in graph.nodes:
        if n.op != "add" or id(n) in block_adds:
            continue
        other = n.inputs[1]
        p = other.producer if other is not None else None
        conv = _prod(p.inputs[0], "conv") if p is not None and p.op == "batch_norm" else None
        strided = conv is not None and any(s > 1 for s in (conv.attrs.get("strides") or [1]))
        from_other = p is not None and (p.op == "resize" or strided)
        if from_other and n.inputs[0] is not None and n.inputs[0].shape == n.output.shape:
            out.append(n)
    return out


@graph_pass("expand-dps", "Multi-path supernet over residual branch blocks (op/kernel/width) and fusion edges (DPS)",
            semantics_preserving=False)
def expand_dps(graph: Graph, ops: list[str] | None = None, widths: list[float] | None = None,
               fusions: bool = True, seed: int = 0) -> dict[str, Any]:
    """Expand every matching residual block and (with ``fusions``) every cross-resolution add."""
    import torch

    ops = list(ops or DPS_OPS)
    bad = [o for o in ops if o not in DPS_OPS]
    if bad:
        raise ValueError(f"expand-dps: unknown ops {bad}; available {DPS_OPS}")
    widths = list(widths or [0.5, 1.0])
    torch.manual_seed(seed)
    blocks = [m for n in graph.nodes if n.op == "relu" and (m := _match_block(n))]
    fuses = _fusion_adds(graph, {id(m["add"]) for m in blocks}) if fusions else []
    dims = [ElasticDim(**d) if isinstance(d, dict) else d for d in graph.meta.get("elastic_dims", [])]
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    report: dict[str, Any] = {"blocks": [], "fusions": []}
    for m in blocks:
        name = m["relu"].name.rsplit(".", 1)[0] if "." in m["relu"].name else m["relu"].name
        y: Value = m["relu"].output
        users = sorted(y.users, key=lambda n: order.get(id(n), 1 << 30))
        own = f"conv{m['k']}"
        alts: list[Value] = []
        targets: list[Any] = [(m["conv_a"].inputs[1].name, 0, m["C"]), (m["conv_b"].inputs[1].name, 1, m["C"])]
        targets += [(v.name, 0, m["C"]) for v in m["bn_a"].inputs[1:] if v is not None and v.is_const]
        with graph.inserting_before(users[0] if users else None):
            for o in ops:
                if o == own:
                    alts.append(y)
                    continue
                out, t = _candidate(graph, m["x"], m["C"], o, f"{name}.alt.{o}")
                alts.append(out)
                targets += t
            if own not in ops:
                raise ValueError(f"expand-dps: block {name} is a conv{m['k']} block; include 'conv{m['k']}' in ops")
            ch = graph.create_node("choice", [None, *alts], {"point": f"op.{name}", "labels": ops},
                                   name=f"{name}.choice")
        for u in list(y.uses):
            if u.node is not ch:
                u.node.set_input(u.index, ch.output)
        for i, o in enumerate(graph.outputs):
            if o is y:
                graph.outputs[i] = ch.output
        if m["C"] * min(widths) < 1:
            raise ValueError(f"expand-dps: width {min(widths)} leaves block {name} with no channel")
        dims.append(ElasticDim(f"width.{name}", widths, "slice", targets))
        report["blocks"].append(name)
    for n in fuses:
        acc = n.inputs[0]
        assert acc is not None
        with graph.inserting_after(n):
            ch = graph.create_node("choice", [None, acc, n.output], {"point": f"fuse.{n.name}", "labels": ["0", "1"]},
                                   name=f"{n.name}.choice")
        for u in list(n.output.uses):
            if u.node is not ch:
                u.node.set_input(u.index, ch.output)
        report["fusions"].append(n.name)
    graph.toposort()
    graph.meta["elastic_dims"] = [d.to_dict() for d in dims]
    report["space"] = {"ops": ops, "widths": widths}
    return report
