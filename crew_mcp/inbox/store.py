"""Where the inbox keeps its server-side state: a small key-value store with expiry, in three backends.

Sessions, sign-ins in progress and a dynamically registered OAuth client are each one JSON value under one key.
Several replicas behind a balancer must share them (a sign-in may start on one replica and come back on another),
so the store follows the ledger unless ``CREW_MCP_INBOX_SESSIONS_URL`` says otherwise:

```text
memory://                 this process only (tests, one replica)
sqlite:///path/x.db       a file every process on the machine shares (default: inbox-sessions.db beside the ledger)
redis://host:6379/0       every replica (default with a Redis ledger: the same Redis, keys under {prefix}inbox:)
```

Keys are hashes of what the browser holds (see :mod:`crew_mcp.inbox.sessions`), never the cookie itself.
Backend failures raise :class:`~crew_mcp.errors.LedgerError`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio.to_thread

from ..errors import LedgerError
from ..ledger import sqlite_path
from ..ledger.redis_keys import redact_url, split_prefix
from ..sqlitefile import DEFAULT_BUSY_TIMEOUT, SqliteFile, connect, create_private

__all__ = ["MemoryStore", "RedisStore", "SqliteStore", "Store", "open_store", "store_url"]

Clock = Callable[[], float]
_T = TypeVar("_T")
_SWEEP_EVERY = 256
"""Writes between two sweeps of expired entries (memory and SQLite; Redis expires keys itself)."""


class Store(Protocol):
    """A key-value store whose entries expire ``ttl`` seconds after they were written."""

    async def put(self, key: str, value: str, ttl: float) -> None:
        """Store ``value`` under ``key`` (replacing any), for ``ttl`` seconds."""
        ...

    async def add(self, key: str, value: str, ttl: float) -> bool:
        """Store ``value`` only when ``key`` holds nothing; True when it was stored."""
        ...

    async def get(self, key: str) -> str | None:
        """The value under ``key``, or None (also once it expired)."""
        ...

    async def take(self, key: str) -> str | None:
        """The value under ``key``, deleted in the same step: of two concurrent callers only one gets it."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens when it holds nothing)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def store_url(sessions_url: str | None, ledger_url: str) -> str:
    """The store's URL: the configured one, else one beside the ledger (see the module docstring)."""
    if sessions_url:
        return sessions_url
    scheme = ledger_url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite:///" + str(sqlite_path(ledger_url).parent / "inbox-sessions.db").lstrip("/")
    if scheme in ("redis", "rediss", "unix"):
        bare, prefix = split_prefix(ledger_url, "crew-mcp:")
        parts = urlsplit(bare)
        query = [*parse_qsl(parts.query, keep_blank_values=True), ("prefix", prefix + "inbox:")]
        return urlunsplit(parts._replace(query=urlencode(query)))
    return "memory://"


