"""Run candidate evaluations in parallel: a crash-isolating local process pool, or Ray.

Both executors share one interface (:class:`Executor`): ``submit`` returns a
:class:`concurrent.futures.Future`, ``map_unordered`` yields :class:`TaskResult` objects in completion order
and never raises for a failed task. A failed task's future holds either the task's own exception (``reason
"exception"``) or a :class:`TaskFailed` with ``reason`` ``"timeout"``, ``"worker crashed"``, ``"cancelled"``
or ``"shutdown"``.

Why not ``concurrent.futures.ProcessPoolExecutor``: one segfaulting worker breaks the whole pool
(``BrokenProcessPool``) and a task that hangs cannot be stopped. :class:`LocalExecutor` gives each worker its
own pipe, so a dead or timed-out worker fails only its task and is replaced.

Functions and arguments must be picklable (module-level functions; ``spawn`` start method, so nothing
inherited from the parent's memory). Workers get ``GRAPHOPT_NUM_THREADS = cores // workers`` so that
parallel training jobs do not oversubscribe the CPU (see :func:`graphopt.eval.train.default_threads`).
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from typing import Any, Literal

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "RemoteTraceback",
    "TaskFailed",
    "TaskResult",
    "cpu_count",
    "make_executor",
]


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 2)


class TaskFailed(Exception):
    """A task that did not produce a result for a reason other than its own exception.

    ``reason`` is a short code (``timeout``, ``worker crashed``, ``cancelled``, ``shutdown``, ``ray error``);
    ``detail`` says more (e.g. the signal that killed the worker).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskFailed, (self.reason, self.detail))


class RemoteTraceback(Exception):
    """Carries the worker-side traceback text as ``__cause__`` of a re-raised task exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.tb}\"\"\""


@dataclass
class TaskResult:
    """Outcome of one task from :meth:`Executor.map_unordered` (``index`` = position in the input)."""

    index: int
    item: Any
    ok: bool
    value: Any = None
    reason: str | None = None
    detail: str | None = None
    error: BaseException | None = None
    elapsed: float = 0.0

    @classmethod
    def from_future(cls, index: int, item: Any, fut: Future, elapsed: float) -> TaskResult:
        if fut.cancelled():
            return cls(index, item, False, reason="cancelled", detail="task was cancelled", elapsed=elapsed)
        exc = fut.exception()
        if exc is None:
            return cls(index, item, True, value=fut.result(), elapsed=elapsed)
        if isinstance(exc, TaskFailed):
            return cls(index, item, False, reason=exc.reason, detail=exc.detail, error=exc, elapsed=elapsed)
        tb = exc.__cause__.tb if isinstance(exc.__cause__, RemoteTraceback) else ""
        detail = f"{type(exc).__name__}: {exc}" + (f"\n{tb}" if tb else "")
        return cls(index, item, False, reason="exception", detail=detail, error=exc, elapsed=elapsed)


class Executor(ABC):
    """Common interface of the local and Ray executors."""

    workers: int

    @abstractmethod
    def submit_task(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                    *, timeout: float | None = None) -> Future:
        """Schedule ``fn(*args, **kwargs)``; ``timeout`` (seconds of run time) overrides the executor's."""

    @abstractmethod
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the executor. ``wait=True`` lets queued and running tasks finish first."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """``concurrent.futures``-style submit with the executor's default timeout."""
        return self.submit_task(fn, args, kwargs)

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], *, timeout: float | None = None,
        max_in_flight: int | None = None, star: bool = False,
    ) -> Iterator[TaskResult]:
        """Apply ``fn`` to every item (``fn(*item)`` if ``star``), yielding results as they complete.

        At most ``max_in_flight`` tasks (default ``2 * workers``) are submitted at a time, so ``items`` may be
        a long lazy iterable. Failed tasks are yielded with ``ok=False`` and a reason; nothing is raised.
        """
        limit = max_in_flight or max(1, 2 * self.workers)
        it = iter(enumerate(items))
        pending: dict[Future, tuple[int, Any, float]] = {}

        def fill() -> None:
            while len(pending) < limit:
                nxt = next(it, None)
                if nxt is None:
                    return
                i, item = nxt
                args = tuple(item) if star else (item,)
                pending[self.submit_task(fn, args, None, timeout=timeout)] = (i, item, time.perf_counter())

        fill()
        while pending:
            done, _ = futures_wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                i, item, t0 = pending.pop(fut)
                yield TaskResult.from_future(i, item, fut, time.perf_counter() - t0)
            fill()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)


