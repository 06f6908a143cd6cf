"""DPS: dynamic path selection for segmentation NAS (NeurIPS 2025), CPU-sized; SPOS baseline in the same code.

Supernet (:class:`DPSHRNet`): HRNet-lite layout with three branches (1, 1/2, 1/4 resolution). Per branch one
searchable residual block: operator/kernel ``op.<b>`` in {conv3, conv5, dw3, dw5} (separate weights per
choice) and inner width ``width.<b>`` in {0.5, 1.0} (leading channel slice); per fusion connection
``fuse.<i>.<j>`` (branch j into i) on/off. A *path* fixes all 15 choices.

Proxies (the formulas marked *choice* in the spec are ours):

* convergence: angle ``theta(p) = arccos(<w0, wt> / (|w0||wt|))`` over the path's *own* weights (its branch
  blocks' slices and its enabled fusion convs; shared stem/head excluded, so untrained paths stay at 0);
* expressiveness: ridge-regression predictor on the path encoding, fit on supernet mIoU of held-out batches
  (every sampled path is measured on one held-out batch per step);
* generalization: multi-scale information bottleneck ``sum_s [HSIC(X, Z_s) - beta HSIC(Y, Z_s)]`` over the
  pooled branch features ``Z_s`` (Gaussian kernels, median bandwidth; ``Y`` = per-image class presence), lower
  is better (the proxy is its negative).

Each step samples ``K`` paths, scores them with the current stage's objectives (S1: convergence; S2:
expressiveness; S3: expressiveness and generalization), keeps the Pareto non-dominated set, enforces diversity
(greedy: a selected path closer than ``delta`` in Hamming distance to an already kept one is rejected; plus
``ceil(eps * n)`` random paths) and trains only the selected paths. Stage scheduler: every ``eval_every`` steps
the current proxy ranks a fixed probe set; when Kendall tau between successive rankings exceeds ``tau_star`` the
next stage starts. Final: the path with the best validation mIoU among sampled candidates, retrained.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch import nn

from graphopt.models.dps_block import CandidateBlock

OPS = ["conv3", "conv5", "dw3", "dw5"]
WIDTHS = [0.5, 1.0]
FUSE = [(i, j) for i in range(3) for j in range(3) if i != j]


# ------------------------------------------------------------------------------------------------ space
def dps_space(n_branches: int = 3) -> dict[str, list[Any]]:
    sp: dict[str, list[Any]] = {}
    for b in range(n_branches):
        sp[f"op.{b}"] = list(OPS)
        sp[f"width.{b}"] = list(WIDTHS)
    for i, j in FUSE:
        sp[f"fuse.{i}.{j}"] = [0, 1]
    return sp


def random_path(rng: random.Random) -> dict[str, Any]:
    return {k: rng.choice(v) for k, v in dps_space().items()}


def encode(path: Mapping[str, Any]) -> np.ndarray:
    """One-hot op per branch, width per branch, fusion bits (the predictor's features)."""
    f: list[float] = []
    for b in range(3):
        f += [1.0 if path[f"op.{b}"] == o else 0.0 for o in OPS]
        f.append(float(path[f"width.{b}"]))
    f += [float(path[f"fuse.{i}.{j}"]) for i, j in FUSE]
    return np.asarray(f)


def hamming(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    return sum(a[k] != b[k] for k in a)


# ---------------------------------------------------------------------------------------------- supernet
def _cbr(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DPSHRNet(nn.Module):
    """Multi-path HRNet-lite supernet; ``forward(x, path)``; ``features`` gives the branch outputs."""

    def __init__(self, widths: Sequence[int] = (8, 16, 32), num_classes: int = 11) -> None:
        super().__init__()
        self.widths = list(widths)
        w = self.widths
        self.stem = _cbr(3, w[0], 3)
        self.trans = nn.ModuleList([_cbr(w[0], w[1], 3, 2), _cbr(w[1], w[2], 3, 2)])
        self.blocks = nn.ModuleList(nn.ModuleDict({o: CandidateBlock(c, o) for o in OPS}) for c in w)
        fuse: dict[str, nn.Module] = {}
        for i, j in FUSE:
            if j > i:
                fuse[f"{i}{j}"] = _cbr(w[j], w[i], 1, relu=False)
            else:
                fuse[f"{i}{j}"] = nn.Sequential(*[_cbr(w[j], w[i] if s == i - j - 1 else w[j], 3, 2,
                                                       relu=s != i - j - 1) for s in range(i - j)])
        self.fuse = nn.ModuleDict(fuse)
        self.head = nn.Sequential(_cbr(sum(w), sum(w), 1), nn.Conv2d(sum(w), num_classes, 1))
        self.num_classes = num_classes

    def features(self, x: torch.Tensor, path: Mapping[str, Any]) -> list[torch.Tensor]:
        b0 = self.stem(x)
        xs = [b0, self.trans[0](b0)]
        xs.append(self.trans[1](xs[1]))
        xs = [self.blocks[b][path[f"op.{b}"]](xs[b], float(path[f"width.{b}"])) for b in range(3)]
        outs = []
        for i in range(3):
            acc = xs[i]
            for j in range(3):
                if j == i or not int(path[f"fuse.{i}.{j}"]):
                    continue
                y = self.fuse[f"{i}{j}"](xs[j])
                if j > i:
                    y = F.interpolate(y, scale_factor=float(2 ** (j - i)), mode="bilinear", align_corners=False)
                acc = acc + y
            outs.append(F.relu(acc))
        return outs

    def forward(self, x: torch.Tensor, path: Mapping[str, Any]) -> torch.Tensor:
        fs = self.features(x, path)
        up = [f if b == 0 else F.interpolate(f, scale_factor=float(2**b), mode="bilinear", align_corners=False)
              for b, f in enumerate(fs)]
        return self.head(torch.cat(up, 1))

    def path_weights(self, path: Mapping[str, Any]) -> torch.Tensor:
        """The path's own weights, flattened (for the angle score)."""
        ws: list[torch.Tensor] = []
        for b in range(3):
            ws += self.blocks[b][path[f"op.{b}"]].path_weights(float(path[f"width.{b}"]))
        for i, j in FUSE:
            if int(path[f"fuse.{i}.{j}"]):
                ws += [m.weight for m in self.fuse[f"{i}{j}"].modules() if isinstance(m, nn.Conv2d)]
        return torch.cat([w.detach().reshape(-1) for w in ws])


# -------------------------------------------------------------------------------------------- proxies
def angle(w0: torch.Tensor, wt: torch.Tensor) -> float:
    """``arccos(<w0, wt> / (|w0| |wt|))``, 0 when unchanged."""
    c = float(torch.dot(w0, wt) / (w0.norm() * wt.norm()).clamp_min(1e-12))
    return math.acos(max(-1.0, min(1.0, c))) if abs(c - 1.0) > 1e-7 else 0.0


def _gauss(x: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(x, x) ** 2
    med = d[d > 0].median() if bool((d > 0).any()) else torch.tensor(1.0)
    return torch.exp(-d / med.clamp_min(1e-12))


def hsic(x: torch.Tensor, y: torch.Tensor) -> float:
    """Biased HSIC estimator with Gaussian kernels (median heuristic)."""
    n = x.shape[0]
    h = torch.eye(n) - 1.0 / n
    k, l_ = _gauss(x.float()), _gauss(y.float())
    return float(torch.trace(k @ h @ l_ @ h) / (n - 1) ** 2)


def ib_score(x: torch.Tensor, y_presence: torch.Tensor, feats: Sequence[torch.Tensor], beta: float = 2.0) -> float:
    """Multi-scale IB ``sum_s HSIC(X, Z_s) - beta HSIC(Y, Z_s)`` (lower = more label info per input info)."""
    xf = F.adaptive_avg_pool2d(x, 8).flatten(1)
    return sum(hsic(xf, F.adaptive_avg_pool2d(z, 1).flatten(1)) - beta * hsic(y_presence, F.adaptive_avg_pool2d(
        z, 1).flatten(1)) for z in feats)


class RidgePredictor:
    """Expressiveness proxy: ridge regression on path encodings -> supernet mIoU."""

    def __init__(self, lam: float = 1.0) -> None:
        self.lam, self.X, self.y, self.w = lam, [], [], None  # type: ignore[var-annotated]

    def add(self, path: Mapping[str, Any], miou: float) -> None:
        self.X.append(encode(path))
        self.y.append(miou)
        self.w = None

    def predict(self, path: Mapping[str, Any]) -> float:
        if len(self.y) < 2:
            return 0.0
        if self.w is None:
            X = np.c_[np.asarray(self.X), np.ones(len(self.X))]
            y = np.asarray(self.y)
            self.w = np.linalg.solve(X.T @ X + self.lam * np.eye(X.shape[1]), X.T @ y)
        return float(np.r_[encode(path), 1.0] @ self.w)


# ----------------------------------------------------------------------------------------- selection
def pareto_front(scores: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated rows (all objectives maximized)."""
    s = np.asarray(scores, dtype=np.float64)
    out = []
    for i in range(len(s)):
        dom = np.all(s >= s[i], axis=1) & np.any(s > s[i], axis=1)
        if not dom.any():
            out.append(i)
    return out


def diverse(paths: Sequence[Mapping[str, Any]], order: Sequence[int], delta: int) -> list[int]:
    """Greedy: keep paths in ``order`` unless within Hamming distance ``< delta`` of one already kept."""
    kept: list[int] = []
    for i in order:
        if all(hamming(paths[i], paths[k]) >= delta for k in kept):
            kept.append(i)
    return kept


class StageScheduler:
    """S1 -> S2 -> S3; moves on when Kendall tau between successive probe rankings exceeds ``tau_star``."""

    STAGES = ("S1", "S2", "S3")

    def __init__(self, tau_star: float = 0.7) -> None:
        self.tau_star, self.index, self.prev = tau_star, 0, None  # type: ignore[var-annotated]
        self.history: list[dict[str, Any]] = []

    @property
    def stage(self) -> str:
        return self.STAGES[self.index]

    def observe(self, scores: Sequence[float], step: int = 0) -> bool:
        """Record the current proxy's scores on the probe set; returns True when the stage changed."""
        fired = False
        tau = None
        if self.prev is not None and self.index < len(self.STAGES) - 1:
            tau = float(kendalltau(self.prev, scores).statistic)
            if np.isfinite(tau) and tau > self.tau_star:
                self.history.append({"step": step, "from": self.stage, "to": self.STAGES[self.index + 1],
                                     "tau": tau})
                self.index += 1
                fired = True
        self.prev = None if fired else list(scores)  # a new stage starts a new ranking series
        return fired


# -------------------------------------------------------------------------------------------- search
def miou(logits: torch.Tensor, y: torch.Tensor, n_classes: int, ignore_index: int = 255) -> float:
    """Mean IoU over classes present in prediction or target."""
    pred = logits.argmax(1)
    valid = y != ignore_index
    p, t = pred[valid], y[valid]
    cm = torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    inter = cm.diag().float()
    union = cm.sum(0).float() + cm.sum(1).float() - inter
    ok = union > 0
    return float((inter[ok] / union[ok]).mean()) if bool(ok.any()) else 0.0


@torch.no_grad()
def supernet_miou(net: DPSHRNet, path: Mapping[str, Any],
                  batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Supernet estimate: mIoU with inherited weights, BN in batch-statistics mode (one-shot convention)."""
    net.train()
    return float(np.mean([miou(net(x, path), y, net.num_classes) for x, y in batches]))


@dataclass
class DPSResult:
    strategy: str
    path: dict[str, Any]
    val_miou: float
    stages: list[dict[str, Any]] = field(default_factory=list)
    updates: int = 0
    update_counts: dict[str, int] = field(default_factory=dict)
    candidates: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    graph: Any = None
    seconds: float = 0.0


def dps_search(net: DPSHRNet, train_batches: Callable[[], tuple[torch.Tensor, torch.Tensor]],
               held_out: Sequence[tuple[torch.Tensor, torch.Tensor]], val: Sequence[tuple[torch.Tensor, torch.Tensor]],
               *, steps: int = 60, K: int = 6, delta: int = 2, eps: float = 0.2, tau_star: float = 0.7,
               eval_every: int = 5, n_probe: int = 8, n_final: int = 20, beta: float = 2.0, lr: float = 3e-3,
               strategy: str = "dps", update_budget: int | None = None, seed: int = 0, log: Any = None) -> DPSResult:
    """DPS (``strategy='dps'``) or SPOS (``'spos'``: one uniform path per update) with the same update budget.

    ``train_batches()`` returns the next training batch; ``held_out`` feeds the predictor; ``val`` picks the
    final path. ``update_budget`` caps the number of path updates (SPOS gets DPS's count for equal budget).
    """
    t0 = time.time()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    init = {n: p.detach().clone() for n, p in net.named_parameters()}

    def init_weights(path: Mapping[str, Any]) -> torch.Tensor:
        cur = {n: p.data.clone() for n, p in net.named_parameters()}
        for n, p in net.named_parameters():
            p.data.copy_(init[n])
        w0 = net.path_weights(path)
        for n, p in net.named_parameters():
            p.data.copy_(cur[n])
        return w0

    def train_path(path: Mapping[str, Any]) -> None:
        net.train()
        x, y = train_batches()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, path), y, ignore_index=255).backward()
        opt.step()

    sched = StageScheduler(tau_star)
    pred = RidgePredictor()
    probe = [random_path(rng) for _ in range(n_probe)]
    counts: dict[str, int] = {}
    updates = 0
    budget = update_budget if update_budget is not None else 10**9

    def key(p: Mapping[str, Any]) -> str:
        return ",".join(f"{k}={p[k]}" for k in sorted(p))

    def objectives(paths: list[dict[str, Any]], stage: str) -> list[list[float]]:
        if stage == "S1":
            return [[angle(init_weights(p), net.path_weights(p))] for p in paths]
        if stage == "S2":
            return [[pred.predict(p)] for p in paths]
        x, y = held_out[0]
        pres = F.one_hot(y.clamp(max=net.num_classes - 1), net.num_classes).flatten(1, 2).amax(1).float()
        out = []
        with torch.no_grad():
            net.train()
            for p in paths:
                out.append([pred.predict(p), -ib_score(x, pres, net.features(x, p), beta)])
        return out

    for step in range(steps):
        if updates >= budget:
            break
        if strategy == "spos":
            p = random_path(rng)
            train_path(p)
            counts[key(p)] = counts.get(key(p), 0) + 1
            updates += 1
            continue
        cands = [random_path(rng) for _ in range(K)]
        for p in cands:  # predictor data: supernet mIoU on one held-out batch
            pred.add(p, supernet_miou(net, p, held_out[:1]))
        sc = objectives(cands, sched.stage)
        front = pareto_front(sc)
        front.sort(key=lambda i: -sc[i][0])
        sel = diverse(cands, front, delta)
        sel += [j for j in rng.sample(range(K), k=min(K, math.ceil(eps * len(sel)))) if j not in sel]
        for i in sel:
            if updates >= budget:
                break
            train_path(cands[i])
            counts[key(cands[i])] = counts.get(key(cands[i]), 0) + 1
            updates += 1
        if (step + 1) % eval_every == 0:
            if sched.observe([s[0] for s in objectives(probe, sched.stage)], step + 1) and log:
                log(f"dps step {step + 1}: stage -> {sched.stage}")
    finals = [random_path(rng) for _ in range(n_final)]
    scored = [(p, supernet_miou(net, p, val)) for p in finals]
    best, bm = max(scored, key=lambda t: t[1])
    return DPSResult(strategy, best, bm, sched.history, updates, counts, scored, None, time.time() - t0)


# --------------------------------------------------------------------------------------------- IR emission
def dps_supernet_graph(net: DPSHRNet, image_size: int = 32, batch: int | str = "N"):
    """The multi-path supernet in the IR: ``choice`` per branch op and fusion edge, elastic inner widths."""
    from graphopt.ir.graph import Graph
    from graphopt.ir.types import DType, TensorType
    from graphopt.supernet import ElasticDim, _Builder

    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    g = Graph("dps_hrnet")
    b = _Builder(g, sd)

    def cbr(x, prefix: str, k: int, stride: int = 1, relu: bool = True):
        y = b.bn(b.conv(x, prefix + ".0", k, stride, k // 2), prefix + ".1")
        return b.relu(y, prefix + ".2") if relu else y

    def up(x, f: int, name: str):
        sc = g.add_const(name + ".scales", np.asarray([1.0, 1.0, f, f], dtype=np.float32))
        return g.create_node("resize", [x, None, sc], {"mode": "linear"}, name=name).output

    x = g.add_input("x", TensorType(DType.float32, (batch, 3, image_size, image_size)))
    b0 = cbr(x, "stem", 3)
    xs = [b0, cbr(b0, "trans.0", 3, 2)]
    xs.append(cbr(xs[1], "trans.1", 3, 2))
    dims = []
    for br in range(3):
        alts = []
        C = net.widths[br]
        targets: list[Any] = []
        for o in OPS:
            p = f"blocks.{br}.{o}"
            h = xs[br]
            if o.startswith("dw"):
                k = int(o[-1])
                h = g.create_node("conv", [h, b.w(p + ".dw.weight")], {"kernel_shape": [k, k], "pads": [k // 2] * 4,
                                  "group": C}, name=p + ".dw").output
                h = b.conv(h, p + ".conv_a", 1)
            else:
                h = b.conv(h, p + ".conv_a", int(o[-1]), 1, int(o[-1]) // 2)
            h = b.relu(b.bn(h, p + ".bn_a"), p + ".relu_a")
            h = b.bn(b.conv(h, p + ".conv_b", 1), p + ".bn_b")
            alts.append(b.relu(g.create_node("add", [xs[br], h], name=p + ".add").output, p + ".out"))
            targets += [(p + ".conv_a.weight", 0, C), (p + ".conv_b.weight", 1, C)]
            targets += [(f"{p}.bn_a.{s}", 0, C) for s in ("weight", "bias", "running_mean", "running_var")]
        dims.append(ElasticDim(f"width.{br}", list(WIDTHS), "slice", targets).to_dict())
        xs[br] = g.create_node("choice", [None, *alts], {"point": f"op.{br}", "labels": list(OPS)},
                               name=f"blocks.{br}.choice").output
    outs = []
    for i in range(3):
        acc = xs[i]
        for j in range(3):
            if j == i:
                continue
            p = f"fuse.{i}{j}"
            if j > i:
                y = up(cbr(xs[j], p, 1, relu=False), 2 ** (j - i), p + ".up")
            else:
                y = xs[j]
                for s in range(i - j):
                    y = cbr(y, f"{p}.{s}", 3, 2, relu=s != i - j - 1)
            with_ = g.create_node("add", [acc, y], name=p + ".add").output
            acc = g.create_node("choice", [None, acc, with_], {"point": f"fuse.{i}.{j}", "labels": ["0", "1"]},
                                name=p + ".choice").output
        outs.append(b.relu(acc, f"fuse_out.{i}"))
    cat = g.create_node("concat", [outs[0], up(outs[1], 2, "head.up1"), up(outs[2], 4, "head.up2")], {"axis": 1},
                        name="head.concat").output
    h = cbr(cat, "head.0", 1)
    h = g.create_node("conv", [h, b.w("head.1.weight"), b.w("head.1.bias")], {"kernel_shape": [1, 1]},
                      name="head.1").output
    g.set_outputs([h])
    g.meta["elastic_dims"] = dims
    return g


def dps_path_graph(net: DPSHRNet, path: Mapping[str, Any], image_size: int = 32, batch: int | str = "N"):
    """Materialize ``path`` (fusion bits as 0/1, widths as fractions) through the IR."""
    from graphopt.supernet import materialize

    p = {k: (str(int(v)) if k.startswith("fuse.") else v) for k, v in path.items()}
    return materialize(dps_supernet_graph(net, image_size, batch), p)


# ------------------------------------------------------------------------------------------- benchmark
def train_standalone(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                     test: Sequence[tuple[torch.Tensor, torch.Tensor]], epochs: int, n_classes: int = 11,
                     lr: float = 3e-3) -> float:
    """Identical (re)training recipe for every compared path: Adam + cosine, then test mIoU (eval-mode BN)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * len(batches)))
    for _ in range(epochs):
        model.train()
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y, ignore_index=255).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        return float(np.mean([miou(model(x), y, n_classes) for x, y in test]))


def dps_benchmark(quick: bool = True, seeds: Sequence[int] = (0, 1, 2)) -> dict[str, Any]:
    """DPS vs SPOS on CIFAR-paste (32x32 canvas) with the HRNet-lite supernet; see benchmarks/supernet.py."""
    from scipy.stats import kendalltau, spearmanr

    from graphopt.backends.torch import to_torch
    from graphopt.eval.data import BatchLoader, load_dataset

    n_train, n_val, n_test = (600, 96, 160) if quick else (2000, 200, 500)
    steps, epochs, n_rank = (40, 6, 10) if quick else (120, 12, 12)
    out: dict[str, Any] = {"protocol": {"data": f"cifar_paste canvas 32, objects 12-24 px, {n_train}/{n_val}/{n_test}",
                                        "supernet": "DPSHRNet widths (8,16,32), 4 ops x 2 widths per branch, "
                                                    "6 fusion bits", "dps_steps": steps, "K": 6,
                                        "retrain_epochs": epochs, "rank_paths": n_rank, "seeds": list(seeds),
                                        "budget": "SPOS gets exactly DPS's number of path updates"},
                           "runs": []}
    table = []
    rank_rows = []
    for seed in seeds:
        sp = load_dataset("cifar_paste", seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, canvas=32,
                          size=(12, 24))
        train = list(BatchLoader(sp.train, 32, shuffle=True, seed=seed, drop_last=True))
        val_all = list(BatchLoader(sp.val, 48))
        test = list(BatchLoader(sp.test, 80))
        it = {"i": 0}

        def next_batch(train=train, it=it):
            it["i"] += 1
            return train[it["i"] % len(train)]

        res = {}
        nets = {}
        for strat in ("dps", "spos"):
            torch.manual_seed(seed)
            net = DPSHRNet()
            budget = None if strat == "dps" else res["dps"].updates
            r = dps_search(net, next_batch, val_all[:1], val_all[1:], steps=steps if strat == "dps" else 10**6,
                           strategy=strat, update_budget=budget, seed=seed, log=print)
            torch.manual_seed(seed + 100)
            fresh = DPSHRNet()
            r.graph = dps_path_graph(fresh, r.path)  # retrain the chosen path from scratch, via the IR
            acc = train_standalone(to_torch(r.graph), train, test, epochs)
            res[strat], nets[strat] = r, net
            row = {"strategy": strat, "seed": seed, "retrained_miou": acc, "supernet_val_miou": r.val_miou,
                   "updates": r.updates, "distinct_paths_trained": len(r.update_counts), "stages": r.stages,
                   "path": r.path, "seconds": round(r.seconds, 1)}
            out["runs"].append(row)
            print(f"  {strat:4s} seed {seed}: retrained mIoU {acc:.4f}, supernet val mIoU {r.val_miou:.4f}, "
                  f"{r.updates} updates, stages {[(s['step'], s['to']) for s in r.stages]}", flush=True)
        if seed == seeds[0]:
            rng = random.Random(1234)
            paths = [random_path(rng) for _ in range(n_rank)]
            stand = []
            for p in paths:
                stand.append(_standalone(p, train, test, epochs, seed))
            for strat in ("dps", "spos"):
                est = [supernet_miou(nets[strat], p, val_all[1:]) for p in paths]
                kt = float(kendalltau(est, stand).statistic)
                sr = float(spearmanr(est, stand).statistic)
                rank_rows.append({"strategy": strat, "kendall_tau": kt, "spearman": sr})
            out["rank"] = {"paths": paths, "standalone_miou": stand, "rows": rank_rows}
    for strat in ("dps", "spos"):
        v = [r["retrained_miou"] for r in out["runs"] if r["strategy"] == strat]
        out[strat] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
        rr = next((r for r in rank_rows if r["strategy"] == strat), None)
        vals = ", ".join(f"{a:.4f}" for a in v)
        table.append(f"{strat:5s} retrained mIoU {np.mean(v):.4f} +- {np.std(v):.4f} ({vals})"
                     + (f"; rank corr. (supernet vs stand-alone, {n_rank} paths) Kendall {rr['kendall_tau']:.3f} "
                        f"Spearman {rr['spearman']:.3f}" if rr else ""))
    out["table"] = table
    return out


def _standalone(path: Mapping[str, Any], train, test, epochs: int, seed: int) -> float:
    torch.manual_seed(seed + 200)
    net = DPSHRNet()

    class _P(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x, path)

    return train_standalone(_P(), train, test, epochs)
