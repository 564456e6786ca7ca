"""A store whose runs outlive the process: one SQLite file, shared by every simulator that opens it.

Clients that start a new crew-mcp process per call (langchain-mcp-adapters' default ``get_tools()``, each MCP
Inspector CLI call) must find their runs where AMP would: still going. So simulated time is the wall clock
since an epoch kept in the file (plus whatever :meth:`~.app.Simulator.advance` added, also kept there), and a
run started by one process has moved on when another asks about it later.

Each request is one ``BEGIN IMMEDIATE`` transaction (read, change, write back), run by the stdlib ``sqlite3``
in a worker thread behind one connection and a lock; the file is in WAL mode and writers wait
``busy_timeout`` for each other, then retry a bounded number of times. ``synchronous=NORMAL``: a run survives
any crash of a process, and only a power cut may lose its last moments (the ledger, which holds what the
user paid for, uses FULL).

Webhook deliveries are made by the process whose request or ticker ran the transition. A transition that fell
due before this simulator opened the file, while possibly no process was running, is not delivered: on AMP it
would have gone to a URL nobody was listening on.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from pydantic import ValidationError

from ..errors import CrewMCPError
from ..sqlitefile import DEFAULT_BUSY_RETRIES, DEFAULT_BUSY_TIMEOUT, SqliteFile, connect, create_private, transaction
from .engine import Execution, Hooks, Outgoing, TaskResult
from .specs import CrewSpec
from .store import Session

__all__ = ["DEFAULT_BUSY_TIMEOUT", "SCHEMA_VERSION", "SimulatorStateError", "SqliteStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1
"""The ``PRAGMA user_version`` this code writes."""

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value REAL NOT NULL)",
    "CREATE TABLE executions (seq INTEGER PRIMARY KEY AUTOINCREMENT, kickoff_id TEXT NOT NULL UNIQUE,"
    " crew TEXT NOT NULL, due_at REAL, spec TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX executions_due ON executions (due_at) WHERE due_at IS NOT NULL",
    "CREATE INDEX executions_by_crew ON executions (crew, seq)",
)
# Fields written as they are; the others need a conversion each way.
_PLAIN = (
    *("id", "inputs", "meta", "created_at", "time_scale", "state", "index", "task_started_at", "attempt"),
    *("feedback", "pending_output", "error", "finished_at", "updated_at", "spent"),
)


class SimulatorStateError(CrewMCPError):
    """The simulator's state file could not be opened, read or written; the message names the file."""


def dump(ex: Execution) -> str:
    """One run as JSON, everything but its crew spec (stored beside it)."""
    data: dict[str, Any] = {name: getattr(ex, name) for name in _PLAIN}
    data.update(
        hooks=asdict(ex.hooks),
        epoch=ex.epoch.isoformat(),
        results=[asdict(r) for r in ex.results],
        notes=[list(n) for n in ex.notes],
    )
    return json.dumps(data, separators=(",", ":"))


def load(text: str, crew: CrewSpec) -> Execution:
    """The run :func:`dump` wrote; raises ValueError, KeyError or TypeError on anything else."""
    data = json.loads(text)
    ex = Execution(
        id=data["id"],
        crew=crew,
        inputs=data["inputs"],
        meta=data["meta"],
        hooks=Hooks(**data["hooks"]),
        created_at=data["created_at"],
        epoch=datetime.fromisoformat(data["epoch"]),
    )
    for name in _PLAIN:
        setattr(ex, name, data[name])
    ex.results = [TaskResult(**r) for r in data["results"]]
    ex.notes = [(str(task), str(note)) for task, note in data["notes"]]
    return ex


