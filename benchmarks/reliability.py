"""Reliability figures: fuzzing, kill-and-resume of a search, a 10x zoo graph load, hostile-file rejection.

1. Fuzz: mutated ONNX protobufs (the mutations of ``tests/fuzz/test_fuzz_onnx.py``) and mutated IR JSON
   documents / safetensors sidecars, loaded in worker processes so an interpreter crash is counted (the
   worker is restarted after the crashing case). Outcomes: ok (a graph passing ``verify``), error (a graphopt
   user error: exit code 2 in the CLI), and the failures -- uncaught exception, invalid graph, hang, crash.
2. Kill-resume: a small Pareto evolution search (``graphopt.search.evolution`` + ``ResultStore``, a cheap
   scorer that sleeps) followed by a final phase that trains the top 3 of the front (as ``graphopt optimize``
   does), in a forked child that is SIGKILLed at a planned point and then resumed to the end. The points rotate
   over three phases: while a candidate is scored, inside the SQLite transaction that commits a score (its
   UPDATE ran, its COMMIT not: the child holds there, told by the store's trace callback), and during the final
   training; the candidate or finalist is drawn at random, always after at least 3 candidates are committed
   (the parent reads the child's events from a pipe and polls the store before the kill). Per trial: committed
   at the kill, candidates lost (committed before the kill, not done after), committed candidates scored again
   (must be 0; the one in flight is scored again, and counted separately), ``PRAGMA integrity_check``, the final
   set and the finalists against an uninterrupted run. The script exits 1 when any trial fails.
3. The largest zoo graph (by node count) replicated 10x (copies sharing the input and the weights), saved as IR
   JSON and ONNX, and loaded in a fresh process: time, peak RSS growth and peak Python allocations.
4. Each hostile-file class of ``tests/commands/test_reliability.py`` through ``python -m graphopt.cli convert`` in a
   real process: exit code, whether anything was written, and the message.

Prints a table and writes ``benchmarks/results/reliability.json``.

    python benchmarks/reliability.py [--onnx-cases 2000] [--ir-cases 1000] [--trials 21] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

FAILURES = ("uncaught", "invalid", "hang", "crash", "cli_uncaught", "cli_hang")
CLI_EVERY = 5
"""Every 5th fuzz case also goes through ``graphopt convert`` (the CLI path a user hits)."""


def _module(path: Path, name: str):
    """Import a test module by path (the fuzz mutations and hostile-file builders live with the tests)."""
    sys.path.insert(0, str(TESTS))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# ================================================================================================== fuzzing
def _ir_seeds(d: Path) -> list[tuple[dict, bytes]]:
    """(JSON doc, safetensors bytes) of IR files: the core test graph and two ONNX fuzz seeds lowered to IR."""
    from graphopt.frontends.onnx import load_onnx
    from graphopt.ir import save

    core = _module(TESTS / "_helpers.py", "_helpers")
    fz = _module(TESTS / "fuzz" / "test_fuzz_onnx.py", "fuzz_onnx")
    graphs = [core.conv_bn_relu_graph()]
    for name in ("cnn", "legacy"):
        (d / "seed.onnx").write_bytes(fz.seeds()[name])
        graphs.append(load_onnx(d / "seed.onnx"))
    out = []
    for i, g in enumerate(graphs):
        p = save(g, d / f"seed{i}.json")
        out.append((json.loads(p.read_text()), (d / f"seed{i}.safetensors").read_bytes()))
    return out


_JUNK: tuple[Any, ...] = (None, 0, -1, 2**40, -(2**70), 1.5, float("nan"), "", "x", "float32", "int64", [],
                          [1, 2, 3], [2**40], {}, {"dtype": "float32", "shape": [2**31 + 5]}, True, "relu")


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


def _ir_case(seeds: list[tuple[dict, bytes]], i: int, d: Path) -> tuple[str, str]:
    """Mutate an IR seed (JSON edits, text truncation, sidecar bit flips), load and verify it."""
    import traceback

    from graphopt.errors import USER_ERRORS
    from graphopt.ir.serialize import load
    from graphopt.ir.verify import verify

    rng = random.Random(i)
    doc, weights = seeds[rng.randrange(len(seeds))]
    doc = copy.deepcopy(doc)
    doc["weights"] = "case.safetensors"
    paths = _paths(doc)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        cur = doc
        try:
            for p in path[:-1]:
                cur = cur[p]
            if rng.random() < 0.25:
                del cur[path[-1]]
            else:
                cur[path[-1]] = copy.deepcopy(rng.choice(_JUNK))
        except (KeyError, IndexError, TypeError):
            pass
    text = json.dumps(doc)
    if rng.random() < 0.1:
        text = text[: rng.randrange(len(text) + 1)]
    w = bytearray(weights)
    if rng.random() < 0.15:
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(len(w))
            w[k] ^= 1 << rng.randrange(8)
    (d / "case.json").write_text(text)
    (d / "case.safetensors").write_bytes(bytes(w))
    fz = sys.modules["fuzz_onnx"]
    try:
        with fz.time_limit(fz.CASE_TIMEOUT_S):
            g = load(d / "case.json")
    except USER_ERRORS as e:
        return "error", f"{type(e).__name__}: {e}"[:200]
    except fz.CaseTimeout as e:
        return "hang", str(e)
    except Exception as e:  # noqa: BLE001 - anything else is a finding
        return "uncaught", "".join(traceback.format_exception(e))[-1500:]
    try:
        verify(g)
    except USER_ERRORS as e:  # IR files load as data; verify (run by convert/export) rejects inconsistent ones
        return "verify_error", f"{type(e).__name__}: {e}"[:200]
    except Exception as e:  # noqa: BLE001
        return "invalid", "".join(traceback.format_exception(e))[-1500:]
    return "ok", ""


def _cli_case(path: Path) -> tuple[str, str]:
    """``graphopt convert FILE -o out.onnx --no-verify`` in-process: exit 0 or 2 is fine, anything else not."""
    from typer.testing import CliRunner

    from graphopt.cli import app

    fz = sys.modules["fuzz_onnx"]
    try:
        with fz.time_limit(fz.CASE_TIMEOUT_S):
            res = CliRunner().invoke(app, ["convert", str(path), "-o", str(path.parent / "out.onnx"), "--no-verify"])
    except fz.CaseTimeout as e:
        return "cli_hang", str(e)
    if res.exit_code in (0, 2):
        return f"cli_exit_{res.exit_code}", ""
    import traceback

    exc = res.exception
    tb = "".join(traceback.format_exception(exc))[-1500:] if exc is not None else res.output[-500:]
    return "cli_uncaught", tb


def fuzz_worker(kind: str, start: int, end: int, out: Path) -> None:
    """Run cases ``start..end-1`` and append one JSON line per case (flushed: survives a crash)."""
    fz = _module(TESTS / "fuzz" / "test_fuzz_onnx.py", "fuzz_onnx")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "data.bin").write_bytes(b"\0" * 64)
        if kind == "onnx":
            names = sorted(fz.seeds())
        else:
            seeds = _ir_seeds(d)
        with open(out, "a") as f:
            for i in range(start, end):
                if kind == "onnx":
                    rng = random.Random(i)
                    name = rng.choice(names)
                    kinds = [rng.choice(fz.KINDS) for _ in range(rng.randint(1, 3))]
                    outcome, detail = fz.run_case(fz.mutate(fz.seeds()[name], kinds, i), d / "case.onnx")
                    detail = f"{name} {kinds}: {detail}"
                else:
                    outcome, detail = _ir_case(seeds, i, d)
                rec: dict[str, Any] = {"i": i, "outcome": outcome}
                if outcome in FAILURES:
                    rec["detail"] = detail
                if i % CLI_EVERY == 0:
                    rec["cli"], cli_detail = _cli_case(d / ("case.onnx" if kind == "onnx" else "case.json"))
                    if rec["cli"] in FAILURES:
                        rec["cli_detail"] = f"{detail[:200]} | {cli_detail}"
                f.write(json.dumps(rec) + "\n")
                f.flush()


def run_fuzz(kind: str, n: int, d: Path) -> dict[str, Any]:
    """Run ``n`` cases in worker processes; a worker killed by a signal marks its current case as a crash."""
    log = d / f"fuzz_{kind}.jsonl"
    start, crashes, t0 = 0, [], time.perf_counter()
    while start < n:
        p = subprocess.run([sys.executable, __file__, "--fuzz-worker", kind, str(start), str(n), str(log)],
                           capture_output=True, text=True, timeout=3600)
        done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        last = max((r["i"] for r in done), default=start - 1)
        if p.returncode == 0 and last >= n - 1:
            break
        crashes.append({"i": last + 1, "returncode": p.returncode, "stderr": p.stderr[-1500:]})
        start = last + 2
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    outcomes = Counter(r["outcome"] for r in recs)
    outcomes["crash"] += len(crashes)
    cli = Counter(r["cli"] for r in recs if "cli" in r)
    failures = [r for r in recs if r["outcome"] in FAILURES or r.get("cli") in FAILURES][:10] + crashes[:10]
    return {"cases": len(recs) + len(crashes), "outcomes": dict(outcomes),
            "uncaught_errors": sum(outcomes[k] for k in FAILURES),
            "cli_cases": sum(cli.values()), "cli_outcomes": dict(cli),
            "cli_uncaught_errors": sum(cli[k] for k in FAILURES),
            "seconds": round(time.perf_counter() - t0, 1), "failures": failures}


# ============================================================================================= kill-resume
OPS = ["relu", "sigmoid", "tanh"]
PHASES = ("scoring", "commit", "final")
"""Where a trial's SIGKILL lands: while a candidate is being scored, inside the SQLite transaction that commits a
score (after its UPDATE ran, before COMMIT), or during the final training of the finalists."""
HOLD_S = 30.0
"""How long the child holds at its targeted point: the parent's SIGKILL always lands there, even on a busy machine."""
MIN_COMMITTED = 3


