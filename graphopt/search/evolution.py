"""AutoGO's Pareto evolution over (score, cost), resumable through the result store.

Each iteration picks ``k`` parents from the Pareto front by *grid sampling* (``k`` evenly spaced points over
the front's cost range, ends included, each taking the nearest front member; duplicates are replaced at random
from the front), fills up with non-Pareto candidates of smallest score-rank + cost-rank when the front is
short (the paper's gap filling), mutates each parent, keeps mutants inside the cost window and accepted by
the ranker, and scores them. Every candidate is written to the result store the moment it is scored
(structure hash, graph file, parent, lineage, metrics), so a killed search resumes without re-scoring.

The mutation, scoring, cost and acceptance functions are arguments: the PSC predictor, PO-NAS, TSE,
zero-cost proxies or real training are interchangeable rankers. An optional :class:`Screen` (e.g. PO-NAS's
:class:`~graphopt.predictors.ponas.PONASScreen`) puts a cheap ranking in front of an expensive score: each
parent then gets ``mutants_per_parent × screen.oversample`` proposals, and only ``mutants_per_parent`` of them,
one at a time in the screen's order (re-ranked after every score it is told), are scored.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Protocol

from ..errors import GraphoptError
from ..ir.graph import Graph
from ..ir.serialize import load as load_graph
from ..ir.serialize import save as save_graph
from ..ir.serialize import structure_hash


@dataclass
class Candidate:
    hash: str
    graph: Graph
    score: float
    cost: float
    parent: str | None = None
    lineage: list[Any] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvolutionConfig:
    iterations: int | None = 5  # None: until the budget (or ``keep_going``) ends the search
    parents_per_iter: int = 10
    mutants_per_parent: int = 4
    cost_window: tuple[float, float] = (0.0, 1.10)  # relative to the seed's cost
    budget_seconds: float | None = None
    max_candidates: int | None = None
    seed: int = 0


class Screen(Protocol):
    """Ranks proposed mutants before the expensive score is spent on them (see the module docstring)."""

    oversample: int

    def rank(self, graphs: list[Graph]) -> list[int]:
        """Positions of ``graphs``, best first."""
        ...

    def observe(self, graph: Graph, score: float) -> None:
        """The score ``graph`` got (the screen may refit on it)."""
        ...


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Non-dominated candidates (higher score, lower cost), sorted by cost."""
    front = []
    for c in cands:
        dominated = any((o.score >= c.score and o.cost <= c.cost) and (o.score > c.score or o.cost < c.cost)
                        for o in cands)
        if not dominated:
            front.append(c)
    front.sort(key=lambda c: (c.cost, -c.score))
    # equal points: keep one
    uniq, seen = [], set()
    for c in front:
        if (c.score, c.cost) not in seen:
            seen.add((c.score, c.cost))
            uniq.append(c)
    return uniq


def select_parents(cands: list[Candidate], k: int, rng: random.Random) -> list[Candidate]:
    """Grid sampling over the front's cost range, then rank-sum gap filling (AutoGO)."""
    front = pareto_front(cands)
    chosen: list[Candidate] = []
    if front:
        lo, hi = front[0].cost, front[-1].cost
        m = min(k, len(front))
        for i in range(m):
            target = lo + (hi - lo) * (i / (m - 1) if m > 1 else 0.5)
            best = min(front, key=lambda c: abs(c.cost - target))
            if best in chosen:
                rest = [c for c in front if c not in chosen]
                best = rng.choice(rest) if rest else best
            if best not in chosen:
                chosen.append(best)
    if len(chosen) < k:
        others = [c for c in cands if c not in chosen]
        by_score = {c.hash: r for r, c in enumerate(sorted(others, key=lambda c: -c.score))}
        by_cost = {c.hash: r for r, c in enumerate(sorted(others, key=lambda c: c.cost))}
        others.sort(key=lambda c: by_score[c.hash] + by_cost[c.hash])
        chosen += others[: k - len(chosen)]
    return chosen