# ----------------------------------------------------------------------------------------------------------
# Local process pool
# ----------------------------------------------------------------------------------------------------------


def _worker_main(conn: Connection, threads: int) -> None:
    """Worker loop: receive (task id, pickled call), run it, send back (task id, kind, payload, run time)."""
    os.environ["GRAPHOPT_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent went away
        if msg is None:
            return
        task_id, payload = msg
        t0 = time.perf_counter()
        try:
            fn, args, kwargs = pickle.loads(payload)
            value = fn(*args, **kwargs)
            out = ("ok", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            tb = traceback.format_exc()
            try:
                exc_bytes: bytes | None = pickle.dumps(e, protocol=pickle.HIGHEST_PROTOCOL)
                pickle.loads(exc_bytes)
            except Exception:  # noqa: BLE001 - unpicklable exception: send text only
                exc_bytes = None
            out = ("err", (exc_bytes, f"{type(e).__name__}: {e}", tb))
        try:
            conn.send((task_id, *out, time.perf_counter() - t0))
        except (EOFError, OSError):
            return
        except Exception as e:  # noqa: BLE001 - e.g. result too large for the pipe
            conn.send((task_id, "err", (None, f"cannot send result back: {e}", traceback.format_exc()),
                       time.perf_counter() - t0))


@dataclass
class _Task:
    id: int
    payload: bytes
    future: Future
    timeout: float | None
    name: str


class _Worker:
    def __init__(self, ctx: Any, threads: int) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, threads), daemon=False,
                                name="graphopt-worker")
        self.proc.start()
        child.close()
        self.conn: Connection = parent
        self.task: _Task | None = None
        self.deadline: float | None = None
        self.n_done = 0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


def _exit_detail(code: int | None) -> str:
    if code is None:
        return "worker process disappeared"
    if code < 0:
        try:
            return f"worker killed by signal {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"worker killed by signal {-code}"
    return f"worker exited with code {code}"


_live_executors: weakref.WeakSet[LocalExecutor] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:  # pragma: no cover - exercised at interpreter exit
    for ex in list(_live_executors):
        ex.shutdown(wait=False, cancel_futures=True)


