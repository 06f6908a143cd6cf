"""Cost and latency of a candidate: analytic (FLOPs, params, activation memory from the op registry) and
measured (onnxruntime on the emitted ONNX, and the emitted PyTorch module).

Measurement protocol (documented because searches compare these numbers): warm-up runs first, then the
median of ``runs`` timed runs with a fixed thread count (default 1 thread, so two measurements on a 2-core
machine do not disturb each other); inputs are seeded random tensors of the graph's static input shapes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..ir.cost import graph_cost
from ..ir.graph import Graph


@dataclass
class CostReport:
    flops: int | None
    params: int
    activation_bytes: int | None
    peak_activation_bytes: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def activation_memory(graph: Graph) -> tuple[int | None, int | None]:
    """(sum of all activation bytes, peak bytes live at once when run in the graph's order).

    Liveness: a node output is live from its producer until its last consumer (graph outputs stay live).
    """
    order = graph.nodes
    pos = {id(n): i for i, n in enumerate(order)}
    outs = {id(v) for v in graph.outputs}
    events: list[tuple[int, int]] = []
    total = 0
    for i, n in enumerate(order):
        for o in n.outputs:
            nb = o.type.nbytes() if o.type is not None else None
            if nb is None:
                return None, None
            total += nb
            last = len(order) if id(o) in outs else max((pos[id(u.node)] for u in o.uses), default=i)
            events.append((i, nb))
            events.append((last + 1, -nb))
    for v in graph.inputs:
        nb = v.type.nbytes() if v.type is not None else None
        if nb is None:
            return None, None
        last = max((pos[id(u.node)] for u in v.uses), default=0)
        events.append((0, nb))
        events.append((last + 1, -nb))
    live = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        live += delta
        peak = max(peak, live)
    return total, peak


def analytic_cost(graph: Graph) -> CostReport:
    c = graph_cost(graph)
    total, peak = activation_memory(graph)
    return CostReport(c.flops, c.params, total, peak)


def _static_inputs(graph: Graph, batch: int = 1, seed: int = 0) -> list[np.ndarray]:
    from ..compare import random_inputs

    return random_inputs([v.type for v in graph.inputs], seed=seed, sym_value=batch)  # type: ignore[misc]


def _median_time(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def onnx_latency(model_or_path, inputs: list[np.ndarray] | None = None, *, threads: int = 1, warmup: int = 5,
                 runs: int = 20) -> float:
    """Median seconds per run of an ONNX model (or IR graph, emitted first) in onnxruntime on CPU."""
    import onnxruntime as ort

    if isinstance(model_or_path, Graph):
        from ..backends.onnx import to_onnx

        if inputs is None:
            inputs = _static_inputs(model_or_path)
        model_or_path = to_onnx(model_or_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    if inputs is None:
        from ..compare import input_types_of, random_inputs

        inputs = random_inputs(input_types_of(model_or_path) or [], sym_value=1)
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), inputs, strict=False)}
    return _median_time(lambda: sess.run(None, feeds), warmup, runs)


def torch_latency(module_or_graph, inputs: list | None = None, *, threads: int = 1, warmup: int = 3,
                  runs: int = 20) -> float:
    """Median seconds per forward (no grad, eval mode) of a module or an IR graph's emitted module."""
    import torch

    if isinstance(module_or_graph, Graph):
        from ..backends.torch import to_torch

        if inputs is None:
            inputs = _static_inputs(module_or_graph)
        module_or_graph = to_torch(module_or_graph)
    model = module_or_graph.eval()
    tin = [torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x for x in (inputs or [])]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return _median_time(lambda: model(*tin), warmup, runs)
    finally:
        torch.set_num_threads(old)
