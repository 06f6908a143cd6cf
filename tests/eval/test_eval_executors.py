"""graphopt.eval.executors: local process pool (timeouts, crashes, recycling) and Ray on a real local head.

Task functions live at module level so spawned workers can import them (this module is imported in each
worker: keep its top-level imports light).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from graphopt.eval.executors import (
    LocalExecutor,
    RemoteTraceback,
    TaskFailed,
    cpu_count,
    make_executor,
)

# ---------------------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def crash(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    ctypes.string_at(0)


def sleep_then(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def raise_value_error(msg: str) -> None:
    raise ValueError(msg)


def env_threads() -> str | None:
    return os.environ.get("GRAPHOPT_NUM_THREADS")


def crash_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return "second attempt"


def tiny_evaluation(seed: int) -> dict:
    """A real (small) candidate evaluation: train a 2-layer CNN on a separable colour task."""
    import numpy as np
    import torch
    import torch.nn as nn

    from graphopt.eval.data import ArrayDataset, DatasetInfo, Splits
    from graphopt.eval.train import TrainConfig, seed_everything, train_model

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 160)
    x = rng.integers(0, 100, (160, 8, 8, 3)).astype(np.uint8)
    x[np.arange(160), :, :, y] += 120
    info = DatasetInfo("colors", "classification", 3, (3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    mk = lambda a, b: ArrayDataset(torch.from_numpy(x[a:b]), torch.from_numpy(y[a:b]), info)
    seed_everything(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    r = train_model(model, Splits(mk(0, 128), mk(128, 160), mk(128, 160), info),
                    TrainConfig(epochs=3, batch_size=16, threads=1, seed=seed, lr=0.1))
    return r.to_dict()


# ---------------------------------------------------------------------------------------------------------
# local executor
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local():
    ex = LocalExecutor(2, timeout=20)
    yield ex
    ex.shutdown()


def test_results_exceptions_and_map_unordered(local):
    assert local.submit(square, 7).result(timeout=30) == 49
    assert local.submit(add, 1, b=2).result(timeout=30) == 3
    err = local.submit(raise_value_error, "bad candidate").exception(timeout=30)
    assert isinstance(err, ValueError) and str(err) == "bad candidate"
    assert isinstance(err.__cause__, RemoteTraceback) and "raise_value_error" in err.__cause__.tb
    results = list(local.map_unordered(square, range(12)))
    assert sorted(r.index for r in results) == list(range(12))
    assert all(r.ok and r.value == r.item**2 for r in results)
    mixed = {r.index: r for r in local.map_unordered(raise_value_error, ["x"])}
    assert not mixed[0].ok and mixed[0].reason == "exception" and "ValueError: x" in mixed[0].detail
    star = sorted(r.value for r in local.map_unordered(add, [(1, 2), (3, 4)], star=True))
    assert star == [3, 7]


def test_timeout_recycles_worker_and_executor_keeps_working(local):
    before = dict(local.stats)
    t0 = time.monotonic()
    fut = local.submit_task(sleep_then, (60, "late"), timeout=0.5)
    err = fut.exception(timeout=30)
    assert isinstance(err, TaskFailed) and err.reason == "timeout" and "sleep_then" in err.detail
    assert time.monotonic() - t0 < 10
    assert local.stats["timeouts"] == before["timeouts"] + 1
    assert local.stats["workers_started"] == before["workers_started"] + 1
    rs = list(local.map_unordered(sleep_then, [(0.05, "a"), (60, "b"), (0.05, "c")], timeout=1.0, star=True))
    by = {r.item[1]: r for r in rs}
    assert by["a"].ok and by["c"].ok and by["b"].reason == "timeout"
    assert local.submit(square, 3).result(timeout=30) == 9


@pytest.mark.parametrize("task, args, detail", [(crash, (7,), "exited with code 7"), (segfault, (), "SIGSEGV")])
def test_crashing_worker_fails_only_its_task(local, task, args, detail):
    slow = local.submit(sleep_then, 0.5, "survivor")  # runs on the other worker meanwhile
    err = local.submit(task, *args).exception(timeout=30)
    assert isinstance(err, TaskFailed) and err.reason == "worker crashed" and detail in err.detail
    assert slow.result(timeout=30) == "survivor"
    assert [local.submit(square, i).result(timeout=30) for i in range(4)] == [0, 1, 4, 9]


def test_real_evaluation_in_workers_matches_in_process(local):
    futs = [local.submit(tiny_evaluation, s) for s in (0, 0, 1)]
    res = [f.result(timeout=60) for f in futs]
    assert all(r["status"] == "ok" for r in res)
    assert res[0]["step_losses"] == res[1]["step_losses"] != res[2]["step_losses"]
    assert res[0]["val"]["accuracy"] > 0.6
    here = tiny_evaluation(0)
    assert here["step_losses"] == res[0]["step_losses"]  # same numbers in a worker and in-process


def test_worker_environment_and_pickling_errors(local):
    assert local.submit(env_threads).result(timeout=30) == str(max(1, cpu_count() // 2))
    with pytest.raises(TypeError, match="module-level function"):
        local.submit(lambda: 1)


def test_shutdown_semantics():
    ex = LocalExecutor(1)
    running = ex.submit(sleep_then, 30, "never")
    queued = ex.submit(square, 2)
    time.sleep(0.5)
    t0 = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - t0 < 10
    err = running.exception(timeout=10)
    assert isinstance(err, TaskFailed) and err.reason == "shutdown"
    with pytest.raises(CancelledError):
        queued.result(timeout=10)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    with LocalExecutor(1, max_tasks_per_worker=2) as ex2:  # recycling keeps results coming
        assert [ex2.submit(square, i).result(timeout=30) for i in range(5)] == [0, 1, 4, 9, 16]
        assert ex2.stats["workers_started"] >= 3
        pending = ex2.submit(sleep_then, 0.3, "done before exit")
    assert pending.result(timeout=1) == "done before exit"  # context exit waits


def test_make_executor_and_missing_ray(monkeypatch):
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'graphopt\[ray\]'"):
        make_executor("ray")
    with make_executor("local", workers=1) as ex:
        assert isinstance(ex, LocalExecutor) and ex.workers == 1


# ---------------------------------------------------------------------------------------------------------
# Ray on a real local head (loopback)
# ---------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_members(sid: int) -> list:
    import psutil

    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head --block`` in its own session; torn down by signalling exactly that session's PIDs.

    (Not ``ray stop``: it would stop every Ray instance of this user on the machine.)
    """
    ray = pytest.importorskip("ray", reason="ray not installed (optional extra graphopt[ray])")
    pytest.importorskip("psutil")
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip(f"ray CLI not found next to {sys.executable}")
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="gro-ray-", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--include-dashboard=false", "--num-cpus", "2", "--disable-usage-stats", "--temp-dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"ray head did not start (exit code {head.poll()})")
                time.sleep(0.2)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tasks from this test module
        yield f"127.0.0.1:{port}", Path(tmp)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        members = _session_members(head.pid)
        for p in members:
            try:
                p.send_signal(signal.SIGTERM)
            except Exception:  # noqa: BLE001 - already gone
                pass
        deadline = time.monotonic() + 2  # Ray's own grace period is 16 s; the cluster is disposable
        while _session_members(head.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in _session_members(head.pid):
            try:
                p.kill()
            except Exception:  # noqa: BLE001
                pass
        head.wait(10)
        subprocess.run(["rm", "-rf", tmp], check=False)


def test_ray_executor_runs_an_evaluation_and_reports_failures(ray_head, tmp_path):
    from graphopt.eval.executors import RayExecutor

    address, _ = ray_head
    with make_executor("ray", address=address, timeout=60) as ex:
        assert isinstance(ex, RayExecutor) and ex.workers == 2
        evals = list(ex.map_unordered(tiny_evaluation, [0, 0]))
        assert all(r.ok and r.value["status"] == "ok" for r in evals)
        assert evals[0].value["step_losses"] == evals[1].value["step_losses"]
        err = ex.submit(raise_value_error, "in ray").exception(timeout=60)
        assert isinstance(err, ValueError) and "in ray" in str(err)
        # worker death: retried once (max_retries=1) -> succeeds on the second attempt
        assert ex.submit(crash_once, str(tmp_path / "marker")).result(timeout=60) == "second attempt"
        err = ex.submit(crash, 3).exception(timeout=60)  # dies on both attempts
        assert isinstance(err, TaskFailed) and err.reason == "worker crashed"
        err = ex.submit_task(sleep_then, (60, "x"), timeout=1.0).exception(timeout=60)
        assert isinstance(err, TaskFailed) and err.reason == "timeout"
        assert ex.submit(square, 6).result(timeout=60) == 36
