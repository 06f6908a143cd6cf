"""AutoGO segment mutation: replace a run of 1-3 consecutive segments of a graph by a database segment.

One call of :func:`mutate`:

1. partitions the parent with the vocabulary, masking each multi-node piece with probability ``sparsity``
   (paper: 0.5), so repeated calls cut the graph differently;
2. lists *source runs*: 1 to ``max_run`` (3) consecutive segments that contain no node reading a graph input,
   no node producing a graph output and no node of the head (the last global pooling / reduce-mean / flatten /
   gemm / matmul in canonical order and everything after it). With probability ``low_flops_frac`` (0.5) the
   source is drawn from the ``low_flops_k`` cheapest runs, otherwise uniformly (paper: "half of the sources
   are the lowest-FLOPs segments, half random");
3. draws replacement candidates from the database: segments with the same number of inputs and outputs whose
   boundary resolutions match exactly (up to input/output permutation), plus segments fitted by resolution
   propagation (:mod:`.resolution`) when every boundary tensor of the source is a NCHW feature map
   (:func:`~.resolution.nchw_values`) or every one is an ``(N, L, C)`` token tensor
   (:func:`~.resolution.nlc_values`; attention scores, NHWC or mixed boundaries only take exact matches);
   candidates whose boundary ranks differ from the source's are dropped, and a candidate isomorphic to the
   source is skipped (no-op);
4. instantiates the candidate with fresh weights, stitches it into a new graph (a cycle is detected while
   ordering and rejected), verifies the IR (:func:`graphopt.ir.verify`, which re-infers every shape) and
   checks the graph outputs keep their types.

Weights: nodes outside the source keep theirs. Replacement node ``i`` (canonical order) is aligned with
source node ``i``; when their op labels agree it takes the source node's name and its parameter names, and the
old arrays where the shapes still match ("carried"); other parameters get fresh names ``autogo<k>.*`` and
fresh initialisation, so a parent's state dict loads non-strictly and only matching tensors transfer.

Lineage: every new node gets ``meta["provenance"]`` (mutation tag, database segment id, replaced nodes) and
the :class:`Mutation` record lists source segments and the database segment. When every attempt fails,
:func:`mutate` returns None and appends the reasons to ``reasons`` if given.
"""

from __future__ import annotations

import heapq
import itertools
import random as _random
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from graphopt.ir.cost import graph_cost, node_cost
from graphopt.ir.graph import Graph, IRError, Node, Value
from graphopt.ir.infer import ShapeInferenceError
from graphopt.ir.registry import get_op
from graphopt.ir.verify import VerificationError, verify

from .mine import Vocabulary
from .partition import Segment, partition
from .resolution import Assignment, instantiate, nchw_values, nlc_values, solve_resolution, weight_transpose
from .segdb import (
    CanonicalSegment,
    SegmentDB,
    SegmentRecord,
    _has_input,
    canonical_segment,
    isomorphic,
    resolution,
    segment_nx,
)
from .tokens import graph_tokens, node_label

HEAD_OPS = {"global_avg_pool", "global_max_pool", "reduce_mean", "flatten", "gemm", "matmul"}


@dataclass
class Mutation:
    """What one mutation did (JSON-safe via :meth:`to_json`)."""

    tag: str
    source_nodes: list[str]
    source_segments: list[list[str]]
    selection: str
    db_segment: int
    db_ops: list[str]
    fit: str
    new_nodes: list[str]
    carried: list[str]
    flops_before: int | None
    flops_after: int | None
    solve_s: float = 0.0
    attempts: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Mutant:
    graph: Graph
    mutation: Mutation

    @property
    def lineage(self) -> dict[str, Any]:
        """The mutation record as a JSON-safe dict (what a result store keeps)."""
        return self.mutation.to_json()


@dataclass
class _Ctx:
    order: tuple[list[Node], list[str]]
    flops: dict[int, int]
    forbidden: set[int]
    n_nodes: int
    extra: dict = field(default_factory=dict)


_CACHE: weakref.WeakKeyDictionary[Graph, _Ctx] = weakref.WeakKeyDictionary()


def _numpy_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, _random.Random):
        return np.random.default_rng(rng.getrandbits(64))
    return np.random.default_rng(rng)