def open_store(url: str, *, clock: Clock = time.time) -> Store:
    """Open the store ``url`` names (nothing is connected until first use).

    Raises:
        LedgerError: an unsupported URL, or Redis without the ``redis`` package.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(url), clock=clock)
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore.from_url(url)
    raise LedgerError("Unsupported inbox sessions URL: use memory://, sqlite:///path/sessions.db or redis://host/0.")


class MemoryStore:
    """The store in this process's memory."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._data: dict[str, tuple[str, float]] = {}
        self._writes = 0

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._sweep()
        self._data[key] = (value, self._clock() + ttl)

    async def add(self, key: str, value: str, ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.put(key, value, ttl)
        return True

    async def get(self, key: str) -> str | None:
        found = self._data.get(key)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    async def take(self, key: str) -> str | None:
        value = await self.get(key)
        self._data.pop(key, None)
        return value

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def aclose(self) -> None:
        self._data.clear()

    def _sweep(self) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            now = self._clock()
            for key in [k for k, (_, expires) in self._data.items() if expires <= now]:
                del self._data[key]


class SqliteStore:
    """The store in one SQLite file (WAL), shared by the processes of one machine; opened on first use."""

    def __init__(self, path: Path, *, clock: Clock = time.time) -> None:
        self.path = path
        self._clock = clock
        self._db = SqliteFile(self._open, error=self._error, retries=0)
        self._writes = 0

    async def put(self, key: str, value: str, ttl: float) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO inbox_kv VALUES (?, ?, ?)", (key, value, self._clock() + ttl))

        await self._run(run, write=True)

    async def add(self, key: str, value: str, ttl: float) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            now = self._clock()
            c.execute("DELETE FROM inbox_kv WHERE key = ? AND expires_at <= ?", (key, now))
            return c.execute("INSERT OR IGNORE INTO inbox_kv VALUES (?, ?, ?)", (key, value, now + ttl)).rowcount == 1

        return await self._run(run, write=True)

    async def get(self, key: str) -> str | None:
        def run(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT value FROM inbox_kv WHERE key = ? AND expires_at > ?", (key, self._clock())
            ).fetchone()
            return str(row[0]) if row else None

        return await self._run(run)

    async def take(self, key: str) -> str | None:
        def run(c: sqlite3.Connection) -> str | None:
            row = c.execute("DELETE FROM inbox_kv WHERE key = ? RETURNING value, expires_at", (key,)).fetchone()
            return str(row[0]) if row and row[1] > self._clock() else None

        return await self._run(run, write=True)

    async def delete(self, key: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM inbox_kv WHERE key = ?", (key,)), write=True)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._db.close)

    async def _run(self, work: Callable[[sqlite3.Connection], _T], *, write: bool = False) -> _T:
        if not write:
            return await anyio.to_thread.run_sync(lambda: self._db.call(work, write=False))

        def counted(conn: sqlite3.Connection) -> _T:
            result = work(conn)
            self._writes += 1
            if self._writes % _SWEEP_EVERY == 0:
                conn.execute("DELETE FROM inbox_kv WHERE expires_at <= ?", (self._clock(),))
            return result

        return await anyio.to_thread.run_sync(lambda: self._db.call(counted, write=True))

    def _open(self) -> sqlite3.Connection:
        create_private(self.path)  # sessions name people: readable by the owner only
        return connect(
            self.path, busy_timeout=DEFAULT_BUSY_TIMEOUT, synchronous="FULL", not_wal=None, setup=_create_table
        )

    def _error(self, exc: sqlite3.Error) -> LedgerError:
        return LedgerError(f"The inbox session store {self.path} failed: {exc}.")


def _create_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS inbox_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)"
    )


class RedisStore:
    """The store in Redis (``SET ... PX``, ``GETDEL``), shared by every replica; keys under the URL's ``prefix``."""

    def __init__(self, client: Any, *, prefix: str, where: str) -> None:
        import redis.exceptions

        self._r = client
        self._prefix = prefix
        self._where = where
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """Open ``redis://[user:password@]host:port/db[?prefix=...]``; nothing is connected until first use.

        Raises:
            LedgerError: the ``redis`` package is missing, or the URL is not one.
        """
        try:
            import redis.asyncio
        except ImportError:  # pragma: no cover - depends on the installation
            raise LedgerError(
                "A redis:// session store needs the redis package: pip install 'crew-mcp[redis]'."
            ) from None
        bare, prefix = split_prefix(url, "crew-mcp:inbox:")
        try:
            client = redis.asyncio.Redis.from_url(
                bare,
                decode_responses=True,
                socket_connect_timeout=5.0,
                socket_timeout=5.0,
            )
        except (ValueError, TypeError) as exc:
            raise LedgerError(f"Invalid Redis session store URL {redact_url(url)}: {exc}.") from None
        return cls(client, prefix=prefix, where=redact_url(url))

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._do(self._r.set(self._prefix + key, value, px=_ms(ttl)))

    async def add(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._do(self._r.set(self._prefix + key, value, px=_ms(ttl), nx=True)))

    async def get(self, key: str) -> str | None:
        found = await self._do(self._r.get(self._prefix + key))
        return str(found) if found is not None else None

    async def take(self, key: str) -> str | None:
        found = await self._do(self._r.getdel(self._prefix + key))
        return str(found) if found is not None else None

    async def delete(self, key: str) -> None:
        await self._do(self._r.delete(self._prefix + key))

    async def aclose(self) -> None:
        await self._do(self._r.aclose())

    async def _do(self, call: Any) -> Any:
        try:
            return await call
        except self._errors as exc:
            raise LedgerError(f"The inbox session store at {self._where} failed: {type(exc).__name__}.") from None


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
