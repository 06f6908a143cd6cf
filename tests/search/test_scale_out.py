"""Scaling the search out (issue 24): candidates scored by an executor's workers, the driver committing.

A deterministic toy ranker scores chains of activations, so that a parallel run can be compared with the serial
one: with ``sync_generations`` the store's contents (candidates, parents, lineage, metrics, the iterations' pinned
parents) equal the serial run's whatever the number of workers; steady state scores each candidate once. Faults:
workers SIGKILLed mid-scoring (local pool and a Ray cluster of a head and 2 worker nodes on loopback, one node
removed mid-run), a candidate that kills its worker twice, a scoring exception, and a SIGKILLed driver resumed.

Task functions live at module level so spawned workers can import them (Ray pickles this module by value).
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from graphopt.eval.executors import Executor, LocalExecutor
from graphopt.eval.store import ResultStore
from graphopt.ir import DType, Graph, TensorType
from graphopt.ir.serialize import load as load_graph
from graphopt.ir.serialize import save as save_graph
from graphopt.ir.serialize import structure_hash
from graphopt.search.evolution import (
    EvolutionConfig,
    ParetoEvolution,
    RemoteScore,
    pack_graph,
    save_packed,
    unpack_graph,
)

OPS = ["relu", "sigmoid", "tanh"]
SEED_OPS = ["relu", "relu", "sigmoid"]
TIMING_KEYS = ("seconds", "_s")  # wall-clock figures differ between runs; everything else must not


def chain(ops: list[str]) -> Graph:
    g = Graph("toy")
    v = g.add_input("x", TensorType(DType.float32, (1, 4)))
    for o in ops:
        v = g.create_node(o, [v]).output
    g.set_outputs([v])
    return g


def mutate(g: Graph, rng) -> tuple[Graph, list]:
    ops = [n.op for n in g.nodes]
    i = rng.randrange(len(ops))
    ops[i] = rng.choice(OPS)
    if rng.random() < 0.3:
        ops.insert(rng.randrange(len(ops) + 1), rng.choice(OPS))
    return chain(ops), [{"pos": i}]


def toy_score(g: Graph) -> dict:
    ops = [n.op for n in g.nodes]
    return {"score": ops.count("tanh") / len(ops) + 0.01 * ops.count("sigmoid")}


def toy_task(blob: bytes, log: str | None = None, sleep: float = 0.0, crash: str | None = None,
             raise_on: str | None = None) -> dict:
    """Score a packed toy candidate in a worker; logs ``start``/``end`` lines with the worker's pid."""
    g = unpack_graph(blob)
    h = structure_hash(g)
    if log:
        with open(log, "a") as f:
            f.write(f"start {os.getpid()} {h}\n")
    time.sleep(sleep)
    if crash == h:
        os._exit(9)  # this candidate kills every worker that scores it
    if raise_on == h:
        raise ValueError("this candidate does not train")
    res = toy_score(g)
    if log:
        with open(log, "a") as f:
            f.write(f"end {os.getpid()} {h}\n")
    return {**res, "_timings": {"worker_s": sleep, "pid": os.getpid()}}


def _evolution(run: Path, executor=None, remote: RemoteScore | None = None, sync: bool = True,
               iterations: int = 3) -> ParetoEvolution:
    cfg = EvolutionConfig(iterations=iterations, parents_per_iter=3, mutants_per_parent=3, cost_window=(0.0, 3.0),
                          sync_generations=sync)
    return ParetoEvolution(mutate=mutate, score=lambda g, parent: toy_score(g), cost=lambda g: float(len(g)),
                           store=ResultStore.open(run), run_dir=run, config=cfg, executor=executor, remote=remote)


def _untimed(v):  # noqa: ANN001, ANN202
    if isinstance(v, dict):
        return {k: _untimed(x) for k, x in v.items() if not k.endswith(TIMING_KEYS)}
    if isinstance(v, list):
        return [_untimed(x) for x in v]
    return v