def _per_sample_flops(graph: Graph) -> dict[int, int]:
    """FLOPs per node at batch 1 (symbolic dims bound to 1 on a copy when needed)."""
    nodes = graph.nodes
    out: dict[int, int] = {}
    static = all(v.type is not None and v.type.is_static for v in graph.inputs)
    if static:
        b = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else 1
        b = b if isinstance(b, int) and b > 0 else 1
        for n in nodes:
            out[id(n)] = (node_cost(n).flops or 0) // b
        return out
    from graphopt.ir.infer import set_input_shapes

    c = graph.copy()
    try:
        set_input_shapes(c, {v.name: [d if isinstance(d, int) else 1 for d in (v.shape or ())] for v in c.inputs})
        by_name = {n.name: n for n in c.nodes}
        for n in nodes:
            out[id(n)] = node_cost(by_name[n.name]).flops or 0
    except (IRError, KeyError):
        out = {id(n): 0 for n in nodes}
    return out


def _context(graph: Graph) -> _Ctx:
    ctx = _CACHE.get(graph)
    if ctx is not None and ctx.n_nodes == len(graph) and all(n.graph is graph for n in ctx.order[0]):
        return ctx
    order = graph_tokens(graph)
    nodes = order[0]
    inputs = {id(v) for v in graph.inputs}
    outputs = {id(v) for v in graph.outputs}
    forbidden: set[int] = set()
    for n in nodes:
        if any(v is not None and id(v) in inputs for v in n.inputs) or any(id(o) in outputs for o in n.outputs):
            forbidden.add(id(n))
    heads = [n for n in nodes if n.op in HEAD_OPS]
    if heads:
        # The head: the last head op, the chain of head/shape ops feeding it, and everything after it.
        first = heads[-1]
        while True:
            acts = [v for v in first.inputs if v is not None and not v.is_const]
            p = acts[0].producer if len(acts) == 1 else None
            if p is None or len(p.users()) != 1 or not (p.op in HEAD_OPS or get_op(p.op).category == "shape"):
                break
            first = p
        stack, seen = [first], set()
        while stack:
            m = stack.pop()
            if id(m) not in seen:
                seen.add(id(m))
                stack.extend(m.users())
        forbidden |= seen
    layouts = {"nchw": nchw_values(graph), "nlc": nlc_values(graph)}
    ctx = _Ctx(order, _per_sample_flops(graph), forbidden, len(graph), layouts)
    _CACHE[graph] = ctx
    return ctx


def source_runs(segs: list[Segment], ctx: _Ctx, max_run: int = 3) -> list[tuple[int, int, int]]:
    """Allowed sources as ``(first segment index, length, FLOPs per sample)``."""
    runs = []
    for i in range(len(segs)):
        flops = 0
        for k in range(max_run):
            if i + k >= len(segs):
                break
            s = segs[i + k]
            if any(id(n) in ctx.forbidden for n in s.nodes):
                break
            if not _has_input(s.nodes):  # constant-only computation (e.g. a transposed weight)
                break
            flops += sum(ctx.flops.get(id(n), 0) for n in s.nodes)
            runs.append((i, k + 1, flops))
    return runs


def _with_own_weights(nodes: list[Node]) -> list[Node]:
    """A source keeps each linear layer whole: the ``transpose`` of a constant weight (how ``nn.Linear`` lowers)
    joins the source when its matmul is in it and leaves it when its matmul is not. Otherwise the partition can
    cut between them and the transposed weight becomes a boundary tensor that no database segment has."""
    inside = {id(n) for n in nodes}
    kept = [n for n in nodes if not (weight_transpose(n) and any(id(u) not in inside for u in n.users()))]
    kept_ids = {id(n) for n in kept}
    extra = []
    for n in kept:
        for v in n.inputs:
            p = v.producer if v is not None else None
            if p is not None and id(p) not in kept_ids and weight_transpose(p) and all(
                    id(u) in kept_ids for u in p.users()):
                kept_ids.add(id(p))
                extra.append(p)
    return extra + kept if extra or len(kept) != len(nodes) else nodes


def _same_dim0(a: Value, b: Value) -> bool:
    """Equal leading dims: both symbolic (a batch) or the same number."""
    da = a.shape[0] if a.shape else None
    db = b.shape[0] if b.shape else None
    if isinstance(da, int) or isinstance(db, int):
        return da == db
    return True


