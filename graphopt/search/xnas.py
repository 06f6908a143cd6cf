"""XNAS: differentiable NAS with expert advice (Nayman et al., NeurIPS 2019), on the NB201 cell space.

Each edge is a forecaster whose experts are the candidate ops. Per round (one application of a cell on a
validation batch): ``p = softmax(v)`` over the active set; reward ``r_i = -dL/dp_i = -<dL/dy, f_i(x)>``
(a tensor hook on the mixed output ``y``, dotted with each op's output), clipped to ``|r_i| <= L``;
exponentiated-gradient step ``v_i += eta * r_i`` with ``eta = sqrt(2 ln N / (T L^2))``; wipe-out of every
expert with ``v_i < max_j v_j - 2 eta L (T - t)`` (it can no longer catch up, since a gap moves at most
``2 eta L`` per round). Network weights: SGD on the other data half, alternating with the architecture step.

Documented choices: NB201 cells all share one architecture (one forecaster type), so one step over a
batch is ``n_cells`` rounds: each cell application's reward is clipped separately and the rewards are summed
(this sum is exactly ``-dL/dp`` for the shared ``p``), ``t`` advances by ``n_cells`` and
``T = steps * n_cells`` (the paper's "T = examples x epochs x cells of that type"). Derivation: per edge
the active op with the largest ``v``, excluding ``none`` (NB201 keeps every edge, so no top-2 step).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphopt.eval.data import BatchLoader
from graphopt.models.nb201 import NB201Supernet
from graphopt.search.supernet_train import (
    accuracy,
    cycle,
    derive_nb201,
    make_weight_optimizer,
    nb201_path_graph,
    search_splits,
)
from graphopt.supernet import NB201_EDGES, NB201_OPS, nb201_path_to_arch


def nb201_test_accuracy(arch: str, csv_path: str | None = None) -> float | None:
    """CIFAR-10 test accuracy (200-epoch NB201 schedule) of ``arch`` from the shared NB201 CSV, if present.

    Looks in ``csv_path``, ``$GRAPHOPT_DATA_DIR/nas/`` and ``<project>/../shared/data/nas/``.
    """
    import csv
    import os
    from pathlib import Path

    name = "nb201_test_acc_3datasets_vtao.csv"
    cands = [Path(csv_path)] if csv_path else []
    if os.environ.get("GRAPHOPT_DATA_DIR"):
        cands.append(Path(os.environ["GRAPHOPT_DATA_DIR"]) / "nas" / name)
    cands.append(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nas" / name)
    for p in cands:
        if p.is_file():
            if str(p) not in _NB201_CACHE:
                with open(p) as f:
                    _NB201_CACHE[str(p)] = {r["ArchitectureString"]: float(r["CIFAR10TestAccuracy200Epochs"])
                                            for r in csv.DictReader(f)}
            return _NB201_CACHE[str(p)].get(arch)
    return None


_NB201_CACHE: dict[str, dict[str, float]] = {}


class ExpertAdvice:
    """Exponentiated-gradient forecasters with wipe-out (one row of ``v`` per forecaster).

    ``T`` is the total number of rounds, ``L`` the reward bound; ``eta`` defaults to ``sqrt(2 ln N/(T L^2))``.
    """

    def __init__(self, n_forecasters: int, n_experts: int, T: int, L: float = 1.0, eta: float | None = None,
                 wipeout: bool = True) -> None:
        if T < 1 or n_experts < 2 or L <= 0:
            raise ValueError(f"ExpertAdvice: need T >= 1 (got {T}), >= 2 experts (got {n_experts}), L > 0 (got {L})")
        self.N, self.T, self.L = n_experts, int(T), float(L)
        self.eta = float(eta) if eta is not None else math.sqrt(2.0 * math.log(n_experts) / (T * L * L))
        self.v = np.zeros((n_forecasters, n_experts))
        self.active = np.ones((n_forecasters, n_experts), dtype=bool)
        self.t = 0
        self.wipeout = wipeout
        self.wiped: list[tuple[int, int, int]] = []  # (forecaster, expert, round)

    def probs(self) -> np.ndarray:
        """Softmax of ``v`` over each forecaster's active set (0 for wiped experts)."""
        z = np.where(self.active, self.v, -np.inf)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def threshold(self) -> np.ndarray:
        """Per forecaster: experts below this are wiped (``max_j v_j - 2 eta L (T - t)``, never above the max)."""
        vmax = np.where(self.active, self.v, -np.inf).max(axis=1)
        return vmax - 2.0 * self.eta * self.L * max(self.T - self.t, 0)

    def update(self, rewards: np.ndarray, rounds: int = 1) -> list[tuple[int, int]]:
        """Apply ``rewards`` (already the sum over ``rounds`` clipped rounds) and wipe; returns wiped (f, i)."""
        r = np.asarray(rewards, dtype=np.float64)
        if r.shape != self.v.shape:
            raise ValueError(f"ExpertAdvice.update: rewards shape {r.shape} != {self.v.shape}")
        r = np.clip(r, -self.L * rounds, self.L * rounds)
        self.v = np.where(self.active, self.v + self.eta * r, self.v)
        self.t += rounds
        out: list[tuple[int, int]] = []
        if self.wipeout:
            thr = self.threshold()
            drop = self.active & (self.v < thr[:, None])
            for f, i in zip(*np.nonzero(drop), strict=True):
                self.wiped.append((int(f), int(i), self.t))
                out.append((int(f), int(i)))
            self.active &= ~drop
        return out

    def active_sets(self) -> list[list[int]]:
        return [list(np.nonzero(a)[0]) for a in self.active]


