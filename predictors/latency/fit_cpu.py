"""Fit the ``cpu-ort`` predictor (onnxruntime on this machine's CPU, 1 thread) on kernels it samples itself.

The fitting set is generated, never taken from the models the predictor is evaluated on: :func:`sample_graph` draws
small random networks from a space of blocks built directly in the IR --

* image blocks: Conv (kernel 1-11, stride 1/2/4, standard / depthwise / grouped) with optional BatchNorm, bias,
  activation (ReLU, ReLU6, sigmoid, SiLU, hard-swish, leaky ReLU) and residual Add; MobileNet inverted residuals
  with squeeze-excitation; Inception-style parallel branches + Concat; channel shuffle; max / average / global
  pooling; LRN; Pad; nearest Resize; ConvTranspose; GroupNorm; classifier heads (GAP or flatten + Gemm, big FC
  layers included);
* token blocks: multi-head self-attention (Q/K/V MatMul + bias, head split Reshape/Transpose, scaled QK^T,
  Softmax, AV, head merge, output projection, residual), MLPs (GELU/ReLU), LayerNorm, element-wise ops;

at random widths, resolutions and sequence lengths (each kernel kept under ~2 GFLOPs so a fit takes minutes).
Each network is measured by :func:`.measure.profile_graph`; its kernels (:func:`.kernels.group_kernels` with
:data:`.kernels.ORT_RULES`) are labelled with the profiler's per-IR-node times summed over the kernel's nodes. A
:class:`.models.GBM` learns ``log(time / base)`` per kernel; the per-run overhead (wall time minus the sum of the
kernel times: the executor's per-node cost and the run's fixed cost) is fitted as ``a + b * kernels`` by
non-negative least squares over the sampled networks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph, Value
from graphopt.ir.types import DType, TensorType

from .kernels import KINDS, ORT_RULES, feature_matrix, group_kernels
from .models import GBM
from .predictor import LatencyPredictor, gbm_base_us

MAX_KERNEL_FLOPS = 2.0e9
MAX_WEIGHTS = 3.0e7


class _Builder:
    def __init__(self, rng: np.random.Generator, name: str) -> None:
        self.g = Graph(name)
        self.rng = rng
        self.flops = 0.0

    def w(self, shape: tuple[int, ...], name: str = "w") -> Value:
        fan = max(1, int(np.prod(shape[1:]))) if len(shape) > 1 else 1
        arr = (self.rng.standard_normal(shape) / math.sqrt(fan)).astype(np.float32)
        return self.g.add_const(name, arr, "param")

    def node(self, op: str, ins: list, **attrs) -> Value:
        return self.g.create_node(op, ins, attrs).outputs[0]

    # ------------------------------------------------------------------- image ops
    def conv(self, x: Value, cout: int, k: int, s: int = 1, groups: int = 1, bias: bool = False) -> Value:
        cin = x.shape[1]
        p = k // 2
        ins = [x, self.w((cout, cin // groups, k, k))]
        if bias:
            ins.append(self.w((cout,), "b"))
        y = self.node("conv", ins, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], dilations=[1, 1],
                      group=groups)
        self.flops += 2.0 * np.prod(y.shape) * (cin // groups) * k * k
        return y

    def bn(self, x: Value) -> Value:
        c = x.shape[1]
        ones = self.g.add_const("bn_var", np.abs(self.rng.standard_normal(c)).astype(np.float32) + 0.5, "buffer")
        return self.node("batch_norm", [x, self.w((c,), "g"), self.w((c,), "b"), self.w((c,), "m"), ones])

    def act(self, x: Value, kind: str) -> Value:
        if kind == "none":
            return x
        if kind == "relu6":
            lo = self.g.add_const("lo", np.array(0.0, np.float32))
            hi = self.g.add_const("hi", np.array(6.0, np.float32))
            return self.node("clip", [x, lo, hi])
        return self.node(kind, [x])


def _pick(rng: np.random.Generator, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


ACTS = ("relu", "relu6", "none", "sigmoid", "silu", "hard_swish", "leaky_relu", "tanh")
ACT_P = (0.45, 0.15, 0.15, 0.06, 0.06, 0.06, 0.04, 0.03)


def _image_block(b: _Builder, x: Value) -> Value:
    rng = b.rng
    _, c, h, w = x.shape
    kind = _pick(rng, ("conv", "mbconv", "se", "pool", "inception", "shuffle", "lrn", "misc", "deconv", "norm"),
                 (0.42, 0.12, 0.06, 0.12, 0.07, 0.04, 0.04, 0.07, 0.03, 0.03))
    if kind == "conv":
        k = _pick(rng, (1, 3, 5, 7, 11), (0.35, 0.45, 0.1, 0.07, 0.03))
        s = _pick(rng, (1, 2, 4), (0.72, 0.25, 0.03)) if h >= 8 else 1
        gk = _pick(rng, ("std", "dw", "grp"), (0.6, 0.3, 0.1))
        if gk == "dw":
            cout, groups = c, c
        else:
            cout = _pick(rng, (8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024))
            groups = 1
            if gk == "grp":
                cand = [g for g in (2, 3, 4, 8, 16, 32) if c % g == 0 and cout % g == 0]
                groups = _pick(rng, cand) if cand else 1
        if 2.0 * cout * (h // s) * (w // s) * (c // groups) * k * k > MAX_KERNEL_FLOPS:
            return x
        use_bn = rng.random() < 0.65
        y = b.conv(x, cout, k, s, groups, bias=not use_bn and rng.random() < 0.7)
        if use_bn:
            y = b.bn(y)
        if s == 1 and cout == c and rng.random() < 0.3:
            y = b.node("add", [y, x])
        return b.act(y, _pick(rng, ACTS, ACT_P))
    if kind == "mbconv":
        t = _pick(rng, (1, 3, 4, 6))
        k = _pick(rng, (3, 5))
        s = _pick(rng, (1, 2)) if h >= 8 else 1
        act = _pick(rng, ("relu6", "silu", "hard_swish", "relu"))
        e = c * t
        if 2.0 * e * h * w * c * 2 + 2.0 * e * h * w * k * k > MAX_KERNEL_FLOPS:
            return x
        y = x
        if t > 1:
            y = b.act(b.bn(b.conv(y, e, 1)), act)
        y = b.act(b.bn(b.conv(y, e, k, s, groups=e)), act)
        if rng.random() < 0.4:
            y = _se(b, y)
        cout = c if s == 1 and rng.random() < 0.6 else _pick(rng, (16, 24, 32, 40, 64, 80, 96, 112, 160, 320))
        z = b.bn(b.conv(y, cout, 1))
        return b.node("add", [z, x]) if s == 1 and cout == c else z
    if kind == "se":
        return _se(b, x)
    if kind == "pool":
        op = _pick(rng, ("max_pool", "avg_pool"))
        k = _pick(rng, [k for k in (2, 3, 5) if k <= h] or [1])
        s = _pick(rng, (1, 2), (0.4, 0.6)) if h >= 4 else 1
        p = k // 2 if s == 1 or k >= 3 else 0
        attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
        if op == "avg_pool":
            attrs["count_include_pad"] = int(rng.random() < 0.5)
        return b.node(op, [x], **attrs)
    if kind == "inception":
        branches = []
        for _ in range(int(rng.integers(2, 5))):
            k = _pick(rng, (1, 3, 5))
            cout = _pick(rng, (16, 32, 48, 64, 96, 128, 192))
            if 2.0 * cout * h * w * c * k * k > MAX_KERNEL_FLOPS:
                continue
            y = b.conv(x, cout, k, bias=True)
            branches.append(b.act(y, "relu"))
        if rng.random() < 0.5:
            branches.append(b.node("max_pool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]))
        if len(branches) < 2:
            return x
        return b.node("concat", branches, axis=1)
    if kind == "shuffle":
        g = _pick(rng, [d for d in (2, 3, 4, 8) if c % d == 0] or [1])
        y = b.node("reshape", [x, b.g.add_const("shape", np.array([1, g, c // g, h, w], np.int64))])
        y = b.node("transpose", [y], perm=[0, 2, 1, 3, 4])
        return b.node("reshape", [y, b.g.add_const("shape", np.array([1, c, h, w], np.int64))])
    if kind == "lrn":
        return b.node("lrn", [x], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    if kind == "misc":
        op = _pick(rng, ("pad", "resize", "mul", "add", "slice", "reduce_mean", "concat_self"))
        if op == "pad":
            p = int(rng.integers(1, 3))
            return b.node("pad", [x, b.g.add_const("pads", np.array([0, 0, p, p, 0, 0, p, p], np.int64))])
        if op == "resize" and h <= 64 and c * h * w * 4 <= 4e6:
            return b.node("resize", [x, None, b.g.add_const("scales", np.array([1, 1, 2, 2], np.float32))],
                          mode="nearest")
        if op in ("mul", "add"):
            other = b.w((1, c, 1, 1), "s") if rng.random() < 0.5 else x
            return b.node(op, [x, other])
        if op == "slice" and h >= 4:
            return b.node("slice", [x, b.g.add_const("st", np.array([1, 1], np.int64)),
                                    b.g.add_const("en", np.array([h - 1, w - 1], np.int64)),
                                    b.g.add_const("ax", np.array([2, 3], np.int64))])
        if op == "reduce_mean":
            return b.node("reduce_mean", [x, b.g.add_const("axes", np.array([1], np.int64))], keepdims=1)
        return b.node("concat", [x, x], axis=1) if c * h * w * 8 <= 8e6 else x
    if kind == "deconv" and h <= 56:
        cout = _pick(rng, (16, 32, 64, 128))
        if 2.0 * c * h * w * cout * 4 > MAX_KERNEL_FLOPS:
            return x
        y = b.node("conv_transpose", [x, b.w((c, cout, 2, 2))], kernel_shape=[2, 2], strides=[2, 2],
                   pads=[0, 0, 0, 0])
        return b.act(y, "relu")
    if kind == "norm":
        if rng.random() < 0.5 and c % 4 == 0:
            return b.node("group_norm", [x, b.w((c,), "g"), b.w((c,), "b")], num_groups=_pick(
                rng, [g for g in (1, 2, 4, 8, 16, 32) if c % g == 0]))
        return b.node("instance_norm", [x, b.w((c,), "g"), b.w((c,), "b")])
    return x


def _se(b: _Builder, x: Value) -> Value:
    c = x.shape[1]
    r = max(4, c // 4)
    s = b.node("global_avg_pool", [x])
    s = b.act(b.conv(s, r, 1, bias=True), "relu")
    s = b.node("sigmoid", [b.conv(s, c, 1, bias=True)])
    return b.node("mul", [x, s])


def _head(b: _Builder, x: Value) -> Value:
    rng = b.rng
    _, c, h, w = x.shape
    if rng.random() < 0.6 or c * h * w > 30000:
        y = b.node("flatten", [b.node("global_avg_pool", [x])], axis=1)
        k = c
    else:
        y = b.node("flatten", [x], axis=1)
        k = c * h * w
    for _ in range(int(rng.integers(1, 3))):
        n = _pick(rng, (10, 100, 256, 512, 1000, 1024, 2048, 4096))
        if k * n > MAX_WEIGHTS:
            n = max(10, int(MAX_WEIGHTS // k))
        y = b.node("gemm", [y, b.w((n, k)), b.w((n,), "b")], transB=1)
        if rng.random() < 0.5:
            y = b.act(y, "relu")
        k = n
    return y


def _token_block(b: _Builder, x: Value) -> Value:
    rng = b.rng
    _, t, d = x.shape
    kind = _pick(rng, ("attn", "attn_fused", "mlp", "ln", "misc", "math"), (0.25, 0.15, 0.3, 0.08, 0.1, 0.12))
    if kind == "attn_fused":  # one QKV projection, heads taken apart by Gather or Split (ViT / HF exports)
        heads = _pick(rng, [h for h in (1, 2, 3, 4, 6, 8, 12, 16) if d % h == 0 and d // h >= 16] or [1])
        hd = d // heads
        y = _ln(b, x)
        qkv = b.node("add", [b.node("matmul", [y, b.w((d, 3 * d))]), b.w((3 * d,), "b")])
        qkv = b.node("reshape", [qkv, b.g.add_const("shape", np.array([1, t, 3, heads, hd], np.int64))])
        qkv = b.node("transpose", [qkv], perm=[2, 0, 3, 1, 4])
        if rng.random() < 0.5:
            q, k, v = (b.node("gather", [qkv, b.g.add_const("i", np.array(j, np.int64))], axis=0) for j in range(3))
        else:
            parts = b.g.create_node("split", [qkv], {"axis": 0, "num_outputs": 3}).outputs
            q, k, v = (b.node("squeeze", [p_, b.g.add_const("ax", np.array([0], np.int64))]) for p_ in parts)
        s_ = b.node("mul", [b.node("matmul", [q, b.node("transpose", [k], perm=[0, 1, 3, 2])]),
                            b.g.add_const("scale", np.array(hd ** -0.5, np.float32))])
        o = b.node("matmul", [b.node("softmax", [s_], axis=-1), v])
        o = b.node("reshape", [b.node("transpose", [o], perm=[0, 2, 1, 3]),
                               b.g.add_const("shape", np.array([1, t, d], np.int64))])
        return b.node("add", [b.node("add", [b.node("matmul", [o, b.w((d, d))]), b.w((d,), "b")]), x])
    if kind == "math":  # element-wise math, scans, broadcasts (state-space and gating layers)
        op = _pick(rng, ("exp", "neg", "sqrt", "reciprocal", "softplus", "pow", "cumsum", "where", "expand",
                         "split_cat", "tanh", "sigmoid_mul"))
        if op in ("sqrt", "reciprocal"):
            return b.node(op, [b.node("add", [b.node("mul", [x, x]), b.g.add_const("eps", np.array(1.0, np.float32))])])
        if op == "pow":
            return b.node("pow", [x, b.g.add_const("p", np.array(2.0, np.float32))])
        if op == "cumsum":
            return b.node("cumsum", [x, b.g.add_const("axis", np.array(1, np.int64))])
        if op == "where":
            cond = b.node("greater", [x, b.g.add_const("z", np.array(0.0, np.float32))])
            return b.node("where", [cond, x, b.node("neg", [x])])
        if op == "expand":
            m = b.node("reduce_mean", [x, b.g.add_const("axes", np.array([1], np.int64))], keepdims=1)
            e = b.node("expand", [m, b.g.add_const("shape", np.array([1, t, d], np.int64))])
            return b.node("sub", [x, e])
        if op == "split_cat":
            parts = b.g.create_node("split", [x], {"axis": 2, "num_outputs": 2}).outputs if d % 2 == 0 else [x, x]
            return b.node("concat", [b.node("silu", [parts[0]]), parts[1]], axis=2)
        if op == "sigmoid_mul":
            return b.node("mul", [x, b.node("sigmoid", [x])])
        return b.node(op, [x])
    if kind == "attn":
        heads = _pick(rng, [h for h in (1, 2, 3, 4, 6, 8, 12, 16) if d % h == 0 and d // h >= 16] or [1])
        hd = d // heads
        y = _ln(b, x) if rng.random() < 0.8 else x

        def proj(v: Value, n: int) -> Value:
            return b.node("add", [b.node("matmul", [v, b.w((d, n))]), b.w((n,), "b")])

        def heads_of(v: Value, perm: list[int]) -> Value:
            r = b.node("reshape", [v, b.g.add_const("shape", np.array([1, t, heads, hd], np.int64))])
            return b.node("transpose", [r], perm=perm)

        q = heads_of(proj(y, d), [0, 2, 1, 3])
        k = heads_of(proj(y, d), [0, 2, 3, 1])
        v = heads_of(proj(y, d), [0, 2, 1, 3])
        s = b.node("mul", [b.node("matmul", [q, k]), b.g.add_const("scale", np.array(hd ** -0.5, np.float32))])
        a = b.node("softmax", [s], axis=-1)
        o = b.node("transpose", [b.node("matmul", [a, v])], perm=[0, 2, 1, 3])
        o = b.node("reshape", [o, b.g.add_const("shape", np.array([1, t, d], np.int64))])
        return b.node("add", [proj(o, d), x])
    if kind == "mlp":
        r = _pick(rng, (1, 2, 4))
        if 2.0 * t * d * d * r > MAX_KERNEL_FLOPS:
            return x
        y = _ln(b, x) if rng.random() < 0.7 else x
        y = b.node("add", [b.node("matmul", [y, b.w((d, d * r))]), b.w((d * r,), "b")])
        y = b.node(_pick(rng, ("gelu", "relu", "silu")), [y])
        y = b.node("add", [b.node("matmul", [y, b.w((d * r, d))]), b.w((d,), "b")])
        return b.node("add", [y, x])
    if kind == "ln":
        return _ln(b, x)
    op = _pick(rng, ("softmax", "transpose", "mul", "gelu", "reduce_mean"))
    if op == "softmax":
        return b.node("softmax", [x], axis=-1)
    if op == "transpose":
        y = b.node("transpose", [x], perm=[0, 2, 1])
        return b.node("transpose", [b.node("relu", [y])], perm=[0, 2, 1])
    if op == "mul":
        return b.node("mul", [x, b.w((d,), "s")])
    if op == "reduce_mean":
        m = b.node("reduce_mean", [x, b.g.add_const("axes", np.array([-1], np.int64))], keepdims=1)
        return b.node("sub", [x, m])
    return b.node("gelu", [x])


def _ln(b: _Builder, x: Value) -> Value:
    d = x.shape[-1]
    return b.node("layer_norm", [x, b.w((d,), "g"), b.w((d,), "b")], axis=-1)


def sample_graph(rng: np.random.Generator, name: str = "sample") -> Graph:
    """One random network of the sampling space (see the module doc)."""
    from graphopt.errors import USER_ERRORS

    for _ in range(20):  # a draw whose shapes do not work out (a pool larger than its input) is drawn again
        try:
            return _sample_graph(rng, name)
        except USER_ERRORS:
            continue
    raise RuntimeError("sample_graph: 20 draws in a row had invalid shapes")


def _sample_graph(rng: np.random.Generator, name: str) -> Graph:
    b = _Builder(rng, name)
    if rng.random() < 0.65:
        h = _pick(rng, (7, 8, 14, 16, 28, 32, 56, 64, 112, 224), (0.08, 0.08, 0.12, 0.12, 0.14, 0.14, 0.1, 0.08,
                                                                   0.08, 0.06))
        caps = [c for c in (3, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024) if c * h * h <= 1.6e6]
        c = _pick(rng, caps)
        x = b.g.add_input("x", TensorType(DType.float32, (1, c, h, h)))
        y = x
        for _ in range(int(rng.integers(2, 7))):
            if y.shape[1] * y.shape[2] * y.shape[3] > 4e6:
                break
            y = _image_block(b, y)
        if rng.random() < 0.35:
            y = _head(b, y)
    else:
        t = _pick(rng, (16, 32, 49, 64, 65, 128, 197, 256, 384, 512))
        d = _pick(rng, (64, 96, 128, 192, 256, 384, 512, 768, 1024))
        x = b.g.add_input("x", TensorType(DType.float32, (1, t, d)))
        y = x
        for _ in range(int(rng.integers(1, 5))):
            y = _token_block(b, y)
    if y is x:
        y = b.node("relu", [x])
    b.g.set_outputs([y])
    return b.g


# ------------------------------------------------------------------------------------------------- fitting
def kernel_record(kernels, labels_us: list[float], wall_ms: float, **extra) -> dict[str, Any]:
    """One measured network as plain data (JSON-serializable): kernel features, roofline bases, labels."""
    return {"X": feature_matrix(kernels).tolist() if kernels else [],
            "base": [gbm_base_us(k.feats) for k in kernels], "labels_us": [float(x) for x in labels_us],
            "kinds": [k.kind for k in kernels], "sigs": [k.sig for k in kernels], "wall_ms": float(wall_ms),
            "n_kernels": len(kernels), **extra}


def measure_samples(n: int, *, seed: int = 0, runs: int = 12, warmup: int = 2, threads: int = 1,
                    progress: Callable[[int, int, float], None] | None = None, save: Path | None = None
                    ) -> list[dict[str, Any]]:
    """Sample ``n`` networks and measure them: one :func:`kernel_record` per network (kernel features, labels =
    profiler times of each kernel's IR nodes, latency = the quiet latency, the median CPU time of a run; the
    per-IR-node times too, so the kernels can be regrouped by replaying the sampler with the same seed). ``save``:
    also write them there as JSON (refits and analyses then need no new measurement)."""
    from .measure import profile_graph

    rng = np.random.default_rng(seed)
    out = []
    t0 = time.time()
    for i in range(n):
        t1 = time.time()
        g = sample_graph(rng, f"sample{i}")
        res = profile_graph(g, threads=threads, runs=runs, warmup=warmup, rounds=max(1, min(4, runs // 4)), seed=i)
        ks, _, _ = group_kernels(g, ORT_RULES)
        ir_sets = {frozenset(k["ir_nodes"]) for k in res.kernels}
        labels = [sum(res.node_us.get(n.name, 0.0) for n in k.nodes) for k in ks]
        agree = [frozenset(n.name for n in k.nodes) in ir_sets for k in ks]
        out.append(kernel_record(ks, labels, res.cpu_ms if res.cpu_ms is not None else res.min_ms,
                                 median_ms=res.latency_ms, min_ms=res.min_ms, kernel_sum_ms=res.kernel_sum_ms,
                                 agree=agree, load=res.load_avg, unmapped_us=res.node_us.get("<unmapped>", 0.0),
                                 iqr_rel=res.iqr_rel, seconds=time.time() - t1, index=i, run_ms=res.run_ms,
                                 node_us={k: round(v, 3) for k, v in res.node_us.items() if v}))
        if progress is not None:
            progress(i + 1, n, time.time() - t0)
    if save is not None:
        save = Path(save)
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps({"seed": seed, "runs": runs, "threads": threads, "records": out}))
    return out


def load_samples(path: Path | str) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text())["records"]


def scaled_labels(r: dict[str, Any]) -> np.ndarray:
    """A network's kernel labels, scaled down so they sum to at most its quiet latency (CPU time per run).

    Why: the profiler times a kernel by the wall clock. A kernel shorter than the scheduler's time slice is rarely
    preempted, and its fastest runs are clean; a long one is preempted in every run on a loaded machine (a 52 ms
    conv measured 218 ms in its fastest run while the run's CPU time was 52 ms). Where the labels add up to more
    than the run's CPU time, they are scaled in proportion; where they add up to less, the rest is per-run
    overhead, left to the overhead fit."""
    lab = np.maximum(np.asarray(r["labels_us"], dtype=np.float64), 0.0)
    tot = lab.sum() / 1e3
    return lab * min(1.0, r["wall_ms"] / tot) if tot > 0 else lab


def _arrays(records: list[dict[str, Any]], label_floor_us: float):
    X = np.vstack([np.asarray(r["X"]) for r in records if r["n_kernels"]])
    base = np.concatenate([np.asarray(r["base"]) for r in records if r["n_kernels"]])
    lab = np.concatenate([scaled_labels(r) for r in records if r["n_kernels"]])
    groups = np.concatenate([np.full(r["n_kernels"], i) for i, r in enumerate(records) if r["n_kernels"]])
    return X, base, np.maximum(lab, 0.0) + label_floor_us, groups


def fit_cpu_ort(records: list[dict[str, Any]], *, seed: int = 0, label_floor_us: float = 0.3,
                weight_power: float = 0.5, gbm: GBM | None = None) -> tuple[LatencyPredictor, dict[str, Any]]:
    """Fit the kernel GBM and the per-run overhead on measured samples (:func:`measure_samples`).

    The GBM fits ``log(label / base)`` with sample weights ``label ** weight_power`` (normalized): a 10 ms kernel
    matters more to a network's total than a 10 µs reshape, and in log space they would count alike."""
    from scipy.optimize import nnls

    t0 = time.time()
    X, base, lab, groups = _arrays(records, label_floor_us)
    w = lab ** weight_power
    model = gbm if gbm is not None else GBM(seed=seed)
    model.fit(X, np.log(lab / base), groups, sample_weight=w / w.mean())
    # overhead: wall - predicted kernel sum = a + b * n_kernels (non-negative), relative error
    pred_k = base * np.exp(model.predict(X)) / 1e3
    recs = [r for r in records if r["n_kernels"]]
    pred_sum = np.bincount(np.unique(groups, return_inverse=True)[1], weights=pred_k)
    nk = np.array([r["n_kernels"] for r in recs], dtype=np.float64)
    wall = np.array([r["wall_ms"] for r in recs])
    A = np.c_[np.ones(len(nk)), nk]
    w_rel = 1.0 / np.maximum(wall, 1e-3)
    coef, _ = nnls(A * w_rel[:, None], (wall - pred_sum) * w_rel)
    kinds = sorted({k for r in records for k in r["kinds"]})
    n_k = int(sum(r["n_kernels"] for r in records))
    agree = [a for r in records for a in r.get("agree", [])]
    report = {"graphs": len(records), "kernels": n_k, "kinds": kinds,
              "kernel_agreement": float(np.mean(agree)) if agree else None, "gbm": model.history,
              "overhead_ms": float(coef[0]), "per_kernel_ms": float(coef[1]), "fit_s": round(time.time() - t0, 2),
              "measure_s": round(sum(r.get("seconds", 0.0) for r in records), 1),
              "load_avg_first_last": [records[0].get("load"), records[-1].get("load")],
              "weight_power": weight_power, "label_floor_us": label_floor_us}
    pred = LatencyPredictor(
        target="cpu-ort", device="onnxruntime CPU, 1 thread, this machine", model=model, rules=ORT_RULES,
        view="full", profile=None, overhead_ms=float(coef[0]), per_kernel_ms=float(coef[1]),
        train={"data": f"{len(records)} sampled networks ({n_k} kernels), generated by fit_cpu.sample_graph",
               "kinds": kinds, **{k: report[k] for k in ("kernel_agreement", "gbm", "fit_s", "measure_s",
                                                         "load_avg_first_last", "weight_power")}})
    return pred, report


def fit_cpu_ort_selected(records: list[dict[str, Any]], *, seed: int = 0, valid_fraction: float = 0.2,
                         grid: tuple[tuple[float, int], ...] = ((0.0, 5), (0.5, 5), (1.0, 5), (0.5, 7), (1.0, 7)),
                         log: Callable[[str], None] | None = None) -> tuple[LatencyPredictor, dict[str, Any]]:
    """:func:`fit_cpu_ort` with its sample weighting (``weight_power``) and tree depth chosen on held-out
    *sampled* networks (a seeded ``valid_fraction`` of them; share of network totals within +-10 %, then MAPE),
    then refitted on all of them."""
    rng = np.random.default_rng(seed + 101)
    hold = rng.random(len(records)) < valid_fraction
    tr = [r for r, h in zip(records, hold, strict=True) if not h]
    va = [r for r, h in zip(records, hold, strict=True) if h]
    scores = []
    for power, depth in grid:
        p, _ = fit_cpu_ort(tr, seed=seed, weight_power=power, gbm=GBM(seed=seed, depth=depth))
        e = np.abs(total_errors(p, va))
        scores.append({"weight_power": power, "depth": depth, "within10": float(np.mean(e <= 0.1)),
                       "mape": float(100 * np.mean(e))})
        if log:
            log(f"  weight_power={power} depth={depth}: held-out sampled networks within10 "
                f"{scores[-1]['within10']:.3f}, MAPE {scores[-1]['mape']:.1f} %")
    best = max(scores, key=lambda s: (s["within10"], -s["mape"]))
    pred, rep = fit_cpu_ort(records, seed=seed, weight_power=best["weight_power"],
                            gbm=GBM(seed=seed, depth=best["depth"]))
    rep["selection"] = {"valid_networks": len(va), "grid": scores, "chosen": best}
    pred.train["selection"] = rep["selection"]
    return pred, rep


def total_errors(pred: LatencyPredictor, records: list[dict[str, Any]]) -> np.ndarray:
    """Relative error of the predicted total per measured network (for choices made on sampled networks)."""
    out = []
    for r in records:
        if not r["n_kernels"]:
            continue
        k_ms = np.asarray(r["base"]) * np.exp(pred.model.predict(np.asarray(r["X"]))) / 1e3
        tot = k_ms.sum() + pred.overhead_ms + pred.per_kernel_ms * r["n_kernels"]
        out.append((tot - r["wall_ms"]) / r["wall_ms"])
    return np.array(out)


__all__ = ["KINDS", "fit_cpu_ort", "fit_cpu_ort_selected", "kernel_record", "load_samples", "measure_samples",
           "sample_graph", "total_errors"]
