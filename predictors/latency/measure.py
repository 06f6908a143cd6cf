"""Measured latency on this machine: onnxruntime wall time plus per-node times from onnxruntime's own profiler,
mapped back onto the IR nodes they execute.

**Protocol.** The graph is emitted to ONNX (:func:`graphopt.backends.onnx.to_onnx`) and loaded into two
onnxruntime CPU sessions with the same options (``threads`` intra-op threads, sequential execution, all graph
optimizations): a plain one, whose wall time per run is the latency, and a profiling one
(``SessionOptions.enable_profiling``), whose ``*_kernel_time`` events give each executed node's time. After
``warmup`` runs of each, ``rounds`` rounds alternate ``runs / rounds`` timed runs of the plain session with as many
of the profiling one, so a change of machine load hits both alike. Latency = median of the plain runs, with the
10th/90th percentiles and the relative inter-quartile range as the spread. With one thread, onnxruntime computes
in the calling thread, so the median *thread CPU time* per run (``cpu_ms``) is the *quiet* latency: what the run
takes when no other process preempts it. On the loaded 2-core machine (a training beside it, load average 5-9) a
network measured 12-25 ms wall per run and 4.2-4.4 ms CPU time -- whole scheduler quanta of other processes
inside the wall time; the CPU time repeats within 2 %, and it is what the ``cpu-ort`` predictor predicts. A
node's time = mean of its fastest quarter of the profiled runs (the sum of its events in each run): robust to the
runs the OS preempts, and unlike a median or a minimum it keeps sub-microsecond kernels from rounding to zero (the
profiler reports whole microseconds).

**Mapping to IR nodes.** onnxruntime rewrites the graph before it runs it: it fuses Conv+BatchNorm+ReLU, MatMul+Add
into Gemm, inserts NCHWc layout reorders, renames tensors. The optimized graph is saved
(``optimized_model_filepath``) and matched to the emitted one:

1. *anchors*: a tensor of the optimized graph that exists by name in the emitted graph, or the outputs of the
   emitted node whose name an optimized node carries (``conv1_nchwc`` -> ``conv1``, ``fc/MatMulAddFusion`` -> ``fc``);
2. an optimized node with anchors covers the emitted nodes in the backward cone of its anchors, stopping at any
   other anchor, graph input or initializer (constant-folded values are initializers of the optimized graph);
3. an optimized node without anchors (a layout reorder, an inserted reshape) joins the first anchored node
   downstream of it (upstream if none);
4. emitted nodes map to IR nodes: each IR node's outputs keep their names, and the helper nodes of a decomposition
   feed forward into the node that writes the IR output.

Each optimized node's time is given to the IR node with the most FLOPs in its cover (the conv of a fused
Conv+BN+ReLU); the other covered IR nodes are ``fused`` into it. IR nodes in no cover were computed from constants
(``folded``, done once at load time) or removed (dead code). So every IR node is accounted for, and the per-IR-node
times sum exactly to the profiler's total.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph


@dataclass
class OrtNode:
    """One node of onnxruntime's optimized graph, with its time and the IR nodes it executes."""

    name: str
    op_type: str
    us: float
    ir_nodes: list[str]
    primary: str | None
    attached_to: str | None = None  # set for nodes without anchors (their time goes to that node's primary)


@dataclass
class ProfileResult:
    model: str
    threads: int
    runs: int
    latency_ms: float
    p10_ms: float
    p90_ms: float
    iqr_rel: float
    profiled_ms: float
    kernel_sum_ms: float
    ort_nodes: list[OrtNode]
    node_us: dict[str, float]
    node_status: dict[str, str]
    kernels: list[dict[str, Any]]
    load_avg: list[float] = field(default_factory=list)
    run_ms: list[float] = field(default_factory=list)
    min_ms: float = 0.0
    cpu_ms: float | None = None  # median thread CPU time per run (threads == 1): the quiet latency

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ort_nodes"] = [asdict(n) for n in self.ort_nodes]
        return d

    def status_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.node_status.values():
            k = s.split(":", 1)[0]
            out[k] = out.get(k, 0) + 1
        return out


