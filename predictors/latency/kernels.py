"""IR graph -> kernels: the units a runtime executes (Conv+BN+ReLU as one), with the features a latency model reads.

Why kernels and not nodes: runtimes fuse. onnxruntime folds BatchNorm into the convolution and runs Conv+Add+ReLU
as one NCHWc kernel; TFLite (Edge TPU, Pixel, Raspberry Pi) folds BatchNorm and fuses the activation into Conv
and Add. A per-node model would charge the fused BatchNorm and ReLU as if they ran (nn-Meter, Zhang et al. 2021,
found kernel-level prediction the accurate granularity for the same reason). The rules (:class:`FusionRules`) are
data saved with each fitted predictor, so a target's rules can differ:

* nodes computed from constants only are *folded* (runtimes evaluate them once at load time) and cost nothing;
* an anchor (``conv``, ``conv_transpose``, ``gemm``, ``matmul``) absorbs, in this order and each at most once,
  the single consumer of its output when that consumer is: ``batch_norm`` (after a conv), a per-channel
  ``add``/``mul``/``sub``/``div`` by a constant (bias, scale), a residual ``add`` of another activation of the
  same shape (after a conv, ``residual_add``: onnxruntime's NCHWc Sum), then an activation (``relu``, ``clip``,
  ``sigmoid``, ...);
* an element-wise ``add``/``mul``/``sub`` absorbs a single-consumer activation after it (``eltwise_act``);
* every other node is a kernel of its own (reshapes too: runtimes run them, cheaply).

Features (:data:`FEATURES`, one row per kernel): FLOPs and MACs, activation bytes read and written, weight bytes,
kernel size and stride, channels in/out and groups, output spatial size, matmul M/N/K, rank and innermost
dimension, element size (the dtype), channel alignment to 8 and 16 (vector width / NHWC blocking: the layout
feature), how many nodes were fused and which stages. ``kind`` is a coarse class for tree models; ``sig`` a finer
signature (kind, kernel, stride, fused stages) for the additive linear model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph, Node, Value

ANCHOR_OPS = frozenset({"conv", "conv_transpose", "gemm", "matmul"})
ACTIVATIONS = frozenset({"relu", "clip", "sigmoid", "tanh", "leaky_relu", "hard_sigmoid", "hard_swish", "silu",
                         "gelu", "elu", "prelu", "selu", "softplus", "mish"})
#: activations onnxruntime's Conv/Gemm activation fusion accepts (the others stay separate kernels on CPU)
ORT_FUSABLE_ACT = frozenset({"relu", "clip", "sigmoid", "tanh", "leaky_relu", "hard_sigmoid"})
AFFINE_OPS = frozenset({"add", "mul", "sub", "div"})
SHAPE_OPS = frozenset({"reshape", "flatten", "squeeze", "unsqueeze", "identity", "dropout"})

FEATURES = (
    "flops", "macs", "in_bytes", "out_bytes", "w_bytes", "in_elems", "out_elems",
    "k_h", "k_w", "stride", "dilation", "groups", "dw", "cin", "cout", "h_out", "w_out", "hw_out",
    "mm_m", "mm_n", "mm_k", "mm_batch", "rank", "inner", "itemsize", "align8", "align16",
    "n_nodes", "n_inputs", "has_bn", "has_bias", "has_add", "has_act",
)
"""Numeric kernel features, in column order (:func:`feature_matrix`)."""
_LOG_FEATURES = frozenset({"flops", "macs", "in_bytes", "out_bytes", "w_bytes", "in_elems", "out_elems", "cin",
                           "cout", "h_out", "w_out", "hw_out", "mm_m", "mm_n", "mm_k", "mm_batch", "inner",
                           "groups"})

KINDS = ("conv", "conv_dw", "conv_grp", "deconv", "linear", "matmul", "maxpool", "avgpool", "gpool", "bn",
         "layernorm", "groupnorm", "lrn", "softmax", "act", "math", "binary", "reduce", "concat", "transpose",
         "slice", "pad", "memory", "shape", "resize", "other")
"""Coarse kernel classes (one-hot columns of :func:`feature_matrix`)."""


@dataclass(frozen=True)
class FusionRules:
    """Which fusions the target's runtime performs (see module doc)."""

    bn: bool = True
    bias: bool = True
    residual_add: bool = False
    activation: bool = True
    activations: tuple[str, ...] = tuple(sorted(ACTIVATIONS))
    eltwise_act: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["activations"] = list(self.activations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusionRules:
        d = dict(d)
        if "activations" in d:
            d["activations"] = tuple(d["activations"])
        return cls(**d)


ORT_RULES = FusionRules(residual_add=True, activations=tuple(sorted(ORT_FUSABLE_ACT)), eltwise_act=False)
"""onnxruntime CPU (opset 18, ORT_ENABLE_ALL): Conv/Gemm + BN + bias + (NCHWc) residual Sum + activation."""
TFLITE_RULES = FusionRules(residual_add=False, activations=("clip", "relu"), eltwise_act=True)
"""TFLite-style targets (Edge TPU, mobile CPUs): BN folded, ReLU/ReLU6 fused into Conv and Add."""


@dataclass
class Kernel:
    """One executed kernel: ``nodes[0]`` is the anchor (the node the kernel is named after)."""

    nodes: list[Node]
    kind: str
    sig: str
    feats: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.nodes[0].name

    @property
    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]