class _FileSession:
    """One transaction's view of the runs; what it loaded or added is written back by :meth:`flush`."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection, now: float) -> None:
        self.now = now
        self.epoch = store.epoch
        self.outgoing: list[Outgoing] = []
        self._store = store
        self._conn = conn
        self._loaded: dict[str, tuple[str, Execution]] = {}
        self._added: dict[str, Execution] = {}

    def get(self, kickoff_id: str) -> Execution | None:
        if kickoff_id in self._added:
            return self._added[kickoff_id]
        if kickoff_id in self._loaded:
            return self._loaded[kickoff_id][1]
        row = self._conn.execute("SELECT spec, data FROM executions WHERE kickoff_id = ?", (kickoff_id,)).fetchone()
        if row is None:
            return None
        ex = self._store.load_row(row[0], row[1])
        self._loaded[kickoff_id] = (row[1], ex)
        # Catch up: another process may have let this run's transitions fall due without running them.
        self.emit(ex.advance(self.now))
        return ex

    def add(self, execution: Execution) -> None:
        self._added[execution.id] = execution

    def emit(self, items: Iterable[Outgoing]) -> None:
        self.outgoing.extend(o for o in items if o.at >= self._store.born)

    def due(self) -> list[str]:
        rows = self._conn.execute("SELECT kickoff_id FROM executions WHERE due_at <= ? ORDER BY seq", (self.now,))
        return [kickoff_id for (kickoff_id,) in rows]

    def flush(self) -> None:
        for ex in self._added.values():
            self._conn.execute(
                "INSERT INTO executions (kickoff_id, crew, due_at, spec, data) VALUES (?, ?, ?, ?, ?)",
                (ex.id, ex.crew.name, ex.due_at(), ex.crew.model_dump_json(), dump(ex)),
            )
        for before, ex in self._loaded.values():
            after = dump(ex)
            if after != before:
                self._conn.execute(
                    "UPDATE executions SET due_at = ?, data = ? WHERE kickoff_id = ?", (ex.due_at(), after, ex.id)
                )


class SqliteStore:
    """Runs and the clock in one SQLite file (created, with its directory, on first use; owner-only access).

    Args:
        path: the state file. Several processes may share it.
        busy_timeout: seconds to wait for another process's write lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.epoch = datetime.now(UTC)
        self.born = 0.0
        self._started = time.time()  # what came due before this simulator existed is not delivered by it
        self._busy_timeout = busy_timeout
        self._db = SqliteFile(self._open, error=self._error, retries=DEFAULT_BUSY_RETRIES)
        self._epoch: float | None = None
        self._offset = 0.0
        self._last = 0.0
        self._specs: dict[str, CrewSpec] = {}

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def now(self) -> float:
        """Simulated seconds since the file's epoch (opens the file on first use, in the calling thread)."""
        if self._epoch is None:
            self._call(lambda conn: None, write=False)
        return self._clock()

    async def ready(self) -> None:
        """Open the file (in a worker thread) unless it was opened before: a broken file fails every request."""
        if self._epoch is None:
            await anyio.to_thread.run_sync(self._call, lambda conn: None, False)

    async def transact(self, op: Callable[[Session], T]) -> tuple[T, list[Outgoing]]:
        """Run ``op`` in one write transaction in a worker thread; retried from scratch while the file is busy."""
        return await anyio.to_thread.run_sync(self._call, lambda conn: self._work(conn, op))

    async def tick(self) -> list[Outgoing]:
        """Run every transition due; a read finds nothing due without taking the write lock (the usual case)."""
        if not await anyio.to_thread.run_sync(self._call, self._anything_due, False):
            return []
        return await anyio.to_thread.run_sync(self._call, self._catch_up)

    async def advance_clock(self, seconds: float) -> None:
        """Add ``seconds`` to the file's clock offset, for every process sharing it."""

        def add(conn: sqlite3.Connection) -> None:
            self._refresh(conn)
            conn.execute("UPDATE meta SET value = value + ? WHERE key = 'offset'", (seconds,))
            self._offset += seconds

        await anyio.to_thread.run_sync(self._call, add)

    def executions(self) -> Mapping[str, Execution]:
        """A snapshot of every run, oldest first (a blocking read: for tests and tools, not for requests)."""
        rows = self._call(lambda c: c.execute("SELECT spec, data FROM executions ORDER BY seq").fetchall(), False)
        runs = [self.load_row(spec, data) for spec, data in rows]
        return {ex.id: ex for ex in runs}

    def kickoff_ids(self, crew: str) -> list[str]:
        """The runs of ``crew``, oldest first (a blocking read)."""
        sql = "SELECT kickoff_id FROM executions WHERE crew = ? ORDER BY seq"
        return [kid for (kid,) in self._call(lambda c: c.execute(sql, (crew,)).fetchall(), False)]

    async def aclose(self) -> None:
        """Close the connection; the next use opens it again."""
        await anyio.to_thread.run_sync(self._db.close)

    def load_row(self, spec: str, data: str) -> Execution:
        """A run from its stored spec and data (the spec parsed once per distinct text)."""
        try:
            crew = self._specs.get(spec) or self._specs.setdefault(spec, CrewSpec.model_validate_json(spec))
            return load(data, crew)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise SimulatorStateError(f"The simulator state file {self.path} holds an unreadable run: {exc}") from None

    def _work(self, conn: sqlite3.Connection, op: Callable[[Session], T]) -> tuple[T, list[Outgoing]]:
        session = _FileSession(self, conn, self._refresh(conn))
        result = op(session)
        session.flush()
        return result, session.outgoing

    def _catch_up(self, conn: sqlite3.Connection) -> list[Outgoing]:
        session = _FileSession(self, conn, self._refresh(conn))
        for kickoff_id in session.due():
            session.get(kickoff_id)  # loading a run advances it
        session.flush()
        return session.outgoing

    def _clock(self) -> float:
        assert self._epoch is not None
        # Never backwards within a process, even if the system clock is set back.
        self._last = max(self._last, time.time() - self._epoch + self._offset)
        return self._last

    def _refresh(self, conn: sqlite3.Connection) -> float:
        self._refresh_offset(conn)
        return self._clock()

    def _refresh_offset(self, conn: sqlite3.Connection) -> float:
        row = conn.execute("SELECT value FROM meta WHERE key = 'offset'").fetchone()
        self._offset = float(row[0])
        return self._offset

    def _anything_due(self, conn: sqlite3.Connection) -> bool:
        now = self._refresh(conn)
        return conn.execute("SELECT 1 FROM executions WHERE due_at <= ? LIMIT 1", (now,)).fetchone() is not None

    def _call(self, op: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        return self._db.call(op, write=write)

    def _open(self) -> sqlite3.Connection:
        try:
            create_private(self.path)
        except OSError as exc:
            raise SimulatorStateError(
                f"Cannot create the simulator state file {self.path}: {exc.strerror or exc}."
            ) from None
        return connect(
            self.path,
            busy_timeout=self._busy_timeout,
            synchronous="NORMAL",
            not_wal=lambda mode: SimulatorStateError(
                f"The simulator state file {self.path} cannot use WAL mode (got {mode!r})."
            ),
            setup=self._setup,
        )

    def _setup(self, conn: sqlite3.Connection) -> None:
        transaction(conn, _migrate)
        if self._epoch is None:
            self._epoch = float(conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
            self.epoch = datetime.fromtimestamp(self._epoch, UTC)
            self.born = self._started - self._epoch + self._refresh_offset(conn)

    def _error(self, exc: sqlite3.Error) -> SimulatorStateError:
        return SimulatorStateError(f"The simulator state file {self.path} failed: {exc}.")


def _migrate(conn: sqlite3.Connection) -> None:
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SimulatorStateError(
            f"The simulator state file has schema version {found}, newer than this crew-mcp understands "
            f"({SCHEMA_VERSION}); upgrade crew-mcp or delete the file (it holds only simulated runs)."
        )
    if found == SCHEMA_VERSION:
        return
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [("epoch", time.time()), ("offset", 0.0)])
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