def _ranks(shapes) -> list[int]:
    return sorted(-1 if s is None else len(s) for s in shapes)


def _perms(cands: list[tuple], want: list[tuple]) -> list[tuple[int, ...]]:
    """Permutations ``p`` with ``cands[j] == want[p[j]]`` for every j (identity only beyond 4 tensors)."""
    n = len(want)
    if n > 4:
        p = tuple(range(n))
        return [p] if all(tuple(cands[j]) == tuple(want[j]) for j in range(n)) else []
    return [p for p in itertools.permutations(range(n)) if all(tuple(cands[j]) == tuple(want[p[j]])
                                                             for j in range(n))]


def _fit(rec: SegmentRecord, cs: CanonicalSegment, in_res: list[tuple], out_res: list[tuple],
         allow_propagation: bool | str, solve_time_limit: float):
    """(input perm, output perm, assignment or None, fit kind) or a reason string."""
    pin = _perms([tuple(s) for s in rec.in_shapes], in_res)
    pout = _perms([tuple(s) for s in rec.out_shapes], out_res)
    if pin and pout:
        return pin[0], pout[0], None, "exact"
    if isinstance(allow_propagation, str):
        return f"boundary shapes differ and {allow_propagation}"
    if not allow_propagation or not rec.propagatable:
        return "boundary shapes differ and the segment cannot be resolution-propagated"
    last = "no input/output ordering fits"
    n_in, n_out = len(in_res), len(out_res)
    in_perms = list(itertools.permutations(range(n_in)))[:6]
    out_perms = list(itertools.permutations(range(n_out)))[:6]
    for pi in in_perms:
        for po in out_perms:
            a = solve_resolution(rec.graph(), [in_res[p] for p in pi], [out_res[p] for p in po],
                                 time_limit=solve_time_limit)
            if a:
                return pi, po, a, "propagated"
            last = a.reason
    return last