def _contents(run: Path) -> dict:
    """The store without wall-clock fields: rows by hash (status, parent, lineage, metrics) and the run's meta."""
    with ResultStore.open(run, reset_running=False) as st:
        assert st.integrity_ok()
        rows = {r.hash: (r.status, r.parent_hash, json.dumps(_untimed(r.lineage), sort_keys=True),
                         json.dumps(_untimed(r.metrics or {}), sort_keys=True)) for r in st.rows()}
        meta = {k: v for k, v in st.meta.items() if k != "config"}
    return {"rows": rows, "meta": meta}


def _serial(tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("serial") / "run"
    evo = _evolution(run)
    evo.run(chain(SEED_OPS))
    evo.store.close()
    return _contents(run)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> dict:
    return _serial(tmp_path_factory)


@pytest.fixture(scope="module")
def pool():
    with LocalExecutor(2, threads_per_worker=1) as ex:
        yield ex


def _lines(log: Path, kind: str) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(p), h) for k, p, h in (ln.split() for ln in log.read_text().splitlines()) if k == kind]


class _Killer(threading.Thread):
    """Kills the worker process of ``times`` different running children (not the seed), one at a time."""

    def __init__(self, log: Path, times: int, kill) -> None:  # noqa: ANN001 - kill(pid)
        super().__init__(daemon=True)
        self.log, self.times, self.kill = log, times, kill
        self.killed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.times and not self.stop.is_set():
            starts, ends = _lines(self.log, "start"), _lines(self.log, "end")
            running = [(p, h) for i, (p, h) in enumerate(starts)
                       if i > 0 and h not in self.killed and (p, h) not in ends]
            if running:
                pid, h = running[-1]
                try:
                    self.kill(pid)
                    self.killed.append(h)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)


# ------------------------------------------------------------------------------------------------- packing
def test_packed_candidate_roundtrips_and_equals_the_run_files(tmp_path):
    import numpy as np

    g = chain(["relu", "tanh"])
    g.add_const("w", np.arange(6, dtype=np.float32).reshape(2, 3), "param")
    back = unpack_graph(pack_graph(g))
    assert structure_hash(back) == structure_hash(g) and [n.op for n in back.nodes] == ["relu", "tanh"]
    np.testing.assert_array_equal(back.constants["w"].const, g.constants["w"].const)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    blob = save_packed(g, tmp_path / "a" / "g.json")  # one serialization: the run's graph file and the worker's
    save_graph(g, tmp_path / "b" / "g.json")
    for name in ("g.json", "g.safetensors"):  # the same files as graphopt.ir.serialize.save writes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert structure_hash(load_graph(tmp_path / "a" / "g.json")) == structure_hash(unpack_graph(blob))


# -------------------------------------------------------------------------------------------- local pool
def test_parallel_store_equals_serial_and_steady_state_scores_each_candidate_once(serial, pool, tmp_path):
    run = tmp_path / "sync"
    evo = _evolution(run, pool, RemoteScore(toy_task, (str(tmp_path / "sync.log"),)))
    evo.run(chain(SEED_OPS))
    assert evo.stats["requeued"] == 0 and evo.stats["failed"] == 0
    evo.store.close()
    assert _contents(run) == serial

    run, log = tmp_path / "steady", tmp_path / "steady.log"
    evo = _evolution(run, pool, RemoteScore(toy_task, (str(log), 0.02)), sync=False)
    evo.run(chain(SEED_OPS))
    evo.store.close()
    got = _contents(run)
    assert got["meta"]["iterations_done"] == 3
    assert {s for s, *_ in got["rows"].values()} == {"done"}  # nothing left pending or running
    ends = [h for _, h in _lines(log, "end")]
    assert sorted(ends) == sorted(got["rows"]) and len(set(ends)) == len(ends)  # each scored exactly once
    with ResultStore.open(run) as st:
        rows = st.rows("done")
        assert all(r.n_finished == 1 and r.attempts == 1 for r in rows)
        # committed in the order they finished, with the worker's timings beside the driver's
        finished = [r.finished_at for r in sorted(rows, key=lambda r: r.finished_at)]
        assert finished == sorted(finished)
        assert all({"score_s", "latency_s", "serialize_s", "pid", "attempts"} <= set(r.timings) for r in rows)


