"""HW-NAS-Bench latencies of NAS-Bench-201: loading, kernel sums per network, equivalence classes, class-disjoint split.

Data: ``zccombine_hw_cifar10.csv`` (see ``/work/shared/data/nas/README.md``), the HW-NAS-Bench measurements of all
15,625 NB201 networks (C=16, N=5, CIFAR-10 input 32x32, batch 1) on an Edge TPU, a Pixel 3, a Raspberry Pi 4 and
an Edge GPU, in milliseconds. 4,699 networks have no Edge TPU figure (``-1``); they are left out for that device.

**Equivalence classes.** Two NB201 cells are *equivalent* when they compute the same function: they differ only in
paths that carry ``none`` (``x * 0``). The PSC accuracy predictor's notion is reused as is:
:func:`graphopt.predictors.gnn_features.effective_view` drops what does not depend on the input, and two graphs
are equivalent when the features of their effective views (:func:`~graphopt.predictors.gnn_features.view_features`:
op, resolution, kernel, bias, edges, in canonical order) are identical. The class key is a hash of those arrays.
A *class-disjoint* split puts every class wholly on one side, so a held-out network never has an equivalent twin
in training (equivalent networks have near-identical latency on a device that folds dead paths: the Edge TPU's
agree to 0.3 % median).

**Features.** Each network is lowered with :func:`graphopt.predictors.nb201_dataset.build_nb201_ir` (the exact IR
of ``models/nb201.py``), grouped into kernels (:mod:`.kernels`) in each of :data:`.kernels.VIEWS` -- the full
graph, the effective one, the folded one (what a compiler that folds ``x * 0`` but keeps ``x + 0`` runs) -- and
summarized per kernel signature as the sums of
:func:`.models.kernel_basis`. Building all 15,625 takes ~25 min of one busy core, so the result is cached under
``~/.cache/graphopt`` (``$GRAPHOPT_CACHE``), keyed by a version string.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .kernels import TFLITE_RULES, VIEWS, FusionRules, group_kernels
from .models import kernel_basis

HW_CSV = Path(os.environ.get("GRAPHOPT_DATA_DIR", "/work/shared/data")) / "nas" / "zccombine_hw_cifar10.csv"
DEVICES = {"edgetpu": "edgetpu_latency", "pixel3": "pixel3_latency", "raspi4": "raspi4_latency",
           "edgegpu": "edgegpu_latency"}
"""HW-NAS-Bench device -> CSV column (milliseconds)."""
NB201_OPS = {0: "skip_connect", 1: "none", 2: "nor_conv_3x3", 3: "nor_conv_1x1", 4: "avg_pool_3x3"}
FEATURE_VERSION = "hwnas-kernels-v2"


def default_csv() -> Path:
    base = os.environ.get("GRAPHOPT_DATA_DIR")
    if base:
        return Path(base) / "nas" / "zccombine_hw_cifar10.csv"
    here = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nas" / "zccombine_hw_cifar10.csv"
    return here.resolve() if here.exists() else HW_CSV


def tuple_to_arch(t: tuple[int, ...]) -> str:
    """NASLib tuple ``(e01, e02, e03, e12, e13, e23)`` -> NB201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    e01, e02, e03, e12, e13, e23 = (NB201_OPS[int(x)] for x in t)
    return f"|{e01}~0|+|{e02}~0|{e12}~1|+|{e03}~0|{e13}~1|{e23}~2|"


