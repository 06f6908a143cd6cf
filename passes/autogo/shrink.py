"""Channel-shrinking mutation: fewer inner channels of a conv -> (norm) -> (activation) -> conv chain, keeping the
trained weights of the channels that stay.

Why beside segment mutation: a database segment arrives with fresh weights, and on a *trained* network even
segment-local distillation rarely brings it back within a short budget (measured on the demo ResNet-20: -5%
FLOPs cost 2.6 validation points after 240 distillation steps and two epochs of fine-tuning). Removing the
least important inner channels of a block keeps every other weight as it was, which is what magnitude pruning
(Li et al. 2017; DepGraph/Torch-Pruning) does to a trained model, and the result is still an ordinary AutoGO
child: it can be mutated further, distilled (the changed chain is one replaced region whose output keeps its
shape), and it competes on the same Pareto front.

The chain, in the IR: conv ``A`` (group 1, constant weight) whose output feeds, each as its only consumer, an
optional ``batch_norm`` with constant parameters, optional activations (registry category ``activation``,
extra inputs scalar constants), and finally conv ``B`` (group 1) as its data input. ``A``'s output channels
and ``B``'s input channels are the pruned dimension; nothing outside the chain changes shape. Importance of a
channel: the L2 norm of ``A``'s filter times ``|gamma| / sqrt(var + eps)`` of the norm when there is one (the
scale the channel reaches ``B`` with). Kept channels are rounded to a multiple of 4 (NPU channel blocking)
when the layer has at least 16.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.infer import infer_node
from graphopt.ir.registry import get_op
from graphopt.ir.verify import verify

from .mutate import Mutant, Mutation, _numpy_rng, _per_sample_flops

RATIOS = (0.125, 0.25, 0.5)
"""Shares of a chain's inner channels one mutation removes (drawn uniformly)."""

SPREAD = (1, 2, 4)
"""How many chains one mutation shrinks at the drawn ratio (drawn uniformly, capped at the chains there are).
Why more than one: one chain of a 19-conv ResNet-20 is ~5% of its FLOPs, so a 20% cut needs four compounding
generations of single-chain mutations, each distilled and scored; a search of a few hundred candidates reaches
it only when a mutation may take several steps at once. Several chains at one ratio is the uniform magnitude
pruning of Li et al. (2017) restricted to a random subset of blocks, which the search then compares."""


def _only_user(v: Value) -> Node | None:
    users = v.users
    return users[0] if len(users) == 1 and len(v.uses) == 1 else None


def _scalar_consts(node: Node) -> bool:
    return all(v is None or (v.is_const and np.size(v.const) == 1) for v in node.inputs[1:])


def shrink_chains(graph: Graph) -> list[list[Node]]:
    """Every prunable chain ``[A, (norm), (activations...), B]`` of ``graph`` (see the module docstring)."""
    outs = {id(v) for v in graph.outputs}
    chains = []
    for a in graph.nodes:
        if a.op != "conv" or int(a.attrs.get("group", 1) or 1) != 1 or len(a.inputs) < 2:
            continue
        w = a.inputs[1]
        if w is None or not w.is_const or np.ndim(w.const) != 4 or w.const.shape[0] < 2:
            continue
        if len(a.inputs) > 2 and a.inputs[2] is not None and not a.inputs[2].is_const:
            continue
        chain, cur = [a], a
        while True:
            if id(cur.outputs[0]) in outs:
                break
            nxt = _only_user(cur.outputs[0])
            if nxt is None:
                break
            if nxt.op == "conv":
                if (nxt.inputs[0] is cur.outputs[0] and int(nxt.attrs.get("group", 1) or 1) == 1
                        and nxt.inputs[1] is not None and nxt.inputs[1].is_const):
                    chains.append([*chain, nxt])
                break
            if nxt.op == "batch_norm" and len(chain) == 1 and all(v is not None and v.is_const
                                                                  for v in nxt.inputs[1:5]):
                chain.append(nxt)
            elif get_op(nxt.op).category == "activation" and nxt.inputs[0] is cur.outputs[0] \
                    and _scalar_consts(nxt):
                chain.append(nxt)
            else:
                break
            cur = nxt
    return chains


