"""A ledger in Redis, shared by every replica of the server (``redis://host:6379/0?prefix=crew-mcp:``).

The ``redis`` package is optional (``pip install crew-mcp[redis]``) and imported only when a Redis ledger
is opened. The keys, all under a prefix, are laid out in :mod:`crew_mcp.ledger.redis_keys`.

Every change is a read-modify-write under ``WATCH``/``MULTI``: when two replicas update one record at
once, one transaction fails and is replayed on the fresh record, so no write is lost.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import stamina
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
    matches,
    micros,
    utcnow,
    visible,
)
from crew_mcp.ledger.redis_keys import INSERT_SCRIPT, KeySpace, glob_escape, redact_url, split_prefix

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["DEFAULT_PREFIX", "RedisLedger", "redact_url"]

DEFAULT_PREFIX = "crew-mcp:"
"""Key prefix when the URL has no ``?prefix=``."""

_WATCH_ATTEMPTS = 50

_CHUNK = 500


class RedisLedger(LedgerBase):
    """The :class:`~crew_mcp.ledger.Ledger` in Redis.

    Args:
        client: a ``redis.asyncio.Redis`` made with ``decode_responses=True``; the ledger closes it.
        prefix: prepended to every key, so several ledgers (or test runs) share one database.
        where: how messages name this Redis (never with a password).
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX, where: str = "redis") -> None:
        import redis.exceptions

        self._r = client
        self._prefix = prefix
        self._keys = KeySpace(prefix)
        self._where = where
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self._watch_error = redis.exceptions.WatchError
        self._response_error = redis.exceptions.ResponseError
        self._insert = client.register_script(INSERT_SCRIPT)
        self._secret: str | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> RedisLedger:
        """Open ``redis://[user:password@]host:port/db[?prefix=...]`` (also ``rediss://`` and ``unix://``).

        Nothing is connected until the first operation. Connect and socket timeouts default to 5 s, and a
        dropped connection is retried twice, briefly, before the operation fails with LedgerError.
        """
        try:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff
        except ImportError:  # pragma: no cover - depends on the installation
            raise LedgerError("A redis:// ledger needs the redis package: pip install 'crew-mcp[redis]'.") from None
        bare, prefix = split_prefix(url, DEFAULT_PREFIX)
        try:
            client = redis.asyncio.Redis.from_url(
                bare,
                decode_responses=True,
                socket_connect_timeout=5.0,
                socket_timeout=5.0,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            )
        except (ValueError, TypeError) as exc:
            raise LedgerError(f"Invalid Redis ledger URL {redact_url(url)}: {exc}.") from None
        ledger = cls(client, prefix=prefix, where=redact_url(url))
        ledger._secret = urlsplit(url).password
        return ledger

    def __repr__(self) -> str:
        return f"RedisLedger({self._where!r}, prefix={self._prefix!r})"

    async def create_many(self, records: Iterable[RunRecord]) -> None:
        """Store many new records (bulk import), atomically per chunk of 500."""
        batch = builtins.list(records)
        async with self._guard():
            for i in range(0, len(batch), _CHUNK):
                await self._create_chunk(batch[i : i + _CHUNK])

    async def confirm(self, request_id: str, kickoff_id: str) -> RunRecord:
        """Attach the kickoff_id and move the record to ``running``; an unknown request_id raises LedgerError."""
        async with self._guard():
            record = await self._update(request_id, lambda r: apply_confirm(r, kickoff_id, utcnow()), kickoff_id)
        if record is None:
            raise LedgerError(f"No run record with request id {request_id!r}.")
        return record

    async def mark_failed(self, request_id: str, error: str, *, may_have_started: bool = False) -> None:
        """Mark the record ``kickoff_failed`` or ``may_have_started``; an unknown request_id raises LedgerError."""
        async with self._guard():
            record = await self._update(
                request_id, lambda r: apply_failed(r, error, utcnow(), may_have_started=may_have_started)
            )
        if record is None:
            raise LedgerError(f"No run record with request id {request_id!r}.")

    async def prune(self, *, max_age: timedelta, max_count: int, now: datetime | None = None) -> int:
        """Delete records not updated within ``max_age`` and all but the newest ``max_count``, index entries too."""
        check_prune_args(max_age, max_count)
        cutoff = micros((now or utcnow()) - max_age)
        async with self._guard():
            old = _strs(await self._r.zrangebyscore(self._keys.k("idx:updated"), "-inf", f"({cutoff}"))
            surplus = set(_strs(await self._r.zrevrange(self._keys.k("idx:created"), max_count, -1)))
            doomed = sorted(set(old) | surplus)
            removed = 0
            for i in range(0, len(doomed), _CHUNK):
                chunk = doomed[i : i + _CHUNK]
                removed += await self._retry_watch(functools.partial(self._delete_chunk, chunk, surplus, cutoff))
            return removed

    async def aclose(self) -> None:
        """Close the connection pool; the ledger is unusable afterwards."""
        if self._closed:
            return
        async with self._guard():
            await self._r.aclose()
        self._closed = True

    async def get(self, kickoff_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a run, or None (also when it belongs to another owner)."""
        async with self._guard():
            request_id = _str(await self._r.get(self._keys.k("kickoff:", kickoff_id)))
            raw = _str(await self._r.get(self._keys.k("run:", request_id))) if request_id else None
        record = self._load(raw) if raw else None
        if record is None or not visible(record.owner, owner):
            return None
        return record

    async def get_request(self, request_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a kickoff request, or None (also when it belongs to another owner)."""
        async with self._guard():
            raw = _str(await self._r.get(self._keys.k("run:", request_id)))
        record = self._load(raw) if raw else None
        return record if record is not None and visible(record.owner, owner) else None

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
        if owner is None:
            index = self._keys.k("idx:anystate:", str(state)) if state is not None else self._keys.k("idx:created")
        elif conversation_id is not None:
            index = self._keys.k("idx:conv:", owner, conversation_id)
        elif state is not None:
            index = self._keys.k("idx:state:", owner, str(state))
        else:
            index = self._keys.k("idx:owner:", owner)
        # Exact: the index alone decides what matches, so a page of ``limit`` is enough.
        if owner is None:
            exact = crew is None and conversation_id is None
        else:
            exact = crew is None and (state is None or conversation_id is None)
        page = min(limit, 1000) if exact else max(4 * limit, 200)
        found: builtins.list[RunRecord] = []
        start = 0
        async with self._guard():
            while len(found) < limit:
                ids = _strs(await self._r.zrevrange(index, start, start + page - 1))
                if not ids:
                    break
                raws = [_str(v) for v in await self._r.mget([self._keys.k("run:", rid) for rid in ids])]
                for raw in raws:
                    record = self._load(raw) if raw else None
                    if record is not None and matches(
                        record, owner=owner, conversation_id=conversation_id, crew=crew, state=state
                    ):
                        found.append(record)
                start += page
        return found[:limit]

    async def ping(self) -> None:
        """Check that Redis answers (``PING``)."""
        async with self._guard():
            await self._r.ping()

    async def pending_count(self) -> int:
        """How many runs of every owner wait for a human decision (every owner's waiting index, scanned)."""
        pattern = glob_escape(self._prefix) + "idx:state:*:" + RecordState.WAITING_FOR_HUMAN.value
        count = 0
        async with self._guard():
            async for key in self._r.scan_iter(match=pattern, count=500):
                ids = _strs(await self._r.zrange(key, 0, -1))
                raws = [_str(v) for v in await self._r.mget([self._keys.k("run:", rid) for rid in ids])] if ids else []
                count += sum(1 for raw in raws if raw and is_pending_approval(self._load(raw)))
        return count

    def _load(self, raw: str) -> RunRecord:
        try:
            return RunRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise LedgerError(f"The Redis ledger at {self._where} holds an unreadable record: {exc}") from None

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Turn every Redis or socket failure into LedgerError, with no password in the message."""
        if self._closed:
            raise LedgerError(f"The Redis ledger at {self._where} is closed.")
        try:
            yield
        except self._errors as exc:
            detail = str(exc) or type(exc).__name__
            if self._secret:
                detail = detail.replace(self._secret, "***")
            raise LedgerError(f"The Redis ledger at {self._where} failed: {detail}") from None

    async def _retry_watch(self, attempt: Callable[[], Any]) -> Any:
        """Run a WATCH/MULTI attempt until no watched key changed under it (bounded, with jitter)."""
        try:
            async for retry in stamina.retry_context(
                on=self._watch_error,
                attempts=_WATCH_ATTEMPTS,
                timeout=None,
                wait_initial=0.001,
                wait_max=0.02,
                wait_jitter=0.002,
            ):
                with retry:
                    return await attempt()
        except self._watch_error:
            raise LedgerError(
                f"The Redis ledger at {self._where} gave up after {_WATCH_ATTEMPTS} conflicting concurrent updates."
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _update_kickoff(self, kickoff_id: str, change: Callable[[RunRecord], RunRecord]) -> RunRecord | None:
        async with self._guard():
            request_id = _str(await self._r.get(self._keys.k("kickoff:", kickoff_id)))
            if request_id is None:
                return None
            return await self._update(request_id, change)

    async def _update(
        self, request_id: str, change: Callable[[RunRecord], RunRecord], kickoff_id: str | None = None
    ) -> RunRecord | None:
        async def attempt() -> RunRecord | None:
            key = self._keys.k("run:", request_id)
            async with self._r.pipeline(transaction=True) as pipe:
                watched = [key] if kickoff_id is None else [key, self._keys.k("kickoff:", kickoff_id)]
                await pipe.watch(*watched)
                raw = _str(await pipe.get(key))
                if raw is None:
                    return None
                old = self._load(raw)
                new = change(old)
                if kickoff_id is not None and new.kickoff_id != old.kickoff_id:
                    holder = _str(await pipe.get(self._keys.k("kickoff:", kickoff_id)))
                    if holder is not None and holder != request_id:
                        raise LedgerError(f"A run record with kickoff id {kickoff_id!r} already exists.")
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
                self._keys.write(pipe, new, old)
                await pipe.execute()
                return new

        result: RunRecord | None = await self._retry_watch(attempt)
        return result

    async def _create_chunk(self, records: Sequence[RunRecord]) -> None:
        """Insert records with one atomic script call: every key is checked before anything is written."""
        rids = [r.request_id for r in records]
        kickoffs = [r.kickoff_id for r in records if r.kickoff_id is not None]
        if len(set(rids)) != len(rids) or len(set(kickoffs)) != len(kickoffs):
            raise LedgerError("The same request id or kickoff id appears twice in one batch of run records.")
        args: builtins.list[str | int] = [self._keys.k("idx:created"), self._keys.k("idx:updated")]
        for r in records:
            args += [
                self._keys.k("run:", r.request_id),
                self._keys.k("kickoff:", r.kickoff_id) if r.kickoff_id is not None else "",
                *self._keys.indexes(r),
                r.request_id,
                micros(r.created_at),
                micros(r.updated_at),
                r.model_dump_json(),
            ]
        try:
            await self._insert(args=args)
        except self._response_error as exc:
            if str(exc).startswith("DUPLICATE"):
                what = str(exc).split(" ", 1)[1] if " " in str(exc) else "key"
                raise LedgerError(f"A run record with this {what} already exists.") from None
            raise

    async def _delete_chunk(self, request_ids: Sequence[str], surplus: set[str], cutoff: int) -> int:
        keys = [self._keys.k("run:", rid) for rid in request_ids]
        async with self._r.pipeline(transaction=True) as pipe:
            await pipe.watch(*keys)
            raws = [_str(v) for v in await pipe.mget(keys)]
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
            removed = 0
            for rid, raw in zip(request_ids, raws, strict=True):
                record = self._load(raw) if raw else None
                if record is not None and rid not in surplus and micros(record.updated_at) >= cutoff:
                    continue  # updated by another replica since the index was read
                pipe.zrem(self._keys.k("idx:created"), rid)
                pipe.zrem(self._keys.k("idx:updated"), rid)
                if record is None:
                    continue
                removed += 1
                pipe.delete(self._keys.k("run:", rid))
                if record.kickoff_id is not None:
                    pipe.delete(self._keys.k("kickoff:", record.kickoff_id))
                for index in self._keys.indexes(record):
                    pipe.zrem(index, rid)
            await pipe.execute()
            return removed


def _str(value: object) -> str | None:
    """A reply as text (the client decodes responses; bytes only if someone passed another client)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    raise LedgerError(f"Unexpected reply from Redis: {type(value).__name__}")


def _strs(values: Iterable[object]) -> builtins.list[str]:
    return [s for v in values if (s := _str(v)) is not None]