def static_graph(graph: Graph, sym_value: int = 1) -> Graph:
    """A copy of ``graph`` with every symbolic input dim bound to ``sym_value`` (the batch, usually), re-inferred."""
    if all(v.type is None or v.type.shape is None or all(isinstance(d, int) for d in v.type.shape)
           for v in graph.inputs):
        return graph
    from graphopt.ir.infer import set_input_shapes

    g = graph.copy()
    set_input_shapes(g, {v.name: [d if isinstance(d, int) else sym_value for d in v.type.shape]
                         for v in g.inputs if v.type is not None and v.type.shape is not None})
    return g


def _session(model_bytes: bytes, threads: int, profile_prefix: str | None = None, optimized_path: str | None = None):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.log_severity_level = 3  # the "optimized model may be hardware specific" warning is expected
    if profile_prefix:
        o.enable_profiling = True
        o.profile_file_prefix = profile_prefix
    if optimized_path:
        o.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model_bytes, o, providers=["CPUExecutionProvider"])


def _quiet_mean(xs: list[float], share: float = 0.25) -> float:
    """Mean of the lowest ``share`` of the values: the time of the runs no other process slowed down."""
    if not xs:
        return 0.0
    s = sorted(xs)
    k = max(1, int(round(len(s) * share)))
    return float(sum(s[:k]) / k)


def profile_graph(graph: Graph, *, threads: int = 1, runs: int = 40, warmup: int = 5, rounds: int = 4,
                  seed: int = 0, name: str | None = None, opset: int = 18) -> ProfileResult:
    """Measure ``graph`` (symbolic dims bound to 1) with onnxruntime on CPU; see the module doc."""
    import onnx

    from graphopt.backends.onnx import to_onnx
    from graphopt.compare import random_inputs

    if runs < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f"runs ({runs}) and rounds ({rounds}) must be >= 1, warmup ({warmup}) >= 0")
    g = static_graph(graph)
    emitted = to_onnx(g, opset=opset)
    data = emitted.SerializeToString()
    inputs = random_inputs([v.type for v in g.inputs], seed=seed, sym_value=1)  # type: ignore[misc]
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="graphopt-profile-") as tmp:
        opt_path = os.path.join(tmp, "optimized.onnx")
        plain = _session(data, threads)
        prof = _session(data, threads, os.path.join(tmp, "ort"), opt_path)
        feeds_p = {i.name: x for i, x in zip(plain.get_inputs(), inputs, strict=False)}
        feeds_q = {i.name: x for i, x in zip(prof.get_inputs(), inputs, strict=False)}
        for _ in range(warmup):
            plain.run(None, feeds_p)
        for _ in range(warmup):
            prof.run(None, feeds_q)
        per_round = max(1, runs // rounds)
        plain_t: list[float] = []
        cpu_t: list[float] = []
        prof_t: list[float] = []
        for _ in range(rounds):
            for _ in range(per_round):
                t0, c0 = time.perf_counter(), time.thread_time()
                plain.run(None, feeds_p)
                cpu_t.append(time.thread_time() - c0)
                plain_t.append(time.perf_counter() - t0)
            for _ in range(per_round):
                t0 = time.perf_counter()
                prof.run(None, feeds_q)
                prof_t.append(time.perf_counter() - t0)
        trace = prof.end_profiling()
        events = json.loads(Path(trace).read_text())
        optimized = onnx.load(opt_path, load_external_data=False) if os.path.exists(opt_path) else None
        Path(trace).unlink(missing_ok=True)
    times, seq = _node_times(events, skip_runs=warmup)
    res = map_profile(g, emitted, optimized, times, seq)
    q = np.percentile(np.array(plain_t) * 1e3, [10, 25, 50, 75, 90])
    return ProfileResult(
        model=name or g.name, threads=threads, runs=len(plain_t), latency_ms=float(q[2]), p10_ms=float(q[0]),
        p90_ms=float(q[4]), iqr_rel=float((q[3] - q[1]) / q[2]) if q[2] > 0 else 0.0,
        profiled_ms=float(statistics.median(prof_t) * 1e3), kernel_sum_ms=sum(times.values()) / 1e3,
        ort_nodes=res["ort_nodes"], node_us=res["node_us"], node_status=res["node_status"],
        kernels=res["kernels"], load_avg=load, run_ms=[round(t * 1e3, 4) for t in plain_t],
        min_ms=float(min(plain_t) * 1e3), cpu_ms=float(statistics.median(cpu_t) * 1e3) if threads == 1 else None)


def _node_times(events: list[dict[str, Any]], skip_runs: int) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """(per optimized-graph node: mean of its fastest quarter of the profiled runs (after ``skip_runs``), in µs;
    the (event name, op type) of every node in order of first execution). Unnamed nodes appear as
    ``OpType_<node index>``."""
    seq: list[tuple[str, str]] = []
    seen: set[str] = set()
    for e in sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")),
                    key=lambda e: e["ts"]):
        k = e["name"][:-12]
        if k not in seen:
            seen.add(k)
            seq.append((k, str(e.get("args", {}).get("op_name", ""))))
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                  and e.get("name") == "model_run")
    runs = runs[skip_runs:]
    node_ev = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    if not runs:  # no run markers: every event counts, one run
        per: dict[str, list[float]] = {}
        for e in node_ev:
            per.setdefault(e["name"][:-12], [0.0])[0] += float(e["dur"])
        return {k: v[0] for k, v in per.items()}, seq
    starts = np.array([r[0] for r in runs])
    acc: dict[str, np.ndarray] = {}
    for e in node_ev:
        i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if i < 0 or e["ts"] > runs[i][1]:
            continue
        a = acc.setdefault(e["name"][:-12], np.zeros(len(runs)))
        a[i] += float(e["dur"])
    return {k: _quiet_mean(list(v)) for k, v in acc.items()}, seq