def _chain(ops: list[str]):
    from graphopt.ir import DType, Graph, TensorType

    g = Graph("toy")
    v = g.add_input("x", TensorType(DType.float32, (1, 4)))
    for o in ops:  # element-wise ops keep the type: no shape inference needed
        v = g.create_node(o, [v], output_types=[v.type], infer=False).output
    g.set_outputs([v])
    return g


def _search(run: Path, log: Path, sleep: float, events: int | None = None, target: tuple[str, int] | None = None,
            final_k: int = 3) -> int:
    """The toy search of tests/search/test_evolution.py (mutate a relu/sigmoid/tanh chain, score = tanh share), then a
    final phase that "trains" the top ``final_k`` of the front, as ``graphopt optimize`` does after its search.

    ``log`` gets ``S <hash>`` for every scoring and ``F <hash>`` for every final training. ``events`` (a pipe's
    write end) gets one line per scoring start, committing transaction and final training. ``target``: hold for
    :data:`HOLD_S` at (phase, n): the n-th scoring, the n-th commit (inside its transaction), or the n-th finalist.
    """
    from graphopt.eval.store import ResultStore
    from graphopt.ir.serialize import structure_hash
    from graphopt.search.evolution import EvolutionConfig, ParetoEvolution

    counts = dict.fromkeys(PHASES, 0)

    def emit(phase: str) -> bool:
        """Count and report a phase event; True when this is the targeted one."""
        counts[phase] += 1
        if events is not None:
            os.write(events, f"{phase} {counts[phase]}\n".encode())
        return target == (phase, counts[phase])

    def mutate(g, rng):
        ops = [n.op for n in g.nodes]
        i = rng.randrange(len(ops))
        ops[i] = rng.choice(OPS)
        if rng.random() < 0.3:
            ops.insert(rng.randrange(len(ops) + 1), rng.choice(OPS))
        return _chain(ops), [{"pos": i}]

    def score(g, parent):
        with open(log, "a") as f:
            f.write("S " + structure_hash(g) + "\n")
        time.sleep(HOLD_S if emit("scoring") else sleep)
        return {"score": sum(n.op == "tanh" for n in g.nodes) / len(g)}

    store = ResultStore.open(run)
    armed = {"done_update": False}

    def trace(stmt: str) -> None:  # runs inside the store's transactions (sqlite3 trace callback)
        if stmt.startswith("UPDATE candidates SET status = 'done'"):
            armed["done_update"] = True
        elif stmt == "COMMIT" and armed["done_update"]:
            armed["done_update"] = False
            if emit("commit"):
                time.sleep(HOLD_S)  # the UPDATE ran, the COMMIT has not: the kill lands in the open transaction

    store._conn.set_trace_callback(trace)
    ev = ParetoEvolution(mutate=mutate, score=score, cost=lambda g: float(len(g)), store=store, run_dir=run,
                         config=EvolutionConfig(iterations=4, parents_per_iter=3, mutants_per_parent=3,
                                                cost_window=(0.0, 3.0)))
    front = ev.run(_chain(["relu", "relu", "sigmoid"]))
    store._conn.set_trace_callback(None)
    for c in sorted(front, key=lambda c: (-c.score, c.cost, c.hash))[:final_k]:
        time.sleep(HOLD_S if emit("final") else sleep)  # the final training (not stored, as in optimize)
        with open(log, "a") as f:
            f.write("F " + c.hash + "\n")
    store.close()
    return 0


