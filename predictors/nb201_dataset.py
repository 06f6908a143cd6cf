"""NAS-Bench-201 as labeled IR graphs for the PSC predictor: a direct IR builder, labels, an on-disk cache.

Why a builder instead of ``from_torch`` on 15,625 networks: lowering goes through ``torch.export``, measured
at 17-34 s per C=16, N=5 network on the shared 2-core machine (days for all of NB201), while the IR of an NB201
network depends only on its arch string. :func:`build_nb201_ir` emits the graph that
``graphopt.frontends.torch.from_torch(models.get("nb201", arch_str=...).eval(), x)`` produces for
``models/nb201.py`` — the test suite checks equal :func:`graphopt.ir.structure_hash` (ops, attributes, shapes,
wiring) and equal PSC features against the real lowering — in ~15 ms, with output types computed in closed form
(no per-node meta-tensor inference) and zero-stride weight arrays (no memory). All 15,625 networks keep the full
C=16, N=5 network of the paper (214 nodes on average, 115-310).

Lowering of ``models/nb201.py`` that the builder mirrors (eval mode):

* ``nor_conv_kxk`` = ``relu → conv (no bias) → batch_norm``; ``avg_pool_3x3`` = ``avg_pool`` (k3, s1, p1,
  ``count_include_pad=0``); ``none`` = ``mul(x, 0.0)``; ``skip_connect`` = no node (the value passes through);
  the reduction's shortcut pool keeps PyTorch's ``count_include_pad=1`` (no padding, so equal results);
* cell node ``j`` = left-to-right chain of ``add`` over its incoming edges in source order (``((a+b)+c)``);
* stem ``conv3x3 → batch_norm``; reduction block ``add(conv1x1(avg_pool2x2/2(x)), bn(conv(relu(bn(conv/2(
  relu(x)))))))``; tail ``batch_norm → relu → global_avg_pool → flatten → gemm``; dropout (p = 0) vanishes.

Labels: CIFAR-10 test accuracy after the 200-epoch schedule (seed mean, in %), from
``/work/shared/data/nas/nb201_test_acc_3datasets_vtao.csv`` in NB201 index order.

Cache: the features of all 15,625 networks (built once: ~30 ms per network, 7 min of CPU, 2 worker processes;
19 min wall on the busy shared machine) are stored (6 MB) under
``~/.cache/graphopt/`` as one compressed ``.npz`` (written to a temp file and renamed, so a killed build never
leaves a truncated cache), keyed by the builder/feature version and (C, N).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from graphopt.ir.graph import Graph, Value
from graphopt.ir.types import DType, TensorType

from .gnn_features import PackedGraphs, RawFeatures, raw_features

__all__ = [
    "DEFAULT_LABELS", "PackedGraphs", "build_nb201_ir", "load_nb201_labels", "nb201_packed",
]

DEFAULT_LABELS = Path("/work/shared/data/nas/nb201_test_acc_3datasets_vtao.csv")
LABEL_COLUMNS = {"cifar10": "CIFAR10TestAccuracy200Epochs", "cifar100": "CIFAR100TestAccuracy200Epochs",
                 "imagenet16": "ImageNetTestAccuracy200Epochs"}
BUILDER_VERSION = "nb201-ir-v1+feat-v1"
"""Bump when the builder or the feature definition changes (invalidates the cache)."""


# --------------------------------------------------------------------------------------------------- builder
class _B:
    """Tiny emitter: creates IR nodes with closed-form output types."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.f32 = DType.float32

    def _w(self, name: str, shape: tuple[int, ...], kind: str = "param") -> Value:
        return self.g.add_const(name, np.broadcast_to(np.float32(0.0), shape), kind)

    def _node(self, op: str, inputs: list[Value | None], shape: tuple[int, ...], name: str, **attrs) -> Value:
        n = self.g.create_node(op, inputs, attrs, name=name, output_types=[TensorType(self.f32, shape)],
                               infer=False)
        return n.outputs[0]

    def conv(self, x: Value, cout: int, k: int, s: int, p: int, name: str) -> Value:
        b, cin, h, w = x.shape  # type: ignore[misc]
        wt = self._w(f"{name}.weight", (cout, cin, k, k))
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return self._node("conv", [x, wt], (b, cout, ho, wo), name, kernel_shape=[k, k], strides=[s, s],
                          pads=[p, p, p, p], dilations=[1, 1], group=1)

    def bn(self, x: Value, name: str) -> Value:
        c = x.shape[1]  # type: ignore[index]
        ins = [x, self._w(f"{name}.weight", (c,)), self._w(f"{name}.bias", (c,)),
               self._w(f"{name}.running_mean", (c,), "buffer"), self._w(f"{name}.running_var", (c,), "buffer")]
        return self._node("batch_norm", ins, x.shape, name, epsilon=1e-5, momentum=0.9)  # type: ignore[arg-type]

    def relu(self, x: Value, name: str) -> Value:
        return self._node("relu", [x], x.shape, name)  # type: ignore[arg-type]

    def add(self, a: Value, b: Value, name: str) -> Value:
        return self._node("add", [a, b], a.shape, name)  # type: ignore[arg-type]

    def zero(self, x: Value, name: str) -> Value:
        c = self.g.add_const(f"{name}.zero", np.array(0.0, dtype=np.float32))
        return self._node("mul", [x, c], x.shape, name)  # type: ignore[arg-type]

    def avg_pool(self, x: Value, k: int, s: int, p: int, name: str, count_include_pad: int) -> Value:
        b, c, h, w = x.shape  # type: ignore[misc]
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return self._node("avg_pool", [x], (b, c, ho, wo), name, kernel_shape=[k, k], strides=[s, s],
                          pads=[p, p, p, p], count_include_pad=count_include_pad)

    def relu_conv_bn(self, x: Value, cout: int, k: int, s: int, p: int, name: str) -> Value:
        return self.bn(self.conv(self.relu(x, f"{name}.0"), cout, k, s, p, f"{name}.1"), f"{name}.2")