class LocalExecutor(Executor):
    """Process pool (``spawn``) with per-task timeouts and crash isolation.

    ``workers`` defaults to the number of cores (2 if unknown). A task running longer than its timeout is
    failed with ``TaskFailed("timeout")`` and its worker killed and replaced; a worker that dies (``os._exit``,
    segfault, OOM kill) fails its task with ``TaskFailed("worker crashed", "...signal SIGSEGV...")`` and is
    replaced; the executor keeps working. ``max_tasks_per_worker`` recycles workers (bounds memory growth).
    Timeouts count run time in the worker, not queueing time.
    """

    def __init__(
        self, workers: int | None = None, *, timeout: float | None = None,
        max_tasks_per_worker: int | None = None, threads_per_worker: int | None = None,
        start_method: Literal["spawn", "forkserver", "fork"] = "spawn",
    ) -> None:
        self.workers = int(workers) if workers else cpu_count()
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.timeout = timeout
        self.max_tasks_per_worker = max_tasks_per_worker
        self.threads_per_worker = threads_per_worker or max(1, cpu_count() // self.workers)
        self._ctx = mp.get_context(start_method)
        self._lock = threading.Lock()
        self._queue: deque[_Task] = deque()
        self._ids = itertools.count()
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._closing = False  # no new submissions
        self._abort = False  # stop now (shutdown(wait=False))
        self._broken: str | None = None
        self._idle_deaths = 0
        self.stats = {"tasks": 0, "timeouts": 0, "crashes": 0, "workers_started": 0}
        self._workers: list[_Worker] = [self._spawn() for _ in range(self.workers)]
        self._thread = threading.Thread(target=self._run, name="graphopt-local-executor", daemon=True)
        self._thread.start()
        _live_executors.add(self)

    # -- public -------------------------------------------------------------------------------------------

    def submit_task(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                    *, timeout: float | None = None) -> Future:
        if self._closing:
            raise RuntimeError("cannot submit to a LocalExecutor after shutdown()")
        if self._broken:
            raise RuntimeError(f"LocalExecutor is broken: {self._broken}")
        name = getattr(fn, "__qualname__", repr(fn))
        try:
            payload = pickle.dumps((fn, tuple(args), dict(kwargs or {})), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            raise TypeError(
                f"task {name} cannot be sent to a worker process ({e}); use a module-level function and "
                "picklable arguments"
            ) from e
        fut: Future = Future()
        task = _Task(next(self._ids), payload, fut, timeout if timeout is not None else self.timeout, name)
        with self._lock:
            self._queue.append(task)
        self._wake()
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closing = True
            if cancel_futures or not wait:
                while self._queue:
                    self._queue.popleft().future.cancel()
            if not wait:
                self._abort = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        _live_executors.discard(self)

    # -- internals ----------------------------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except OSError:
            pass

    def _spawn(self) -> _Worker:
        self.stats["workers_started"] += 1
        return _Worker(self._ctx, self.threads_per_worker)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = self._spawn()

    def _fail(self, task: _Task, exc: BaseException) -> None:
        if not task.future.done():
            task.future.set_exception(exc)

    def _dispatch(self) -> None:
        for i in range(len(self._workers)):
            while self._workers[i].task is None:
                w = self._workers[i]
                with self._lock:
                    task = self._queue.popleft() if self._queue else None
                if task is None:
                    return
                if task.future.cancelled():
                    continue
                try:
                    w.conn.send((task.id, task.payload))
                except (OSError, EOFError):
                    with self._lock:
                        self._queue.appendleft(task)  # never reached the worker: not the task's fault
                    self._idle_deaths += 1
                    if self._idle_deaths >= 3 * self.workers:
                        self._broken = f"workers die before taking a task ({_exit_detail(w.proc.exitcode)})"
                        return
                    self._replace(w)  # the fresh worker at index i takes the task next
                    continue
                # False if cancelled meanwhile: the worker runs it anyway and the result is dropped
                task.future.set_running_or_notify_cancel()
                w.task = task
                w.deadline = time.monotonic() + task.timeout if task.timeout is not None else None

    def _on_message(self, w: _Worker) -> None:
        try:
            task_id, kind, payload, run_time = w.conn.recv()
        except (EOFError, OSError):
            self._on_death(w)
            return
        task = w.task
        w.task, w.deadline = None, None
        w.n_done += 1
        self._idle_deaths = 0
        if task is None or task.id != task_id:  # pragma: no cover - protocol invariant
            return
        task.future.run_time = run_time  # type: ignore[attr-defined]
        self.stats["tasks"] += 1
        if task.future.cancelled():
            pass
        elif kind == "ok":
            try:
                task.future.set_result(pickle.loads(payload))
            except Exception as e:  # noqa: BLE001 - result that cannot be unpickled here
                self._fail(task, TaskFailed("exception", f"cannot unpickle the result of {task.name}: {e}"))
        else:
            exc_bytes, text, tb = payload
            exc: BaseException | None = None
            if exc_bytes is not None:
                try:
                    exc = pickle.loads(exc_bytes)
                except Exception:  # noqa: BLE001
                    exc = None
            if exc is None:
                exc = TaskFailed("exception", text)
            exc.__cause__ = RemoteTraceback(tb)
            self._fail(task, exc)
        if self.max_tasks_per_worker and w.n_done >= self.max_tasks_per_worker:
            try:
                w.conn.send(None)
            except OSError:
                pass
            self._replace(w)

    def _on_death(self, w: _Worker) -> None:
        w.proc.join(1)
        code = w.proc.exitcode
        task = w.task
        w.task = None
        if task is None:
            self._idle_deaths += 1
            if self._idle_deaths >= 3 * self.workers:
                self._broken = f"workers keep dying at start-up ({_exit_detail(code)})"
        self._replace(w)  # before reporting, so a caller that sees the failure sees a full pool
        if task is not None:
            self.stats["crashes"] += 1
            self.stats["tasks"] += 1
            self._idle_deaths = 0
            self._fail(task, TaskFailed("worker crashed", f"{_exit_detail(code)} while running {task.name}"))

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            for w in self._workers:
                if w.task is not None:
                    self._fail(w.task, TaskFailed("shutdown", "executor shut down while the task was running"))
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            deadline = time.monotonic() + 2.0
            for w in self._workers:
                w.proc.join(max(0.0, deadline - time.monotonic()) if not self._abort else 0.0)
                w.kill()
            with self._lock:
                while self._queue:
                    t = self._queue.popleft()
                    if not t.future.cancel():
                        self._fail(t, TaskFailed("shutdown", "executor shut down"))
            self._wake_r.close()
            self._wake_w.close()

    def _loop(self) -> None:
        while True:
            if self._abort:
                return
            if self._broken:
                with self._lock:
                    queued = list(self._queue)
                    self._queue.clear()
                for t in queued:
                    if t.future.set_running_or_notify_cancel():
                        self._fail(t, TaskFailed("worker crashed", self._broken))
            self._dispatch()
            busy = [w for w in self._workers if w.task is not None]
            with self._lock:
                idle_and_empty = not busy and not self._queue
            if self._closing and idle_and_empty:
                return
            now = time.monotonic()
            deadlines = [w.deadline for w in busy if w.deadline is not None]
            wait_for = max(0.0, min(deadlines) - now) if deadlines else None
            objs: list[Any] = [self._wake_r]
            objs += [w.conn for w in busy]
            objs += [w.proc.sentinel for w in self._workers]
            ready = mp_wait(objs, wait_for)
            if self._wake_r in ready:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
            for w in list(self._workers):
                if w.task is not None and w.conn in ready:
                    self._on_message(w)
            for w in list(self._workers):
                if w in self._workers and w.proc.sentinel in ready and not w.proc.is_alive():
                    if w.task is not None and w.conn.poll():
                        self._on_message(w)  # result arrived just before the exit
                        if w not in self._workers:
                            continue
                    self._on_death(w)
            now = time.monotonic()
            for w in list(self._workers):
                if w.task is not None and w.deadline is not None and now >= w.deadline:
                    task = w.task
                    w.task = None
                    self.stats["timeouts"] += 1
                    self.stats["tasks"] += 1
                    self._replace(w)
                    self._fail(task, TaskFailed("timeout", f"{task.name} exceeded its {task.timeout:g} s timeout"))


# ----------------------------------------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            "RayExecutor needs Ray, which is an optional extra: pip install 'graphopt[ray]'"
        ) from e
    return ray


def _ray_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], threads: int) -> Any:
    os.environ["GRAPHOPT_NUM_THREADS"] = str(threads)
    return fn(*args, **kwargs)


