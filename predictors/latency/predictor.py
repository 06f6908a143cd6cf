"""A fitted latency predictor for one target: kernel grouping rules + model + per-run overhead, saved as JSON.

``LatencyPredictor.predict(graph)`` groups the graph into kernels (:mod:`.kernels`), prices each kernel with the
target's model and adds the per-run overhead; the result keeps the per-kernel breakdown (which ops the time goes
to) and, for a target tied to an NPU profile, which kernels run off the NPU (a node the profile does not accept,
see :func:`graphopt.npu.legalize.node_violations`): those are priced by the profile's analytic host figures
(:func:`graphopt.npu.latency.node_latency_us` with ``on_npu=False``: host GFLOP/s plus the hand-over overhead),
since the measurements a predictor was fitted on ran wholly on the accelerator.

Two model types (:mod:`.models`): ``additive-linear`` (end-to-end labels, HW-NAS-Bench devices) and ``gbm``
(per-kernel labels from onnxruntime's profiler, ``cpu-ort``). For ``gbm`` the trees predict
``log(kernel time / base)`` with ``base = 1 µs + FLOPs / 20 GFLOP/s + bytes / 20 GB/s`` (:func:`gbm_base_us`), so
a kernel larger than any sampled one extrapolates along the roofline rather than saturating at the largest leaf.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph

from .kernels import FusionRules, Kernel, feature_matrix, group_kernels
from .models import GBM, AdditiveLinear, kernel_basis

FORMAT = "graphopt-latency-predictor"
VERSION = 1


def gbm_base_us(feats: dict[str, float]) -> float:
    return 1.0 + feats["flops"] / 2e4 + (feats["in_bytes"] + feats["out_bytes"] + feats["w_bytes"]) / 2e4


@dataclass
class KernelPrediction:
    name: str
    kind: str
    sig: str
    nodes: list[str]
    ops: list[str]
    ms: float
    on_npu: bool | None = None
    seen: bool = True


@dataclass
class LatencyPrediction:
    target: str
    device: str
    method: str
    total_ms: float
    overhead_ms: float
    kernels: list[KernelPrediction]
    folded: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    off_npu: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def unseen(self) -> int:
        return sum(not k.seen for k in self.kernels)

    def by_op(self) -> dict[str, float]:
        """Milliseconds per anchor op type, largest first."""
        out: dict[str, float] = {}
        for k in self.kernels:
            out[k.ops[0]] = out.get(k.ops[0], 0.0) + k.ms
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "device": self.device, "method": self.method, "total_ms": self.total_ms,
                "overhead_ms": self.overhead_ms, "n_kernels": len(self.kernels), "unseen_kernels": self.unseen,
                "by_op_ms": self.by_op(), "kernels": [asdict(k) for k in self.kernels], "folded": self.folded,
                "dead": self.dead, "off_npu": self.off_npu, "notes": self.notes}


@dataclass
class LatencyPredictor:
    target: str
    device: str
    model: AdditiveLinear | GBM
    rules: FusionRules
    view: str = "full"
    profile: str | None = None
    overhead_ms: float = 0.0
    per_kernel_ms: float = 0.0
    train: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    # ------------------------------------------------------------------------------------------- prediction
    def kernels(self, graph: Graph) -> tuple[list[Kernel], list, list]:
        return group_kernels(graph, self.rules, view=self.view)

    def kernel_ms(self, kernels: list[Kernel]) -> tuple[np.ndarray, np.ndarray]:
        """(milliseconds per kernel, seen-in-training flags)."""
        if not kernels:
            return np.zeros(0), np.zeros(0, dtype=bool)
        if isinstance(self.model, AdditiveLinear):
            vals = [self.model.kernel_ms(k.sig, kernel_basis(k.feats)) for k in kernels]
            return np.array([max(v, 0.0) for v, _ in vals]), np.array([s for _, s in vals])
        X = feature_matrix(kernels)
        uniq, inv = np.unique(X, axis=0, return_inverse=True)  # repeated blocks are priced once
        logr = self.model.predict(uniq)[inv.reshape(-1)]
        base = np.array([gbm_base_us(k.feats) for k in kernels])
        seen = np.array([k.kind in self.train.get("kinds", [k.kind]) for k in kernels])
        return base * np.exp(logr) / 1e3, seen

    def predict(self, graph: Graph) -> LatencyPrediction:
        from .measure import static_graph

        notes = []
        g = static_graph(graph)
        if g is not graph:
            notes.append("symbolic input dims bound to 1")
        ks, folded, dead = self.kernels(g)
        ms, seen = self.kernel_ms(ks)
        on_npu: list[bool | None] = [None] * len(ks)
        off: list[str] = []
        if self.profile is not None:
            from graphopt.ir.registry import get_op
            from graphopt.npu.latency import node_latency_us
            from graphopt.npu.legalize import legalizable, legalizers, node_violations

            prof = self._load_profile()
            table = legalizers(prof)
            for i, k in enumerate(ks):
                # a BatchNorm fused into its conv is folded into the weights at export; shape/memory ops count as
                # on the NPU, as in graphopt.npu.latency, and so does a node that a legalizer rewrites into ops
                # the profile allows (a standalone BatchNorm into Mul+Add, Flatten into Reshape)
                bad = [n for j, n in enumerate(k.nodes) if not (j > 0 and n.op == "batch_norm")
                       and get_op(n.op).category not in ("shape", "memory", "quant") and node_violations(n, prof)
                       and not legalizable(n, prof, table)]
                on_npu[i] = not bad
                if bad:  # priced on the host by the profile's figures; the rest of the kernel stays as predicted
                    off += [n.name for n in bad]
                    host = sum(node_latency_us(n, prof, on_npu=False)[0] for n in bad) / 1e3
                    ms[i] = host + (ms[i] if len(bad) < len(k.nodes) else 0.0)
        over = self.overhead_ms + self.per_kernel_ms * len(ks)
        if isinstance(self.model, AdditiveLinear):
            over += self.model.intercept
        preds = [KernelPrediction(k.name, k.kind, k.sig, [n.name for n in k.nodes], k.ops, float(m), on_npu[i],
                                  bool(s)) for i, (k, m, s) in enumerate(zip(ks, ms, seen, strict=True))]
        if any(not p.seen for p in preds):
            notes.append(f"{sum(not p.seen for p in preds)} kernel(s) of a kind not in the training data: "
                         "extrapolated")
        return LatencyPrediction(self.target, self.device, self.model.to_dict()["type"],
                                 float(ms.sum() + over), float(over), preds, [n.name for n in folded],
                                 [n.name for n in dead], off, notes)

    def total_ms(self, graph: Graph) -> float:
        return self.predict(graph).total_ms

    def _load_profile(self):
        if getattr(self, "_profile_obj", None) is None:
            from graphopt.npu.profiles import load_profile

            self._profile_obj = load_profile(self.profile)
        return self._profile_obj

    # ----------------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "target": self.target, "device": self.device,
                "profile": self.profile, "unit": "ms", "rules": self.rules.to_dict(), "view": self.view,
                "overhead_ms": self.overhead_ms, "per_kernel_ms": self.per_kernel_ms, "model": self.model.to_dict(),
                "train": self.train}

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_dict(), fh, indent=None, separators=(",", ":"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | None = None) -> LatencyPredictor:
        if d.get("format") != FORMAT:
            raise ValueError(f"{path or 'predictor'}: not a graphopt latency predictor (format {d.get('format')!r})")
        m = d["model"]
        model: AdditiveLinear | GBM = AdditiveLinear.from_dict(m) if m["type"] == "additive-linear" else \
            GBM.from_dict(m)
        return cls(target=d["target"], device=d.get("device", ""), model=model,
                   rules=FusionRules.from_dict(d["rules"]), view=str(d.get("view", "full")),
                   profile=d.get("profile"), overhead_ms=float(d.get("overhead_ms", 0.0)),
                   per_kernel_ms=float(d.get("per_kernel_ms", 0.0)), train=d.get("train", {}), path=path)

    @classmethod
    def load(cls, path: Path | str) -> LatencyPredictor:
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text()), str(path))


# ------------------------------------------------------------------------------------------------ metrics
def metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Share within +-10 %, MAPE (%), Spearman and Kendall rank correlations."""
    from scipy.stats import kendalltau, spearmanr

    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    rel = np.abs(pred - true) / np.abs(true)
    rho = spearmanr(pred, true)[0] if len(true) > 2 else float("nan")
    tau = kendalltau(pred, true)[0] if len(true) > 2 else float("nan")
    return {"n": int(len(true)), "within10": float(np.mean(rel <= 0.10)), "mape": float(100 * np.mean(rel)),
            "spearman": float(rho) if not math.isnan(rho) else float("nan"),
            "kendall": float(tau) if not math.isnan(tau) else float("nan")}
