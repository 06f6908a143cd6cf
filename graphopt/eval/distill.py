"""Segment-local distillation: train what a rewrite replaced to reproduce what it replaced, from the teacher.

A rewritten candidate keeps every node of the original outside the replaced segments (same names, same
weights) and gets fresh weights inside them. Fine-tuning the whole network for a few dozen steps cannot bring a
trained network back from that (measured on a trained ResNet-20: candidates lost 1.3-2.7 points). Blockwise
distillation (DNA, Li et al. 2020; Puzzle's BLD, Bercovich et al. 2024) trains each new block on its own first:
fed the *original's* activations at the block's inputs, it learns to produce the original's activations at the
block's outputs. Each block sees exactly the signal it must reproduce, the rest of the network stays frozen,
and the blocks train independently (here: together, in one loop, since their parameters are disjoint).

Regions are found by comparing the candidate with the teacher graph, not from mutation records, so they are
right for descendants of descendants and for any rewrite that keeps the names of what it does not touch:

- a candidate node is *new* unless the teacher has a node of the same name, op, attributes and output names
  that reads the same-named constants (names and shapes; a carried weight may have other values) and as many
  activations;
- new nodes are grouped into connected regions; a region's inputs are the activations it reads from kept
  nodes (or graph inputs), which the teacher computes under the same names; its outputs are the activations
  kept nodes (or graph outputs) read from it, matched to the teacher's value in the same consumer slot.

The loss per region output is the MSE normalized by the teacher activation's variance (so wide and narrow
tensors weigh alike); Adam, ``lr`` 1e-2 by default, on freshly sampled training batches (the same loader as
training, no augmentation). The rate was chosen on validation data: 60 steps on two ResNet-20 mutants of the demo
run left their networks at validation accuracy .39 and .17 with 1e-3, .67 and .55 with 1e-2.
Where a region's output is not matched in the teacher (the rewrite changed what a kept node reads), that region
is skipped and reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..ir.graph import Graph, Node, Value
from .data import ArrayDataset, BatchLoader


@dataclass
class Region:
    """One connected block of new nodes; ``inputs``/``outputs`` name the candidate's boundary values and
    ``teacher_outputs`` the teacher's values they must reproduce (same order)."""

    nodes: list[str]
    inputs: list[str]
    outputs: list[str]
    teacher_outputs: list[str]


@dataclass
class DistillReport:
    regions: int = 0
    skipped: list[str] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0  # the whole call
    setup_seconds: float = 0.0  # emitting the teacher and the regions, before the first step
    error_before: float | None = None  # mean normalized MSE over region outputs, first batch
    error_after: float | None = None  # the same, last batch
    cached_batches: int = 0  # teacher batches computed and cycled over

    def to_dict(self) -> dict[str, Any]:
        return {"regions": self.regions, "skipped": self.skipped, "steps": self.steps, "seconds": self.seconds,
                "setup_seconds": self.setup_seconds, "error_before": self.error_before,
                "error_after": self.error_after, "cached_batches": self.cached_batches}


def _const_key(v: Value) -> tuple:
    return ("const", v.name, tuple(v.shape or ()))


def _in_key(v: Value | None) -> tuple | None:
    """Constants must match by name and shape; an activation only by being one (a rewrite renames the values
    its replacement produces, and the kept nodes reading them stay what they were)."""
    if v is None:
        return None
    return _const_key(v) if v.is_const else ("value",)


def _same_node(n: Node, t: Node | None) -> bool:
    if t is None or t.op != n.op or len(t.inputs) != len(n.inputs) or dict(t.attrs) != dict(n.attrs):
        return False
    if [o.name for o in t.outputs] != [o.name for o in n.outputs]:
        return False
    if [o.shape for o in t.outputs] != [o.shape for o in n.outputs]:
        return False  # e.g. an activation between a shrunk conv and the next: part of the replaced chain
    for a, b in zip(n.inputs, t.inputs, strict=True):
        if _in_key(a) != _in_key(b):
            return False
        if a is not None and a.is_const and not np.array_equal(np.asarray(a.const), np.asarray(b.const)):
            # same name and shape but other values: kept only if it is a weight a rewrite carried over
            # (training changes weights; what matters for the boundary is the structure)
            if a.kind == "const":
                return False
    return True