class RayExecutor(Executor):
    """Tasks as Ray remote functions (``pip install 'graphopt[ray]'``).

    ``address=None`` connects to the cluster in ``RAY_ADDRESS`` or starts a local one (Ray's default);
    pass ``"127.0.0.1:6379"`` etc. for a running head. A task whose worker dies is retried once
    (``max_retries=1``, Ray's system-failure retries; task exceptions are not retried) and then fails with
    ``TaskFailed("worker crashed")``. Ray has no per-task timeout: here it counts from submission and
    force-cancels the task (``TaskFailed("timeout")``). The executor calls ``ray.shutdown()`` on shutdown only
    if it initialized Ray itself.
    """

    def __init__(
        self, address: str | None = None, *, num_cpus_per_task: float = 1, max_retries: int = 1,
        timeout: float | None = None, workers: int | None = None, **init_kwargs: Any,
    ) -> None:
        ray = _import_ray()
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            init_kwargs.setdefault("log_to_driver", False)
            if address is None:
                init_kwargs.setdefault("include_dashboard", False)
            ray.init(address=address, **init_kwargs)
            self._owns = True
        self.timeout = timeout
        cpus = ray.cluster_resources().get("CPU", 1)
        self.workers = int(workers or max(1, cpus // max(num_cpus_per_task, 1e-9)))
        self._threads = max(1, int(num_cpus_per_task))
        self._remote = ray.remote(_ray_call).options(num_cpus=num_cpus_per_task, max_retries=max_retries,
                                                     retry_exceptions=False)
        self._cv = threading.Condition()
        self._pending: dict[Any, tuple[Future, float | None, str]] = {}
        self._closing = False
        self._abort = False
        self._thread = threading.Thread(target=self._run, name="graphopt-ray-executor", daemon=True)
        self._thread.start()

    def submit_task(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                    *, timeout: float | None = None) -> Future:
        if self._closing:
            raise RuntimeError("cannot submit to a RayExecutor after shutdown()")
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        ref = self._remote.remote(fn, tuple(args), dict(kwargs or {}), self._threads)
        t = timeout if timeout is not None else self.timeout
        with self._cv:
            self._pending[ref] = (fut, time.monotonic() + t if t is not None else None,
                                  getattr(fn, "__qualname__", repr(fn)))
            self._cv.notify()
        return fut

    def _resolve(self, ref: Any, fut: Future, name: str) -> None:
        ray = self._ray
        exc_mod = ray.exceptions
        try:
            fut.set_result(ray.get(ref))
        except exc_mod.RayTaskError as e:
            cause = getattr(e, "cause", None)
            err = cause if isinstance(cause, BaseException) else TaskFailed("exception", str(e))
            err.__cause__ = RemoteTraceback(str(e))
            fut.set_exception(err)
        except (exc_mod.WorkerCrashedError, exc_mod.NodeDiedError, exc_mod.LocalRayletDiedError) as e:
            fut.set_exception(TaskFailed("worker crashed", f"{name}: {type(e).__name__}: {e}"))
        except exc_mod.TaskCancelledError as e:
            fut.set_exception(TaskFailed("cancelled", f"{name}: {e}"))
        except exc_mod.RayError as e:
            fut.set_exception(TaskFailed("ray error", f"{name}: {type(e).__name__}: {e}"))

    def _run(self) -> None:
        ray = self._ray
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if self._abort or (self._closing and not self._pending):
                    break
                refs = list(self._pending)
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.2)
            for ref in ready:
                with self._cv:
                    fut, _, name = self._pending.pop(ref)
                self._resolve(ref, fut, name)
            now = time.monotonic()
            with self._cv:
                expired = [(r, v) for r, v in self._pending.items() if v[1] is not None and now >= v[1]]
                for r, _ in expired:
                    del self._pending[r]
            for r, (fut, _, name) in expired:
                ray.cancel(r, force=True)
                fut.set_exception(TaskFailed("timeout", f"{name} exceeded its timeout"))
        with self._cv:
            left = list(self._pending.items())
            self._pending.clear()
        for r, (fut, _, _) in left:
            ray.cancel(r, force=True)
            fut.set_exception(TaskFailed("shutdown", "executor shut down while the task was running"))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._closing = True
            if not wait or cancel_futures:
                self._abort = True
            self._cv.notify()
        self._thread.join()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(kind: Literal["local", "ray"] = "local", **kwargs: Any) -> Executor:
    """``make_executor("local", workers=2, timeout=600)`` or ``make_executor("ray", address=...)``."""
    if kind == "local":
        return LocalExecutor(**kwargs)
    if kind == "ray":
        return RayExecutor(**kwargs)
    raise ValueError(f"unknown executor {kind!r}; use 'local' or 'ray'")
