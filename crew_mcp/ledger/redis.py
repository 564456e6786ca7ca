"""A ledger in Redis, shared by every replica of the server (``redis://host:6379/0?prefix=crew-mcp:``).

The ``redis`` package is optional (``pip install crew-mcp[redis]``) and imported only when a Redis ledger
is opened. Keys, all under the prefix:

```text
run:{request_id}                     the record as JSON
kickoff:{kickoff_id}                 → request_id
idx:created / idx:updated            every request_id, scored by created_at / updated_at (µs)
idx:owner:{owner}                    the owner's request_ids, scored by created_at
idx:conv:{owner}:{conversation_id}   one conversation's, scored by created_at
idx:state:{owner}:{state}            the owner's records in one state, scored by created_at
idx:anystate:{state}                 every owner's records in one state (what approvers review), by created_at
```

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
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

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
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

__all__ = ["DEFAULT_PREFIX", "RedisLedger", "redact_url"]

DEFAULT_PREFIX = "crew-mcp:"
"""Key prefix when the URL has no ``?prefix=``."""

_WATCH_ATTEMPTS = 50

# ARGV: idx:created, idx:updated, then 10 per record: run key, kickoff key or "", owner, conversation, state and
# any-owner state index keys, request_id, created µs, updated µs, JSON. Checks all before writing: all or nothing.
_INSERT_SCRIPT = """
local created, updated = ARGV[1], ARGV[2]
for b = 3, #ARGV, 10 do
  if redis.call('EXISTS', ARGV[b]) == 1 then return redis.error_reply('DUPLICATE request id') end
  if ARGV[b + 1] ~= '' and redis.call('EXISTS', ARGV[b + 1]) == 1 then
    return redis.error_reply('DUPLICATE kickoff id')
  end
end
for b = 3, #ARGV, 10 do
  local rid = ARGV[b + 6]
  redis.call('SET', ARGV[b], ARGV[b + 9])
  if ARGV[b + 1] ~= '' then redis.call('SET', ARGV[b + 1], rid) end
  for i = 2, 5 do redis.call('ZADD', ARGV[b + i], ARGV[b + 7], rid) end
  redis.call('ZADD', created, ARGV[b + 7], rid)
  redis.call('ZADD', updated, ARGV[b + 8], rid)