def replaced_regions(teacher: Graph, child: Graph) -> list[Region]:
    """The connected blocks of ``child`` that are not in ``teacher`` (see the module docstring)."""
    by_name = {n.name: n for n in teacher.nodes}
    new = [n for n in child.nodes if not _same_node(n, by_name.get(n.name))]
    if not new:
        return []
    new_ids = {id(n) for n in new}
    # union-find over new nodes connected through a value one produces and another reads
    parent = {id(n): id(n) for n in new}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in new:
        for v in n.inputs:
            if v is not None and v.producer is not None and id(v.producer) in new_ids:
                parent[find(id(n))] = find(id(v.producer))
    groups: dict[int, list[Node]] = {}
    for n in new:
        groups.setdefault(find(id(n)), []).append(n)
    t_values = {v.name: v for v in teacher.values()}
    child_outs = {id(v): i for i, v in enumerate(child.outputs)}
    regions = []
    for nodes in groups.values():
        ids = {id(n) for n in nodes}
        ins: list[str] = []
        outs: list[str] = []
        t_outs: list[str] = []
        for n in nodes:
            for v in n.inputs:
                if v is None or v.is_const or (v.producer is not None and id(v.producer) in ids):
                    continue
                if v.name not in ins:
                    ins.append(v.name)
            for o in n.outputs:
                target = None
                if id(o) in child_outs:
                    target = teacher.outputs[child_outs[id(o)]].name
                for u in o.uses:
                    if id(u.node) in ids:
                        continue
                    tn = by_name.get(u.node.name)
                    tv = tn.inputs[u.index] if tn is not None and u.index < len(tn.inputs) else None
                    target = target or (tv.name if tv is not None else None)
                if target is None and (id(o) in child_outs or any(id(u.node) not in ids for u in o.uses)):
                    target = ""  # read outside but no teacher counterpart
                if target is not None:
                    outs.append(o.name)
                    t_outs.append(target)
        regions.append(Region([n.name for n in nodes], ins, outs, t_outs))
    for r in regions:
        if any(i not in t_values for i in r.inputs) or any(t not in t_values for t in r.teacher_outputs):
            r.teacher_outputs = []  # marks the region as unmatched
    return regions


def _with_outputs(graph: Graph, names: list[str]) -> Graph:
    g = graph.copy()
    vals = {v.name: v for v in g.values()}
    g.set_outputs([vals[n] for n in names])
    return g


def write_back(graph: Graph, module: torch.nn.Module) -> int:
    """Copy a module's trained tensors into ``graph``'s constants of the same name and shape; returns the count."""
    from ..backends.torch import module_keys

    keys = module_keys(list(graph.constants))
    n = 0
    for name, v in graph.constants.items():
        t = module.state_dict().get(keys.get(name, name)) if v.const is not None else None
        if t is not None and tuple(v.const.shape) == tuple(t.shape):
            v.const = t.detach().cpu().numpy().astype(v.const.dtype, copy=True)
            n += 1
    return n


INHERITED_LR_SCALE = 0.1
"""A region that already reproduces its target better than its mean does (normalized error < 1 at the first
batch: weights carried over, e.g. a shrunk block) is refined at this fraction of ``lr``; a fresh one gets ``lr``.
Chosen on the demo's validation split: two shrunk ResNet-20 blocks (-25% of layer2.1, -50% of layer3.1), 240
steps, validation .874/.858 at 1e-2, .882/.864 at 1e-3, .880/.858 at 3e-4 (original .880)."""

CACHE_MB = 256.0
"""Memory for cached teacher activations (:func:`distill_regions`); fewer batches are cached when they need more."""