def test_workers_killed_during_scoring_lose_nothing(serial, pool, tmp_path):
    run, log = tmp_path / "run", tmp_path / "scored.log"
    killer = _Killer(log, 3, lambda pid: os.kill(pid, signal.SIGKILL))
    evo = _evolution(run, pool, RemoteScore(toy_task, (str(log), 0.3)))
    killer.start()
    evo.run(chain(SEED_OPS))
    killer.stop.set()
    killer.join()
    evo.store.close()
    assert len(killer.killed) == 3 and evo.stats["requeued"] == 3 and evo.stats["failed"] == 0
    assert _contents(run) == serial  # the same candidates and scores as the serial run: none lost
    ends = [h for _, h in _lines(log, "end")]
    assert len(ends) == len(set(ends))  # none scored twice
    with ResultStore.open(run) as st:
        by = {r.hash: r for r in st.rows()}
        for h in killer.killed:  # re-queued once, then committed once, with the first attempt's error kept
            assert by[h].status == "done" and by[h].attempts == 2 and by[h].n_finished == 1
            assert "worker crashed" in by[h].timings["errors"][0] and "SIGKILL" in by[h].timings["errors"][0]


def test_a_candidate_that_fails_twice_is_recorded_and_the_search_goes_on(serial, pool, tmp_path):
    children = [h for h, row in serial["rows"].items() if row[1] is not None]
    crash, bad = children[0], children[1]
    run = tmp_path / "run"
    evo = _evolution(run, pool, RemoteScore(toy_task, (None, 0.0, crash, bad)))
    evo.run(chain(SEED_OPS))
    evo.store.close()
    assert evo.stats["requeued"] == 1 and evo.stats["failed"] == 2
    with ResultStore.open(run) as st:
        by = {r.hash: r for r in st.rows()}
        assert by[crash].status == "failed" and by[crash].attempts == 2
        assert "worker crashed" in by[crash].error and "failed 2 times" in by[crash].error
        # a scoring exception is the candidate's own: recorded at once, as the serial search does
        assert by[bad].status == "failed" and by[bad].attempts == 1
        assert by[bad].error == "ValueError: this candidate does not train"
        assert st.meta["iterations_done"] == 3
        assert len(st.rows("done")) >= len(serial["rows"]) // 2  # the search went on


DRIVER = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from graphopt.eval.executors import LocalExecutor
    from graphopt.search.evolution import RemoteScore
    import test_scale_out as t

    if __name__ == "__main__":
        with LocalExecutor(2, threads_per_worker=1) as ex:
            evo = t._evolution(Path(sys.argv[1]), ex, RemoteScore(t.toy_task, (sys.argv[2], float(sys.argv[4]))))
            evo.run(t.chain(t.SEED_OPS))
            print("STATS", evo.stats)
