"""What every SQLite file crew-mcp keeps has in common: the ledger, the simulator's state, the inbox's sessions.

Each is one file several processes may share. It is created readable by its owner only (it names people or holds
secrets), opened in WAL mode so readers never wait for a writer, and used through one connection behind a lock
(:class:`SqliteFile`) from worker threads, so the event loop never waits on disk. Writers take the write lock up
front (``BEGIN IMMEDIATE``) and wait ``busy_timeout`` for each other; a write that still found the file busy can be
retried a bounded number of times, with short fixed pauses: the pause is taken while holding the lock, so it is
never stretched by jitter.

Each caller keeps its own error messages: :class:`SqliteFile` turns every ``sqlite3.Error`` into the exception its
``error`` function builds.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import stamina

__all__ = [
    "DEFAULT_BUSY_RETRIES",
    "DEFAULT_BUSY_TIMEOUT",
    "SqliteFile",
    "connect",
    "create_private",
    "is_busy",
    "retry_busy",
    "transaction",
]

DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds a statement waits for another process's write lock before SQLite reports the file busy."""
DEFAULT_BUSY_RETRIES = 3
"""How many times a write that still found the file busy is retried (after a short pause)."""

_T = TypeVar("_T")
_BUSY_WAIT = 0.05
"""Seconds before the first retry of a busy write; each further retry waits twice as long (at most 4 times)."""
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def create_private(path: Path) -> None:
    """Create ``path``'s directory and, when missing, the file itself, readable and writable by its owner only.

    Raises:
        OSError: the directory or the file could not be created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def connect(
    path: Path,
    *,
    busy_timeout: float,
    synchronous: Literal["FULL", "NORMAL"],
    not_wal: Callable[[str], Exception] | None,
    setup: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """Open ``path`` for use from worker threads: autocommit (transactions are explicit), WAL, ``busy_timeout``.

    ``not_wal(mode)`` builds the error raised when the file cannot use WAL mode (None: use whatever mode it has);
    ``setup`` runs next (schema, migrations). The connection is closed when any of it fails.

    Raises:
        sqlite3.Error: the file could not be opened, read or written.
    """
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if not_wal is not None and mode.lower() != "wal":
            raise not_wal(mode)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        if setup is not None:
            setup(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def transaction(conn: sqlite3.Connection, op: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``op`` in one write transaction that holds the write lock from its start; rolled back if ``op`` raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = op(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return result


def is_busy(exc: sqlite3.Error) -> bool:
    """True when ``exc`` says another connection held a lock (SQLITE_BUSY or SQLITE_LOCKED, extended codes too)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def retry_busy(op: Callable[[], _T], *, retries: int) -> _T:
    """Run ``op``, and again up to ``retries`` times while it fails because the file is busy.

    Raises:
        sqlite3.Error: the last attempt's error (busy or not).
    """
    for attempt in stamina.retry_context(
        on=_retry_busy,
        attempts=retries + 1,
        timeout=None,
        wait_initial=_BUSY_WAIT,
        wait_max=_BUSY_WAIT * 4,
        wait_jitter=0.0,
    ):
        with attempt:
            return op()
    raise AssertionError("unreachable")  # pragma: no cover


class SqliteFile:
    """One connection to one SQLite file, opened on first use, used by one thread at a time.

    Args:
        opener: opens the connection (usually with :func:`connect`); called again after :meth:`close`.
        error: turns a ``sqlite3.Error`` into the exception the caller raises.
        retries: further attempts of an operation that found the file busy.
    """

    def __init__(
        self,
        opener: Callable[[], sqlite3.Connection],
        *,
        error: Callable[[sqlite3.Error], Exception],
        retries: int,
    ) -> None:
        self._opener = opener
        self._error = error
        self._retries = retries
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def call(self, op: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        """Run ``op`` on the connection (in one :func:`transaction` when ``write``), retried while busy.

        Blocking: call it from a worker thread.
        """
        with self._lock:
            try:
                return retry_busy(lambda: self._run(op, write), retries=self._retries)
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def close(self) -> None:
        """Close the connection (after the operation running now); the next :meth:`call` opens it again."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _run(self, op: Callable[[sqlite3.Connection], _T], write: bool) -> _T:
        if self._conn is None:
            self._conn = self._opener()
        return transaction(self._conn, op) if write else op(self._conn)


def _retry_busy(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.Error) and is_busy(exc)
