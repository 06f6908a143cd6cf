"""Reliability figures: fuzzing, kill-and-resume of a search, a 10x zoo graph load, hostile-file rejection.

1. Fuzz: mutated ONNX protobufs (the mutations of ``tests/fuzz/test_fuzz_onnx.py``) and mutated IR JSON
   documents / safetensors sidecars, loaded in worker processes so an interpreter crash is counted (the
   worker is restarted after the crashing case). Outcomes: ok (a graph passing ``verify``), error (a graphopt
   user error: exit code 2 in the CLI), and the failures -- uncaught exception, invalid graph, hang, crash.
2. Kill-resume: a small Pareto evolution search (``graphopt.search.evolution`` + ``ResultStore``, a cheap
   scorer that sleeps) runs in a forked child that is SIGKILLed at a random point, then resumed to the end.
   Per trial: candidates lost (done before the kill, not done after), candidates evaluated twice (done before
   the kill and scored again), ``PRAGMA integrity_check``, and the final set against an uninterrupted run.
3. The largest zoo graph (by node count) replicated 10x (copies sharing the input and the weights), saved as IR
   JSON and ONNX, and loaded in a fresh process: time, peak RSS growth and peak Python allocations.
4. Each hostile-file class of ``tests/test_reliability.py`` through ``python -m graphopt.cli convert`` in a
   real process: exit code, whether anything was written, and the message.

Prints a table and writes ``benchmarks/results/reliability.json``.

    python benchmarks/reliability.py [--onnx-cases 2000] [--ir-cases 1000] [--trials 20] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import random
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
RESULT = ROOT / "benchmarks" / "results" / "reliability.json"
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

    core = _module(TESTS / "test_ir_core.py", "test_ir_core")
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


def _chain(ops: list[str]):
    from graphopt.ir import DType, Graph, TensorType

    g = Graph("toy")
    v = g.add_input("x", TensorType(DType.float32, (1, 4)))
    for o in ops:  # element-wise ops keep the type: no shape inference needed
        v = g.create_node(o, [v], output_types=[v.type], infer=False).output
    g.set_outputs([v])
    return g


def _search(run: Path, log: Path, sleep: float) -> int:
    """The toy search of tests/test_evolution.py: mutate a relu/sigmoid/tanh chain, score = tanh share."""
    from graphopt.eval.store import ResultStore
    from graphopt.ir.serialize import structure_hash
    from graphopt.search.evolution import EvolutionConfig, ParetoEvolution

    def mutate(g, rng):
        ops = [n.op for n in g.nodes]
        i = rng.randrange(len(ops))
        ops[i] = rng.choice(OPS)
        if rng.random() < 0.3:
            ops.insert(rng.randrange(len(ops) + 1), rng.choice(OPS))
        return _chain(ops), [{"pos": i}]

    def score(g, parent):
        time.sleep(sleep)
        with open(log, "a") as f:
            f.write(structure_hash(g) + "\n")
        return {"score": sum(n.op == "tanh" for n in g.nodes) / len(g)}

    store = ResultStore.open(run)
    ev = ParetoEvolution(mutate=mutate, score=score, cost=lambda g: float(len(g)), store=store, run_dir=run,
                         config=EvolutionConfig(iterations=4, parents_per_iter=3, mutants_per_parent=3,
                                                cost_window=(0.0, 3.0)))
    ev.run(_chain(["relu", "relu", "sigmoid"]))
    store.close()
    return 0


def _fork(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
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


def _done(run: Path) -> set[str]:
    from graphopt.eval.store import ResultStore

    with ResultStore.open(run, reset_running=False) as st:
        return st.done_hashes()


def kill_resume(trials: int, d: Path, sleep: float = 0.03) -> dict[str, Any]:
    """SIGKILL a forked search at random points, resume it, and compare with an uninterrupted run."""
    from graphopt.eval.store import ResultStore

    ref, ref_log = d / "ref", d / "ref.log"
    t0 = time.perf_counter()
    pid = _fork(_search, ref, ref_log, sleep)
    _, status = os.waitpid(pid, 0)
    ref_seconds = time.perf_counter() - t0
    assert os.waitstatus_to_exitcode(status) == 0, "the reference search failed"
    ref_done = _done(ref)
    rng = random.Random(0)
    rows = []
    for k in range(trials):
        run, log = d / f"trial{k}", d / f"trial{k}.log"
        kill_at = rng.uniform(0.05, 0.95) * ref_seconds
        pid = _fork(_search, run, log, sleep)
        time.sleep(kill_at)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        integrity_after_kill = _integrity(run) if (run / "runs.sqlite").exists() else "no store yet"
        before = _done(run) if (run / "runs.sqlite").exists() else set()
        n_log = len(log.read_text().split()) if log.exists() else 0
        pid = _fork(_search, run, log, 0.0)
        _, status = os.waitpid(pid, 0)
        resumed_ok = os.waitstatus_to_exitcode(status) == 0
        after = _done(run)
        rescored = log.read_text().split()[n_log:] if log.exists() else []
        with ResultStore.open(run) as st:
            finished_once = all(r.n_finished == 1 for r in st.rows("done"))
            iterations = st.meta.get("iterations_done")
        rows.append({
            "kill_after_s": round(kill_at, 3), "killed_mid_run": killed, "done_at_kill": len(before),
            "resumed_ok": resumed_ok, "done_final": len(after), "lost": len(before - after),
            "evaluated_twice": len(set(rescored) & before), "finished_once": finished_once,
            "integrity_after_kill": integrity_after_kill, "integrity_final": _integrity(run),
            "iterations_done": iterations, "missing_vs_uninterrupted": len(ref_done - after),
            "extra_vs_uninterrupted": len(after - ref_done),
        })
    return {
        "trials": trials, "killed_mid_run": sum(r["killed_mid_run"] for r in rows),
        "uninterrupted": {"seconds": round(ref_seconds, 2), "candidates": len(ref_done)},
        "candidates_lost": sum(r["lost"] for r in rows), "evaluated_twice": sum(r["evaluated_twice"] for r in rows),
        "integrity_ok": sum(r["integrity_after_kill"] in ("ok", "no store yet") and r["integrity_final"] == "ok"
                            for r in rows),
        "resumed_ok": sum(r["resumed_ok"] for r in rows),
        "same_final_set_as_uninterrupted": sum(r["missing_vs_uninterrupted"] == 0 and r["extra_vs_uninterrupted"]
                                               == 0 for r in rows),
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
    rel = _module(TESTS / "test_reliability.py", "test_reliability")
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
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-cases", type=int, default=2000)
    ap.add_argument("--ir-cases", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run; results not written)")
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--fuzz-worker", nargs=4, metavar=("KIND", "START", "END", "LOG"), help=argparse.SUPPRESS)
    ap.add_argument("--measure-load", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fuzz_worker:
        kind, start, end, log = args.fuzz_worker
        fuzz_worker(kind, int(start), int(end), Path(log))
        return
    if args.measure_load:
        print(json.dumps(measure_load(args.measure_load)))
        return
    if args.quick:
        args.onnx_cases, args.ir_cases, args.trials = 100, 50, 3
    from graphopt.limits import current_limits

    t_start = time.perf_counter()
    result: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                              "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "limits": current_limits().__dict__}
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
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    _print(result)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


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
    print("\n== kill-resume (target: 0 lost, 0 evaluated twice, integrity ok)")
    print(f"trials {kr['trials']} (killed mid-run {kr['killed_mid_run']}), resumed ok {kr['resumed_ok']}, "
          f"candidates lost {kr['candidates_lost']}, evaluated twice {kr['evaluated_twice']}, integrity ok "
          f"{kr['integrity_ok']}/{kr['trials']}, same final set as the uninterrupted run "
          f"{kr['same_final_set_as_uninterrupted']}/{kr['trials']} (uninterrupted: "
          f"{kr['uninterrupted']['candidates']} candidates in {kr['uninterrupted']['seconds']} s)")
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
    main()
