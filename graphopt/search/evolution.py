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

Parallel scoring (``executor=``, ``remote=``): the driver keeps every worker of an
:class:`~graphopt.eval.executors.Executor` busy. It proposes the next mutants while others are still being
scored (*steady state*: when one iteration's proposals are all out, the next iteration's parents are chosen from
the candidates scored so far, without waiting for the stragglers) and commits every finished candidate to the
store itself, in the order they finish; the store stays the single source of truth. Candidates travel to the
workers as serialized IR (:func:`pack_graph`, the same JSON + safetensors bytes as the run's graph files), and
``remote.fn(blob, *remote.args)`` scores them there. ``EvolutionConfig.sync_generations`` waits for an
iteration's candidates before choosing the next parents (and, with a screen, for each score before the next
pick): the candidates, parents and scores are then those of the serial run whatever the number of workers, for a
deterministic ranker. A candidate whose worker died (process killed, Ray node lost, timeout) is re-queued; after
``max_attempts`` such failures it is recorded as failed with its errors and the search goes on. An exception
raised by the scoring itself is the candidate's own (it would repeat) and is recorded at once, as in the serial
path. A killed driver leaves the candidates that were in flight ``running`` in the store; ``run`` on the same
store replays the unfinished iterations (their parents are pinned in the store) and scores only those.
Without an executor, the search is the serial in-process loop.
"""

from __future__ import annotations

import itertools
import json
import random
import struct
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Protocol

from ..errors import GraphoptError
from ..ir.graph import Graph
from ..ir.serialize import atomic_write_bytes, graph_from_json, graph_to_json, structure_hash, weights_path
from ..ir.serialize import load as load_graph
from ..ir.serialize import save as save_graph


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
    #: parallel scoring only: wait for each iteration's candidates before choosing the next parents (the serial
    #: run's candidates for a deterministic ranker) instead of steady-state proposing
    sync_generations: bool = False
    #: parallel scoring only: tries per candidate when its worker dies or times out (then recorded as failed)
    max_attempts: int = 2
    #: parallel scoring only: candidates queued beyond the executor's capacity (hides the driver's mutation time)
    prefetch: int = 0


class Screen(Protocol):
    """Ranks proposed mutants before the expensive score is spent on them (see the module docstring)."""

    oversample: int

    def rank(self, graphs: list[Graph]) -> list[int]:
        """Positions of ``graphs``, best first."""
        ...

    def observe(self, graph: Graph, score: float) -> None:
        """The score ``graph`` got (the screen may refit on it)."""
        ...


@dataclass
class RemoteScore:
    """How a worker scores a candidate: ``fn(blob, *args)`` returns the metrics dict (``score`` among them).

    ``fn`` (and ``warm``) must be module-level functions and ``args`` picklable; ``blob`` is the candidate as
    :func:`pack_graph` bytes. ``warm(*args)``, when given, runs once per worker before the search (e.g. loads the
    data and the teacher). A result may carry ``_timings`` (worker-side seconds: ``worker_s`` is the scoring
    time the budget planner sees) and ``_graph`` (packed bytes of the candidate with weights the scoring
    wrote, for ``inherit="trained"``).
    """

    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...] = ()
    warm: Callable[..., Any] | None = None


# ------------------------------------------------------------------------------------- candidates as bytes
_PACK_MAGIC = b"GOIR1\n"


def _graph_blobs(graph: Graph, weights_name: str | None = None) -> tuple[bytes, bytes]:
    """(JSON, safetensors) bytes of ``graph``, exactly as :func:`graphopt.ir.serialize.save` writes them."""
    from safetensors.torch import save as st_save

    from ..ir.serialize import _to_torch_tensor

    doc = graph_to_json(graph)
    if weights_name is not None:
        doc["weights"] = weights_name
    tensors = {v.name: _to_torch_tensor(v.const) for v in graph.constants.values()}
    return json.dumps(doc, indent=1, allow_nan=False).encode(), st_save(tensors)


def _pack(js: bytes, st: bytes) -> bytes:
    return _PACK_MAGIC + struct.pack(">Q", len(js)) + js + st


def pack_graph(graph: Graph) -> bytes:
    """The IR of ``graph`` (structure JSON + safetensors weights) as one byte string; :func:`unpack_graph` reads it.

    No pickle: a worker builds the graph from data only, as :func:`graphopt.ir.serialize.load` does."""
    return _pack(*_graph_blobs(graph))


def unpack_graph(blob: bytes, source: str = "<candidate>") -> Graph:
    from safetensors.torch import load as st_load

    from ..ir.serialize import IRFormatError, _to_numpy

    if not blob.startswith(_PACK_MAGIC):
        raise IRFormatError(f"{source}: not a packed graphopt IR candidate")
    off = len(_PACK_MAGIC)
    (n,) = struct.unpack(">Q", blob[off:off + 8])
    doc = json.loads(blob[off + 8:off + 8 + n])
    arrays = {k: _to_numpy(t) for k, t in st_load(bytes(blob[off + 8 + n:])).items()}
    return graph_from_json(doc, arrays, source)


def save_packed(graph: Graph, path: Path) -> bytes:
    """Write ``path`` (.json) and its .safetensors like :func:`graphopt.ir.serialize.save` and return the same IR
    packed (one serialization for the run's graph file and the worker's copy)."""
    js, st = _graph_blobs(graph, weights_path(path).name)
    atomic_write_bytes(weights_path(path), st)
    atomic_write_bytes(path, js)
    return _pack(js, st)


#: executor failures that are not the candidate's fault: its worker died or hung, so it is scored again
RETRYABLE = ("worker crashed", "timeout", "ray error", "cancelled")


@dataclass(eq=False)
class _Job:
    """One candidate in flight in the parallel path."""

    h: str
    graph: Graph
    parent: Candidate | None
    lineage: list[Any]
    it: int | None  # the iteration that proposed it (None: the seed)
    cost: float | None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    blob: bytes | None = None
    serialize_s: float = 0.0
    submitted: float = 0.0


_BARRIER = object()  # from the proposal generator: wait until nothing is in flight


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
        executor=None,  # noqa: ANN001 - graphopt.eval.executors.Executor (imported lazily)
        remote: RemoteScore | None = None,
        on_scored: Callable[[dict[str, Any], float, Candidate | None], None] | None = None,
        on_failed: Callable[[str, Candidate | None, str], None] | None = None,
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
        if executor is not None and remote is None:
            raise ValueError("parallel scoring needs remote=RemoteScore(fn, args): a module-level function that "
                             "scores a packed candidate in a worker")
        #: parallel scoring (see the module docstring); None: the serial in-process loop
        self.executor, self.remote = executor, remote
        #: parallel path: called in the driver with each committed candidate's metrics, its scoring seconds and
        #: its parent; and with each failed candidate's hash, parent and error
        self.on_scored, self.on_failed = on_scored, on_failed
        self._jobs: dict[Future, _Job] = {}
        self._inflight: set[str] = set()
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
        if self.executor is not None:
            return self._run_parallel(seed_graph, seed_hash)
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
        n = len(self.population) + len(self._inflight)  # candidates in flight will be scored too
        if self.keep_going is not None:
            return not self.keep_going(n - 1)
        if self.cfg.budget_seconds is not None and self.clock() - t_start > self.cfg.budget_seconds:
            return True
        return self.cfg.max_candidates is not None and n >= self.cfg.max_candidates

    # -------------------------------------------------------------------------------------- parallel path
    def queued(self) -> int:
        """Candidates submitted beyond the executor's capacity (waiting for a worker)."""
        if self.executor is None:
            return 0
        return max(0, len(self._jobs) - self.executor.capacity())

    def _slots(self) -> int:
        return max(1, self.executor.capacity() + max(0, self.cfg.prefetch))

    def _run_parallel(self, seed_graph: Graph, seed_hash: str) -> list[Candidate]:
        self._finish_seq: dict[Future, int] = {}
        self._seq = itertools.count()
        self._iter_open: dict[int, int] = {}  # iteration -> its candidates not yet committed or failed
        self._iter_new: dict[int, int] = {}  # iteration -> its candidates committed
        self._iter_closed: set[int] = set()  # iterations whose proposals were all made
        self._next_iter_done = int(self.store.meta.get("iterations_done", 0))
        self._stale = 0
        for k in ("requeued", "failed"):
            self.stats.setdefault(k, 0)
        try:
            self._warm_up()
            if seed_hash not in self.population:
                self._submit(_Job(seed_hash, seed_graph, None, [], None, None))
                self._drain()
                if seed_hash not in self.population:
                    row = next((r for r in self.store.rows("failed") if r.hash == seed_hash), None)
                    why = getattr(row, "error", None) or "see the run's result store"
                    raise GraphoptError(f"the input model could not be scored: {why}")
            seed = self.population[seed_hash]
            self.store.meta["seed_hash"] = seed_hash
            if self.screen is not None:
                for c in self.population.values():
                    self.screen.observe(c.graph, c.score)
            proposals = self._proposals(seed, self.clock())
            exhausted = False
            while True:
                self._collect(0.0)  # commit what finished while the driver was proposing
                while not exhausted and len(self._jobs) < self._slots():
                    item = next(proposals, None)
                    if item is None:
                        exhausted = True
                    elif item is _BARRIER:
                        self._drain()
                    else:
                        self._submit(item)
                if not self._jobs:
                    break
                self._collect(None)
        except BaseException:
            # Ctrl-C, a kill signal turned into an exception, a broken executor: what is in flight stays
            # 'running' in the store (never committed), and a resumed run scores it again.
            for fut in self._jobs:
                fut.cancel()
            self._jobs.clear()
            self._inflight.clear()
            raise
        return pareto_front(list(self.population.values()))

    def _warm_up(self) -> None:
        """``remote.warm`` once per worker (loads what every task needs before the clock of the search starts)."""
        if self.remote.warm is None:
            return
        futs = [self.executor.submit_task(self.remote.warm, self.remote.args)
                for _ in range(self.executor.capacity())]
        for f in futs:
            f.exception()  # a warm-up that fails is not fatal: the seed's scoring reports the real error

    def _proposals(self, seed: Candidate, t_start: float):
        """The serial loop's proposals, in its order, as a generator of jobs (and barriers in sync mode)."""
        rng = random.Random(self.cfg.seed)
        lo, hi = self.cfg.cost_window
        start_iter = self._next_iter_done
        iters = range(start_iter, self.cfg.iterations) if self.cfg.iterations is not None else count(start_iter)
        sync = self.cfg.sync_generations
        for it in iters:
            if sync:
                yield _BARRIER
            if self._stale >= 5:
                return
            rng.seed(self.cfg.seed * 1000 + it)
            parents = select_parents(list(self.population.values()), self.cfg.parents_per_iter, rng)
            key = f"parents_{it}"
            saved = self.store.meta.get(key)
            if saved is not None and all(h in self.population for h in saved):
                parents = [self.population[h] for h in saved]
            else:
                self.store.meta[key] = [p.hash for p in parents]
            self._iter_open.setdefault(it, 0)
            self._iter_new.setdefault(it, 0)
            oversample = self.screen.oversample if self.screen is not None else 1
            for parent in parents:
                proposals: list[tuple[Graph, list[Any], float]] = []
                for _ in range(self.cfg.mutants_per_parent * oversample):
                    if self._out_of_budget(t_start):
                        return
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
                        job = self._new_job(child, parent, lineage, it, c)
                        if job is not None:
                            yield job
                        else:
                            self._report(it)
                    else:
                        proposals.append((child, lineage, c))
                if self.screen is not None:
                    fresh: dict[str, tuple[Graph, list[Any], float]] = {}
                    for child, lineage, c in proposals:
                        h = structure_hash(child)
                        if self._known(h) or h in fresh:
                            self.stats["duplicates"] += 1
                        else:
                            fresh[h] = (child, lineage, c)
                    remaining = list(fresh.values())
                    for _ in range(self.cfg.mutants_per_parent):
                        if not remaining:
                            break
                        if sync:  # the serial run re-ranks after every score
                            yield _BARRIER
                        if self._out_of_budget(t_start):
                            return
                        child, lineage, c = remaining.pop(self.screen.rank([g for g, _, _ in remaining])[0])
                        job = self._new_job(child, parent, lineage, it, c)
                        if job is not None:
                            yield job
                        else:
                            self._report(it)
                    self.stats["screened_out"] += len(remaining)
            self._iter_closed.add(it)
            self._advance()

    def _known(self, h: str) -> bool:
        return h in self.population or h in self._inflight or self.store.is_done(h)

    def _new_job(self, g: Graph, parent: Candidate, lineage: list[Any], it: int, cost: float) -> _Job | None:
        h = structure_hash(g)
        if self._known(h):
            self.stats["duplicates"] += 1
            return None
        return _Job(h, g, parent, lineage, it, cost)

    def _submit(self, job: _Job) -> None:
        t0 = time.perf_counter()
        if job.blob is None:  # first attempt: the graph file, the store row, the worker's bytes
            job.blob = save_packed(job.graph, self._graph_path(job.h))
            self.store.add_pending(job.h, str(self._graph_path(job.h)), job.parent.hash if job.parent else None,
                                   job.lineage)
            self.store.mark_running(job.h)
            self._inflight.add(job.h)
            if job.it is not None:
                self._iter_open[job.it] = self._iter_open.get(job.it, 0) + 1
        job.attempts += 1
        job.submitted = self.clock()  # before the submit: a worker may start before submit_task returns
        fut = self.executor.submit_task(self.remote.fn, (job.blob, *self.remote.args))
        job.serialize_s = time.perf_counter() - t0
        self._jobs[fut] = job
        fut.add_done_callback(self._finished)

    def _finished(self, fut: Future) -> None:  # executor thread: only record the order
        self._finish_seq.setdefault(fut, next(self._seq))

    def _drain(self) -> None:
        while self._jobs:
            self._collect(None)

    def _collect(self, timeout: float | None) -> None:
        """Commit finished candidates in the order they finished (waits up to ``timeout`` for the first)."""
        if not self._jobs:
            return
        if timeout == 0.0:
            done = {f for f in self._jobs if f.done()}
        else:
            done = self.executor.wait(list(self._jobs), timeout) & set(self._jobs)
        for f in done:
            self._finished(f)
        for f in sorted(done, key=lambda f: self._finish_seq[f]):
            job = self._jobs.pop(f)
            self._finish_seq.pop(f, None)
            self._resolve(job, f)

    def _resolve(self, job: _Job, fut: Future) -> None:
        from ..eval.executors import TaskFailed

        exc: BaseException | None
        exc = TaskFailed("cancelled", "the task was cancelled") if fut.cancelled() else fut.exception()
        if exc is None:
            self._commit(job, dict(fut.result()))
            return
        if isinstance(exc, TaskFailed):
            if exc.reason == "shutdown":
                raise GraphoptError(f"the executor shut down while candidate {job.h} was being scored; the run is "
                                    f"saved: resume it") from exc
            retry, text = exc.reason in RETRYABLE, str(exc)
        else:
            retry, text = False, f"{type(exc).__name__}: {exc}"
        job.errors.append(text)
        if retry and job.attempts < self.cfg.max_attempts:
            self.stats["requeued"] += 1
            # the store records the failed attempt, then counts the next one (attempts column)
            self.store.fail(job.h, text, timings={"attempts": job.attempts, "errors": job.errors})
            self.store.mark_running(job.h)
            self._submit(job)
            return
        self.stats["failed"] += 1
        why = text if job.attempts == 1 else f"{text} (failed {job.attempts} times: {'; '.join(job.errors)})"
        self.store.fail(job.h, why, timings={"attempts": job.attempts, "errors": job.errors})
        if self.on_failed is not None:
            self.on_failed(job.h, job.parent, why)
        self._settle(job, scored=False)

    def _commit(self, job: _Job, res: dict[str, Any]) -> None:
        worker = res.pop("_timings", None) or {}
        new_graph = res.pop("_graph", None)
        latency = self.clock() - job.submitted
        score = float(res.get("score", float("nan")))
        if score != score:
            self.stats["failed"] += 1
            self.store.fail(job.h, "score is NaN", timings={"attempts": job.attempts})
            if self.on_failed is not None:
                self.on_failed(job.h, job.parent, "score is NaN")
            self._settle(job, scored=False)
            return
        c = job.cost if job.cost is not None else float(self.cost_fn(job.graph))
        metrics = {**res, "cost": c}
        seconds = float(worker.get("worker_s", latency))
        timings = {"score_s": seconds, "latency_s": latency, "serialize_s": job.serialize_s,
                   **{k: v for k, v in worker.items() if k != "worker_s"}, "attempts": job.attempts}
        if job.errors:
            timings["errors"] = job.errors
        self.store.finish(job.h, metrics, timings=timings)
        graph = unpack_graph(new_graph) if new_graph is not None else job.graph
        cand = Candidate(job.h, graph, score, c, job.parent.hash if job.parent else None, job.lineage, metrics)
        self.population[job.h] = cand
        self.stats["scored"] += 1
        if self.on_scored is not None:
            self.on_scored(res, seconds, job.parent)
        if self.screen is not None and job.parent is not None:
            self.screen.observe(graph, score)
        self._settle(job, scored=True)
        self._report(job.it if job.it is not None else self._next_iter_done)

    def _settle(self, job: _Job, scored: bool) -> None:
        self._inflight.discard(job.h)
        if job.it is None:
            return
        self._iter_open[job.it] -= 1
        if scored:
            self._iter_new[job.it] += 1
        self._advance()

    def _advance(self) -> None:
        """Record every iteration, in order, whose proposals were all made and whose candidates all finished."""
        it = self._next_iter_done
        while it in self._iter_closed and self._iter_open.get(it, 0) == 0:
            self._stale = self._stale + 1 if self._iter_new.get(it, 0) == 0 else 0
            it += 1
            self.store.meta["iterations_done"] = it
        self._next_iter_done = it
