"""graphopt.eval.store: lifecycle, JSON columns, durability settings, and resume after SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from graphopt.eval.store import ResultStore, StoreError, default_store_path, new_run_id


def test_lifecycle_and_queries(tmp_path):
    with ResultStore.open(tmp_path / "runs.sqlite") as s:
        assert s.add_pending("a", graph_path="graphs/a.json", lineage=[{"op": "seed"}])
        assert not s.add_pending("a")  # unique per run, no change
        assert s.add_pending("b", parent_hash="a", lineage=[{"op": "swap", "segment": 3}])
        s.add_pending("c", parent_hash="a")
        assert s.get("a").status == "pending" and len(s) == 3 and "b" in s and "zz" not in s
        s.mark_running("a")
        s.finish("a", {"accuracy": 0.91, "flops": np.int64(1200)}, proxies={"synflow": np.float32(2.5)},
                 timings={"train_s": 1.5})
        s.mark_running("b")
        s.fail("b", "timeout")
        rec = s.get("a")
        assert rec.status == "done" and rec.metrics == {"accuracy": 0.91, "flops": 1200}
        assert rec.proxies == {"synflow": 2.5} and rec.timings == {"train_s": 1.5}
        assert rec.lineage == [{"op": "seed"}] and rec.graph_path == "graphs/a.json" and rec.attempts == 1
        assert rec.finished_at >= rec.started_at >= rec.created_at
        b = s.get("b")
        assert b.status == "failed" and b.error == "timeout" and b.parent_hash == "a"
        assert s.is_done("a") and not s.is_done("b") and not s.is_done("nope")
        assert s.done_hashes() == {"a"}
        assert [r.hash for r in s.rows()] == ["a", "b", "c"]
        assert [r.hash for r in s.rows("pending")] == ["c"]
        assert s.counts() == {"pending": 1, "running": 0, "done": 1, "failed": 1}
        # a failed candidate can be retried; a done one cannot be finished, failed or run again
        s.mark_running("b")
        s.finish("b", {"accuracy": 0.5})
        assert s.get("b").attempts == 2 and s.get("b").error is None
        with pytest.raises(StoreError, match="already done"):
            s.finish("a", {"accuracy": 0.0})
        with pytest.raises(StoreError, match="already done"):
            s.fail("a", "x")
        with pytest.raises(StoreError, match="already done"):
            s.mark_running("a")
        with pytest.raises(StoreError, match="add_pending"):
            s.finish("ghost", {})
        with pytest.raises(ValueError, match="status"):
            s.rows("finished")
        assert s.get("a").metrics["accuracy"] == 0.91 and s.get("a").n_finished == 1
        assert s.integrity_ok()


def test_meta_and_non_finite_values(tmp_path):
    with ResultStore.open(tmp_path) as s:  # a directory -> <dir>/runs.sqlite
        assert s.path == tmp_path / "runs.sqlite"
        s.meta["config"] = {"epochs": 12, "seed": 0}
        s.meta["config"] = {"epochs": 24, "seed": 0}  # overwrite
        s.meta["note"] = "x"
        assert s.meta["config"] == {"epochs": 24, "seed": 0} and "note" in s.meta and len(s.meta) == 2
        assert s.meta.get("missing", 5) == 5 and s.meta.to_dict()["note"] == "x"
        del s.meta["note"]
        with pytest.raises(KeyError):
            s.meta["note"]
        s.add_pending("h")
        s.mark_running("h")
        s.finish("h", {"loss": float("nan"), "acc": math.inf, "curve": np.array([1.0, 2.0])})
        assert s.get("h").metrics == {"loss": None, "acc": None, "curve": [1.0, 2.0]}
        raw = s._conn.execute("SELECT metrics FROM candidates").fetchone()[0]
        assert "NaN" not in raw and "Infinity" not in raw  # strict JSON on disk
    with ResultStore.open(tmp_path) as s:
        assert s.meta["config"]["epochs"] == 24


def test_wal_and_synchronous_settings(tmp_path):
    with ResultStore.open(tmp_path / "a.sqlite") as s:
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with ResultStore.open(tmp_path / "a.sqlite", synchronous="NORMAL") as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError, match="synchronous"):
        ResultStore.open(tmp_path / "b.sqlite", synchronous="OFF")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a graphopt result store"):
        ResultStore.open(tmp_path / "junk.sqlite")


def test_default_path_and_run_ids(tmp_path, monkeypatch):
    a, b = new_run_id(), new_run_id()
    assert a != b and len(a.split("-")) == 3
    assert default_store_path("r1") == default_store_path("r1", "graphopt-runs")
    assert str(default_store_path("r1")).endswith(os.path.join("graphopt-runs", "r1", "runs.sqlite"))
    with ResultStore.open(tmp_path / "graphopt-runs" / "r2") as s:  # no suffix: a run folder
        assert s.path == tmp_path / "graphopt-runs" / "r2" / "runs.sqlite"
    monkeypatch.chdir(tmp_path)
    with ResultStore.open() as s:
        assert s.path.parts[0] == "graphopt-runs" and s.path.name == "runs.sqlite"
        assert (tmp_path / s.path).is_file()


def test_reopen_resets_running_rows(tmp_path):
    p = tmp_path / "r.sqlite"
    s = ResultStore.open(p)
    for h in "abc":
        s.add_pending(h)
    s.mark_running("a")
    s.mark_running("b")
    s.finish("b", {"acc": 1.0})
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get("a")
    s2 = ResultStore.open(p)
    assert s2.recovered == 1 and s2.get("a").status == "pending" and s2.get("a").started_at is None
    assert s2.get("b").status == "done"
    s2.close()


def test_threads_share_one_store(tmp_path):
    with ResultStore.open(tmp_path / "t.sqlite", synchronous="NORMAL") as s:
        def work(k: int) -> None:
            for i in range(25):
                h = f"{k}-{i}"
                s.add_pending(h)
                s.mark_running(h)
                s.finish(h, {"i": i})

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.counts()["done"] == 100 and s.integrity_ok()


WRITER = textwrap.dedent(
    """
    import sys, time
    from graphopt.eval.store import ResultStore
    path, n = sys.argv[1], int(sys.argv[2])
    s = ResultStore.open(path)
    s.meta["config"] = {"n": n}
    for i in range(n):
        h = f"cand{i:03d}"
        if s.is_done(h):
            continue
        s.add_pending(h, graph_path=f"g/{h}.json", lineage=[i])
        s.mark_running(h)
        print(f"running {i}", flush=True)
        time.sleep(0.02)  # "training"
        s.finish(h, {"acc": i / n}, timings={"pid": __import__("os").getpid()})
        print(f"finished {i}", flush=True)
    print("complete", flush=True)
    """
)


def test_sigkill_midway_then_resume_loses_nothing_and_finishes_nothing_twice(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    db = tmp_path / "run" / "runs.sqlite"
    n, kill_at = 40, 17
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(n)], stdout=subprocess.PIPE, text=True)
    finished = []
    deadline = time.monotonic() + 50
    for line in proc.stdout:
        if line.startswith("finished"):
            finished.append(int(line.split()[1]))
        if line.strip() == f"running {kill_at}":
            os.kill(proc.pid, signal.SIGKILL)  # candidate kill_at is mid-"training"
            break
        assert time.monotonic() < deadline
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert finished == list(range(kill_at))

    with ResultStore.open(db) as s:
        assert s.integrity_ok()
        assert s.recovered == 1 and s.get(f"cand{kill_at:03d}").status == "pending"
        done = s.done_hashes()
        assert done == {f"cand{i:03d}" for i in finished}  # every finished row survived, nothing more
        first_pid = s.get("cand000").timings["pid"]
        assert first_pid == proc.pid

    # resume with the same script: it skips done candidates
    out = subprocess.run([sys.executable, str(script), str(db), str(n)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    resumed = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("finished")]
    assert resumed == list(range(kill_at, n))

    with ResultStore.open(db) as s:
        assert s.integrity_ok() and s.recovered == 0
        assert s.counts() == {"pending": 0, "running": 0, "done": n, "failed": 0}
        rows = s.rows()
        assert len(rows) == n and all(r.n_finished == 1 for r in rows)
        assert [r.metrics["acc"] for r in rows] == [i / n for i in range(n)]
        assert s.get(f"cand{kill_at:03d}").attempts == 2  # started, killed, restarted
        assert s.get("cand000").timings["pid"] == first_pid  # not redone
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT hash) FROM candidates").fetchone() == (n, n)
    con.close()