# ------------------------------------------------------------------------------------------------- helpers
_ITEMSIZE: dict[Any, int] = {}


def _static(v: Value | None) -> tuple[int, ...] | None:
    if v is None or v.type is None or v.type.shape is None:
        return None
    return tuple(d if isinstance(d, int) else 1 for d in v.type.shape)


def _itemsize(v: Value) -> int:
    dt = v.type.dtype if v.type is not None else None
    size = _ITEMSIZE.get(dt)
    if size is None:
        try:
            size = int(dt.itemsize)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - exotic or missing dtypes: count 4 bytes
            size = 4
        _ITEMSIZE[dt] = size
    return size


class _Sizes:
    """Per-call cache of shapes, element counts and byte sizes by value (grouping reads each several times)."""

    def __init__(self) -> None:
        self._s: dict[int, tuple[int, ...] | None] = {}

    def shape(self, v: Value | None) -> tuple[int, ...] | None:
        if v is None:
            return None
        k = id(v)
        if k not in self._s:
            self._s[k] = _static(v)
        return self._s[k]

    def numel(self, v: Value | None) -> int:
        s = self.shape(v)
        return 0 if s is None else math.prod(s)

    def nbytes(self, v: Value | None) -> int:
        return 0 if v is None else self.numel(v) * _itemsize(v)


def node_flops(n: Node, sizes: _Sizes | None = None) -> int:
    """FLOPs of one node by the registry's cost rules (:func:`graphopt.ir.cost.node_cost`'s ``flops``), 0 when
    unknown."""
    from graphopt.ir.cost import ZERO_FLOP_CATEGORIES
    from graphopt.ir.registry import get_op

    try:
        opdef = get_op(n.op)
    except Exception:  # noqa: BLE001 - fused/custom ops without a registry entry
        return 0
    if opdef.flops is not None:
        try:
            return int(opdef.flops(n) or 0)
        except Exception:  # noqa: BLE001 - a rule that cannot handle unknown shapes
            return 0
    if opdef.category in ZERO_FLOP_CATEGORIES:
        return 0
    sz = sizes or _Sizes()
    return sum(sz.numel(o) for o in n.outputs)


def const_derived(graph: Graph, nodes: list[Node]) -> set[int]:
    """ids of nodes computed from constants only (runtimes fold them at load time)."""
    folded: set[int] = set()
    for n in nodes:
        ins = [v for v in n.inputs if v is not None]
        if ins and all(v.is_const or (v.producer is not None and id(v.producer) in folded) for v in ins):
            folded.add(id(n))
    return folded


def _is_constish(v: Value | None, folded: set[int]) -> bool:
    return v is not None and (v.is_const or (v.producer is not None and id(v.producer) in folded))