def _stitch(parent: Graph, src: list[Node], ins: list[Value], outs: list[Value], rep: Graph,
            aligned: list[Node | None], tag: str, provenance: dict[str, Any]) -> tuple[Graph, list[str], list[str]]:
    """New graph = parent with ``src`` replaced by ``rep`` (inputs fed by ``ins``, outputs replacing ``outs``).

    Raises IRError on a cycle. Returns (graph, new node names, carried constant names).
    """
    src_ids = {id(n) for n in src}
    p_nodes = parent.nodes
    pos = {id(n): i for i, n in enumerate(p_nodes)}
    rep_pos = min(pos[id(n)] for n in src)
    REP = object()
    out_ids = {id(v) for v in outs}
    # Dependencies between kept nodes and the replacement block (treated as one unit).
    units: list[Any] = [n for n in p_nodes if id(n) not in src_ids] + [REP]
    key = {id(u): (pos[id(u)] if u is not REP else rep_pos) for u in units}

    def deps(u) -> set[int]:
        if u is REP:
            return {id(v.producer) for v in ins if v.producer is not None}
        d = set()
        for v in u.inputs:
            if v is None or v.producer is None:
                continue
            d.add(id(REP) if id(v) in out_ids or id(v.producer) in src_ids else id(v.producer))
        return d

    indeg: dict[int, int] = {}
    succ: dict[int, list[Any]] = {id(u): [] for u in units}
    for u in units:
        ds = deps(u) - {id(u)}
        indeg[id(u)] = len(ds)
        for d in ds:
            succ[d].append(u)
    ready = [(key[id(u)], i, u) for i, u in enumerate(units) if indeg[id(u)] == 0]
    heapq.heapify(ready)
    order = []
    tick = itertools.count(len(units))
    while ready:
        _, _, u = heapq.heappop(ready)
        order.append(u)
        for s in succ[id(u)]:
            indeg[id(s)] -= 1
            if indeg[id(s)] == 0:
                heapq.heappush(ready, (key[id(s)], next(tick), s))
    if len(order) != len(units):
        raise IRError("stitching creates a cycle: a segment input depends on one of its outputs through the rest "
                      "of the graph")
    g = Graph(parent.name)
    g.meta = {k: v for k, v in parent.meta.items() if not k.startswith("_")}
    vmap: dict[int, Value] = {}
    for v in parent.inputs:
        nv = g.add_input(v.name, v.type)
        nv.meta = dict(v.meta)
        vmap[id(v)] = nv
    kept_consts = set()
    for n in units:
        if n is REP:
            continue
        for v in n.inputs:
            if v is not None and v.is_const:
                kept_consts.add(id(v))
    kept_consts |= {id(v) for v in parent.outputs if v.is_const}
    for v in parent.constants.values():
        if id(v) in kept_consts:
            nv = g.add_const(v.name, v.const, v.kind)
            nv.type, nv.meta = v.type, dict(v.meta)
            vmap[id(v)] = nv
    new_names: list[str] = []
    carried: list[str] = []
    for u in order:
        if u is not REP:
            n = u
            ins_ = [None if v is None else vmap[id(v)] for v in n.inputs]
            nn_ = g.create_node(n.op, ins_, dict(n.attrs), name=n.name, output_names=[o.name for o in n.outputs],
                                output_types=[o.type for o in n.outputs], infer=False)
            nn_.meta = dict(n.meta)
            for o, no in zip(n.outputs, nn_.outputs, strict=True):
                no.meta = dict(o.meta)
                vmap[id(o)] = no
            continue
        rmap: dict[int, Value] = {id(rv): vmap[id(pv)] for rv, pv in zip(rep.inputs, ins, strict=True)}
        for k, rn in enumerate(rep.nodes):
            old = aligned[k] if k < len(aligned) else None
            r_ins: list[Value | None] = []
            for j, rv in enumerate(rn.inputs):
                if rv is None:
                    r_ins.append(None)
                    continue
                if not rv.is_const:
                    r_ins.append(rmap[id(rv)])
                    continue
                if id(rv) in rmap:
                    r_ins.append(rmap[id(rv)])
                    continue
                pv = old.inputs[j] if old is not None and j < len(old.inputs) else None
                if (pv is not None and pv.is_const and pv.kind == rv.kind and rv.kind != "const"
                        and tuple(pv.shape or ()) == tuple(rv.shape or ())):
                    if pv.name in g.constants:  # shared with a kept node
                        nv = g.constants[pv.name]
                    else:
                        nv = g.add_const(pv.name, pv.const, pv.kind)
                        nv.type = pv.type
                    carried.append(nv.name)
                elif pv is not None and pv.is_const and rv.kind != "const" and pv.name not in g.constants:
                    nv = g.add_const(f"{tag}.{pv.name}", rv.const, rv.kind)
                else:
                    nv = g.add_const(f"{tag}.{rv.name}", rv.const, rv.kind)
                rmap[id(rv)] = nv
                r_ins.append(nv)
            name = old.name if old is not None else f"{tag}.{rn.name}"
            nn_ = g.create_node(rn.op, r_ins, dict(rn.attrs), name=name,
                                output_names=[name if len(rn.outputs) == 1 else f"{name}_out{i}"
                                              for i in range(len(rn.outputs))],
                                output_types=[o.type for o in rn.outputs], infer=False)
            nn_.meta = {"provenance": dict(provenance)}
            new_names.append(nn_.name)
            for o, no in zip(rn.outputs, nn_.outputs, strict=True):
                rmap[id(o)] = no
        for pv, rv in zip(outs, rep.outputs, strict=True):
            vmap[id(pv)] = rmap[id(rv)]
    g.set_outputs([vmap[id(v)] for v in parent.outputs])
    return g, new_names, carried