def build_nb201_ir(arch_str: str, C: int = 16, N: int = 5, num_classes: int = 10, batch: int = 1,
                   image_size: int = 32) -> Graph:
    """The IR graph of ``models.get("nb201", arch_str=arch_str, C=C, N=N)`` in eval mode (see module doc)."""
    from graphopt.models.nb201 import parse_arch

    arch = parse_arch(arch_str)
    g = Graph("nb201")
    b = _B(g)
    x = g.add_input("x", TensorType(DType.float32, (batch, 3, image_size, image_size)))
    x = b.bn(b.conv(x, C, 3, 1, 1, "stem.0"), "stem.1")
    cell_i = 0
    c_prev = C
    for stage, mult in enumerate((1, 2, 4)):
        c = C * mult
        if stage > 0:
            p = f"cells.{cell_i}"
            a = b.relu_conv_bn(x, c, 3, 2, 1, f"{p}.conv_a")
            a = b.relu_conv_bn(a, c, 3, 1, 1, f"{p}.conv_b")
            d = b.conv(b.avg_pool(x, 2, 2, 0, f"{p}.downsample.0", 1), c, 1, 1, 0, f"{p}.downsample.1")
            x = b.add(d, a, f"{p}.add")
            cell_i += 1
        for _ in range(N):
            x = _cell(b, x, arch, c, f"cells.{cell_i}")
            cell_i += 1
        c_prev = c
    x = b.relu(b.bn(x, "lastact.0"), "lastact.1")
    bsz = x.shape[0]  # type: ignore[index]
    x = b._node("global_avg_pool", [x], (bsz, c_prev, 1, 1), "global_avg_pool")
    x = b._node("flatten", [x], (bsz, c_prev), "flatten", axis=1)
    w = b._w("classifier.weight", (num_classes, c_prev))
    bias = b._w("classifier.bias", (num_classes,))
    y = b._node("gemm", [x, w, bias], (bsz, num_classes), "classifier", alpha=1.0, beta=1.0, transA=0, transB=1)
    g.set_outputs([y])
    return g