def _kind(n: Node) -> str:
    from graphopt.ir.registry import get_op

    op = n.op
    if op == "conv":
        g = int(n.attrs.get("group", 1) or 1)
        xs = _static(n.inputs[0]) or ()
        cin = xs[1] if len(xs) > 1 else 1
        if g == 1:
            return "conv"
        return "conv_dw" if g == cin else "conv_grp"
    if op == "conv_transpose":
        return "deconv"
    if op in ("gemm",):
        return "linear"
    if op == "matmul":
        b = n.inputs[1] if len(n.inputs) > 1 else None
        return "linear" if b is not None and b.is_const else "matmul"
    if op == "max_pool":
        return "maxpool"
    if op == "avg_pool":
        return "avgpool"
    if op in ("global_avg_pool", "global_max_pool"):
        return "gpool"
    if op == "batch_norm":
        return "bn"
    if op == "layer_norm":
        return "layernorm"
    if op in ("group_norm", "instance_norm"):
        return "groupnorm"
    if op == "lrn":
        return "lrn"
    if op in SHAPE_OPS:
        return "shape"
    if op == "concat":
        return "concat"
    if op == "transpose":
        return "transpose"
    if op in ("slice", "split", "gather", "gather_elements", "gather_nd"):
        return "slice"
    if op == "pad":
        return "pad"
    if op == "resize":
        return "resize"
    try:
        cat = get_op(op).category
    except Exception:  # noqa: BLE001 - fused/custom ops registered by plugins
        return "other"
    return {"activation": "act", "math": "math", "arith": "binary", "compare": "binary", "cast": "binary",
            "reduce": "reduce", "softmax": "softmax", "memory": "memory", "shape": "shape", "norm": "groupnorm",
            "matmul": "matmul", "pool": "avgpool", "conv": "conv", "resize": "resize"}.get(cat, "other")


def _sig(anchor: Node, kind: str, stages: list[str]) -> str:
    a = anchor.attrs
    base = kind
    if kind in ("conv", "conv_dw", "conv_grp", "deconv", "maxpool", "avgpool"):
        k = a.get("kernel_shape") or (list((_static(anchor.inputs[1]) or ())[2:]) if len(anchor.inputs) > 1 else [])
        s = a.get("strides") or [1]
        base += "{}s{}".format("x".join(str(int(x)) for x in k) or "?", int(max(s)))
    elif kind in ("act", "math", "binary", "reduce", "memory", "other"):
        base += ":" + anchor.op
    return "+".join([base, *stages])


# ------------------------------------------------------------------------------------------------ grouping
VIEWS = ("full", "effective", "folded")
"""What of a graph a target runs: everything; the PSC effective view (dead ``x * 0`` paths and the additions of
their zeros removed: a compiler that simplifies algebra); or the folded view (``x * 0`` and whatever is computed
only from constants folded, dead code removed, but ``x + 0`` still executed: a compiler that folds constants and
does no algebraic simplification -- TFLite's converter)."""
ZERO_PRESERVING = frozenset({"relu", "add", "sub", "mul", "avg_pool", "max_pool", "global_avg_pool",
                             "global_max_pool", "reshape", "flatten", "transpose", "concat", "slice", "identity",
                             "squeeze", "unsqueeze", "clip", "leaky_relu"})


def folded_view(graph: Graph, order: list[Node] | None = None) -> tuple[set[int], list[Node]]:
    """(ids of constant-valued nodes, live nodes) of the folded view (see :data:`VIEWS`)."""
    from ..gnn_features import ZERO_ABSORBING_OPS

    order = order if order is not None else graph.nodes
    const: set[int] = set()
    zero: set[int] = set()

    def is_const(v: Value) -> bool:
        return v.is_const or (v.producer is not None and id(v.producer) in const)

    def is_zero(v: Value) -> bool:
        if id(v) in zero:
            return True
        return v.is_const and np.size(v.const) > 0 and not np.any(np.asarray(v.const))

    for n in order:
        ins = [v for v in n.inputs if v is not None]
        if n.op in ZERO_ABSORBING_OPS and any(is_zero(v) for v in ins):
            const.add(id(n))
            zero.update(id(o) for o in n.outputs)
        elif ins and all(is_const(v) for v in ins):
            const.add(id(n))
            data = [v for v in ins if not v.is_const] or ins[:1]
            if n.op in ZERO_PRESERVING and all(is_zero(v) for v in data) and (
                    n.op not in ("add", "sub") or all(is_zero(v) for v in ins)):
                zero.update(id(o) for o in n.outputs)
        elif n.op == "conv" and is_zero(n.inputs[0]) and (len(n.inputs) < 3 or n.inputs[2] is None):
            const.add(id(n))  # conv of zeros without bias: zeros
            zero.update(id(o) for o in n.outputs)
    keep: set[int] = set()
    stack = [v.producer for v in graph.outputs if v.producer is not None and id(v.producer) not in const]
    while stack:
        n = stack.pop()
        if id(n) in keep:
            continue
        keep.add(id(n))
        stack += [v.producer for v in n.inputs if v is not None and v.producer is not None
                  and id(v.producer) not in const]
    return const, [n for n in order if id(n) in keep]