class ParetoEvolution:
    def __init__(
        self,
        *,
        mutate: Callable[[Graph, random.Random], tuple[Graph, list[Any]] | None],
        score: Callable[[Graph, Candidate | None], dict[str, Any]],
        cost: Callable[[Graph], float],
        store,
        run_dir: str | Path,
        accept: Callable[[Candidate, Graph, dict[str, Any]], bool] | None = None,
        config: EvolutionConfig | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
        screen: Screen | None = None,
        clock: Callable[[], float] = time.monotonic,
        keep_going: Callable[[int], bool] | None = None,
    ) -> None:
        self.mutate_fn, self.score_fn, self.cost_fn = mutate, score, cost
        self.clock = clock
        #: called with the number of scored candidates besides the seed before each new one; when set it
        #: replaces ``budget_seconds`` (the optimize budget planner decides)
        self.keep_going = keep_going
        self.accept = accept
        self.screen = screen
        self.store = store
        self.run_dir = Path(run_dir)
        self.cfg = config or EvolutionConfig()
        self.progress = progress
        self.population: dict[str, Candidate] = {}
        self.stats = {"mutations": 0, "failed_mutations": 0, "duplicates": 0, "out_of_window": 0,
                      "rejected": 0, "scored": 0, "resumed": 0, "screened_out": 0}

    # ----------------------------------------------------------------------------------------- store glue
    def _graph_path(self, h: str) -> Path:
        return self.run_dir / "graphs" / f"{h}.json"

    def _record(self, g: Graph, parent: Candidate | None, lineage: list[Any]) -> Candidate | None:
        h = structure_hash(g)
        if h in self.population or self.store.is_done(h):
            self.stats["duplicates"] += 1
            return None
        path = save_graph(g, self._graph_path(h))
        self.store.add_pending(h, str(path), parent.hash if parent else None, lineage)
        self.store.mark_running(h)
        t0 = time.perf_counter()
        try:
            metrics = self.score_fn(g, parent)
            c = float(self.cost_fn(g))
        except Exception as e:  # noqa: BLE001 - a broken candidate is recorded, the search goes on
            self.store.fail(h, f"{type(e).__name__}: {e}")
            return None
        score = float(metrics.get("score", float("nan")))
        if score != score:
            self.store.fail(h, "score is NaN")
            return None
        metrics = {**metrics, "cost": c}
        self.store.finish(h, metrics, timings={"score_s": time.perf_counter() - t0})
        cand = Candidate(h, g, score, c, parent.hash if parent else None, lineage, metrics)
        self.population[h] = cand
        self.stats["scored"] += 1
        return cand

    def _resume(self) -> None:
        for row in self.store.rows("done"):
            if row.hash in self.population or not row.graph_path or not Path(row.graph_path).exists():
                continue
            g = load_graph(row.graph_path)
            m = row.metrics or {}
            self.population[row.hash] = Candidate(row.hash, g, float(m.get("score", 0.0)), float(m.get("cost", 0.0)),
                                                  row.parent_hash, row.lineage, m)
            self.stats["resumed"] += 1

    # ------------------------------------------------------------------------------------------------ run
    def run(self, seed_graph: Graph) -> list[Candidate]:
        """Evolve from ``seed_graph``; returns the final Pareto front."""
        rng = random.Random(self.cfg.seed)
        seed_hash = structure_hash(seed_graph)
        started = self.store.meta.get("seed_hash")
        if started is not None and started != seed_hash:
            # resuming with another model would mix two searches' candidates in one front
            raise GraphoptError(f"{self.run_dir}: this run was started from a different model (structure hash "
                                f"{started}, this one is {seed_hash}); resume it with the model it started from, "
                                f"or start a new run")
        self._resume()
        if seed_hash not in self.population:
            seed = self._record(seed_graph, None, [])
            if seed is None:
                row = next((r for r in self.store.rows("failed") if r.hash == seed_hash), None)
                why = getattr(row, "error", None) or "see the run's result store"
                raise GraphoptError(f"the input model could not be scored: {why}")
        seed = self.population[seed_hash]
        self.store.meta["seed_hash"] = seed_hash
        if self.screen is not None:  # the screen learns from every score so far (a resumed run's too)
            for c in self.population.values():
                self.screen.observe(c.graph, c.score)
        lo, hi = self.cfg.cost_window
        t_start = self.clock()
        start_iter = int(self.store.meta.get("iterations_done", 0))
        stale = 0  # iterations in a row that scored nothing new: the mutations are exhausted
        iters = range(start_iter, self.cfg.iterations) if self.cfg.iterations is not None else count(start_iter)
        for it in iters:
            if stale >= 5:
                break
            before = len(self.population)
            rng.seed(self.cfg.seed * 1000 + it)
            parents = select_parents(list(self.population.values()), self.cfg.parents_per_iter, rng)
            # Pin the iteration's parents in the store: a run killed mid-iteration resumes with the same parents
            # (re-selecting from a population that already holds some of their children would change the run).
            key = f"parents_{it}"
            saved = self.store.meta.get(key)
            if saved is not None and all(h in self.population for h in saved):
                parents = [self.population[h] for h in saved]
            else:
                self.store.meta[key] = [p.hash for p in parents]
            oversample = self.screen.oversample if self.screen is not None else 1
            for parent in parents:
                proposals: list[tuple[Graph, list[Any]]] = []
                for _ in range(self.cfg.mutants_per_parent * oversample):
                    if self._out_of_budget(t_start):
                        return pareto_front(list(self.population.values()))
                    res = self.mutate_fn(parent.graph, rng)
                    self.stats["mutations"] += 1
                    if res is None:
                        self.stats["failed_mutations"] += 1
                        continue
                    child, lineage = res
                    c = float(self.cost_fn(child))
                    if not (lo * seed.cost <= c <= hi * seed.cost):
                        self.stats["out_of_window"] += 1
                        continue
                    if self.accept is not None and not self.accept(parent, child, {"cost": c}):
                        self.stats["rejected"] += 1
                        continue
                    if self.screen is None:
                        self._record(child, parent, lineage)
                        self._report(it)
                    else:
                        proposals.append((child, lineage))
                if self.screen is not None and self._screened(parent, proposals, it, t_start):
                    return pareto_front(list(self.population.values()))
            self.store.meta["iterations_done"] = it + 1
            stale = stale + 1 if len(self.population) == before else 0
        return pareto_front(list(self.population.values()))

    def _screened(self, parent: Candidate, proposals: list[tuple[Graph, list[Any]]], it: int,
                  t_start: float) -> bool:
        """Score ``mutants_per_parent`` of ``proposals`` in the screen's order; True when the budget ran out."""
        fresh: dict[str, tuple[Graph, list[Any]]] = {}
        for child, lineage in proposals:
            h = structure_hash(child)
            if h in self.population or self.store.is_done(h) or h in fresh:
                self.stats["duplicates"] += 1
            else:
                fresh[h] = (child, lineage)
        remaining = list(fresh.values())
        for _ in range(self.cfg.mutants_per_parent):
            if not remaining:
                break
            if self._out_of_budget(t_start):
                return True
            child, lineage = remaining.pop(self.screen.rank([g for g, _ in remaining])[0])
            cand = self._record(child, parent, lineage)
            if cand is not None:
                self.screen.observe(child, cand.score)
            self._report(it)
        self.stats["screened_out"] += len(remaining)
        return False

    def _report(self, it: int) -> None:
        if self.progress:
            self.progress({"iteration": it, **self.stats,
                           "front": [(x.score, x.cost) for x in pareto_front(list(self.population.values()))]})

    def _out_of_budget(self, t_start: float) -> bool:
        if self.keep_going is not None:
            return not self.keep_going(len(self.population) - 1)
        if self.cfg.budget_seconds is not None and self.clock() - t_start > self.cfg.budget_seconds:
            return True
        return self.cfg.max_candidates is not None and len(self.population) >= self.cfg.max_candidates
