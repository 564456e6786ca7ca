"""The default ledger: one SQLite file, safe to share between processes.

The stdlib ``sqlite3`` runs in a worker thread (``anyio.to_thread``) behind one connection and a lock, so
the event loop never waits on disk. The file is in WAL mode with ``synchronous=FULL`` (a confirmed
kickoff_id survives a crash or a power cut), writers take the lock up front with ``BEGIN IMMEDIATE`` and
wait ``busy_timeout`` for each other, and a still-busy write is retried a bounded number of times.

Each record is one row: indexed copies of the fields listings filter on, plus ``data``, the whole record
as JSON (what is read back, so records round-trip exactly). The schema version is ``PRAGMA user_version``;
:func:`migrate` brings older files up to date when the ledger opens them.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio.to_thread
from pydantic import ValidationError

from crew_mcp.errors import LedgerError
from crew_mcp.ledger.base import LedgerBase
from crew_mcp.ledger.records import (
    RecordState,
    RunRecord,
    apply_confirm,
    apply_failed,
    check_prune_args,
    is_pending_approval,
    micros,
    utcnow,
    visible,
)
from crew_mcp.ledger.sqlite_schema import SCHEMA_VERSION, migrate
from crew_mcp.sqlitefile import (
    DEFAULT_BUSY_RETRIES,
    DEFAULT_BUSY_TIMEOUT,
    SqliteFile,
    connect,
    create_private,
    is_busy,
)

__all__ = ["DEFAULT_BUSY_RETRIES", "DEFAULT_BUSY_TIMEOUT", "SCHEMA_VERSION", "SqliteLedger", "migrate"]


_T = TypeVar("_T")
_COLUMNS = "request_id, kickoff_id, owner, conversation_id, crew, state, created_at, updated_at, data"
_ORDER = "ORDER BY created_at DESC, request_id DESC"


PRUNE_BATCH = 1000
"""Rows one prune transaction deletes at most."""


class SqliteLedger(LedgerBase):
    """The :class:`~crew_mcp.ledger.Ledger` in one SQLite file (opened and migrated on first use).

    Args:
        path: the database file; its directory is created, and a new file is made readable by its owner only
            (records hold inputs and webhook secrets).
        busy_timeout: seconds to wait for another process's write lock.
        busy_retries: further attempts of a write that still found the file busy.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        busy_retries: int = DEFAULT_BUSY_RETRIES,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._busy_retries = busy_retries
        self._db = SqliteFile(self._open, error=self._error, retries=busy_retries)
        self._file: tuple[int, int] | None = None  # (device, inode) of the file the connection has open
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    async def create_many(self, records: Iterable[RunRecord]) -> None:
        """Store many new records in one transaction (bulk import); all or none are stored."""
        rows = [_row(r) for r in records]
        await self._write(lambda conn: _insert(conn, rows))

    async def confirm(self, request_id: str, kickoff_id: str) -> RunRecord:
        """Attach the kickoff_id and move the record to ``running``; an unknown request_id raises LedgerError."""
        return await self._write(
            lambda c: _update(c, _by_request(c, request_id), lambda r: apply_confirm(r, kickoff_id, utcnow()))
        )

    async def mark_failed(self, request_id: str, error: str, *, may_have_started: bool = False) -> None:
        """Mark the record ``kickoff_failed`` or ``may_have_started``; an unknown request_id raises LedgerError."""

        def change(record: RunRecord) -> RunRecord:
            return apply_failed(record, error, utcnow(), may_have_started=may_have_started)

        await self._write(lambda c: _update(c, _by_request(c, request_id), change))

    async def prune(self, *, max_age: timedelta, max_count: int, now: datetime | None = None) -> int:
        """Delete records not updated within ``max_age`` and all but the newest ``max_count``.

        Deletes in batches of :data:`PRUNE_BATCH`, one transaction each, so a large backlog never holds the
        ledger (and the tool calls waiting on it) for longer than one batch.
        """
        check_prune_args(max_age, max_count)
        cutoff = micros((now or utcnow()) - max_age)

        def old(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(
                    "DELETE FROM runs WHERE request_id IN (SELECT request_id FROM runs WHERE updated_at < ? LIMIT ?)",
                    (cutoff, PRUNE_BATCH),
                ).rowcount
            )

        def surplus(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(
                    f"DELETE FROM runs WHERE request_id IN "  # noqa: S608 - constant SQL
                    f"(SELECT request_id FROM (SELECT request_id FROM runs {_ORDER} LIMIT -1 OFFSET ?) LIMIT ?)",
                    (max_count, PRUNE_BATCH),
                ).rowcount
            )

        total = 0
        for step in (old, surplus):
            while (deleted := await self._write(step)) > 0:
                total += deleted
        return total

    async def aclose(self) -> None:
        """Close the connection; the ledger is unusable afterwards."""
        await anyio.to_thread.run_sync(self._close)

    async def get(self, kickoff_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a run, or None (also when it belongs to another owner)."""
        return await self._get_by("kickoff_id", kickoff_id, owner)

    async def get_request(self, request_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a kickoff request, or None (also when it belongs to another owner)."""
        return await self._get_by("request_id", request_id, owner)

    async def list(
        self,
        *,
        owner: str | None,
        conversation_id: str | None = None,
        crew: str | None = None,
        state: str | None = None,
        limit: int = 20,
    ) -> builtins.list[RunRecord]:
        """The owner's records (``None``: every owner's), newest first, filtered by conversation, crew and state."""
        if limit <= 0:
            return []
        where: builtins.list[str] = ["1 = 1"]
        args: builtins.list[str] = []
        for column, value in (("owner", owner), ("conversation_id", conversation_id), ("crew", crew), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(str(value))
        sql = f"SELECT data FROM runs WHERE {' AND '.join(where)} {_ORDER} LIMIT ?"  # noqa: S608 - fixed columns, bound values
        rows = await self._read(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [_load(data) for (data,) in rows]

    async def ping(self) -> None:
        """Check that the file the connection has open is still in place, and answers a read.

        An open connection keeps reading a file that was deleted, moved or replaced (an unmounted volume), so the
        path is compared with what was opened; whatever is written then would be lost with the process.
        """

        def check(conn: sqlite3.Connection) -> None:
            try:
                found = os.stat(self.path)
            except OSError as exc:
                raise LedgerError(f"The SQLite ledger file {self.path} is gone ({exc.strerror or exc}).") from None
            if self._file is not None and (found.st_dev, found.st_ino) != self._file:
                raise LedgerError(f"The SQLite ledger file {self.path} was replaced by another file.")
            if not os.access(self.path, os.R_OK | os.W_OK):
                raise LedgerError(f"The SQLite ledger file {self.path} is not readable and writable.")
            conn.execute("SELECT 1 FROM runs LIMIT 1").fetchall()

        await self._read(check)

    async def pending_count(self) -> int:
        """How many runs of every owner wait for a human decision."""
        sql = "SELECT data FROM runs WHERE state = ?"
        rows = await self._read(lambda c: c.execute(sql, (RecordState.WAITING_FOR_HUMAN.value,)).fetchall())
        return sum(1 for (data,) in rows if is_pending_approval(_load(data)))

    async def _read(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(lambda: self._db.call(op, write=False))

    async def _write(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(lambda: self._db.call(op, write=True))

    async def _get_by(
        self, column: Literal["kickoff_id", "request_id"], value: str, owner: str | None
    ) -> RunRecord | None:
        sql = f"SELECT owner, data FROM runs WHERE {column} = ?"  # noqa: S608 - one of two column names
        row = await self._read(lambda c: c.execute(sql, (value,)).fetchone())
        if row is None or not visible(row[0], owner):
            return None  # checked before parsing: another owner's unreadable record reads as absent, not as an error
        return _load(row[1])

    async def _update_kickoff(self, kickoff_id: str, change: Callable[[RunRecord], RunRecord]) -> RunRecord | None:
        def update(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute("SELECT request_id, data FROM runs WHERE kickoff_id = ?", (kickoff_id,)).fetchone()
            return None if row is None else _update(conn, row, change)

        return await self._write(update)

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise LedgerError(f"The SQLite ledger {self.path} is closed.")
        try:
            create_private(self.path)
        except OSError as exc:
            raise LedgerError(f"Cannot create the SQLite ledger {self.path}: {exc.strerror or exc}.") from None
        return connect(
            self.path,
            busy_timeout=self._busy_timeout,
            synchronous="FULL",
            not_wal=lambda mode: LedgerError(f"The SQLite ledger {self.path} cannot use WAL mode (got {mode!r})."),
            setup=self._setup,
        )

    def _setup(self, conn: sqlite3.Connection) -> None:
        migrate(conn)
        opened = os.stat(self.path)
        self._file = (opened.st_dev, opened.st_ino)

    def _close(self) -> None:
        self._closed = True
        self._db.close()

    def _error(self, exc: sqlite3.Error) -> LedgerError:
        if is_busy(exc):
            return LedgerError(
                f"The SQLite ledger {self.path} stayed locked by another process for over "
                f"{self._busy_timeout:g} s ({self._busy_retries + 1} attempts): {exc}."
            )
        return LedgerError(f"The SQLite ledger {self.path} failed: {exc}.")


def _row(record: RunRecord) -> tuple[Any, ...]:
    return (
        record.request_id,
        record.kickoff_id,
        record.owner,
        record.conversation_id,
        record.crew,
        record.state.value,
        micros(record.created_at),
        micros(record.updated_at),
        record.model_dump_json(),
    )


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    try:
        conn.executemany(f"INSERT INTO runs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # noqa: S608 - constant SQL
    except sqlite3.IntegrityError as exc:
        raise _duplicate(exc) from None


def _by_request(conn: sqlite3.Connection, request_id: str) -> tuple[str, str]:
    row = conn.execute("SELECT request_id, data FROM runs WHERE request_id = ?", (request_id,)).fetchone()
    if row is None:
        raise LedgerError(f"No run record with request id {request_id!r}.")
    return row[0], row[1]


def _update(conn: sqlite3.Connection, row: tuple[str, str], change: Callable[[RunRecord], RunRecord]) -> RunRecord:
    updated = change(_load(row[1]))
    try:
        conn.execute(
            "UPDATE runs SET kickoff_id = ?, state = ?, updated_at = ?, data = ? WHERE request_id = ?",
            (updated.kickoff_id, updated.state.value, micros(updated.updated_at), updated.model_dump_json(), row[0]),
        )
    except sqlite3.IntegrityError as exc:
        raise _duplicate(exc) from None
    return updated


def _duplicate(exc: sqlite3.IntegrityError) -> LedgerError:
    what = "kickoff id" if "kickoff_id" in str(exc) else "request id"
    return LedgerError(f"A run record with this {what} already exists ({exc}).")


def _load(data: str) -> RunRecord:
    try:
        return RunRecord.model_validate_json(data)
    except ValidationError as exc:
        raise LedgerError(f"The SQLite ledger holds an unreadable record: {exc}") from None