def distill_regions(teacher: Graph, child: Graph, data: ArrayDataset, *, steps: int, batch_size: int = 64,
                    lr: float = 1e-2, seed: int = 0, device: str = "cpu", seconds: float | None = None,
                    cache_batches: int = 16, cache_mb: float = CACHE_MB) -> DistillReport:
    """Train ``child``'s replaced regions to reproduce ``teacher``'s activations; updates ``child`` in place.

    The teacher's boundary activations are computed once for up to ``cache_batches`` training batches (within
    ``cache_mb``) and the steps cycle over them: a step then runs only the regions, not the teacher's prefix,
    which on a ResNet-20 block makes a step several times cheaper, so the same time buys several times the steps
    (1,024 images x 32x32 positions are ample data for a block's few thousand weights)."""
    from ..backends.torch import to_torch

    rep = DistillReport()
    regions = replaced_regions(teacher, child)
    usable = [r for r in regions if r.teacher_outputs and r.inputs]
    rep.skipped = [r.nodes[0] for r in regions if r not in usable]
    rep.regions = len(usable)
    if not usable or steps <= 0:
        return rep
    t0 = time.perf_counter()
    wanted = sorted({n for r in usable for n in (*r.inputs, *r.teacher_outputs)})
    t_mod = to_torch(_with_outputs(teacher, wanted)).to(device).eval().requires_grad_(False)
    students = []
    c_nodes = {n.name: n for n in child.nodes}
    for r in usable:
        sub, b_in, b_out = child.subgraph([c_nodes[n] for n in r.nodes], name="region")
        in_names = [v.name for v in b_in]
        out_names = [v.name for v in b_out]
        order = [out_names.index(o) for o in r.outputs]
        students.append((sub, to_torch(sub).to(device).train(), in_names, order, r))
    opt = None  # built after the first batch, when each region's starting error is known
    loader = BatchLoader(data, batch_size, shuffle=True, augment=False, seed=seed, drop_last=len(data) >= batch_size)
    it = iter(loader)
    pos = {n: i for i, n in enumerate(wanted)}
    cache: list[tuple[torch.Tensor, ...]] = []
    limit = max(1, min(cache_batches, steps))

    def teacher_batch() -> tuple[torch.Tensor, ...]:
        nonlocal it
        try:
            xb, _ = next(it)
        except StopIteration:
            it = iter(loader)
            xb, _ = next(it)
        with torch.no_grad():
            acts = t_mod(xb.to(device))
        return tuple(acts) if isinstance(acts, list | tuple) else (acts,)

    rep.setup_seconds = time.perf_counter() - t0
    for step in range(steps):
        if len(cache) < limit:
            acts = teacher_batch()
            cache.append(acts)
            if len(cache) == 1:  # size the cache from the first batch
                mb = sum(a.numel() * a.element_size() for a in acts) / 2**20
                limit = max(1, min(limit, int(cache_mb // max(mb, 1e-6))))
        else:
            acts = cache[step % len(cache)]
        losses = []
        per_region = []
        for _, m, in_names, order, r in students:
            n_before = len(losses)
            out = m(*[acts[pos[n]] for n in in_names])
            out = out if isinstance(out, list | tuple) else (out,)
            for k, tname in zip(order, r.teacher_outputs, strict=True):
                target = acts[pos[tname]].float()
                losses.append(F.mse_loss(out[k].float(), target) / target.var().clamp_min(1e-8))
            if step == 0:
                per_region.append(float(torch.stack(losses[n_before:]).mean().detach()))
        loss = torch.stack(losses).mean()
        if step == 0:
            groups = [{"params": ps, "lr": lr if err0 >= 1.0 else lr * INHERITED_LR_SCALE}
                      for (_, m, *_), err0 in zip(students, per_region, strict=True)
                      if (ps := [p for p in m.parameters() if p.is_floating_point()])]
            opt = torch.optim.Adam(groups, lr=lr) if groups else None
        lv = float(loss.detach())
        if not math.isfinite(lv):
            break
        if step == 0:
            rep.error_before = lv
        rep.error_after = lv
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rep.steps = step + 1
        if seconds is not None and time.perf_counter() - t0 > seconds:
            break
    rep.cached_batches = len(cache)
    for sub, m, *_ in students:
        write_back(sub, m)
        for name, v in sub.constants.items():
            if name in child.constants:
                child.constants[name].const = v.const
    rep.seconds = time.perf_counter() - t0
    return rep


@torch.no_grad()
def activation_stats(graph: Graph, names: list[str], data: ArrayDataset, *, batches: int = 8, batch_size: int = 64,
                     seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (mean, variance) over batch and space of the NCHW activations ``names`` of ``graph`` on
    ``batches`` training batches (no augmentation): what a re-inserted BatchNorm must start from."""
    from ..backends.torch import to_torch

    if not names:
        return {}
    mod = to_torch(_with_outputs(graph, names)).eval()
    s1: dict[str, torch.Tensor] = {}
    s2: dict[str, torch.Tensor] = {}
    cnt: dict[str, int] = {}
    for i, (xb, _) in enumerate(BatchLoader(data, batch_size, shuffle=True, seed=seed)):
        if i >= batches:
            break
        outs = mod(xb)
        outs = outs if isinstance(outs, list | tuple) else (outs,)
        for n, a in zip(names, outs, strict=True):
            a = a.double().transpose(0, 1).reshape(a.shape[1], -1)
            s1[n] = s1.get(n, 0) + a.sum(1)
            s2[n] = s2.get(n, 0) + (a * a).sum(1)
            cnt[n] = cnt.get(n, 0) + a.shape[1]
    out = {}
    for n in names:
        mu = s1[n] / cnt[n]
        var = (s2[n] / cnt[n] - mu * mu).clamp_min(0)
        out[n] = (mu.float().numpy(), var.float().numpy())
    return out