def effective_live(graph: Graph, order: list[Node] | None = None) -> list[Node]:
    """The live nodes of :func:`graphopt.predictors.gnn_features.effective_view` (same rules: constant and
    ``x * 0`` values removed, an ``add`` of such a value forwards its other operand, dead code removed; a test
    checks the equality), without putting them in canonical order -- 5x faster, for prediction."""
    from ..gnn_features import ZERO_ABSORBING_OPS

    nodes = order if order is not None else graph.nodes
    zero: set[int] = set()
    const: set[int] = set()

    def is_const(v: Value) -> bool:
        return v.is_const or id(v) in const

    def is_zero(v: Value) -> bool:
        if id(v) in zero:
            return True
        return v.is_const and np.size(v.const) > 0 and not np.any(np.asarray(v.const))

    source: dict[int, Value | None] = {}
    for nd in nodes:
        ins = [v for v in nd.inputs if v is not None]
        absorbed = nd.op in ZERO_ABSORBING_OPS and any(is_zero(v) for v in ins)
        if absorbed or all(is_const(v) for v in ins):
            source[id(nd)] = None
            for o in nd.outputs:
                const.add(id(o))
                if absorbed:
                    zero.add(id(o))
        elif nd.op == "add" and len(ins) == 2:
            folded = [v.producer is not None and id(v.producer) in source and is_const(v) for v in ins]
            if sum(folded) == 1:
                source[id(nd)] = ins[folded.index(False)]

    def producer(v: Value | None) -> Node | None:
        while v is not None and v.producer is not None and id(v.producer) in source:
            v = source[id(v.producer)]
        if v is None or v.is_const:
            return None
        return v.producer

    keep: set[int] = set()
    stack = [p for v in graph.outputs if (p := producer(v)) is not None]
    while stack:
        nd = stack.pop()
        if id(nd) not in keep:
            keep.add(id(nd))
            stack += [p for v in nd.inputs if (p := producer(v)) is not None]
    live = [nd for nd in nodes if id(nd) in keep]
    if not live:
        last = next((v.producer for v in graph.outputs if v.producer is not None), nodes[-1] if nodes else None)
        live = [last] if last is not None else []
    return live