end
return #ARGV
"""
_CHUNK = 500


def redact_url(url: str) -> str:
    """``url`` without its password (and without its query), fit for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
        self._where = where
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self._watch_error = redis.exceptions.WatchError
        self._response_error = redis.exceptions.ResponseError
        self._insert = client.register_script(_INSERT_SCRIPT)
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
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
        rest = urlencode([(k, v) for k, v in query if k != "prefix"])
        try:
            client = redis.asyncio.Redis.from_url(
                urlunsplit(parts._replace(query=rest)),
                decode_responses=True,
                socket_connect_timeout=5.0,
                socket_timeout=5.0,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            )
        except (ValueError, TypeError) as exc:
            raise LedgerError(f"Invalid Redis ledger URL {redact_url(url)}: {exc}.") from None
        ledger = cls(client, prefix=prefix, where=redact_url(url))
        ledger._secret = parts.password
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
            old = _strs(await self._r.zrangebyscore(self._k("idx:updated"), "-inf", f"({cutoff}"))
            surplus = set(_strs(await self._r.zrevrange(self._k("idx:created"), max_count, -1)))
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
            request_id = _str(await self._r.get(self._k("kickoff:", kickoff_id)))
            raw = _str(await self._r.get(self._k("run:", request_id))) if request_id else None
        record = self._load(raw) if raw else None
        if record is None or (owner is not None and record.owner != owner):
            return None
        return record

    async def get_request(self, request_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a kickoff request, or None (also when it belongs to another owner)."""
        async with self._guard():
            raw = _str(await self._r.get(self._k("run:", request_id)))
        record = self._load(raw) if raw else None
        return record if record is not None and owner in (None, record.owner) else None

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
            index = self._k("idx:anystate:", str(state)) if state is not None else self._k("idx:created")
        elif conversation_id is not None:
            index = self._k("idx:conv:", owner, conversation_id)
        elif state is not None:
            index = self._k("idx:state:", owner, str(state))
        else:
            index = self._k("idx:owner:", owner)
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
                raws = [_str(v) for v in await self._r.mget([self._k("run:", rid) for rid in ids])]
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
        pattern = _glob_escape(self._prefix) + "idx:state:*:" + RecordState.WAITING_FOR_HUMAN.value
        count = 0
        async with self._guard():
            async for key in self._r.scan_iter(match=pattern, count=500):
                ids = _strs(await self._r.zrange(key, 0, -1))
                raws = [_str(v) for v in await self._r.mget([self._k("run:", rid) for rid in ids])] if ids else []
                count += sum(1 for raw in raws if raw and is_pending_approval(self._load(raw)))
        return count

    def _k(self, kind: str, *parts: str) -> str:
        """A key: ``kind`` then the parts, each percent-encoded so a ``:`` in an owner cannot collide."""
        return self._prefix + kind + ":".join(quote(p, safe="") for p in parts)

    def _index_keys(self, record: RunRecord) -> tuple[str, str, str, str]:
        """The owner, conversation, state and any-owner state indexes of ``record`` (the last two move with its
        state)."""
        return (
            self._k("idx:owner:", record.owner),
            self._k("idx:conv:", record.owner, record.conversation_id),
            self._k("idx:state:", record.owner, record.state.value),
            self._k("idx:anystate:", record.state.value),
        )

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
            request_id = _str(await self._r.get(self._k("kickoff:", kickoff_id)))
            if request_id is None:
                return None
            return await self._update(request_id, change)

    async def _update(
        self, request_id: str, change: Callable[[RunRecord], RunRecord], kickoff_id: str | None = None
    ) -> RunRecord | None:
        async def attempt() -> RunRecord | None:
            key = self._k("run:", request_id)
            async with self._r.pipeline(transaction=True) as pipe:
                watched = [key] if kickoff_id is None else [key, self._k("kickoff:", kickoff_id)]
                await pipe.watch(*watched)
                raw = _str(await pipe.get(key))
                if raw is None:
                    return None
                old = self._load(raw)
                new = change(old)
                if kickoff_id is not None and new.kickoff_id != old.kickoff_id:
                    holder = _str(await pipe.get(self._k("kickoff:", kickoff_id)))
                    if holder is not None and holder != request_id:
                        raise LedgerError(f"A run record with kickoff id {kickoff_id!r} already exists.")
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
                self._write(pipe, new, old)
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
        args: builtins.list[str | int] = [self._k("idx:created"), self._k("idx:updated")]
        for r in records:
            args += [
                self._k("run:", r.request_id),
                self._k("kickoff:", r.kickoff_id) if r.kickoff_id is not None else "",
                *self._index_keys(r),
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

    def _write(self, pipe: Pipeline, new: RunRecord, old: RunRecord | None) -> None:
        """Queue the commands that store ``new`` (replacing ``old``) and keep every index in step."""
        rid = new.request_id
        created = micros(new.created_at)
        pipe.set(self._k("run:", rid), new.model_dump_json())
        pipe.zadd(self._k("idx:updated"), {rid: micros(new.updated_at)})
        if new.kickoff_id is not None and (old is None or old.kickoff_id != new.kickoff_id):
            pipe.set(self._k("kickoff:", new.kickoff_id), rid)
        if old is None:
            pipe.zadd(self._k("idx:created"), {rid: created})
            for index in self._index_keys(new):
                pipe.zadd(index, {rid: created})
        elif old.state is not new.state:
            for before, after in zip(self._index_keys(old)[2:], self._index_keys(new)[2:], strict=True):
                pipe.zrem(before, rid)
                pipe.zadd(after, {rid: created})

    async def _delete_chunk(self, request_ids: Sequence[str], surplus: set[str], cutoff: int) -> int:
        keys = [self._k("run:", rid) for rid in request_ids]
        async with self._r.pipeline(transaction=True) as pipe:
            await pipe.watch(*keys)
            raws = [_str(v) for v in await pipe.mget(keys)]
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
            removed = 0
            for rid, raw in zip(request_ids, raws, strict=True):
                record = self._load(raw) if raw else None
                if record is not None and rid not in surplus and micros(record.updated_at) >= cutoff:
                    continue  # updated by another replica since the index was read
                pipe.zrem(self._k("idx:created"), rid)
                pipe.zrem(self._k("idx:updated"), rid)
                if record is None:
                    continue
                removed += 1
                pipe.delete(self._k("run:", rid))
                if record.kickoff_id is not None:
                    pipe.delete(self._k("kickoff:", record.kickoff_id))
                for index in self._index_keys(record):
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


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
