"""Pareto evolution: front/parent selection, and a search that is SIGKILLed half-way and resumed."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

from graphopt.eval.store import ResultStore
from graphopt.search.evolution import Candidate, pareto_front, select_parents

TOY = textwrap.dedent('''
    import random, sys, time
    from pathlib import Path
    from graphopt.ir import DType, Graph, TensorType
    from graphopt.eval.store import ResultStore
    from graphopt.search.evolution import EvolutionConfig, ParetoEvolution

    OPS = ["relu", "sigmoid", "tanh"]

    def chain(ops):
        g = Graph("toy")
        v = g.add_input("x", TensorType(DType.float32, (1, 4)))
        for o in ops:
            v = g.create_node(o, [v]).output
        g.set_outputs([v])
        return g

    def mutate(g, rng):
        ops = [n.op for n in g.nodes]
        i = rng.randrange(len(ops))
        ops[i] = rng.choice(OPS)
        if rng.random() < 0.3:
            ops.insert(rng.randrange(len(ops) + 1), rng.choice(OPS))
        return chain(ops), [{"pos": i}]

    log = Path(sys.argv[2])
    def score(g, parent):
        from graphopt.ir.serialize import structure_hash
        with open(log, "a") as f:
            f.write(structure_hash(g) + "\\n")
        time.sleep(float(sys.argv[3]))
        return {"score": sum(n.op == "tanh" for n in g.nodes) / len(g)}

    run = Path(sys.argv[1])
    store = ResultStore.open(run)
    ev = ParetoEvolution(mutate=mutate, score=score, cost=lambda g: float(len(g)), store=store, run_dir=run,
                         config=EvolutionConfig(iterations=3, parents_per_iter=3, mutants_per_parent=3,
                                                cost_window=(0.0, 3.0)))
    front = ev.run(chain(["relu", "relu", "sigmoid"]))
    print("FRONT", len(front), ev.stats)
''')


def _cand(h, s, c):
    return Candidate(h, None, s, c)  # type: ignore[arg-type]


def test_pareto_front_and_grid_parent_selection():
    cands = [_cand("a", 0.9, 10), _cand("b", 0.8, 5), _cand("c", 0.7, 6), _cand("d", 0.95, 20), _cand("e", 0.5, 1)]
    front = pareto_front(cands)
    assert [c.hash for c in front] == ["e", "b", "a", "d"]  # c is dominated by b
    parents = select_parents(cands, 3, random.Random(0))
    assert len(parents) == 3 and all(p in front for p in parents)
    assert {p.hash for p in parents} >= {"e", "d"}  # grid ends of the cost range
    parents = select_parents(cands, 5, random.Random(0))
    assert parents[-1].hash == "c"  # gap filled with the best non-Pareto candidate


def test_sigkilled_search_resumes_without_losing_or_rescoring(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    run, log = tmp_path / "run", tmp_path / "scored.log"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for trial in range(3):  # kill at three different points
        p = subprocess.Popen([sys.executable, str(script), str(run), str(log), "0.05"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Kill once this trial's scorings have started (polling, not a fixed sleep: start-up time varies).
        deadline = time.monotonic() + 120
        want = 2 * (trial + 1)
        while time.monotonic() < deadline and p.poll() is None:
            if log.exists() and len(log.read_text().split()) >= want:
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        with ResultStore.open(run, reset_running=False) as st:
            assert st.integrity_ok()
    with ResultStore.open(run) as st:
        done_before = st.done_hashes()
    assert done_before, "the search finished nothing before the kill; slow machine?"
    n_log_before = len(log.read_text().split())
    res = subprocess.run([sys.executable, str(script), str(run), str(log), "0.0"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rescored = log.read_text().split()[n_log_before:]
    assert not set(rescored) & done_before  # nothing finished was evaluated again
    with ResultStore.open(run) as st:
        assert st.integrity_ok()
        done_after = st.done_hashes()
        assert done_before <= done_after  # nothing lost
        assert all(r.n_finished == 1 for r in st.rows("done"))
        assert st.meta["iterations_done"] == 3


def test_resuming_a_run_with_another_model_is_refused(tmp_path):
    """A resumed run must start from the model it was started from; another model would mix two searches."""
    import pytest

    from graphopt.errors import GraphoptError
    from graphopt.ir import DType, Graph, TensorType
    from graphopt.search.evolution import EvolutionConfig, ParetoEvolution

    def chain(ops):
        g = Graph("toy")
        v = g.add_input("x", TensorType(DType.float32, (1, 4)))
        for o in ops:
            v = g.create_node(o, [v]).output
        g.set_outputs([v])
        return g

    def evolution():
        store = ResultStore.open(tmp_path / "run")
        return ParetoEvolution(mutate=lambda g, rng: (chain(["tanh", *[n.op for n in g.nodes]]), []),
                               score=lambda g, parent: {"score": 1.0 / len(g)}, cost=lambda g: float(len(g)),
                               store=store, run_dir=tmp_path / "run",
                               config=EvolutionConfig(iterations=1, parents_per_iter=1, mutants_per_parent=1,
                                                      cost_window=(0.0, 9.0)))

    evolution().run(chain(["relu"]))
    with pytest.raises(GraphoptError, match="started from a different model"):
        evolution().run(chain(["sigmoid"]))
    assert len(evolution().run(chain(["relu"]))) >= 1  # the same model resumes
