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

Large read-only inputs (a dataset, a teacher network) are not shipped with every task: :meth:`Executor.share`
puts a value once where every worker can read it (a private file for the local pool, Ray's object store for
Ray) and returns a small :class:`Shared` handle; ``handle.get()`` inside a task loads it once per worker
process and caches it there.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
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
    "LoopbackRayCluster",
    "RayExecutor",
    "RemoteTraceback",
    "Shared",
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


#: values of :class:`Shared` handles already loaded in this process (a worker keeps the last few)
_SHARED_CACHE: OrderedDict[str, Any] = OrderedDict()
_SHARED_CACHE_SIZE = 8
_MISSING = object()


class Shared:
    """A read-only value put once where every worker can read it (see :meth:`Executor.share`).

    Pickles to a few bytes: a private file's path (local pool), a Ray object reference, or, for in-process use,
    the value itself. :meth:`get` returns the value, loading it at most once per process (keyed by ``key``,
    unique per :meth:`Executor.share` call).
    """

    def __init__(self, key: str, *, path: str | None = None, ref: Any = None, value: Any = _MISSING) -> None:
        self.key, self.path, self.ref = key, path, ref
        self.has_value = value is not _MISSING  # a flag, not the sentinel: the sentinel does not survive pickling
        self.value = value if self.has_value else None

    @classmethod
    def inline(cls, value: Any, name: str = "value") -> Shared:
        """A handle that carries ``value`` itself (no executor: the calling process reads it)."""
        return cls(f"{name}:{uuid.uuid4().hex}", value=value)

    def get(self) -> Any:
        if self.has_value:
            return self.value
        v = _SHARED_CACHE.get(self.key, _MISSING)
        if v is _MISSING:
            if self.path is not None:
                with open(self.path, "rb") as f:
                    v = pickle.load(f)  # noqa: S301 - written by this run's driver into its private folder
            elif self.ref is not None:
                v = _import_ray().get(self.ref)
            else:  # pragma: no cover - constructor misuse
                raise ValueError(f"shared value {self.key} has neither a path nor a Ray reference")
            _SHARED_CACHE[self.key] = v
            while len(_SHARED_CACHE) > _SHARED_CACHE_SIZE:
                _SHARED_CACHE.popitem(last=False)
        else:
            _SHARED_CACHE.move_to_end(self.key)
        return v

    def __repr__(self) -> str:
        where = "inline" if self.has_value else ("file" if self.path else "ray")
        return f"Shared({self.key!r}, {where})"


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

    def share(self, value: Any, name: str = "value") -> Shared:
        """Put ``value`` once where every worker can read it; pass the returned handle to tasks instead of the
        value, and call ``handle.get()`` in the task (loaded once per worker process)."""
        return Shared.inline(value, name)

    def capacity(self) -> int:
        """How many tasks can run at once now (the local pool's workers; Ray: the cluster's CPUs per task)."""
        return max(1, int(self.workers))

    def wait(self, futures: Iterable[Future], timeout: float | None = None) -> set[Future]:
        """The futures of ``futures`` that are done, waiting up to ``timeout`` seconds (None: until one is)."""
        done, _ = futures_wait(list(futures), timeout=timeout, return_when=FIRST_COMPLETED)
        return set(done)

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
        self._shared_dir: str | None = None
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
        if self._shared_dir is not None:
            shutil.rmtree(self._shared_dir, ignore_errors=True)
            self._shared_dir = None

    def share(self, value: Any, name: str = "value") -> Shared:
        """Pickled once into a private folder (mode 0700) that the workers read; removed at shutdown."""
        if self._shared_dir is None:
            self._shared_dir = tempfile.mkdtemp(prefix="graphopt-shared-")
        key = f"{name}:{uuid.uuid4().hex}"
        path = os.path.join(self._shared_dir, key.replace(":", "-") + ".pkl")
        with open(path, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        return Shared(key, path=path)

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (a killed one is replaced by a new process)."""
        return [w.proc.pid for w in list(self._workers) if w.proc.pid is not None]

    def running(self) -> dict[int, Future]:
        """``{worker pid: future of the task it runs now}`` (fault-injection tests kill a chosen task's worker)."""
        out = {}
        for w in list(self._workers):
            task = w.task
            if task is not None and w.proc.pid is not None:
                out[w.proc.pid] = task.future
        return out

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
        self._cpus_per_task = num_cpus_per_task
        cpus = ray.cluster_resources().get("CPU", 1)
        self._fixed_workers = workers
        self.workers = int(workers or max(1, cpus // max(num_cpus_per_task, 1e-9)))
        self._capacity_at = (time.monotonic(), self.workers)
        self._threads = max(1, int(num_cpus_per_task))
        self._refs: list[Any] = []  # shared objects stay alive as long as the executor
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

    def share(self, value: Any, name: str = "value") -> Shared:
        """Put once in Ray's object store; workers on any node fetch it once per process."""
        ref = self._ray.put(value)
        self._refs.append(ref)
        return Shared(f"{name}:{uuid.uuid4().hex}", ref=ref)

    def capacity(self) -> int:
        """Tasks that fit the cluster now (its CPUs / CPUs per task, re-read every 2 s): nodes may join or
        leave while a search runs. A fixed ``workers`` caps it."""
        t, n = self._capacity_at
        if time.monotonic() - t > 2.0:
            try:
                cpus = self._ray.cluster_resources().get("CPU", 0)
                n = max(1, int(cpus // max(self._cpus_per_task, 1e-9)))
            except Exception:  # noqa: BLE001 - a transient GCS hiccup keeps the last figure
                pass
            self._capacity_at = (time.monotonic(), n)
        return min(n, self._fixed_workers) if self._fixed_workers else n

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
        self._refs.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackRayCluster:
    """A throw-away Ray cluster on this machine: a head with no CPUs and ``nodes`` worker nodes of
    ``cpus_per_node`` CPUs each, every node a ``ray start --block`` on 127.0.0.1 (tests and benchmarks; a real
    cluster is started with ``ray start`` on each machine).

    Each node gets its own ports and temporary folder (nodes on one machine would otherwise collide on the default
    ports and sockets). The nodes stay in the caller's session, each in a process group of its own: with the
    kernel's autogroup scheduling a session is one CPU share, so nodes in sessions of their own would get more of
    a busy machine than the caller's local worker processes, and a comparison of the two would measure that.
    A node's processes are its ``ray start``'s descendants and whatever runs from its temporary folder;
    :meth:`stop` signals exactly those (never ``ray stop``, which stops every Ray instance of the user), and
    :meth:`remove_node` kills one worker node mid-run (what a lost machine looks like to the driver).
    """

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, *, start_timeout: float = 120.0) -> None:
        _import_ray()
        self.ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        if not os.path.exists(self.ray_bin):
            raise FileNotFoundError(f"the ray command is not next to {sys.executable}")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="gro-ray-", dir="/tmp")  # short: socket paths are length-limited
        self.procs: list[Any] = []
        self.cpus = nodes * cpus_per_node
        try:
            self._start(nodes, cpus_per_node, start_timeout)
        except BaseException:
            self.stop()
            raise

    def _popen(self, args: list[str]) -> Any:
        import subprocess

        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        log = open(os.path.join(self.temp_dir, f"node{len(self.procs)}.log"), "wb")  # noqa: SIM115 - kept by the child
        try:
            return subprocess.Popen([self.ray_bin, "start", "--block", "--node-ip-address", "127.0.0.1",
                                     "--disable-usage-stats", *args], stdout=log, stderr=log, env=env,
                                    process_group=0)
        finally:
            log.close()

    def _node_ports(self, i: int) -> list[str]:
        lo = 20000 + 1000 * i
        return ["--node-manager-port", str(_free_port()), "--object-manager-port", str(_free_port()),
                "--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
                "--metrics-export-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port()),
                "--min-worker-port", str(lo), "--max-worker-port", str(lo + 999),
                # nodes of one machine would share one session folder and its sockets: each gets its own
                "--temp-dir", os.path.join(self.temp_dir, f"n{i}")]

    def _start(self, nodes: int, cpus: int, timeout: float) -> None:
        import socket

        self.procs.append(self._popen(["--head", "--port", str(self.port), "--include-dashboard=false",
                                       "--num-cpus", "0", "--ray-client-server-port",
                                       str(_free_port()), *self._node_ports(0)]))
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.procs[0].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Ray head did not start (exit code {self.procs[0].poll()}; logs in "
                                       f"{self.temp_dir})") from None
                time.sleep(0.2)
        for i in range(nodes):
            self.procs.append(self._popen(["--address", self.address, "--num-cpus", str(cpus),
                                           *self._node_ports(i + 1)]))

    def wait_for_cpus(self, ray: Any, cpus: float | None = None, timeout: float = 120.0) -> None:
        """Wait (connected as a driver) until the cluster offers ``cpus`` CPUs (default: all its nodes')."""
        want = self.cpus if cpus is None else cpus
        deadline = time.monotonic() + timeout
        while ray.cluster_resources().get("CPU", 0) < want:
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"the loopback Ray cluster has {ray.cluster_resources().get('CPU', 0)} of {want} "
                                   f"CPUs (nodes exited: {dead}; logs in {self.temp_dir})")
            time.sleep(0.5)

    def _members(self, i: int) -> set[int]:
        """Live processes of node ``i`` (0: the head): its ``ray start`` and descendants, and any process running
        from its temporary folder (a worker orphaned by a dead raylet)."""
        return _descendants(self.procs[i].pid) | _running_from(os.path.join(self.temp_dir, f"n{i}"))

    def node_of(self, pid: int) -> int | None:
        """The worker node (0-based) whose processes include ``pid`` (a task's worker), else None."""
        return next((i for i in range(len(self.procs) - 1) if pid in self._members(1 + i)), None)

    def remove_node(self, i: int) -> None:
        """Kill worker node ``i`` (0-based) and every process of it at once (SIGKILL): a machine lost mid-run."""
        for pid in self._members(1 + i):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs[1 + i].wait(10)

    def stop(self, grace: float = 3.0) -> None:
        """Stop every node this object started (SIGTERM, then SIGKILL to what is left after ``grace`` seconds) and
        remove its temporary folder."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            members = set().union(*(self._members(i) for i in range(len(self.procs))))
            for pid in members:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_alive(pid) for pid in members):
                time.sleep(0.1)
        for proc in self.procs:
            try:
                proc.wait(5)
            except Exception:  # noqa: BLE001 - already reaped
                pass
        self.procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LoopbackRayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _proc_table() -> dict[int, tuple[int, str, bytes]]:
    """``{pid: (parent pid, state, command line)}`` of the live processes (Linux ``/proc``)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        out[int(d)] = (int(fields[1]), fields[0], cmd)
    return out


def _descendants(root: int) -> set[int]:
    """``root`` and its descendants that are alive (not zombies)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and table[pid][1] != "Z":
            out.add(pid)
        todo += children.get(pid, [])
    return out


def _running_from(folder: str) -> set[int]:
    """Live processes whose command line names ``folder`` (an argument equal to it or inside it)."""
    needles = (folder.encode() + b"/", folder.encode() + b"\0")
    return {pid for pid, (_, state, cmd) in _proc_table().items()
            if state != "Z" and any(n in cmd + b"\0" for n in needles)}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def make_executor(kind: Literal["local", "ray"] = "local", **kwargs: Any) -> Executor:
    """``make_executor("local", workers=2, timeout=600)`` or ``make_executor("ray", address=...)``."""
    if kind == "local":
        return LocalExecutor(**kwargs)
    if kind == "ray":
        return RayExecutor(**kwargs)
    raise ValueError(f"unknown executor {kind!r}; use 'local' or 'ray'")
