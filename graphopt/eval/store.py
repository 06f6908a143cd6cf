"""Crash-safe result store: one SQLite file per run (default ``graphopt-runs/<run-id>/runs.sqlite``).

Why SQLite: each finished candidate is committed in its own transaction the moment it finishes, so a killed
search loses at most the candidates that were running; reopening resets those ``running`` rows to
``pending`` and the search resumes with :meth:`ResultStore.done_hashes` / :meth:`ResultStore.is_done`.

Durability: WAL journal mode. ``synchronous=FULL`` (default) fsyncs the WAL on every commit, so a committed
candidate survives even an OS crash or power loss; ``NORMAL`` skips that fsync (faster, still never
corrupts, and still survives a killed *process*, but the last commits may be lost on power loss). With
candidates taking seconds to minutes each, FULL's ~1 ms per commit is negligible.

The store is used from one process (the search driver, which receives results from executors); a lock makes
it safe to call from the driver's threads (e.g. future callbacks). Other processes may read it concurrently.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["CandidateRecord", "ResultStore", "StoreError", "default_store_path", "new_run_id"]

Status = Literal["pending", "running", "done", "failed"]
STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    hash        TEXT NOT NULL UNIQUE,
    graph_path  TEXT,
    parent_hash TEXT,
    lineage     TEXT NOT NULL DEFAULT '[]',
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    metrics     TEXT,
    proxies     TEXT,
    timings     TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    n_finished  INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates(status);
CREATE INDEX IF NOT EXISTS candidates_parent ON candidates(parent_hash);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StoreError(RuntimeError):
    """Misuse of the store (unknown candidate, finishing twice, incompatible file)."""


def new_run_id() -> str:
    """Sortable, unique run id: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def default_store_path(run_id: str | None = None, root: str | os.PathLike = "graphopt-runs") -> Path:
    """``<root>/<run-id>/runs.sqlite`` (a fresh run id when none is given)."""
    return Path(root) / (run_id or new_run_id()) / "runs.sqlite"


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays/scalars, torch tensors
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, set | frozenset):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"value of type {type(o).__name__} is not JSON-serializable")