def replace_segment(graph: Graph, nodes: list[Node], replacement: Graph, *, tag: str = "autogo",
                    provenance: dict[str, Any] | None = None, full_verify: bool = True) -> Graph:
    """A new graph with ``nodes`` replaced by ``replacement`` (the parent is not modified).

    ``replacement.inputs``/``outputs`` correspond, in order, to the boundary of ``nodes`` in canonical order
    (:func:`~.segdb.canonical_segment`). Raises ``IRError`` with the reason when the boundary does not match,
    the replacement would create a cycle (``nodes`` not convex) or the result does not verify.
    """
    cs = canonical_segment(graph, nodes)
    if len(replacement.inputs) != len(cs.inputs) or len(replacement.outputs) != len(cs.outputs):
        raise IRError(f"replacement has {len(replacement.inputs)} inputs/{len(replacement.outputs)} outputs; the "
                      f"segment's boundary has {len(cs.inputs)}/{len(cs.outputs)}")
    for rv, pv in zip(replacement.outputs, cs.outputs, strict=True):
        if rv.type != pv.type:
            raise IRError(f"replacement output %{rv.name} is {rv.type}; the graph needs {pv.type} for %{pv.name}")
    aligned = [cs.nodes[k] if k < len(cs.nodes) and node_label(cs.nodes[k]) == node_label(rn) else None
               for k, rn in enumerate(replacement.nodes)]
    prov = dict(provenance or {"pass": "autogo.replace", "replaced": [n.name for n in cs.nodes]})
    child, _, _ = _stitch(graph, cs.nodes, cs.inputs, cs.outputs, replacement, aligned, tag, prov)
    verify(child, check_types=full_verify)
    return child


def mutate(graph: Graph, db: SegmentDB, vocab: Vocabulary | None = None, rng=None, *, sparsity: float = 0.5,
           max_run: int = 3, low_flops_frac: float = 0.5, low_flops_k: int = 5, max_sources: int = 8,
           max_candidates: int = 6, allow_propagation: bool = True, max_nodes: int | None = None,
           solve_time_limit: float = 1.0, full_verify: bool = False,
           reasons: list[str] | None = None) -> Mutant | None:
    """One AutoGO mutation of ``graph`` (see module docstring); ``None`` when no attempt succeeds.

    ``rng``: a ``numpy.random.Generator``, a ``random.Random`` or a seed. ``vocab`` defaults to the database's.
    Tries up to ``max_sources`` source runs and ``max_candidates`` database segments per source.
    ``full_verify`` re-infers every node of the mutant (slow: meta-tensor inference); by default only the
    replacement is inferred and the rest is checked structurally, which is sufficient because the boundary
    types are checked to be unchanged.
    """
    vocab = vocab if vocab is not None else db.vocab
    if vocab is None:
        raise ValueError("mutate(): the segment database carries no vocabulary; pass vocab=")
    rng = _numpy_rng(rng)
    why = reasons if reasons is not None else []
    ctx = _context(graph)
    segs = partition(graph, vocab, rng, sparsity, order=ctx.order)
    runs = source_runs(segs, ctx, max_run)
    if not runs:
        why.append("no segment run avoids the graph inputs, outputs and head")
        return None
    by_flops = sorted(runs, key=lambda r: (r[2], r[0], r[1]))
    tag_k = int(graph.meta.get("autogo_mutations", 0)) + 1
    tag = f"autogo{tag_k}"
    attempts = 0
    for _ in range(max_sources):
        if rng.random() < low_flops_frac:
            i, L, _f = by_flops[int(rng.integers(min(low_flops_k, len(by_flops))))]
            selection = "low-flops"
        else:
            i, L, _f = runs[int(rng.integers(len(runs)))]
            selection = "random"
        run = segs[i:i + L]
        src_nodes = _with_own_weights([n for s in run for n in s.nodes])
        if not src_nodes:
            why.append(f"source {[s.names for s in run]}: only weights of layers outside it")
            continue
        try:
            cs = canonical_segment(graph, src_nodes)
        except IRError as e:
            why.append(f"source {[n.name for n in src_nodes]}: {e}")
            continue
        if not cs.inputs:
            why.append(f"source {cs.nodes[0].name}...: computes only on constants")
            continue
        in_res = [resolution(v.shape) for v in cs.inputs]
        out_res = [resolution(v.shape) for v in cs.outputs]
        # Resolution propagation only where the source's boundary is made of NCHW feature maps or of tokens.
        boundary = (*cs.inputs, *cs.outputs)
        can_prop: bool | str = allow_propagation
        if allow_propagation and not any(all(id(v) in ctx.extra[k] for v in boundary) for k in ("nchw", "nlc")):
            can_prop = ("the source boundary is neither all NCHW feature maps nor all (N, L, C) tokens "
                        "(resolution propagation needs one of them)")
        cands = db.query(len(cs.inputs), len(cs.outputs), in_res, out_res,
                         mode="any" if can_prop is True else "exact", max_nodes=max_nodes)
        ranks = (_ranks(in_res), _ranks(out_res))
        cands = [r for r in cands if not (r.key == cs.key and isomorphic(r.nx(), cs.nx))  # not the source
                 and (_ranks(r.in_shapes), _ranks(r.out_shapes)) == ranks]
        if not cands:
            why.append(f"no database segment has {len(cs.inputs)} input(s) and {len(cs.outputs)} output(s) "
                       f"fitting {in_res} -> {out_res}")
            continue
        for ci in rng.permutation(len(cands))[:max_candidates]:
            rec = cands[int(ci)]
            attempts += 1
            fit = _fit(rec, cs, in_res, out_res, can_prop, solve_time_limit)
            if isinstance(fit, str):
                why.append(f"segment #{rec.id}: {fit}")
                continue
            pin, pout, assignment, kind = fit
            res = _try_candidate(graph, cs, run, rec, pin, pout, assignment, kind, rng, tag, selection, why,
                                 full_verify)
            if res is not None:
                res.mutation.attempts = attempts
                return res
    return None