def _importance(chain: list[Node]) -> np.ndarray:
    a = chain[0]
    w = np.asarray(a.inputs[1].const, dtype=np.float64)
    imp = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(1))
    for n in chain[1:-1]:
        if n.op == "batch_norm":
            gamma, var = (np.asarray(n.inputs[i].const, dtype=np.float64) for i in (1, 4))
            imp = imp * np.abs(gamma) / np.sqrt(var + float(n.attrs.get("epsilon", 1e-5)))
    return imp


def _kept(channels: int, ratio: float) -> int:
    keep = max(1, int(math.ceil(channels * (1 - ratio))))
    if channels >= 16:
        keep = max(4, 4 * round(keep / 4))
    return min(keep, channels - 1)


def shrink_chain(graph: Graph, chain_names: list[str], ratio: float, tag: str) -> tuple[Graph, dict[str, Any]]:
    """A copy of ``graph`` with the chain's inner channels cut by ``ratio`` (least important first)."""
    g = graph.copy()
    by_name = {n.name: n for n in g.nodes}
    chain = [by_name[n] for n in chain_names]
    a, b = chain[0], chain[-1]
    c = a.inputs[1].const.shape[0]
    keep = np.sort(np.argsort(-_importance(chain), kind="stable")[:_kept(c, ratio)])

    def replace(node: Node, idx: int, array: np.ndarray) -> None:
        old = node.inputs[idx]
        node.set_input(idx, g.add_const(g.unique_name(f"{old.name}.{tag}"), array.astype(old.const.dtype),
                                          kind=old.kind))  # a weight stays trainable

    replace(a, 1, np.asarray(a.inputs[1].const)[keep])
    if len(a.inputs) > 2 and a.inputs[2] is not None:
        replace(a, 2, np.asarray(a.inputs[2].const)[keep])
    for n in chain[1:-1]:
        if n.op == "batch_norm":
            for i in range(1, 5):
                replace(n, i, np.asarray(n.inputs[i].const)[keep])
    replace(b, 1, np.asarray(b.inputs[1].const)[:, keep])
    g.remove_unused_constants()
    for n in chain:
        infer_node(n)
        n.meta["provenance"] = {"mutation": tag, "kind": "shrink-channels", "chain": chain_names}
    verify(g)
    return g, {"chain": chain_names, "channels_before": int(c), "channels_after": int(len(keep)),
               "ratio": float(ratio)}


def shrink_mutate(graph: Graph, rng=None, ratios: tuple[float, ...] = RATIOS,
                  spread: tuple[int, ...] = SPREAD) -> Mutant | None:
    """One channel-shrinking mutation of ``graph``: a random ratio applied to a random set of its prunable chains
    (how many: drawn from ``spread``); None when no chain can shrink."""
    rng = _numpy_rng(rng)
    chains = [ch for ch in shrink_chains(graph) if _kept(ch[0].inputs[1].const.shape[0], min(ratios))
              < ch[0].inputs[1].const.shape[0]]
    if not chains:
        return None
    k = min(len(chains), int(spread[int(rng.integers(len(spread)))]))
    picked = sorted(int(i) for i in rng.choice(len(chains), size=k, replace=False))
    ratio = float(ratios[int(rng.integers(len(ratios)))])
    tag_k = int(graph.meta.get("autogo_mutations", 0)) + 1
    tag = f"autogo{tag_k}"
    before = sum(_per_sample_flops(graph).values())
    g, fits, segments = graph, [], []
    for i in picked:
        names = [n.name for n in chains[i]]
        # chains are found again by name: a chain may end in the conv that starts the next (a plain conv stack)
        g, info = shrink_chain(g, names, ratio, tag)
        fits.append(f"{info['channels_before']}->{info['channels_after']}")
        segments.append(names)
    g.meta["autogo_mutations"] = tag_k
    names = list(dict.fromkeys(n for seg in segments for n in seg))
    rec = Mutation(tag=tag, source_nodes=names, source_segments=segments, selection="shrink-channels",
                   db_segment=-1, db_ops=[n.op for ch in (chains[i] for i in picked) for n in ch],
                   fit=f"shrink {', '.join(fits)} channels", new_nodes=names, carried=names, flops_before=before,
                   flops_after=sum(_per_sample_flops(g).values()))
    return Mutant(g, rec)
