"""The analytic NPU estimate (:func:`graphopt.npu.latency.estimate_latency`) made fast to re-evaluate under other
``[perf]`` figures, and calibrated against measurements. Graphs should be prepared as ``graphopt optimize``'s
``npu`` objective prepares them (``fuse-conv-bn,dce``: BatchNorm folded into the convolutions, as export does),
else every BatchNorm is priced as a host fallback.

:func:`roofline_terms` reads, per node, what the roofline of :mod:`graphopt.npu.latency` needs (MACs over the
channel-alignment utilization, output elements, bytes at the profile's activation dtype, FLOPs, whether the profile
accepts the node). :func:`roofline_ms` then evaluates the same formula for any figures, vectorized over many
networks; at the profile's own figures it equals ``estimate_latency`` (a test checks this). :func:`calibrate_perf`
fits the figures (MAC throughput, vector throughput, bandwidth; optionally a per-node overhead, which the current
``[perf]`` table has no key for) to measured latencies by least relative squared error in log-parameter space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.ir.graph import Graph

_FREE = {"shape", "memory"}
_DTYPE_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "fp16": 2, "fp32": 4}
MAC, VEC, FREE, HOST = 0, 1, 2, 3


@dataclass
class RooflineTerms:
    """Per node of a set of networks: ``net`` index, class (MAC/VEC/FREE/HOST), work (MACs/util, elements or
    FLOPs), bytes."""

    net: np.ndarray
    cls: np.ndarray
    work: np.ndarray
    nbytes: np.ndarray
    n_nets: int


def roofline_terms(graphs: list[Graph], profile) -> RooflineTerms:
    from graphopt.ir.cost import node_cost
    from graphopt.ir.registry import get_op
    from graphopt.npu.latency import channel_utilization

    itemsize = _DTYPE_BYTES.get(profile.activation_dtype, 4)
    net, cls, work, nb = [], [], [], []
    for gi, g in enumerate(graphs):
        for n in g.nodes:
            opdef = get_op(n.op)
            b = 0
            for v in list(n.inputs) + list(n.outputs):
                if v is not None and v.type is not None and v.type.shape is not None:
                    b += _numel(v.type.shape) * itemsize
            flops = node_cost(n).flops or 0
            accepted = opdef.category in _FREE or opdef.category == "quant" or (
                opdef.onnx is not None and profile.allows(opdef.onnx))
            if not accepted:
                c, w = HOST, float(flops)
            elif opdef.category in _FREE:
                c, w = FREE, 0.0
            elif opdef.category in ("conv", "matmul"):
                c, w = MAC, (flops / 2) / channel_utilization(n, opdef.category, profile)
            else:
                c, w = VEC, float(sum(_numel(o.type.shape) for o in n.outputs
                                      if o.type is not None and o.type.shape is not None))
            net.append(gi)
            cls.append(c)
            work.append(w)
            nb.append(float(b))
    return RooflineTerms(np.array(net, dtype=np.int64), np.array(cls, dtype=np.int8), np.array(work),
                         np.array(nb), len(graphs))


def _numel(shape) -> int:
    n = 1
    for d in shape or ():
        n *= d if isinstance(d, int) else 1
    return n


def perf_vector(perf) -> dict[str, float]:
    return {"macs_per_cycle": perf.macs_per_cycle, "clock_mhz": perf.clock_mhz, "bandwidth_gbps": perf.bandwidth_gbps,
            "vector_ops_per_cycle": perf.vector_ops_per_cycle, "host_gflops": perf.host_gflops,
            "fallback_overhead_us": perf.fallback_overhead_us}


def roofline_ms(t: RooflineTerms, perf: dict[str, float], node_overhead_us: float = 0.0) -> np.ndarray:
    """Per network: the analytic estimate (ms) under ``perf`` (keys of the ``[perf]`` table), plus
    ``node_overhead_us`` per non-free node (not a key of the current table; see :func:`calibrate_perf`)."""
    clock = perf["clock_mhz"] * 1e6
    mem = t.nbytes / (perf["bandwidth_gbps"] * 1e9)
    us = np.zeros(len(t.cls))
    m = t.cls == MAC
    us[m] = np.maximum(t.work[m] / (perf["macs_per_cycle"] * clock), mem[m]) * 1e6
    v = t.cls == VEC
    us[v] = np.maximum(t.work[v] / (perf["vector_ops_per_cycle"] * clock), mem[v]) * 1e6
    h = t.cls == HOST
    us[h] = (t.work[h] / (perf["host_gflops"] * 1e9) + mem[h]) * 1e6 + perf["fallback_overhead_us"]
    if node_overhead_us:
        us[t.cls != FREE] += node_overhead_us
    return np.bincount(t.net, weights=us, minlength=t.n_nets) / 1e3


def calibrate_perf(t: RooflineTerms, y_ms: np.ndarray, perf: dict[str, float], *, node_overhead: bool = False
                   ) -> tuple[dict[str, float], float]:
    """Fit ``macs_per_cycle``, ``vector_ops_per_cycle``, ``bandwidth_gbps`` and ``fallback_overhead_us``
    (``clock_mhz`` and ``host_gflops`` kept) -- and with ``node_overhead`` a per-node overhead in µs -- to measured
    latencies ``y_ms``, minimizing the
    mean squared relative error: a coarse log-grid (each figure 1/1000x to 1000x the current one), then Nelder-Mead
    from the best point, bounded to that range. Returns (figures, per-node overhead µs)."""
    import itertools

    from scipy.optimize import minimize

    keys = ["macs_per_cycle", "vector_ops_per_cycle", "bandwidth_gbps", "fallback_overhead_us"]
    base = np.log([perf[k] for k in keys])
    y = np.asarray(y_ms, dtype=np.float64)
    span = np.log(1000.0)

    def unpack(x):
        x = np.asarray(x, dtype=np.float64)
        p = dict(perf)
        for k, v in zip(keys, np.exp(base + np.clip(x[:4], -span, span)), strict=True):
            p[k] = float(v)
        return p, (float(np.exp(np.clip(x[4], -10.0, 10.0))) if node_overhead else 0.0)

    def loss(x):
        p, o = unpack(x)
        r = (roofline_ms(t, p, o) - y) / y
        return float(np.mean(r ** 2))

    grid = np.linspace(-span, span, 7)
    ovh = np.linspace(-4.0, 6.0, 6) if node_overhead else [None]
    best_x, best_f = None, np.inf
    for g in itertools.product(grid, grid, grid, grid[::2], ovh):
        x = np.array([v for v in g if v is not None])
        f = loss(x)
        if f < best_f:
            best_x, best_f = x, f
    res = minimize(loss, best_x, method="Nelder-Mead", options={"maxiter": 3000, "xatol": 1e-4, "fatol": 1e-10})
    return unpack(res.x if res.fun < best_f else best_x)