def _try_candidate(graph: Graph, cs: CanonicalSegment, run: list[Segment], rec: SegmentRecord,
                   pin: tuple[int, ...], pout: tuple[int, ...], assignment: Assignment | None, kind: str,
                   rng: np.random.Generator, tag: str, selection: str, why: list[str],
                   full_verify: bool = False) -> Mutant | None:
    ins = [cs.inputs[p] for p in pin]
    outs = [cs.outputs[p] for p in pout]
    try:
        rep = instantiate(rec.graph(), assignment, [v.type for v in ins], rng, name=f"segment{rec.id}")
    except (ShapeInferenceError, IRError, ValueError, KeyError) as e:
        why.append(f"segment #{rec.id}: cannot instantiate ({e})")
        return None
    for rv, pv in zip(rep.outputs, outs, strict=True):
        # dim 0 too: it is the batch only for activations; a shape vector's length (e.g. the (3,) target of an
        # expand) must not change either
        if resolution(rv.shape) != resolution(pv.shape) or rv.dtype != pv.dtype or not _same_dim0(rv, pv):
            why.append(f"segment #{rec.id}: output {rv.type} does not match {pv.type}")
            return None
    rep_nx = segment_nx(rep)
    if isomorphic(rep_nx, cs.nx) if len(rep) == len(cs.graph) else False:
        why.append(f"segment #{rec.id}: instantiated replacement equals the source")
        return None
    src_sorted = cs.nodes
    aligned = [src_sorted[k] if k < len(src_sorted) and node_label(src_sorted[k]) == node_label(rn) else None
               for k, rn in enumerate(rep.nodes)]
    prov = {"pass": "autogo.mutate", "mutation": tag, "db_segment": rec.id, "fit": kind,
            "replaced": [n.name for n in cs.nodes]}
    try:
        child, new_names, carried = _stitch(graph, cs.nodes, ins, outs, rep, aligned, tag, prov)
        # Kept nodes see inputs of unchanged types (boundary types are checked above) and the replacement's
        # nodes were shape-inferred by instantiate(), so a structural check suffices unless asked for more.
        verify(child, check_types=full_verify)
    except (VerificationError, IRError, ShapeInferenceError) as e:
        why.append(f"segment #{rec.id}: {e}")
        return None
    for a, b in zip(graph.outputs, child.outputs, strict=True):
        if a.type != b.type:
            why.append(f"segment #{rec.id}: graph output {a.name} changed type {a.type} -> {b.type}")
            return None
    child.meta["autogo_mutations"] = int(graph.meta.get("autogo_mutations", 0)) + 1
    fb = _context(graph).extra.setdefault("flops", graph_cost(graph).flops)
    src_f = [node_cost(n).flops for n in cs.nodes]
    rep_f = graph_cost(rep).flops
    fa = None if fb is None or rep_f is None or None in src_f else fb - sum(src_f) + rep_f
    m = Mutation(tag, [n.name for n in cs.nodes], [s.names for s in run], selection, rec.id, list(rec.ops), kind,
                 new_names, carried, fb, fa, assignment.solve_s if assignment is not None else 0.0)
    return Mutant(child, m)