def _clean(v: Any) -> Any:
    """Non-finite floats -> None so the stored text is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def _dumps(v: Any) -> str | None:
    if v is None:
        return None
    # round-trip through json once to convert numpy etc., then replace NaN/inf
    return json.dumps(_clean(json.loads(json.dumps(v, default=_json_default))), allow_nan=False)


def _loads(s: str | None) -> Any:
    return None if s is None else json.loads(s)


@dataclass
class CandidateRecord:
    """One candidate row with its JSON columns decoded."""

    id: int
    hash: str
    status: Status
    graph_path: str | None = None
    parent_hash: str | None = None
    lineage: list[Any] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    proxies: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    n_finished: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def _from_row(cls, r: sqlite3.Row) -> CandidateRecord:
        return cls(
            id=r["id"], hash=r["hash"], status=r["status"], graph_path=r["graph_path"],
            parent_hash=r["parent_hash"], lineage=_loads(r["lineage"]) or [], metrics=_loads(r["metrics"]),
            proxies=_loads(r["proxies"]), timings=_loads(r["timings"]), error=r["error"], attempts=r["attempts"],
            n_finished=r["n_finished"], created_at=r["created_at"], started_at=r["started_at"],
            finished_at=r["finished_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Meta:
    """Dict-like view of the ``meta`` table; values are JSON."""

    def __init__(self, store: ResultStore) -> None:
        self._s = store

    def __getitem__(self, key: str) -> Any:
        row = self._s._query_one("SELECT value FROM meta WHERE key = ?", (key,))
        if row is None:
            raise KeyError(key)
        return json.loads(row[0])

    def __setitem__(self, key: str, value: Any) -> None:
        self._s._write("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                       "excluded.value", (key, _dumps(value) or "null"))

    def __delitem__(self, key: str) -> None:
        if self._s._write("DELETE FROM meta WHERE key = ?", (key,)) == 0:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self._s._query_one("SELECT 1 FROM meta WHERE key = ?", (key,)) is not None

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def items(self) -> list[tuple[str, Any]]:
        return [(k, json.loads(v)) for k, v in self._s._query("SELECT key, value FROM meta ORDER BY key")]

    def keys(self) -> list[str]:
        return [k for k, _ in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.items())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.items())


class ResultStore:
    """Candidates of one run. Open with :meth:`open`; use as a context manager or call :meth:`close`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, recovered: int) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        #: number of rows found ``running`` at open time and reset to ``pending`` (a killed run).
        self.recovered = recovered
        self.meta = _Meta(self)

    # -- opening ------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | os.PathLike | None = None, *, synchronous: Literal["FULL", "NORMAL"] = "FULL",
        reset_running: bool = True, timeout: float = 30.0,
    ) -> ResultStore:
        """Open or create the store at ``path``: a file with a suffix (``runs.sqlite``), or a directory / a path
        without suffix, meaning ``<path>/runs.sqlite``.

        Without ``path`` a new ``graphopt-runs/<run-id>/runs.sqlite`` is created. Rows left ``running`` by a
        killed run are reset to ``pending`` (they never finished) unless ``reset_running=False``.
        """
        p = Path(path) if path is not None else default_store_path()
        if p.is_dir() or not p.suffix:
            p = p / "runs.sqlite"
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(p, timeout=timeout, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{p} is not a graphopt result store (SQLite said: {e}); pick another path") from e
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreError(f"{p}: could not enable WAL mode (got {mode!r}); is it on a network file system?")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"{p} has schema version {version}; this graphopt reads version {SCHEMA_VERSION}")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            recovered = 0
            if reset_running:
                recovered = conn.execute(
                    "UPDATE candidates SET status = 'pending', started_at = NULL WHERE status = 'running'"
                ).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        return cls(conn, p, recovered)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- low level ----------------------------------------------------------------------------------------

    def _check(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"result store {self.path} is closed")
        return self._conn

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement in its own immediate transaction; returns the affected row count."""
        with self._lock:
            conn = self._check()
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = conn.execute(sql, params).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return n

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._check().execute(sql, params).fetchall()

    def _query_one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._check().execute(sql, params).fetchone()

    def _status(self, h: str) -> str | None:
        row = self._query_one("SELECT status FROM candidates WHERE hash = ?", (h,))
        return None if row is None else row[0]

    # -- candidates ---------------------------------------------------------------------------------------

    def add_pending(
        self, h: str, graph_path: str | os.PathLike | None = None, parent_hash: str | None = None,
        lineage: list[Any] | None = None,
    ) -> bool:
        """Register a candidate by structure hash; returns False (and changes nothing) if it already exists."""
        return self._write(
            "INSERT OR IGNORE INTO candidates(hash, graph_path, parent_hash, lineage, status, created_at) "
            "VALUES (?, ?, ?, ?, 'pending', ?)",
            (h, None if graph_path is None else str(graph_path), parent_hash, _dumps(lineage or []), time.time()),
        ) == 1

    def mark_running(self, h: str) -> None:
        """pending/failed -> running (counts an attempt). Raises :class:`StoreError` if unknown or done."""
        n = self._write(
            "UPDATE candidates SET status = 'running', attempts = attempts + 1, started_at = ? "
            "WHERE hash = ? AND status IN ('pending', 'failed')", (time.time(), h))
        if n == 0:
            st = self._status(h)
            if st is None:
                raise StoreError(f"candidate {h} is not in {self.path}; call add_pending first")
            if st != "running":
                raise StoreError(f"candidate {h} is already {st}; check is_done() before running it")

    def finish(
        self, h: str, metrics: Mapping[str, Any], *, proxies: Mapping[str, Any] | None = None,
        timings: Mapping[str, Any] | None = None, graph_path: str | os.PathLike | None = None,
    ) -> None:
        """Record a finished candidate, committed (and, with FULL, fsynced) before returning.

        Raises :class:`StoreError` if the candidate is unknown or already done (so none is finished twice).
        """
        params = (_dumps(dict(metrics)), _dumps(proxies), _dumps(timings), time.time(),
                  None if graph_path is None else str(graph_path), h)
        n = self._write(
            "UPDATE candidates SET status = 'done', metrics = ?, proxies = COALESCE(?, proxies), "
            "timings = COALESCE(?, timings), error = NULL, finished_at = ?, n_finished = n_finished + 1, "
            "graph_path = COALESCE(?, graph_path) WHERE hash = ? AND status != 'done'", params)
        if n == 0:
            st = self._status(h)
            if st is None:
                raise StoreError(f"candidate {h} is not in {self.path}; call add_pending first")
            raise StoreError(f"candidate {h} is already done; refusing to finish it twice")

    def fail(self, h: str, reason: str, *, timings: Mapping[str, Any] | None = None,
             proxies: Mapping[str, Any] | None = None) -> None:
        """Mark a candidate failed with ``reason`` (a done candidate cannot be failed)."""
        n = self._write(
            "UPDATE candidates SET status = 'failed', error = ?, timings = COALESCE(?, timings), "
            "proxies = COALESCE(?, proxies), finished_at = ? WHERE hash = ? AND status != 'done'",
            (str(reason), _dumps(timings), _dumps(proxies), time.time(), h))
        if n == 0:
            st = self._status(h)
            if st is None:
                raise StoreError(f"candidate {h} is not in {self.path}; call add_pending first")
            raise StoreError(f"candidate {h} is already done; cannot mark it failed")

    def set_proxies(self, h: str, proxies: Mapping[str, Any]) -> None:
        """Store proxy scores (training-free metrics) for a candidate in any state."""
        if self._write("UPDATE candidates SET proxies = ? WHERE hash = ?", (_dumps(dict(proxies)), h)) == 0:
            raise StoreError(f"candidate {h} is not in {self.path}; call add_pending first")

    # -- queries ------------------------------------------------------------------------------------------

    def get(self, h: str) -> CandidateRecord | None:
        row = self._query_one("SELECT * FROM candidates WHERE hash = ?", (h,))
        return None if row is None else CandidateRecord._from_row(row)

    def __contains__(self, h: object) -> bool:
        return self._query_one("SELECT 1 FROM candidates WHERE hash = ?", (h,)) is not None

    def __len__(self) -> int:
        return int(self._query_one("SELECT COUNT(*) FROM candidates")[0])  # type: ignore[index]

    def is_done(self, h: str) -> bool:
        return self._status(h) == "done"

    def done_hashes(self) -> set[str]:
        return {r[0] for r in self._query("SELECT hash FROM candidates WHERE status = 'done'")}

    def rows(self, status: Status | None = None) -> list[CandidateRecord]:
        """All candidates (or those with ``status``) in insertion order."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if status is None:
            rows = self._query("SELECT * FROM candidates ORDER BY id")
        else:
            rows = self._query("SELECT * FROM candidates WHERE status = ? ORDER BY id", (status,))
        return [CandidateRecord._from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for st, n in self._query("SELECT status, COUNT(*) FROM candidates GROUP BY status"):
            out[st] = n
        return out

    def integrity_ok(self) -> bool:
        """``PRAGMA integrity_check`` reports ``ok``."""
        rows = self._query("PRAGMA integrity_check")
        return len(rows) == 1 and rows[0][0] == "ok"

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (e.g. before copying the run folder)."""
        with self._lock:
            self._check().execute("PRAGMA wal_checkpoint(TRUNCATE)")