def _fork(fn, *args, close: tuple[int, ...] = ()) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd in close:
                os.close(fd)
            code = fn(*args)
        finally:
            os._exit(code)
    return pid


def _integrity(run: Path) -> str:
    con = sqlite3.connect(run / "runs.sqlite")
    try:
        return ";".join(r[0] for r in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()


def _statuses(run: Path) -> dict[str, str]:
    """{hash: status} read without changing anything (read-only connection)."""
    p = run / "runs.sqlite"
    if not p.exists():
        return {}
    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)
    try:
        return dict(con.execute("SELECT hash, status FROM candidates"))
    finally:
        con.close()


def _log(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.exists() else []  # type: ignore


def _wait_event(fd: int, buf: bytearray, want: tuple[str, int], timeout: float) -> bool:
    """Read events from the pipe until ``want`` arrives (True) or the child closes it / the time is up."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        buf.extend(chunk)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            phase, n = line.decode().split()
            if (phase, int(n)) == want:
                return True
    return False


def _plan(trials: int, n_candidates: int, n_final: int, rng: random.Random) -> list[tuple[str, int]]:
    """Kill points: phases in rotation; the scoring / commit of a candidate after at least ``MIN_COMMITTED`` are
    committed (the n-th scoring or commit has n-1 committed before it), or one of the finalists."""
    out = []
    for k in range(trials):
        phase = PHASES[k % len(PHASES)]
        n = rng.randint(1, n_final) if phase == "final" else rng.randint(MIN_COMMITTED + 1, n_candidates)
        out.append((phase, n))
    return out


def kill_resume(trials: int, d: Path, sleep: float = 0.02, final_k: int = 3, seed: int = 0) -> dict[str, Any]:
    """SIGKILL a forked search at planned points (:func:`_plan`), resume it, compare with an uninterrupted run."""
    from graphopt.eval.store import ResultStore  # imported before forking: the children start at once

    d.mkdir(parents=True, exist_ok=True)
    ref, ref_log = d / "ref", d / "ref.log"
    t0 = time.perf_counter()
    pid = _fork(_search, ref, ref_log, sleep, None, None, final_k)
    _, status = os.waitpid(pid, 0)
    ref_seconds = time.perf_counter() - t0
    assert os.waitstatus_to_exitcode(status) == 0, "the reference search failed"
    with ResultStore.open(ref, reset_running=False) as st:
        ref_done = st.done_hashes()
    ref_final = [h for k, h in _log(ref_log) if k == "F"]
    rows = []
    for k, (phase, n) in enumerate(_plan(trials, len(ref_done), len(ref_final), random.Random(seed))):
        run, log = d / f"trial{k}", d / f"trial{k}.log"
        rfd, wfd = os.pipe()
        pid = _fork(_search, run, log, sleep, wfd, (phase, n), final_k, close=(rfd,))
        os.close(wfd)
        buf = bytearray()
        reached = _wait_event(rfd, buf, (phase, n), timeout=600)
        committed = sum(v == "done" for v in _statuses(run).values()) if reached else 0
        t_hold = time.monotonic()
        while reached and committed < MIN_COMMITTED and time.monotonic() - t_hold < HOLD_S / 2:  # poll the store
            time.sleep(0.05)
            committed = sum(v == "done" for v in _statuses(run).values())
        if reached:
            time.sleep(random.Random(k).uniform(0.0, 0.2))  # somewhere inside the held phase
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(rfd)
        killed = os.WIFSIGNALED(status)
        integrity_after_kill = _integrity(run) if (run / "runs.sqlite").exists() else "no store yet"
        at_kill = _statuses(run)
        before = {h for h, v in at_kill.items() if v == "done"}
        in_flight = {h for h, v in at_kill.items() if v == "running"}
        n_log = len(_log(log))
        finals_before = [h for kind, h in _log(log) if kind == "F"]
        pid = _fork(_search, run, log, 0.0, None, None, final_k)
        _, status = os.waitpid(pid, 0)
        resumed_ok = os.waitstatus_to_exitcode(status) == 0
        with ResultStore.open(run, reset_running=False) as st:
            after = st.done_hashes()
            finished_once = all(r.n_finished == 1 for r in st.rows("done"))
            iterations = st.meta.get("iterations_done")
        new = _log(log)[n_log:]
        rescored = [h for kind, h in new if kind == "S"]
        finals = [h for kind, h in new if kind == "F"]
        phase_ok = {"scoring": len(in_flight) == 1, "commit": len(in_flight) == 1,
                    "final": before == ref_done and not in_flight}[phase]
        rows.append({
            "phase": phase, "target": n, "reached_target": reached, "phase_confirmed": reached and phase_ok,
            "killed_mid_run": killed, "done_at_kill": len(before), "running_at_kill": len(in_flight),
            "finalists_trained_before_kill": len(finals_before), "resumed_ok": resumed_ok, "done_final": len(after),
            "lost": len(before - after), "rescored_committed": len(set(rescored) & before),
            "rescored_in_flight": len(set(rescored) & in_flight), "scored_after_resume": len(rescored),
            "finished_once": finished_once, "integrity_after_kill": integrity_after_kill,
            "integrity_final": _integrity(run), "iterations_done": iterations,
            "missing_vs_uninterrupted": len(ref_done - after), "extra_vs_uninterrupted": len(after - ref_done),
            "same_finalists_as_uninterrupted": finals == ref_final,
        })
    ok = [r["reached_target"] and r["phase_confirmed"] and r["killed_mid_run"] and r["done_at_kill"] >= MIN_COMMITTED
          and r["resumed_ok"] and r["lost"] == 0 and r["rescored_committed"] == 0 and r["finished_once"]
          and r["integrity_final"] == "ok" and r["integrity_after_kill"] == "ok" and r["missing_vs_uninterrupted"] == 0
          and r["extra_vs_uninterrupted"] == 0 and r["same_finalists_as_uninterrupted"] for r in rows]
    return {
        "trials": trials, "phases": {p: sum(r["phase"] == p for r in rows) for p in PHASES},
        "min_committed_at_kill": min((r["done_at_kill"] for r in rows), default=0),
        "killed_mid_run": sum(r["killed_mid_run"] for r in rows),
        "phase_confirmed": sum(r["phase_confirmed"] for r in rows),
        "uninterrupted": {"seconds": round(ref_seconds, 2), "candidates": len(ref_done), "finalists": len(ref_final)},
        "candidates_lost": sum(r["lost"] for r in rows),
        "rescored_committed": sum(r["rescored_committed"] for r in rows),
        "rescored_in_flight": sum(r["rescored_in_flight"] for r in rows),
        "integrity_ok": sum(r["integrity_after_kill"] == "ok" and r["integrity_final"] == "ok" for r in rows),
        "resumed_ok": sum(r["resumed_ok"] for r in rows),
        "same_final_set_as_uninterrupted": sum(r["missing_vs_uninterrupted"] == 0 and r["extra_vs_uninterrupted"]
                                               == 0 for r in rows),
        "same_finalists_as_uninterrupted": sum(r["same_finalists_as_uninterrupted"] for r in rows),
        "trials_passing": sum(ok), "all_pass": all(ok) and bool(rows),
        "per_trial": rows,
    }


# ================================================================================================ zoo load
def _replicate(g, times: int):
    """``times`` copies of ``g`` side by side: shared inputs and weights, renamed nodes, all outputs kept."""
    from graphopt.ir.serialize import graph_from_json, graph_to_json

    doc = graph_to_json(g)
    arrays = {v.name: v.const for v in g.constants.values()}
    shared = {d["name"] for d in doc["inputs"]} | {d["name"] for d in doc["constants"]}
    nodes, outputs = [], []
    for k in range(times):
        ren = (lambda n, k=k: n if n in shared else f"c{k}/{n}")
        for n in doc["nodes"]:
            n = copy.deepcopy(n)
            n["name"] = f"c{k}/{n['name']}"
            n["inputs"] = [None if x is None else ren(x) for x in n["inputs"]]
            for o in n["outputs"]:
                o["name"] = ren(o["name"])
            nodes.append(n)
        outputs += [ren(o) for o in doc["outputs"]]
    doc["nodes"], doc["outputs"], doc["name"] = nodes, outputs, f"{g.name}_x{times}"
    return graph_from_json(doc, arrays)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure_load(path: str) -> dict[str, Any]:
    """Load ``path`` in this fresh process: seconds, peak RSS growth, peak Python allocations.

    The libraries the loaders import lazily (torch, onnx, safetensors) are imported first, then the kernel's
    peak-RSS mark is reset (``/proc/self/clear_refs``) and the file is loaded: the peak RSS growth is what
    loading the file costs. A second load gives the warm time, a third (under ``tracemalloc``) the peak of
    Python/numpy allocations.
    """
    import gc
    import tracemalloc

    import onnx.numpy_helper  # noqa: F401 - lazy imports of the loaders, paid before the baseline
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401

    import graphopt.frontends.onnx  # noqa: F401
    import graphopt.ir.infer  # noqa: F401
    from graphopt.modelio import load_model

    gc.collect()
    rss0 = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    t0 = time.perf_counter()
    g = load_model(path)
    first = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    nodes = len(g)
    del g
    gc.collect()
    t0 = time.perf_counter()
    g = load_model(path)
    warm = time.perf_counter() - t0
    del g
    gc.collect()
    tracemalloc.start()
    load_model(path)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"nodes": nodes, "seconds": round(first, 3), "warm_seconds": round(warm, 3),
            "rss_growth_mb": round((peak - rss0) / 1024, 1), "python_peak_mb": round(traced / 2**20, 1)}


def zoo_load(d: Path, multipliers: tuple[int, ...] = (1, 10)) -> dict[str, Any]:
    import graphopt.models as M

    from graphopt.backends.onnx import to_onnx
    from graphopt.frontends.torch import from_torch
    from graphopt.ir import save

    sizes = {}
    graphs = {}
    for name in M.names():  # the largest graph by node count
        try:
            graphs[name] = from_torch(M.get(name).eval(), M.example_inputs(name, batch=1))
            sizes[name] = len(graphs[name])
        except Exception as e:  # noqa: BLE001 - a model that does not lower is just not a candidate
            print(f"  {name}: not lowered ({type(e).__name__})", file=sys.stderr)
    name = max(sizes, key=sizes.get)  # type: ignore[arg-type]
    rows = []
    for times in multipliers:
        g = _replicate(graphs[name], times)
        files = {"ir_json": save(g, d / f"{name}_x{times}.json"), "onnx": d / f"{name}_x{times}.onnx"}
        to_onnx(g, path=files["onnx"])
        for fmt, path in files.items():
            p = subprocess.run([sys.executable, __file__, "--measure-load", str(path)], capture_output=True,
                               text=True, timeout=1800)
            if p.returncode != 0:
                rows.append({"multiplier": times, "format": fmt, "error": p.stderr[-500:]})
                continue
            size = path.stat().st_size + (path.with_suffix(".safetensors").stat().st_size if fmt == "ir_json" else 0)
            rows.append({"multiplier": times, "format": fmt, "file_mb": round(size / 2**20, 2),
                         **json.loads(p.stdout.strip().splitlines()[-1])})
    return {"model": name, "nodes_by_model": sizes, "rows": rows}


# ========================================================================================== hostile files
def hostile(d: Path) -> list[dict[str, Any]]:
    rel = _module(TESTS / "commands" / "test_reliability.py", "test_reliability")
    rows = []
    for k, (name, (build, env, phrase)) in enumerate(rel.HOSTILE.items()):
        case = d / f"hostile{k}"
        case.mkdir()
        path = build(case)
        before = {p for p in case.rglob("*")}
        p = subprocess.run([sys.executable, "-m", "graphopt.cli", "convert", str(path), "-o", str(case / "out.onnx")],
                           capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
        written = sorted(str(x.relative_to(case)) for x in set(case.rglob("*")) - before)
        msg = " ".join(p.stderr.split())
        rows.append({"class": name, "rejected": p.returncode == 2 and not written and phrase in msg,
                     "exit_code": p.returncode, "written": written, "code_ran": (case / "PWNED").exists(),
                     "message": msg[:400]})
    return rows


# ==================================================================================================== main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-cases", type=int, default=2000)
    ap.add_argument("--ir-cases", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=21, help="kill-resume trials (phases in rotation)")
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run; results not written)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--fuzz-worker", nargs=4, metavar=("KIND", "START", "END", "LOG"), help=argparse.SUPPRESS)
    ap.add_argument("--measure-load", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fuzz_worker:
        kind, start, end, log = args.fuzz_worker
        fuzz_worker(kind, int(start), int(end), Path(log))
        return 0
    if args.measure_load:
        print(json.dumps(measure_load(args.measure_load)))
        return 0
    run = Run.start("reliability.json", argv=None if argv is None else [__file__, *argv], quick=args.quick)
    if args.quick:
        args.onnx_cases, args.ir_cases, args.trials = 100, 50, 3
    from graphopt.ir.limits import current_limits

    result: dict[str, Any] = {"limits": current_limits().__dict__}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        print("kill-resume trials ...", flush=True)
        result["kill_resume"] = kill_resume(args.trials, d / "kill")  # before torch threads exist (fork)
        print("fuzzing ...", flush=True)
        result["fuzz"] = {"onnx": run_fuzz("onnx", args.onnx_cases, d), "ir_json": run_fuzz("ir", args.ir_cases, d)}
        print("hostile files ...", flush=True)
        result["hostile_files"] = hostile(d)
        print("zoo graph x10 ...", flush=True)
        result["zoo_load"] = zoo_load(d)
    _print(result)
    print(f"wrote {run.write(result, args.out, dumps=lambda x: json.dumps(x, indent=2))}")
    kr = result["kill_resume"]
    if not kr["all_pass"]:
        print(f"kill-resume: {kr['trials'] - kr['trials_passing']} trial(s) failed", file=sys.stderr)
        return 1
    return 0


def _print(r: dict[str, Any]) -> None:
    print("\n== fuzzing (target: 0 uncaught)")
    print(f"{'input':<10} {'cases':>6} {'ok':>6} {'error':>6} {'verify':>7} {'uncaught':>9} {'invalid':>8} "
          f"{'hang':>5} {'crash':>6} {'seconds':>8}   CLI convert: cases, exit 0 / 2 / other")
    for k, f in r["fuzz"].items():
        o, c = f["outcomes"], f["cli_outcomes"]
        print(f"{k:<10} {f['cases']:>6} {o.get('ok', 0):>6} {o.get('error', 0):>6} {o.get('verify_error', 0):>7} "
              f"{o.get('uncaught', 0):>9} {o.get('invalid', 0):>8} {o.get('hang', 0):>5} {o.get('crash', 0):>6} "
              f"{f['seconds']:>8}   {f['cli_cases']}, {c.get('cli_exit_0', 0)} / {c.get('cli_exit_2', 0)} / "
              f"{f['cli_uncaught_errors']}")
    kr = r["kill_resume"]
    print("\n== kill-resume (target: >= 3 committed at every kill, 0 lost, 0 committed re-scored, integrity ok)")
    print(f"trials {kr['trials']} {kr['phases']}, kill landed in the planned phase {kr['phase_confirmed']}, "
          f"committed at kill >= {kr['min_committed_at_kill']}, resumed ok {kr['resumed_ok']}, candidates lost "
          f"{kr['candidates_lost']}, committed re-scored {kr['rescored_committed']} (in-flight re-scored "
          f"{kr['rescored_in_flight']}), integrity ok {kr['integrity_ok']}/{kr['trials']}, same final set "
          f"{kr['same_final_set_as_uninterrupted']}/{kr['trials']}, same finalists "
          f"{kr['same_finalists_as_uninterrupted']}/{kr['trials']} (uninterrupted: {kr['uninterrupted']['candidates']} "
          f"candidates in {kr['uninterrupted']['seconds']} s); all pass: {kr['all_pass']}")
    print(f"{'phase':<8} {'target':>6} {'committed':>9} {'lost':>5} {'rescored':>8} {'in-flight':>9}  same set")
    for t in kr["per_trial"]:
        print(f"{t['phase']:<8} {t['target']:>6} {t['done_at_kill']:>9} {t['lost']:>5} {t['rescored_committed']:>8} "
              f"{t['rescored_in_flight']:>9}  {t['missing_vs_uninterrupted'] == t['extra_vs_uninterrupted'] == 0}")
    z = r["zoo_load"]
    print(f"\n== load of the largest zoo graph ({z['model']}, {z['nodes_by_model'][z['model']]} nodes) replicated")
    print(f"{'x':>3} {'format':<8} {'nodes':>7} {'file MB':>8} {'seconds':>8} {'warm s':>7} {'RSS growth MB':>14} "
          f"{'py peak MB':>11}")
    for row in z["rows"]:
        if "error" in row:
            print(f"{row['multiplier']:>3} {row['format']:<8} error: {row['error'][-200:]}")
            continue
        print(f"{row['multiplier']:>3} {row['format']:<8} {row['nodes']:>7} {row['file_mb']:>8} {row['seconds']:>8} "
              f"{row['warm_seconds']:>7} {row['rss_growth_mb']:>14} {row['python_peak_mb']:>11}")
    print("\n== hostile files (graphopt convert FILE -o out.onnx)")
    for h in r["hostile_files"]:
        print(f"{'REJECTED' if h['rejected'] else 'NOT REJECTED':<12} exit {h['exit_code']}  {h['class']}")
        print(f"             {h['message'][:200]}")


if __name__ == "__main__":
    sys.exit(main())