def group_kernels(graph: Graph, rules: FusionRules = ORT_RULES, *, view: str = "full",
                  live: list[Node] | None = None) -> tuple[list[Kernel], list[Node], list[Node]]:
    """``(kernels, folded, dead)``: every node of ``graph`` is in exactly one kernel, or folded (computed from
    constants), or dead (not run in this ``view``, see :data:`VIEWS`). ``live``: the effective view's nodes if
    already computed (``view="effective"``)."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r}: choose one of {', '.join(VIEWS)}")
    order = graph.nodes
    dead: list[Node] = []
    extra_const: set[int] = set()
    if view == "effective" and live is None:
        live = effective_live(graph, order)
    elif view == "folded":
        extra_const, live = folded_view(graph, order)
    if live is not None:
        keep = {id(n) for n in live} | extra_const
        live = [n for n in order if id(n) in keep]
        dead = [n for n in order if id(n) not in keep]
    else:
        live = order
    live_ids = {id(n) for n in live}
    folded_ids = const_derived(graph, live) | extra_const
    folded = [n for n in live if id(n) in folded_ids]
    outs = {id(v) for v in graph.outputs}
    taken: set[int] = set(folded_ids)
    sz = _Sizes()
    memo: dict[tuple, tuple[str, dict[str, float]]] = {}  # repeated blocks: same structure, same features
    kernels: list[Kernel] = []

    def single_user(n: Node) -> Node | None:
        if len(n.outputs) != 1 or id(n.outputs[0]) in outs:
            return None
        users = [u for u in n.outputs[0].users if id(u) in live_ids]
        if len(users) != 1 or id(users[0]) in taken:
            return None
        return users[0]

    for n in live:
        if id(n) in taken:
            continue
        taken.add(id(n))
        members, stages = [n], []
        kind = _kind(n)
        if n.op in ANCHOR_OPS:
            cur = n
            for stage in ("bn", "bias", "add", "act"):
                u = single_user(cur)
                if u is None:
                    break
                if stage == "bn" and (not rules.bn or u.op != "batch_norm" or n.op not in ("conv", "conv_transpose")):
                    continue
                if stage == "bias":
                    other = [v for v in u.inputs if v is not None and v is not cur.outputs[0]]
                    if not (rules.bias and u.op in AFFINE_OPS and len(other) == 1 and _is_constish(other[0],
                                                                                                    folded_ids)):
                        continue
                if stage == "add":
                    other = [v for v in u.inputs if v is not None and v is not cur.outputs[0]]
                    if not (rules.residual_add and n.op == "conv" and u.op in ("add", "sum") and len(other) == 1
                            and not _is_constish(other[0], folded_ids)
                            and sz.shape(other[0]) == sz.shape(cur.outputs[0])):
                        continue
                if stage == "act" and not (rules.activation and u.op in rules.activations):
                    continue
                members.append(u)
                stages.append(stage)
                taken.add(id(u))
                cur = u
        elif rules.eltwise_act and n.op in ("add", "mul", "sub"):
            u = single_user(n)
            if u is not None and u.op in rules.activations:
                members.append(u)
                stages.append("act")
                taken.add(id(u))
        key = _memo_key(members, stages, folded_ids, sz)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = (_sig(n, kind, stages), _features(members, stages, folded_ids, sz))
        kernels.append(Kernel(members, kind, hit[0], dict(hit[1])))
    return kernels, folded, dead


def _memo_key(members: list[Node], stages: list[str], folded: set[int], sz: _Sizes) -> tuple:
    parts: list = [tuple(stages)]
    inside = {id(v) for m in members for v in m.outputs}
    first: dict[int, int] = {}  # a value read twice (add(x, x)) is one input, not two
    for m in members:
        parts.append(m.op)
        parts.append(repr(m.attrs) if m.attrs else "")
        for v in m.inputs:
            if v is None:
                parts.append(None)
            elif id(v) in inside:
                parts.append(-1)
            else:
                parts.append((sz.shape(v), v.type.dtype if v.type is not None else None, _is_constish(v, folded),
                              first.setdefault(id(v), len(first))))
        parts.append(tuple(sz.shape(o) for o in m.outputs))
    return tuple(parts)


def _features(members: list[Node], stages: list[str], folded: set[int], sz: _Sizes) -> dict[str, float]:
    a = members[0]
    inside = {id(v) for m in members for v in m.outputs}
    ext_in = []
    w_bytes = 0
    seen: set[int] = set()
    for m in members:
        for v in m.inputs:
            if v is None or id(v) in inside or id(v) in seen:
                continue
            seen.add(id(v))
            if _is_constish(v, folded):
                w_bytes += sz.nbytes(v)
            else:
                ext_in.append(v)
    out = members[-1].outputs
    anchor_flops = node_flops(a, sz)
    flops = anchor_flops + sum(node_flops(m, sz) for m in members[1:])
    x = a.inputs[0] if a.inputs else None
    xs = sz.shape(x) or ()
    ys = sz.shape(out[0]) or ()
    f: dict[str, float] = dict.fromkeys(FEATURES, 0.0)
    f["flops"] = flops
    f["in_bytes"] = sum(sz.nbytes(v) for v in ext_in)
    f["out_bytes"] = sum(sz.nbytes(v) for v in out)
    f["w_bytes"] = w_bytes
    f["in_elems"] = sum(sz.numel(v) for v in ext_in)
    f["out_elems"] = sum(sz.numel(v) for v in out)
    f["rank"] = len(ys)
    f["inner"] = ys[-1] if ys else 1
    f["itemsize"] = _itemsize(out[0]) if out else 4
    f["n_nodes"] = len(members)
    f["n_inputs"] = len(ext_in)
    for s in ("bn", "bias", "add", "act"):
        f[f"has_{s}"] = float(s in stages)
    op = a.op
    at = a.attrs
    if op in ("conv", "conv_transpose") and len(a.inputs) > 1:
        ws = sz.shape(a.inputs[1]) or ()
        k = list(at.get("kernel_shape") or ws[2:]) or [1]
        f["k_h"], f["k_w"] = float(k[0]), float(k[-1])
        f["stride"] = float(max(at.get("strides") or [1]))
        f["dilation"] = float(max(at.get("dilations") or [1]))
        g = int(at.get("group", 1) or 1)
        f["groups"] = g
        f["cin"] = xs[1] if len(xs) > 1 else 1
        f["cout"] = ys[1] if len(ys) > 1 else 1
        f["dw"] = float(g > 1 and g == f["cin"])
        f["macs"] = anchor_flops / 2
    elif op in ("max_pool", "avg_pool", "lrn"):
        k = list(at.get("kernel_shape") or [at.get("size", 1)])
        f["k_h"], f["k_w"] = float(k[0]), float(k[-1])
        f["stride"] = float(max(at.get("strides") or [1]))
        f["cin"] = f["cout"] = xs[1] if len(xs) > 1 else 1
    elif op in ("gemm", "matmul"):
        bs = sz.shape(a.inputs[1]) if len(a.inputs) > 1 else None
        if op == "gemm":
            m_ = xs[1] if at.get("transA") and len(xs) > 1 else (xs[0] if xs else 1)
            k_ = xs[0] if at.get("transA") and xs else (xs[-1] if xs else 1)
            n_ = ys[-1] if ys else 1
            batch = 1
        else:
            k_ = xs[-1] if xs else 1
            m_ = xs[-2] if len(xs) > 1 else 1
            n_ = bs[-1] if bs and len(bs) > 1 else 1
            batch = math.prod(ys[:-2]) if len(ys) > 2 else 1
        f["mm_m"], f["mm_n"], f["mm_k"], f["mm_batch"] = m_, n_, k_, batch
        f["cin"], f["cout"] = k_, n_
        f["macs"] = anchor_flops / 2
    else:
        f["cin"] = xs[1] if len(xs) > 1 else (xs[0] if xs else 1)
        f["cout"] = ys[1] if len(ys) > 1 else (ys[0] if ys else 1)
    if len(ys) >= 3:
        f["h_out"] = ys[2] if len(ys) > 3 else ys[-1]
        f["w_out"] = ys[3] if len(ys) > 3 else 1
        f["hw_out"] = math.prod(ys[2:])
    ch = int(f["cout"] or 1)
    f["align8"] = float(ch % 8 == 0)
    f["align16"] = float(ch % 16 == 0)
    return f


def feature_matrix(kernels: list[Kernel]) -> np.ndarray:
    """``(len(kernels), len(KINDS) + len(FEATURES))``: kind one-hot, then features (``log2(1 + x)`` for sizes)."""
    X = np.zeros((len(kernels), len(KINDS) + len(FEATURES)), dtype=np.float64)
    kidx = {k: i for i, k in enumerate(KINDS)}
    for r, k in enumerate(kernels):
        X[r, kidx.get(k.kind, kidx["other"])] = 1.0
        X[r, len(KINDS):] = [k.feats[f] for f in FEATURES]
    cols = [len(KINDS) + i for i, f in enumerate(FEATURES) if f in _LOG_FEATURES]
    X[:, cols] = np.log2(1.0 + np.maximum(X[:, cols], 0.0))
    return X


def feature_names() -> list[str]:
    return [f"kind={k}" for k in KINDS] + list(FEATURES)