''')


def test_killed_driver_resumes_without_rescoring_anything_committed(serial, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    run, log1, log2 = tmp_path / "run", tmp_path / "first.log", tmp_path / "resumed.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRAPHOPT_NUM_THREADS": "1"}
    here = str(Path(__file__).parent)
    p = subprocess.Popen([sys.executable, str(script), str(run), str(log1), here, "0.2"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:  # kill once 6 are scored and one is being scored
        ends = _lines(log1, "end")
        if len(ends) >= 6 and any(s not in ends for s in _lines(log1, "start")):
            break
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)  # the driver and its workers, mid-run
    p.wait()
    with ResultStore.open(run, reset_running=False) as st:
        assert st.integrity_ok()
        committed = st.done_hashes()
        in_flight = {r.hash for r in st.rows("running")}
    assert len(committed) >= 3 and in_flight, (committed, in_flight)
    res = subprocess.run([sys.executable, str(script), str(run), str(log2), here, "0.0"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rescored = {h for _, h in _lines(log2, "end")}
    assert not rescored & committed  # nothing committed was scored again
    assert in_flight <= rescored  # what was in flight at the kill was
    assert _contents(run) == serial  # and nothing was lost
    with ResultStore.open(run) as st:
        assert all(r.n_finished == 1 for r in st.rows("done"))


# ---------------------------------------------------------------------------------------- Ray on loopback
@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head (no CPUs) and 2 worker nodes of 1 CPU each on 127.0.0.1, each node its own session."""
    ray = pytest.importorskip("ray", reason="ray is not installed (optional extra: pip install 'graphopt[ray]')")
    from graphopt.eval.executors import LoopbackRayCluster

    with LoopbackRayCluster(nodes=2, cpus_per_node=1) as cluster:
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            cluster.wait_for_cpus(ray)
            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # toy_task is in this test module
            yield cluster
        finally:
            ray.shutdown()


def test_ray_cluster_survives_a_killed_worker_and_a_removed_node(serial, ray_cluster, tmp_path):
    from graphopt.eval.executors import RayExecutor

    ex = RayExecutor(ray_cluster.address, max_retries=0)
    assert ex.capacity() == 2
    run, log = tmp_path / "run", tmp_path / "scored.log"
    killer = _Killer(log, 1, lambda pid: os.kill(pid, signal.SIGKILL))
    evo = _evolution(run, ex, RemoteScore(toy_task, (str(log), 0.3)))
    killer.start()
    evo.run(chain(SEED_OPS))
    killer.join(5)
    evo.store.close()
    assert killer.killed and evo.stats["requeued"] >= 1 and evo.stats["failed"] == 0
    assert _contents(run) == serial
    ends = [h for _, h in _lines(log, "end")]
    assert len(ends) == len(set(ends))

    # a node removed mid-run: its candidate goes to the node that is left; the steady-state run completes
    run, log = tmp_path / "run2", tmp_path / "scored2.log"
    def remove(pid: int) -> None:  # the node that runs this candidate
        node = ray_cluster.node_of(pid)
        if node is None:
            raise ProcessLookupError(pid)
        ray_cluster.remove_node(node)

    remover = _Killer(log, 1, remove)
    evo = _evolution(run, ex, RemoteScore(toy_task, (str(log), 0.3)), sync=False)
    remover.start()
    evo.run(chain(SEED_OPS))
    remover.join(5)
    evo.store.close()
    assert remover.killed and evo.stats["requeued"] >= 1 and evo.stats["failed"] == 0
    got = _contents(run)
    assert {s for s, *_ in got["rows"].values()} == {"done"} and got["meta"]["iterations_done"] == 3
    ends = [h for _, h in _lines(log, "end")]
    assert len(ends) == len(set(ends)) and set(ends) == set(got["rows"])
    ex.shutdown()


# ------------------------------------------------------------------------------- budget planner in parallel
class SimulatedExecutor(Executor):
    """``workers`` simulated workers on a fake clock: a task takes ``seconds`` of simulated time once a worker is
    free; :meth:`wait` advances the clock to the next finish. Warm-up tasks take no time."""

    def __init__(self, clock, workers: int, result) -> None:  # noqa: ANN001 - result() -> (dict, seconds)
        self.clock, self.workers, self.result = clock, workers, result
        self.free = [clock.t] * workers
        self.pending: list = []
        self.seq = itertools.count()
        self.max_busy = 0

    def submit_task(self, fn, args=(), kwargs=None, *, timeout=None) -> Future:  # noqa: ANN001
        from graphopt.search.autogo import warm_task

        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        if fn is warm_task:
            fut.set_result(0)
            return fut
        value, seconds = self.result()
        i = min(range(self.workers), key=lambda k: self.free[k])
        self.free[i] = max(self.clock.t, self.free[i]) + seconds
        heapq.heappush(self.pending, (self.free[i], next(self.seq), fut, {**value, "_timings": {"worker_s": seconds}}))
        self.max_busy = max(self.max_busy, len(self.pending))
        return fut

    def wait(self, futures, timeout=None) -> set:  # noqa: ANN001
        finish, _, fut, value = heapq.heappop(self.pending)
        self.clock.t = max(self.clock.t, finish)
        fut.set_result(value)
        return {fut}

    def shutdown(self, wait=True, *, cancel_futures=False) -> None:  # noqa: ANN001
        pass


@pytest.mark.parametrize("step_s", [0.5, 2.0])
def test_planner_spends_the_budget_at_the_parallel_throughput(monkeypatch, tmp_path, step_s):
    """Two simulated workers score about twice the candidates of one in the same budget, which is neither
    overrun nor left unused (the fake clock of tests/search/test_budget_planner.py)."""
    import torch
    from _helpers import TinyCNN
    from test_budget_planner import FakeClock, _simulate

    from graphopt.frontends.torch import from_torch
    from graphopt.search import autogo
    from graphopt.search.autogo import OptimizeConfig, optimize

    torch.manual_seed(0)
    graph = from_torch(TinyCNN().eval(), (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    budget, steps, eval_s = 900.0, 40, 2.0
    found = {}
    for workers in (1, 2):
        clock = FakeClock()
        calls = _simulate(monkeypatch, clock, step_s=step_s, prior_step_s=step_s)
        n = itertools.count(1)
        sim = SimulatedExecutor(clock, workers, lambda n=n: ({"score": 0.5 + 0.001 * next(n), "val_accuracy": 0.5,
                                                          "train_seconds": steps * step_s, "steps": steps,
                                                          "eval_seconds": eval_s}, steps * step_s + eval_s))
        monkeypatch.setattr(autogo, "start_executor", lambda kind, w, address=None, sim=sim: sim)
        cfg = OptimizeConfig(data="cifar10-demo", budget_seconds=budget, score_steps=steps, final_k=2, final_epochs=2,
                             parents_per_iter=2, mutants_per_parent=2, cost_window=(0.0, 2.0), workers=workers,
                             executor="ray" if workers == 1 else "local")  # ray with 1 worker: the parallel path
        start = clock.t
        res = optimize(graph, tmp_path / f"out{workers}", cfg, run_dir=tmp_path / f"run{workers}", clock=clock,
                       log=lambda s: None)
        used = clock.t - start
        assert calls["short"] == 0  # every candidate went through the executor
        assert used <= 1.10 * budget and used >= 0.80 * budget, (workers, used)
        assert sim.max_busy <= workers  # the planner never queued a candidate behind a busy worker
        found[workers] = res["summary"]["candidates scored"] - 1
    assert found[2] >= 1.7 * found[1], found


# ------------------------------------------------------------------------------------ optimize end to end
def test_optimize_with_two_workers_scores_as_the_serial_run_does(tmp_path):
    """Real candidates (recipe distill, the teacher shared once) trained in 2 worker processes through the CLI:
    with --sync-generations, every candidate both runs scored has the same metrics (wall-clock seconds aside) and
    parent in both, and a resumed run may change the number of workers without re-scoring anything.

    Not all candidates need be common: AutoGO's resolution MILP has a 1 s time limit, so on a loaded machine a
    mutation that the serial run solved may time out while workers train (the toy tests above, whose mutation
    is deterministic, check that the whole store equals the serial run's)."""
    import torch
    from _helpers import SmallNet

    from graphopt.backends.onnx import to_onnx
    from graphopt.frontends.torch import from_torch

    torch.manual_seed(0)
    model = tmp_path / "small.onnx"
    to_onnx(from_torch(SmallNet().eval(), (torch.randn(2, 3, 32, 32),), dynamic_batch=True), path=model)
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "GRAPHOPT_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "graphopt.cli", "optimize", str(model), "--budget", "10m", "--iterations", "2",
            "--train-size", "200", "--score-steps", "3", "--distill-steps", "5", "--final-k", "1", "--final-epochs",
            "0.2", "--parents", "2", "--mutants", "2", "--cost-window", "1.5", "--sync-generations"]
    stores = {}
    for workers in (1, 2):
        cwd = tmp_path / f"w{workers}"
        cwd.mkdir()
        r = subprocess.run([*base, "-o", "out", "--workers", str(workers)], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        (run,) = list((cwd / "graphopt-runs").iterdir())
        stores[workers] = _contents(run)["rows"]
        if workers == 2:
            assert "2 candidates at once" in r.stdout + r.stderr
    common = set(stores[1]) & set(stores[2])
    assert len(common) >= 3, (stores[1], stores[2])
    for h in common:  # status, parent and metrics (scores, losses, distillation errors) bit for bit
        assert stores[2][h][:2] == stores[1][h][:2] and stores[2][h][3] == stores[1][h][3], h
    assert all(row[0] == "done" for row in stores[2].values())
    r = subprocess.run([*base, "-o", "out", "--resume", run.name, "--workers", "1"], cwd=tmp_path / "w2", env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    with sqlite3.connect(run / "runs.sqlite") as c:
        assert {n for (n,) in c.execute("SELECT n_finished FROM candidates")} == {1}


# ---------------------------------------------------------------------------- graphopt search evaluations
def test_search_evaluates_found_and_random_paths_on_workers_and_survives_a_kill(tmp_path, monkeypatch):
    """``graphopt search --evaluate-epochs`` trains the found cell and a random one from scratch on 2 worker
    processes; a worker SIGKILLed mid-training has its path trained again, each result is committed once, and
    a re-run evaluates nothing again."""
    from typer.testing import CliRunner

    from graphopt.cli import app

    monkeypatch.setenv("GRAPHOPT_NUM_THREADS", "1")
    out = tmp_path / "out"
    args = ["search", "nb201", "--strategy", "xnas", "--budget", "10s", "--evaluate-epochs", "0.1", "--baselines",
            "1", "--workers", "2", "-o", str(out)]
    from graphopt.search import autogo

    pools: list = []
    real_start = autogo.start_executor

    def start_executor(*a, **kw):  # noqa: ANN002, ANN003, ANN202 - the real pool, kept where the killer sees it
        pools.append(real_start(*a, **kw))
        return pools[-1]

    monkeypatch.setattr(autogo, "start_executor", start_executor)
    killed: list[int] = []

    def kill_one_busy_worker() -> None:  # SIGKILL a worker while it trains a path
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            running = pools[0].running() if pools else {}
            if running:
                pid = sorted(running)[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_busy_worker, daemon=True)
    killer.start()
    r = CliRunner().invoke(app, args)
    killer.join(1)
    assert r.exit_code == 0, r.output
    assert killed
    report = json.loads((out / "report.json").read_text())
    rows = report["evaluation"]["rows"]
    assert [x["role"] for x in rows] == ["found", "random-0"] and rows[0]["path"] == report["path"]
    assert all(0 <= x["val"] <= 1 and 0 <= x["test"] <= 1 and x["metric"] == "accuracy" for x in rows)
    with sqlite3.connect(out / "runs.sqlite") as c:
        ev = c.execute("SELECT status, attempts, n_finished FROM candidates WHERE hash LIKE '%:eval:%'").fetchall()
    assert sorted(ev) == [("done", 1, 1), ("done", 2, 1)]  # the killed one trained again, each committed once
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "already done" in r.output and "evaluating" not in r.output, r.output