_SUFFIXES = ("_nchwc", "_new_reshape")
LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput"})
"""onnxruntime's NCHWc layout conversions: no IR node computes them; their time goes to the kernel they serve."""
FUSABLE_AFTER = frozenset({"Add", "Sum", "Mul", "Sub", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu",
                           "HardSigmoid", "BatchNormalization", "Identity"})
"""Emitted ops a fused kernel (NCHWc Conv with Sum + activation, Gemm from MatMul + Add) can absorb after its
named node."""


def _strip_name(name: str) -> str:
    base = name.split("/", 1)[0]
    changed = True
    while changed:
        changed = False
        for s in _SUFFIXES:
            if base.endswith(s):
                base = base[: -len(s)]
                changed = True
    return base


def map_profile(graph: Graph, emitted, optimized, times: dict[str, float],
                seq: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """IR-level attribution of per-node profiler times (see the module doc). ``optimized`` may be None (the
    optimized graph could not be saved): then names must match the emitted graph's. ``seq``: the profiler's
    (event name, op type) in execution order, which names the optimized graph's unnamed nodes (onnxruntime calls
    them ``OpType_<index>``; they are matched per op type in graph order)."""
    from .kernels import const_derived, node_flops

    # emitted graph: producers, IR node of each emitted node
    E = list(emitted.graph.node)
    prod_e: dict[str, int] = {}
    for i, n in enumerate(E):
        for t in n.output:
            if t:
                prod_e[t] = i
    cons_e: dict[str, list[int]] = {}
    for i, n in enumerate(E):
        for t in n.input:
            cons_e.setdefault(t, []).append(i)
    ir_prod = {o.name: n for n in graph.nodes for o in n.outputs}
    e_ir: list[str | None] = [None] * len(E)
    for i, n in enumerate(E):
        hit = next((ir_prod[t].name for t in n.output if t in ir_prod), None)
        e_ir[i] = hit
    for i in range(len(E) - 1, -1, -1):  # helper nodes of a decomposition: the IR node they feed
        if e_ir[i] is None:
            for t in E[i].output:
                nxt = [j for j in cons_e.get(t, []) if e_ir[j] is not None]
                if nxt:
                    e_ir[i] = e_ir[nxt[0]]
                    break
    e_by_name = {n.name: i for i, n in enumerate(E) if n.name}
    P = list(optimized.graph.node) if optimized is not None else E
    keys = [p.name for p in P]
    if seq and any(not k for k in keys):
        named = set(keys)
        queues: dict[str, list[str]] = {}
        for ev, op in seq:
            if ev not in named:
                queues.setdefault(op, []).append(ev)
        for i, p in enumerate(P):
            if not p.name and queues.get(p.op_type):
                keys[i] = queues[p.op_type].pop(0)
    p_inits = {t.name for t in optimized.graph.initializer} if optimized is not None else set()
    stop = {v.name for v in emitted.graph.input} | {t.name for t in emitted.graph.initializer} | p_inits
    anchors: list[list[str]] = []
    named: list[int | None] = []
    for p in P:
        if p.op_type in LAYOUT_OPS:  # same values in another layout: attached to the kernel they serve
            stop.update(t for t in p.output if t)
            anchors.append([])
            named.append(None)
            continue
        a = [t for t in p.output if t in prod_e]
        j = e_by_name.get(p.name, e_by_name.get(_strip_name(p.name)))
        if j is not None:
            a += [t for t in E[j].output if t and t not in a]
        anchors.append(a)
        named.append(j)
    # a layout conversion back to the emitted layout (ReorderOutput) writes the value its producer computed: that
    # value anchors the producer
    p_prod0 = {t: i for i, p in enumerate(P) for t in p.output if t}
    for p in P:
        if p.op_type in LAYOUT_OPS and any(t in prod_e for t in p.output):
            src = p
            while src.op_type in LAYOUT_OPS and src.input and src.input[0] in p_prod0:
                src = P[p_prod0[src.input[0]]]
            if src is not p and src.op_type not in LAYOUT_OPS:
                k = P.index(src)
                anchors[k] += [t for t in p.output if t in prod_e and t not in anchors[k]]
    for a in anchors:
        stop.update(a)
    anchor_e = {prod_e[t] for a in anchors for t in a if t in prod_e}
    flops = {n.name: node_flops(n) for n in graph.nodes}
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    claimed: dict[int, int] = {}  # emitted node -> optimized node that covers it (covers are disjoint)
    # a name-matched node whose anchor is not a tensor of the optimized graph fused what follows it (NCHWc Conv
    # with a Sum input and an activation, Gemm from MatMul+Add): extend along single-consumer chains up to the
    # next anchor
    own: dict[str, set[int]] = {}
    for i, a in enumerate(anchors):
        for t in a:
            own.setdefault(t, set()).add(i)
    for i, j in enumerate(named):
        if j is None or any(t in p_tensors(P[i]) for t in E[j].output):
            continue
        cur = j
        while True:
            outs = [t for t in E[cur].output if t]
            if len(outs) != 1 or (outs[0] in stop and own.get(outs[0], set()) - {i}) or (
                    outs[0] in stop and outs[0] not in own):
                break
            cons = cons_e.get(outs[0], [])
            if (len(cons) != 1 or cons[0] in anchor_e or cons[0] in claimed
                    or E[cons[0]].op_type not in FUSABLE_AFTER):
                break
            cur = cons[0]
            claimed[cur] = i
    covers: list[list[str]] = []
    cover_e: list[set[int]] = []
    for i, a in enumerate(anchors):
        seen_e: set[int] = set()
        stack = [prod_e[t] for t in a if t in prod_e]
        while stack:
            k = stack.pop()
            if k in seen_e or claimed.get(k, i) != i:
                continue
            seen_e.add(k)
            for t in E[k].input:
                if t and t not in stop and t in prod_e:
                    stack.append(prod_e[t])
        seen_e |= {k for k, owner in claimed.items() if owner == i}
        for k in seen_e:
            claimed.setdefault(k, i)
        cover_e.append(seen_e)
    for i in range(len(P)):
        mine = {k for k in cover_e[i] if claimed.get(k) == i}
        irs = sorted({e_ir[k] for k in mine if e_ir[k] is not None}, key=lambda s: order.get(s, 0))
        covers.append(irs)
    # optimized nodes without a cover join an anchored node downstream (else upstream)
    p_prod = {t: i for i, p in enumerate(P) for t in p.output if t}
    p_cons: dict[str, list[int]] = {}
    for i, p in enumerate(P):
        for t in p.input:
            p_cons.setdefault(t, []).append(i)
    attached: dict[int, int] = {}
    for i in range(len(P)):
        if covers[i]:
            continue
        fwd = P[i].op_type != "ReorderOutput"  # a ReorderOutput serves its producer, anything else its consumer
        target = _walk(i, P, covers, p_cons if fwd else p_prod, forward=fwd)
        if target is None:
            target = _walk(i, P, covers, p_prod if fwd else p_cons, forward=not fwd)
        if target is not None:
            attached[i] = target
    primary: list[str | None] = []
    for i in range(len(P)):
        cov = covers[i] if covers[i] else (covers[attached[i]] if i in attached else [])
        primary.append(max(cov, key=lambda s: (flops.get(s, 0), order.get(s, 0))) if cov else None)
    node_us = {n.name: 0.0 for n in graph.nodes}
    ort_nodes: list[OrtNode] = []
    unmapped = 0.0
    for i, p in enumerate(P):
        us = float(times.get(keys[i], 0.0))
        pr = primary[i]
        if pr is not None:
            node_us[pr] += us
        else:
            unmapped += us
        ort_nodes.append(OrtNode(keys[i], p.op_type, us, covers[i], pr,
                                 keys[attached[i]] if i in attached else None))
    status: dict[str, str] = {}
    for i in range(len(P)):
        for s in covers[i]:
            if s == primary[i]:
                status[s] = "timed"
    for i in range(len(P)):
        for s in covers[i]:
            status.setdefault(s, f"fused:{primary[i]}")
    folded = const_derived(graph, graph.nodes)
    for n in graph.nodes:
        if n.name not in status:
            status[n.name] = "folded" if id(n) in folded else "removed"
    # kernels: optimized nodes that share IR nodes, with everything they cover
    parent = list(range(len(P)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[str, int] = {}
    for i in range(len(P)):
        members = covers[i] if covers[i] else ([] if i not in attached else covers[attached[i]])
        for s in members:
            if s in owner:
                parent[find(i)] = find(owner[s])
            else:
                owner[s] = i
    comps: dict[int, list[int]] = {}
    for i in range(len(P)):
        comps.setdefault(find(i), []).append(i)
    kernels = []
    for idx in comps.values():
        irs = sorted({s for i in idx for s in (covers[i] or ([] if i not in attached else covers[attached[i]]))},
                     key=lambda s: order.get(s, 0))
        kernels.append({"ort_nodes": [keys[i] for i in idx], "ort_ops": [P[i].op_type for i in idx],
                        "ir_nodes": irs, "us": sum(float(times.get(keys[i], 0.0)) for i in idx)})
    kernels.sort(key=lambda k: -k["us"])
    missing = sum(v for k, v in times.items() if k not in set(keys))  # events of no optimized node
    if unmapped or missing:
        node_us["<unmapped>"] = unmapped + missing
    return {"ort_nodes": ort_nodes, "node_us": node_us, "node_status": status, "kernels": kernels}


def p_tensors(p) -> set[str]:
    return {t for t in list(p.input) + list(p.output) if t}


def _walk(i: int, P, covers, links: dict, forward: bool) -> int | None:
    seen = {i}
    frontier = [i]
    while frontier:
        nxt = []
        for j in frontier:
            tensors = P[j].output if forward else P[j].input
            for t in tensors:
                if forward:
                    cand = links.get(t, [])
                else:
                    cand = [links[t]] if t in links else []
                for c in cand:
                    if c in seen:
                        continue
                    if covers[c]:
                        return c
                    seen.add(c)
                    nxt.append(c)
        frontier = nxt
    return None