def _cell(b: _B, x: Value, arch: list[tuple[int, int, str]], c: int, prefix: str) -> Value:
    nodes = [x]
    for j in range(1, 4):
        acc: Value | None = None
        for dst, src, op in arch:
            if dst != j:
                continue
            name = f"{prefix}.edges.e{src}{dst}"
            v = nodes[src]
            if op == "none":
                out = b.zero(v, name)
            elif op == "skip_connect":
                out = v
            elif op in ("nor_conv_1x1", "nor_conv_3x3"):
                k = 1 if op == "nor_conv_1x1" else 3
                out = b.relu_conv_bn(v, c, k, 1, k // 2, name)
            elif op == "avg_pool_3x3":
                out = b.avg_pool(v, 3, 1, 1, name, 0)
            else:  # parse_arch validated the op names
                raise AssertionError(op)
            acc = out if acc is None else b.add(acc, out, f"{prefix}.n{j}.add")
        nodes.append(acc)  # type: ignore[arg-type]
    return nodes[-1]


# ---------------------------------------------------------------------------------------------------- labels
def load_nb201_labels(path: Path | str = DEFAULT_LABELS, dataset: str = "cifar10") -> tuple[list[str], np.ndarray]:
    """(arch strings, test accuracies in %) in NB201 index order."""
    path = Path(path)
    if dataset not in LABEL_COLUMNS:
        raise ValueError(f"dataset {dataset!r}: choose one of {sorted(LABEL_COLUMNS)}")
    if not path.exists():
        raise FileNotFoundError(f"NB201 label file {path} not found (expected the shared NAS data, see "
                                f"/work/shared/data/nas/README.md)")
    archs, acc = [], []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            archs.append(row["ArchitectureString"])
            acc.append(float(row[LABEL_COLUMNS[dataset]]))
    return archs, np.asarray(acc, dtype=np.float32)


def default_cache_dir() -> Path:
    return Path(os.environ.get("GRAPHOPT_CACHE", Path.home() / ".cache" / "graphopt"))


def _feat_one(args: tuple[str, int, int, tuple[str, ...], bool]) -> RawFeatures:
    arch, C, N, vocab, effective = args
    return raw_features(build_nb201_ir(arch, C=C, N=N), vocab, effective=effective)


def nb201_packed(C: int = 16, N: int = 5, *, labels: Path | str = DEFAULT_LABELS, dataset: str = "cifar10",
                 cache_dir: Path | str | None = None, workers: int = 2, limit: int | None = None,
                 progress: Callable[[int, int], None] | None = None, effective: bool = False) -> PackedGraphs:
    """Features + labels of all NB201 networks (first ``limit`` in index order if given), cached on disk.

    ``effective``: features of the data-dependent graph (:func:`.gnn_features.effective_view`: ``none`` paths
    and what only they feed removed; 156 nodes on average instead of 214) -- what a PSC config with
    ``effective=True`` reads.

    The cache holds the complete set for (C, N); ``limit`` only slices it (so a quick run after a full one is
    free), except that a limited build without a cache is not written (it would be incomplete).
    """
    from .gnn_features import default_op_vocab

    archs, acc = load_nb201_labels(labels, dataset)
    tag = hashlib.sha1(f"{BUILDER_VERSION}|{C}|{N}|{Path(labels).name}|{dataset}".encode()).hexdigest()[:12]
    eff = "_eff" if effective else ""
    path = Path(cache_dir or default_cache_dir()) / f"psc_nb201_C{C}_N{N}_{dataset}{eff}_{tag}.npz"
    if path.exists():
        packed = PackedGraphs.load(path)
        return packed if limit is None else packed.subset(np.arange(min(limit, len(packed))))
    todo = archs if limit is None else archs[:limit]
    vocab = tuple(default_op_vocab())
    jobs = [(a, C, N, vocab, effective) for a in todo]
    feats: list[RawFeatures] = []
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as ex:
            for i, f in enumerate(ex.map(_feat_one, jobs, chunksize=64)):
                feats.append(f)
                if progress is not None and (i + 1) % 500 == 0:
                    progress(i + 1, len(jobs))
    else:
        for i, j in enumerate(jobs):
            feats.append(_feat_one(j))
            if progress is not None and (i + 1) % 500 == 0:
                progress(i + 1, len(jobs))
    packed = PackedGraphs.from_features(feats, acc[: len(todo)], vocab, keys=todo)
    if limit is None:
        packed.save(path)
    return packed
