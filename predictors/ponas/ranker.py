"""PO-NAS query loop as a reusable ranker (Per-architecture training-free metric Optimization, NeurIPS 2025).

Workflow: build an :class:`ArchPool` (graphs + raw metric values), then either drive it yourself
(``pretrain`` → ``fit(evaluated)`` → ``score(pool)``) or call ``search(pool, oracle, budget)``.

CPU sizing (defaults; paper values in brackets): pretraining 20 epochs [100] with batch 256, AdamW lr 5e-3,
10 % linear warm-up then cosine; surrogate refit ≤ 1,000 steps [1,000] full-batch on the evaluated set,
AdamW lr 3e-4, wd 0.01, cosine, grad-clip 1.0, patience 100 (+10 % per restart), ≤ 5 restarts, stop at
loss ≤ 0.1. Each refit starts again from the same initial surrogate state (the "reload the pretrained
weights" step: the encoder stays frozen at its pretrained weights); restart r re-initialises the surrogate
with seed ``seed + 1 + r``; the best state seen (lowest loss) is kept.

Loop: evaluate the ``n_init`` (3) architectures with the highest mean normalised metric, refit; then
repeatedly score the pool and evaluate the best-scored unevaluated architecture, refitting after each query; the last
``final_k`` (3) queries of the budget evaluate the top-``final_k`` unevaluated architectures of the final
surrogate at once. ``budget`` counts every oracle call (initial, loop and final), so a budget of 20 is
comparable with RoBoT's 20 queries. The result is the best evaluated architecture by oracle value.
Architectures with a failed (non-finite) metric are never queried (:attr:`ArchPool.candidates`).

Choices the paper leaves open, as options (defaults = the paper's setting, as far as it is specified):
metric normalisation ``ArchPool(normalization="minmax" | "rank")``; surrogate initialisation
``PONASConfig.prior`` (0 = PyTorch default, > 0 = start from equal positive weights, i.e. the mean-metric
ranking); ``PONASConfig.ensemble`` surrogates averaged (1 = the paper) with an optional ``kappa`` × std
exploration bonus. Measured on the NB201 pool of 9,445 nets (budget 20 queries of the 12-epoch accuracy): the
default with failed-metric exclusion, 10 seeds: 94.36 ± 0.05 test accuracy (benchmarks/estimators_nb201.py,
``run_ponas``). Exploratory single-seed runs of the options (not used by default): prior=1 with the six min-max
metrics, seeds 0/1/2 → 93.54 / 94.36 / 94.36; rank + all 13 NAS-Bench-Suite-Zero metrics + prior=1, seed 1 →
93.44 (the loop stays among 73–80 % archs) but the best global Spearman ρ of the final combined score (0.864 vs
the 200-epoch test accuracy, best single metric nwot 0.810); a 3-member ensemble (seed 1) found nothing above
78 % in its first 8 queries and was stopped (3× the CPU).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from .metrics import normalize_metrics
from .model import GATEncoder, PretrainHeads, Surrogate, dense_nodes, online_loss, ponas_score

__all__ = ["ArchPool", "PONASConfig", "PONASRanker", "SearchResult"]


@dataclass
class ArchPool:
    """Candidate architectures: graphs, raw metric values (pool × metrics), optional keys (arch strings).

    ``normalized`` (min-max over this pool, see :func:`normalize_metrics`) is computed on construction unless
    given explicitly (pass it to score a new pool on an *old* pool's scale). ``normalization`` is the
    ``method`` of :func:`normalize_metrics`: ``"minmax"`` (paper) or ``"rank"`` (pool quantile).
    """

    graphs: list[Data]
    metrics: np.ndarray
    metric_names: list[str]
    keys: list[str] | None = None
    normalized: np.ndarray | None = None
    normalization: str = "minmax"

    def __post_init__(self) -> None:
        self.metrics = np.asarray(self.metrics, dtype=np.float64)
        if self.metrics.shape != (len(self.graphs), len(self.metric_names)):
            raise ValueError(
                f"ArchPool: metrics shape {self.metrics.shape} != (n_graphs={len(self.graphs)}, "
                f"n_metrics={len(self.metric_names)})"
            )
        if self.keys is not None and len(self.keys) != len(self.graphs):
            raise ValueError(f"ArchPool: {len(self.keys)} keys for {len(self.graphs)} graphs")
        if self.normalized is None:
            self.normalized = normalize_metrics(self.metrics, self.metric_names, method=self.normalization)
        self.normalized = np.asarray(self.normalized, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def candidates(self) -> np.ndarray:
        """Boolean mask of the architectures the search may query: every metric finite.

        A non-finite raw metric means its computation failed (NASLib/NAS-Bench-Suite-Zero store such failures as
        −1e8: map that sentinel to NaN before building the pool). On NB201 the only such network is the all-``none``
        cell, whose output does not depend on its input (10 % accuracy). Normalisation gives failed entries 0, the
        worst value, but PO-NAS's signed weights read a metric as ``1 − x`` when its weight is negative, which
        would turn that worst value into the best one, and the untrained network then tops the score for any
        architecture-dependent weight vector that is mostly negative. The paper does not say how failures are
        handled; our choice: such architectures stay in the pool (pretraining, normalisation, scores) but are
        never queried.
        """
        return np.isfinite(self.metrics).all(1)


@dataclass
class PONASConfig:
    """Hyper-parameters (see module docstring for the paper values).

    ``ensemble`` (K, default 1 = the paper) surrogates with different initialisations share the frozen
    encoder; each is refitted independently (member k uses initialisation seeds ``seed + 1 + r + 1000·k``)
    and the ranking score is the mean of their scores (plus ``kappa`` × their standard deviation, an optimistic
    bonus for exploration; 0 = pure exploitation).
    ``prior`` > 0 starts every surrogate (and every restart) at equal positive metric weights (see
    :class:`~.model.Surrogate`); 0 = PyTorch's default initialisation.
    """

    hidden: int = 128
    heads: int = 4
    gnn_layers: int = 2
    surrogate_dim: int = 64
    attn_heads: int = 8
    pretrain_epochs: int = 20
    pretrain_batch: int = 256
    pretrain_lr: float = 5e-3
    pretrain_wd: float = 0.01
    warmup_frac: float = 0.1
    mask_ratio: float = 0.2
    fit_steps: int = 1000
    fit_lr: float = 3e-4
    fit_wd: float = 0.01
    grad_clip: float = 1.0
    patience: int = 100
    patience_growth: float = 1.1
    max_restarts: int = 5
    target_loss: float = 0.1
    w_align: float = 0.5
    w_hinge: float = 100.0
    tie_eps: float = 0.1
    embed_batch: int = 2048
    ensemble: int = 1
    kappa: float = 0.0
    prior: float = 0.0


@dataclass
class SearchResult:
    """Outcome of :meth:`PONASRanker.search`. ``evaluated`` keeps the query order."""

    best_index: int
    best_value: float
    evaluated: dict[int, float]
    final_candidates: list[int] = field(default_factory=list)
    fit_losses: list[float] = field(default_factory=list)


@dataclass
class _Embedded:
    graph_h: torch.Tensor
    node_h: torch.Tensor
    node_mask: torch.Tensor
    x: torch.Tensor


def _warmup_cosine(total: int, warmup_frac: float) -> Callable[[int], float]:
    warm = max(1, int(round(warmup_frac * total)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return f


class PONASRanker:
    """PO-NAS surrogate ranker over an :class:`ArchPool` (see module docstring)."""

    def __init__(self, config: PONASConfig | None = None, seed: int = 0) -> None:
        self.config = config or PONASConfig()
        self.seed = seed
        self.pool: ArchPool | None = None
        self.encoder: GATEncoder | None = None
        self.surrogates: list[Surrogate] = []
        self._init_states: list[dict[str, torch.Tensor]] = []
        # id(pool) -> (pool, embeddings); the pool is held so that its id cannot be reused by a new pool
        self._cache: dict[int, tuple[ArchPool, _Embedded]] = {}
        self.pretrain_losses: list[float] = []
        self.last_fit_loss: float = math.nan

    # ------------------------------------------------------------------ pretraining
    def pretrain(self, pool: ArchPool) -> list[float]:
        """Label-free pretraining of the encoder on ``pool`` (binds the ranker to it); returns epoch loss."""
        cfg = self.config
        if not len(pool):
            raise ValueError("PONASRanker.pretrain: empty pool")
        self.pool = pool
        self._cache.clear()
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        in_dim = pool.graphs[0].x.size(1)
        self.encoder = GATEncoder(in_dim, cfg.hidden, cfg.heads, cfg.gnn_layers)
        heads = PretrainHeads(self.encoder, len(pool.metric_names))
        opt = torch.optim.AdamW(heads.parameters(), lr=cfg.pretrain_lr, weight_decay=cfg.pretrain_wd)
        n = len(pool)
        per_epoch = math.ceil(n / cfg.pretrain_batch)
        total = max(1, cfg.pretrain_epochs * per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(total, cfg.warmup_frac))
        y = torch.tensor(pool.normalized, dtype=torch.float32)
        losses: list[float] = []
        heads.train()
        for _ in range(cfg.pretrain_epochs):
            perm = torch.randperm(n, generator=gen)
            acc = 0.0
            for k in range(per_epoch):
                idx = perm[k * cfg.pretrain_batch : (k + 1) * cfg.pretrain_batch]
                b = Batch.from_data_list([pool.graphs[i] for i in idx.tolist()])
                loss = heads.loss(b.x, b.edge_index, b.batch, y[idx], cfg.mask_ratio, generator=gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                acc += float(loss.detach()) * len(idx)
            losses.append(acc / n)
        self.encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.surrogates, self._init_states = [], []
        for k in range(max(1, cfg.ensemble)):
            torch.manual_seed(self._member_seed(k, 0))
            sur = Surrogate(cfg.hidden, len(pool.metric_names), cfg.surrogate_dim, cfg.attn_heads, cfg.prior)
            self.surrogates.append(sur)
            self._init_states.append(copy.deepcopy(sur.state_dict()))
        self.pretrain_losses = losses
        return losses

    def _member_seed(self, member: int, restart: int) -> int:
        """Initialisation seed of ensemble member ``member`` at restart ``restart`` (member 0 = the K=1 seeds)."""
        return self.seed + 1 + restart + 1000 * member

    @property
    def surrogate(self) -> Surrogate | None:
        """The first ensemble member (the only one when ``ensemble == 1``)."""
        return self.surrogates[0] if self.surrogates else None

    def _require(self, pool: ArchPool | None) -> ArchPool:
        pool = pool if pool is not None else self.pool
        if pool is None or self.encoder is None:
            raise RuntimeError("PONASRanker: call pretrain(pool) (or search) first")
        if pool.metric_names != self.pool.metric_names:
            raise ValueError(
                f"PONASRanker: pool metrics {pool.metric_names} differ from the pretraining pool's "
                f"{self.pool.metric_names}"
            )
        return pool

    @torch.no_grad()
    def _embed(self, pool: ArchPool) -> _Embedded:
        key = id(pool)
        if key in self._cache:
            return self._cache[key][1]
        self._cache.clear()  # one pool at a time: a caller that rebuilds its pool (a growing search) must not leak
        gs, ns, ms = [], [], []
        for k in range(0, len(pool), self.config.embed_batch):
            b = Batch.from_data_list(pool.graphs[k : k + self.config.embed_batch])
            node_h, graph_h = self.encoder(b.x, b.edge_index, b.batch)
            dn, dm = dense_nodes(node_h, b.batch)
            gs.append(graph_h)
            ns.append(dn)
            ms.append(dm)
        nmax = max(t.size(1) for t in ns)
        ns = [torch.nn.functional.pad(t, (0, 0, 0, nmax - t.size(1))) for t in ns]
        ms = [torch.nn.functional.pad(t, (0, nmax - t.size(1)), value=False) for t in ms]
        emb = _Embedded(
            torch.cat(gs), torch.cat(ns), torch.cat(ms), torch.tensor(pool.normalized, dtype=torch.float32)
        )
        self._cache[key] = (pool, emb)
        return emb

    # ------------------------------------------------------------------ surrogate
    @staticmethod
    def _scores_for(sur: Surrogate, emb: _Embedded, idx: torch.Tensor) -> torch.Tensor:
        w = sur(emb.graph_h[idx], emb.node_h[idx], emb.node_mask[idx])
        return ponas_score(w, emb.x[idx])

    def fit(self, evaluated: Mapping[int, float], pool: ArchPool | None = None) -> float:
        """Refit the surrogate(s) on ``{pool index: oracle value}``; returns the best online loss reached
        (mean over ensemble members)."""
        pool = self._require(pool)
        if len(evaluated) < 2:
            raise ValueError(
                f"PONASRanker.fit needs at least 2 evaluated architectures, got {len(evaluated)}"
            )
        bad = [i for i in evaluated if not 0 <= int(i) < len(pool)]
        if bad:
            raise IndexError(f"PONASRanker.fit: indices {bad[:5]} are outside the pool (size {len(pool)})")
        emb = self._embed(pool)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny full-batch problem: thread hand-offs cost more than they save
        try:
            losses = [self._fit(k, emb, evaluated, len(pool.metric_names)) for k in range(len(self.surrogates))]
        finally:
            torch.set_num_threads(threads)
        self.last_fit_loss = float(np.mean(losses))
        return self.last_fit_loss

    def _fit(self, member: int, emb: _Embedded, evaluated: Mapping[int, float], n_metrics: int) -> float:
        cfg = self.config
        sur = self.surrogates[member]
        idx = torch.tensor([int(i) for i in evaluated], dtype=torch.long)
        y = torch.tensor([float(v) for v in evaluated.values()], dtype=torch.float32)
        best_loss, best_state = math.inf, None
        patience = float(cfg.patience)
        for restart in range(cfg.max_restarts + 1):
            if restart == 0:
                sur.load_state_dict(self._init_states[member])
            else:
                torch.manual_seed(self._member_seed(member, restart))
                fresh = Surrogate(cfg.hidden, n_metrics, cfg.surrogate_dim, cfg.attn_heads, cfg.prior)
                sur.load_state_dict(fresh.state_dict())
            opt = torch.optim.AdamW(sur.parameters(), lr=cfg.fit_lr, weight_decay=cfg.fit_wd)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.fit_steps))
            run_best, since = math.inf, 0
            sur.train()
            for _ in range(cfg.fit_steps):
                loss = online_loss(self._scores_for(sur, emb, idx), y, cfg.w_align, cfg.w_hinge, cfg.tie_eps)
                lv = float(loss.detach())
                if lv < best_loss:
                    best_loss = lv
                    best_state = {k: v.detach().clone() for k, v in sur.state_dict().items()}
                if lv <= cfg.target_loss:
                    break
                if lv < run_best - 1e-6:
                    run_best, since = lv, 0
                else:
                    since += 1
                    if since >= patience:
                        break
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(sur.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
            if best_loss <= cfg.target_loss:
                break
            patience *= cfg.patience_growth
        sur.load_state_dict(best_state)
        sur.eval()
        return best_loss

    @torch.no_grad()
    def member_weights(self, pool: ArchPool | None = None) -> np.ndarray:
        """Normalised signed metric weights ``w̃`` of every ensemble member: (members × pool × metrics)."""
        pool = self._require(pool)
        emb = self._embed(pool)
        members = []
        for sur in self.surrogates:
            out = []
            for k in range(0, len(pool), self.config.embed_batch):
                sl = slice(k, k + self.config.embed_batch)
                out.append(sur(emb.graph_h[sl], emb.node_h[sl], emb.node_mask[sl]))
            members.append(torch.cat(out).double().numpy())
        return np.stack(members)

    def weights(self, pool: ArchPool | None = None) -> np.ndarray:
        """Normalised signed metric weights ``w̃`` (pool × metrics) of every architecture (mean over members)."""
        return self.member_weights(pool).mean(0)

    def member_scores(self, pool: ArchPool | None = None) -> np.ndarray:
        """``s_k(a)`` ∈ [0, 1] of every ensemble member k: (members × pool)."""
        pool = self._require(pool)
        w = torch.tensor(self.member_weights(pool))
        return ponas_score(w, torch.tensor(pool.normalized).unsqueeze(0)).numpy()

    def score(self, pool: ArchPool | None = None) -> np.ndarray:
        """Combined score of every architecture of ``pool`` (default: the pretraining pool): the mean member
        score ``s(a)`` ∈ [0, 1] (for K=1 exactly the paper's score), plus ``kappa`` × the members' std."""
        s = self.member_scores(pool)
        out = s.mean(0)
        if self.config.kappa and len(s) > 1:
            out = out + self.config.kappa * s.std(0)
        return out

    # ------------------------------------------------------------------ query loop
    def search(
        self,
        pool: ArchPool,
        oracle: Callable[[int], float],
        budget: int = 20,
        n_init: int = 3,
        final_k: int = 3,
        pretrain: bool = True,
        callback: Callable[[int, float, int], None] | None = None,
    ) -> SearchResult:
        """Run the PO-NAS loop with ``oracle(pool_index) -> value`` (higher is better), ``budget`` calls.

        ``callback(index, value, n_evaluated)`` is called after every query (progress reporting).
        """
        if budget < n_init + final_k or n_init < 2:
            raise ValueError(
                f"search: need n_init >= 2 and budget >= n_init + final_k, got {budget=}, "
                f"{n_init=}, {final_k=}"
            )
        cand = pool.candidates
        if budget > int(cand.sum()):
            raise ValueError(f"search: budget {budget} exceeds the {int(cand.sum())} queryable architectures")
        if pretrain or self.pool is not pool:
            self.pretrain(pool)
        evaluated: dict[int, float] = {}
        fit_losses: list[float] = []

        def query(i: int) -> None:
            if i in evaluated:  # defensive: the loop below only proposes unevaluated indices
                raise RuntimeError(f"search: architecture {i} would be evaluated twice")
            evaluated[i] = float(oracle(i))
            if callback is not None:
                callback(i, evaluated[i], len(evaluated))

        mean_norm = np.where(cand, pool.normalized.mean(1), -np.inf)
        for i in np.argsort(-mean_norm, kind="stable")[:n_init]:
            query(int(i))
        fit_losses.append(self.fit(evaluated))

        def ranked_unevaluated() -> list[int]:
            s = self.score(pool)
            order = np.argsort(-s, kind="stable")
            return [int(i) for i in order if cand[i] and int(i) not in evaluated]

        while len(evaluated) < budget - final_k:
            query(ranked_unevaluated()[0])
            fit_losses.append(self.fit(evaluated))
        final = ranked_unevaluated()[:final_k]
        for i in final:
            query(i)
        best = max(evaluated, key=lambda i: evaluated[i])
        return SearchResult(best, evaluated[best], evaluated, final, fit_losses)

    @staticmethod
    def pool_from_graphs(
        graphs: Sequence[Data],
        metrics: np.ndarray,
        metric_names: Sequence[str],
        keys: Sequence[str] | None = None,
    ) -> ArchPool:
        """Convenience constructor of :class:`ArchPool`."""
        return ArchPool(list(graphs), metrics, list(metric_names), None if keys is None else list(keys))