@dataclass
class SearchResult:
    """What a supernet search returns: the path, its NB201 string (if any), trajectory and timing."""

    strategy: str
    path: dict[str, Any]
    arch: str | None = None
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    supernet_acc: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    graph: Any = None  # the materialized IR graph of ``path``

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "graph"}


class Downsampled:
    """A loader whose images are average-pooled by ``factor`` (CPU budget: 16x16 CIFAR is 4x cheaper)."""

    def __init__(self, loader: BatchLoader, factor: int = 1) -> None:
        self.loader, self.factor = loader, factor

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield (F.avg_pool2d(x, self.factor) if self.factor > 1 else x), y


def _loaders(data: str, n_search: int, batch: int, seed: int, downsample: int = 1):
    tr, va, te = search_splits(data, n_search=n_search, seed=seed)
    return (Downsampled(BatchLoader(tr, batch, shuffle=True, seed=seed, drop_last=True), downsample),
            Downsampled(BatchLoader(va, batch, shuffle=True, seed=seed + 1, drop_last=True), downsample),
            Downsampled(BatchLoader(te, 256), downsample))


def xnas_search(*, data: str = "cifar10", C: int = 8, N: int = 1, epochs: int = 5, n_search: int = 2000,
                batch: int = 64, seed: int = 0, L: float = 1.0, w_lr: float = 0.025,
                downsample: int = 1, log: Any = None) -> SearchResult:
    """XNAS on the NB201 supernet; returns the derived path (materialized through the IR in ``.graph``)."""
    torch.manual_seed(seed)
    t0 = time.time()
    tr, va, te = _loaders(data, n_search, batch, seed, downsample)
    net = NB201Supernet(C=C, N=N)
    steps = epochs * len(tr)
    n_cells = net.n_super_cells
    xa = ExpertAdvice(len(NB201_EDGES), len(NB201_OPS), T=steps * n_cells, L=L)
    opt, sched = make_weight_optimizer(net, steps, lr=w_lr)
    edges = net.mixed_edges()
    keys = [f"e{i}{j}" for i, j in NB201_EDGES]
    traj: list[dict[str, Any]] = []
    val_it = cycle(va)
    step = 0
    for ep in range(epochs):
        net.train()
        for x, y in tr:
            # weight step on the training half with the current forecast
            p = torch.tensor(xa.probs(), dtype=torch.float32)
            act = xa.active_sets()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x, p, act), y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            # architecture step on the validation half: rewards from hooks on the mixed outputs
            xv, yv = next(val_it)
            net.set_record(True)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xv, p, act), yv).backward()
            r = np.stack([sum((m.rewards(clip=L) for m in edges[k]), torch.zeros(len(NB201_OPS))).numpy()
                          for k in keys])
            net.set_record(False)
            opt.zero_grad(set_to_none=True)
            wiped = xa.update(r, rounds=n_cells)
            step += 1
            for f, i in wiped:
                traj.append({"step": step, "event": "wipe", "edge": keys[f], "op": NB201_OPS[i]})
        rec = {"epoch": ep + 1, "step": step, "active": {k: [NB201_OPS[i] for i in a]
                                                         for k, a in zip(keys, xa.active_sets(), strict=True)},
               "p": np.round(xa.probs(), 4).tolist(), "path": derive_nb201(torch.tensor(xa.v), xa.active_sets())}
        traj.append(rec)
        if log:
            log(f"xnas epoch {ep + 1}: active per edge {[int(a.sum()) for a in xa.active]}")
    path = derive_nb201(torch.tensor(xa.v), xa.active_sets())
    net.eval()
    p = torch.tensor(xa.probs(), dtype=torch.float32)
    sacc = accuracy(lambda x: net(x, p, xa.active_sets()), te)
    res = SearchResult("xnas", path, nb201_path_to_arch(path), traj, time.time() - t0, sacc,
                       {"eta": xa.eta, "T": xa.T, "L": L, "v": xa.v.tolist(),
                        "active": [[NB201_OPS[i] for i in a] for a in xa.active_sets()],
                        "wiped": [(keys[f], NB201_OPS[i], t) for f, i, t in xa.wiped]})
    res.graph = nb201_path_graph(net, path)
    return res
