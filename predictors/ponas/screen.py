"""PO-NAS as a screen in front of an expensive oracle: which proposed mutants an evolutionary search should train.

:meth:`PONASRanker.search` runs the paper's loop on a *fixed* pool. In AutoGO's evolution the pool is not known
up front: mutants appear generation by generation, and every query is a real (short) training. The screen
keeps PO-NAS's pieces and its loop order — score the unevaluated architectures with the surrogate refitted on
every oracle value so far, query the best, refit — and lets the pool grow:

* the pool is every architecture the search has proposed, queried or not, each with its raw metric vector
  (default: the paper's six metrics, computed by ``metric_fn`` once per architecture, keyed by structure hash)
  and its IR graph as encoder input (:func:`.graphs.ir_graph`); metrics are normalised over the current pool
  (min-max by default, as in the paper);
* the search proposes ``oversample`` times more mutants than it will train and asks :meth:`rank` which to train
  next; after each training it reports the value with :meth:`observe`;
* until ``n_init`` (3, the paper's) architectures have values, the surrogate cannot be fitted and the ranking is
  the mean normalised metric, the paper's rule for its initial queries;
* the encoder is pretrained label-free on the pool when the surrogate is first needed and again each time the
  pool has grown ``repretrain_growth`` times (2) since; the paper pretrains once on its fixed pool, but an encoder
  that never saw the later mutants would embed them from features it was not trained on (our choice: documented,
  and a test checks the re-pretraining). Each refit starts from the surrogate's initial state (as the paper's).

The surrogate refits after every value, so its default budget is cut from :class:`PONASConfig`'s (1,000 steps,
up to 5 restarts) to :data:`SCREEN_FIT` (300 steps, 1 restart): measured on 156 ResNet-20 mutants (90 nodes
each, one thread), a refit on 20 / 40 values took 31 / 62 s with the paper's budget and 3.1 / 5.2 s with this
one, at the same rank agreement with the unseen mutants' scores (ρ .20 / .09 vs .16 / .10). Pass ``config``
to use another.

Architectures whose metrics are not all finite rank last (the pool's ``candidates`` rule of
:class:`~.ranker.ArchPool`: never preferred to one with finite metrics).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .graphs import ir_graph
from .metrics import PONAS_METRICS
from .ranker import ArchPool, PONASConfig, PONASRanker

__all__ = ["SCREEN_FIT", "PONASScreen", "ScreenStats"]

#: the screen's default surrogate budget (see the module docstring)
SCREEN_FIT = {"fit_steps": 300, "max_restarts": 1}


@dataclass
class ScreenStats:
    """What the screen did: pool size, values observed, (re-)pretrainings, refits and seconds spent on each."""

    pool: int = 0
    observed: int = 0
    pretrains: int = 0
    fits: int = 0
    metric_seconds: float = 0.0
    pretrain_seconds: float = 0.0
    fit_seconds: float = 0.0


class PONASScreen:
    """Rank proposed architectures by PO-NAS's per-architecture metric combination (see module docstring).

    ``metric_fn(graph) -> raw metric values`` in ``metric_names`` order (non-finite = failed); ``key_fn(graph)``
    identifies an architecture (default: the IR's structure hash); ``graph_fn(graph)`` gives the encoder input
    (default :func:`.graphs.ir_graph`).
    """

    def __init__(
        self,
        metric_fn: Callable[[Any], Sequence[float]],
        metric_names: Sequence[str] = PONAS_METRICS,
        *,
        oversample: int = 3,
        n_init: int = 3,
        config: PONASConfig | None = None,
        seed: int = 0,
        normalization: str = "minmax",
        repretrain_growth: float = 2.0,
        key_fn: Callable[[Any], Hashable] | None = None,
        graph_fn: Callable[[Any], Any] = ir_graph,
    ) -> None:
        if oversample < 1:
            raise ValueError(f"PONASScreen: oversample must be >= 1, got {oversample}")
        if n_init < 2:
            raise ValueError(f"PONASScreen: n_init must be >= 2 (the surrogate fits on pairs), got {n_init}")
        if repretrain_growth <= 1.0:
            raise ValueError(f"PONASScreen: repretrain_growth must be > 1, got {repretrain_growth}")
        if key_fn is None:
            from graphopt.ir.serialize import structure_hash

            key_fn = structure_hash
        self.metric_fn, self.metric_names = metric_fn, list(metric_names)
        self.oversample, self.n_init = oversample, n_init
        self.normalization, self.repretrain_growth = normalization, repretrain_growth
        self.key_fn, self.graph_fn = key_fn, graph_fn
        self.ranker = PONASRanker(config or PONASConfig(**SCREEN_FIT), seed)
        self.stats = ScreenStats()
        self._index: dict[Hashable, int] = {}
        self._data: list[Any] = []
        self._raw: list[np.ndarray] = []
        self._values: dict[int, float] = {}
        self._pool: ArchPool | None = None
        self._pretrained_size = 0
        self._fit_key: tuple[int, int] | None = None  # (pool size, values) the surrogate was last fitted on

    # ------------------------------------------------------------------ pool
    def _add(self, graph: Any) -> int:
        key = self.key_fn(graph)
        i = self._index.get(key)
        if i is None:
            t0 = time.perf_counter()
            raw = np.asarray(self.metric_fn(graph), dtype=np.float64).reshape(-1)
            self.stats.metric_seconds += time.perf_counter() - t0
            if raw.size != len(self.metric_names):
                raise ValueError(f"PONASScreen: metric_fn returned {raw.size} values for metrics "
                                 f"{self.metric_names}")
            i = self._index[key] = len(self._data)
            self._data.append(self.graph_fn(graph))
            self._raw.append(raw)
            self._pool = None
            self.stats.pool = len(self._data)
        return i

    def pool(self) -> ArchPool:
        """Every architecture seen so far, normalised over itself (rebuilt when it grows)."""
        if self._pool is None:
            self._pool = ArchPool(list(self._data), np.stack(self._raw), self.metric_names,
                                  normalization=self.normalization)
        return self._pool

    # ------------------------------------------------------------------ oracle values
    def observe(self, graph: Any, value: float) -> None:
        """Record the oracle value (higher is better) of ``graph``; a non-finite value is ignored."""
        i = self._add(graph)
        if math.isfinite(value):
            self._values[i] = float(value)
            self.stats.observed = len(self._values)

    @property
    def surrogate_ready(self) -> bool:
        """True once ``n_init`` architectures with finite metrics have values (the surrogate is then used)."""
        ok = [i for i in self._values if np.isfinite(self._raw[i]).all()]
        return len(ok) >= self.n_init

    # ------------------------------------------------------------------ ranking
    def scores(self, graphs: Sequence[Any]) -> np.ndarray:
        """PO-NAS score of each of ``graphs`` (added to the pool); before the surrogate is ready, the mean
        normalised metric. Architectures with a non-finite metric get ``-inf``."""
        idx = [self._add(g) for g in graphs]
        pool = self.pool()
        if self.surrogate_ready:
            self._update(pool)
            s = self.ranker.score(pool)
        else:
            s = pool.normalized.mean(1)
        return np.where(pool.candidates, s, -np.inf)[idx]

    def rank(self, graphs: Sequence[Any]) -> list[int]:
        """Positions of ``graphs``, best first (ties keep the given order)."""
        return [int(i) for i in np.argsort(-self.scores(graphs), kind="stable")]

    def _update(self, pool: ArchPool) -> None:
        if self.ranker.encoder is None or len(pool) >= self.repretrain_growth * self._pretrained_size:
            t0 = time.perf_counter()
            self.ranker.pretrain(pool)
            self.stats.pretrain_seconds += time.perf_counter() - t0
            self.stats.pretrains += 1
            self._pretrained_size, self._fit_key = len(pool), None
        evaluated = {i: v for i, v in self._values.items() if pool.candidates[i]}
        key = (len(pool), len(evaluated))
        if key != self._fit_key:
            t0 = time.perf_counter()
            self.ranker.fit(evaluated, pool)
            self.stats.fit_seconds += time.perf_counter() - t0
            self.stats.fits += 1
            self._fit_key = key