def load_hwnas(path: Path | str | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """(arch strings in NB201 index order, {device: latencies in ms, NaN where not measured})."""
    path = Path(path) if path is not None else default_csv()
    if not path.exists():
        raise FileNotFoundError(f"HW-NAS-Bench file {path} not found; it is zccombine_hw_cifar10.csv of the shared "
                                f"NAS data (set GRAPHOPT_DATA_DIR to the folder that holds nas/)")
    archs: list[str] = []
    lat: dict[str, list[float]] = {d: [] for d in DEVICES}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            archs.append(tuple_to_arch(tuple(int(x) for x in row["net"].strip("()").split(","))))
            for d, col in DEVICES.items():
                v = float(row[col])
                lat[d].append(v if v > 0 else np.nan)
    return archs, {d: np.asarray(v) for d, v in lat.items()}


# ------------------------------------------------------------------------------------------ per-network features
@dataclass
class NetFeatures:
    """Per network: equivalence-class key and, per view (:data:`.kernels.VIEWS`), {signature: summed kernel
    basis}."""

    archs: list[str]
    keys: list[str]
    views: dict[str, list[dict[str, np.ndarray]]]

    def view(self, name: str) -> list[dict[str, np.ndarray]]:
        return self.views[name]


def class_key(graph) -> str:
    """Hash of the PSC effective-view features (op, resolution, kernel, bias, edges) of ``graph``."""
    from ..gnn_features import default_op_vocab, effective_view, view_features

    f = view_features(effective_view(graph), _vocab(default_op_vocab), graph.name)
    return _hash_features(f)


_VOCAB: list[str] | None = None


def _vocab(fn) -> list[str]:
    global _VOCAB
    if _VOCAB is None:
        _VOCAB = fn()
    return _VOCAB


def _hash_features(f) -> str:
    h = hashlib.sha1()
    for k in ("op", "res", "kernel", "bias", "edges"):
        a = np.ascontiguousarray(getattr(f, k))
        h.update(k.encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


def _sums(kernels) -> dict[str, np.ndarray]:
    d: dict[str, np.ndarray] = {}
    for k in kernels:
        phi = kernel_basis(k.feats)
        d[k.sig] = d[k.sig] + phi if k.sig in d else phi
    return d


def net_features_one(arch: str, rules: FusionRules = TFLITE_RULES) -> tuple[str, dict[str, dict]]:
    """(class key, {view: kernel-basis sums}) of one NB201 network (C=16, N=5)."""
    from ..gnn_features import default_op_vocab, effective_view, view_features
    from ..nb201_dataset import build_nb201_ir

    g = build_nb201_ir(arch)
    view = effective_view(g, g.nodes)
    key = _hash_features(view_features(view, _vocab(default_op_vocab), g.name))
    sums = {}
    for v in VIEWS:
        ks, _, _ = group_kernels(g, rules, view=v, live=view.nodes if v == "effective" else None)
        sums[v] = _sums(ks)
    return key, sums


def nb201_net_features(archs: list[str], rules: FusionRules = TFLITE_RULES, *, cache_dir: Path | str | None = None,
                       progress: Callable[[int, int], None] | None = None) -> NetFeatures:
    """:class:`NetFeatures` of ``archs`` (cached on disk by arch list, rules and :data:`FEATURE_VERSION`)."""
    from ..nb201_dataset import default_cache_dir

    tag = hashlib.sha1(json.dumps([FEATURE_VERSION, rules.to_dict(), archs]).encode()).hexdigest()[:12]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"latency_nb201_{tag}.json"
    if path.exists():
        doc = json.loads(path.read_text())
        return NetFeatures(doc["archs"], doc["keys"], {v: [_arr(d) for d in doc["views"][v]] for v in VIEWS})
    keys: list[str] = []
    views: dict[str, list[dict]] = {v: [] for v in VIEWS}
    t0 = time.time()
    for i, a in enumerate(archs):
        k, sums = net_features_one(a, rules)
        keys.append(k)
        for v in VIEWS:
            views[v].append(sums[v])
        if progress is not None and (i % 50 == 0 or i == len(archs) - 1):
            progress(i + 1, len(archs))
    doc = {"version": FEATURE_VERSION, "seconds": round(time.time() - t0, 1), "archs": archs, "keys": keys,
           "views": {v: [_lst(d) for d in views[v]] for v in VIEWS}}
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return NetFeatures(archs, keys, views)


def _lst(d: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: [float(x) for x in v] for k, v in d.items()}


def _arr(d: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}


# ------------------------------------------------------------------------------------------------------ split
def class_disjoint_split(keys: list[str], train_fraction: float = 0.5, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): whole equivalence classes, shuffled with ``seed``, go to training until it
    holds ``train_fraction`` of the networks; the rest is held out. No class has members on both sides."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    classes: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        classes.setdefault(k, []).append(i)
    names = sorted(classes)
    order = np.random.default_rng(seed).permutation(len(names))
    target = train_fraction * len(keys)
    train: list[int] = []
    test: list[int] = []
    for j in order:
        members = classes[names[j]]
        (train if len(train) < target else test).extend(members)
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(test), dtype=np.int64)


def class_folds(keys: list[str], idx: np.ndarray, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """``k`` class-disjoint folds of the networks ``idx`` (for choices made on the training side only)."""
    sub = [keys[i] for i in idx]
    names = sorted(set(sub))
    fold_of = {n: f for n, f in zip(names, np.random.default_rng(seed + 17).permutation(len(names)) % k,
                                    strict=True)}
    return [idx[np.array([fold_of[s] == f for s in sub])] for f in range(k)]
