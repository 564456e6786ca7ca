"""Resumable SSE streams (2025-11-25 era): an :class:`~mcp.server.streamable_http.EventStore` per fleet.

With an event store, mcp 2.3 opens each POST's SSE stream with a *priming event* (an ``id`` and, given a
``retry_interval``, a ``retry`` field), stamps every later event with an id, and answers a ``GET`` with
``Last-Event-ID`` by replaying what followed that id and then forwarding the rest of the stream. So a client
whose connection drops during a long wait (a balancer's idle timeout, a network blip) reconnects and gets the
rest.

The SDK hands the store a stream id that is only the JSON-RPC request id (``"1"``, ``"2"``, …), the same in
every session. :class:`SessionScope` (ASGI middleware around ``/mcp``) tells the store which session a call is
for, so events are kept per session and a ``Last-Event-ID`` from one session never replays another's.

:class:`RedisEventStore` keeps the events in Redis streams (``{prefix}fleet:sse:{scope}:{stream}``, capped
and expiring), so they outlive a replica's memory; :class:`MemoryEventStore` is the one-process version.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict, deque
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage, jsonrpc_message_adapter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MAX_EVENTS", "RETRY_MS", "MemoryEventStore", "RedisEventStore", "SessionScope"]

logger = logging.getLogger(__name__)

MAX_EVENTS = 256
"""Events kept per stream (a wait sends a few progress notifications, then its result)."""
EVENTS_TTL = 3600
"""Seconds a stream's events are kept after its last event (Redis)."""
RETRY_MS = 1000
"""The ``retry`` field of priming events: how long a client waits before reconnecting (ms)."""

_SESSION_HEADER = b"mcp-session-id"


@dataclass
class _Holder:
    session: str | None = None


_SCOPE: ContextVar[_Holder | None] = ContextVar("crew_mcp_sse_scope", default=None)


def _scope() -> str:
    """A short digest of the current session id (never the id itself), or ``-`` outside any session."""
    holder = _SCOPE.get()
    session = holder.session if holder is not None else None
    if not session:
        return "-"
    return hashlib.sha256(session.encode()).hexdigest()[:16]


class SessionScope:
    """ASGI middleware: makes the request's ``Mcp-Session-Id`` known to the event store.

    A session's background router is started by its first request (``initialize``), before the session has an
    id; the holder set here is shared with it and learns the id from the response's header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = next((v.decode("latin-1") for k, v in scope["headers"] if k == _SESSION_HEADER), None)
        holder = _Holder(session)
        token = _SCOPE.set(holder)

        async def learn(message: Message) -> None:
            if holder.session is None and message["type"] == "http.response.start":
                found = next((v for k, v in message.get("headers", []) if k.lower() == _SESSION_HEADER), None)
                if found is not None:
                    holder.session = found.decode("latin-1") if isinstance(found, bytes) else str(found)
            await send(message)

        try:
            await self.app(scope, receive, learn)
        finally:
            _SCOPE.reset(token)


def _split(event_id: str) -> tuple[str, str, str] | None:
    """``scope.streamhex.seq`` → its three parts (None when malformed)."""
    parts = event_id.split(".")
    if len(parts) != 3:
        return None
    scope, stream_hex, seq = parts
    try:
        stream = bytes.fromhex(stream_hex).decode()
    except ValueError:
        return None
    return scope, stream, seq


def _dump(message: JSONRPCMessage | None) -> str:
    return "" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True)


def _load(raw: str) -> JSONRPCMessage | None:
    return None if not raw else jsonrpc_message_adapter.validate_json(raw)


class MemoryEventStore(EventStore):
    """Events in this process's memory (a bounded number of streams, each capped at :data:`MAX_EVENTS`)."""

    def __init__(self, max_streams: int = 4096) -> None:
        self._streams: OrderedDict[tuple[str, str], deque[tuple[int, str]]] = OrderedDict()
        self._seq = 0
        self._max_streams = max_streams

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Keep one event; its id names the session scope, the stream and the position."""
        scope = _scope()
        self._seq += 1
        key = (scope, stream_id)
        events = self._streams.get(key)
        if events is None:
            events = self._streams[key] = deque(maxlen=MAX_EVENTS)
            while len(self._streams) > self._max_streams:
                self._streams.popitem(last=False)
        events.append((self._seq, _dump(message)))
        return f"{scope}.{stream_id.encode().hex()}.{self._seq}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        """Send this session's events after ``last_event_id`` on its stream; the stream id, or None."""
        parts = _split(last_event_id)
        if parts is None or parts[0] != _scope():
            return None
        scope, stream, seq = parts
        events = self._streams.get((scope, stream))
        if events is None or not seq.isdigit():
            return None
        for n, raw in list(events):
            message = _load(raw)
            if n > int(seq) and message is not None:
                await send_callback(EventMessage(message, f"{scope}.{stream.encode().hex()}.{n}"))
        return stream


class RedisEventStore(EventStore):
    """Events in Redis streams, shared by every replica (see the module docstring).

    Args:
        client: a ``redis.asyncio.Redis`` with ``decode_responses=True``.
        prefix: the ledger's key prefix.
    """

    def __init__(self, client: Redis, *, prefix: str) -> None:
        self._r = client
        self._prefix = prefix

    def _key(self, scope: str, stream: str) -> str:
        return f"{self._prefix}fleet:sse:{scope}:{stream.encode().hex()}"

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """``XADD`` one event (capped, expiring); its id names the session scope, the stream and the entry."""
        scope = _scope()
        key = self._key(scope, stream_id)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"m": _dump(message)}, maxlen=MAX_EVENTS, approximate=True)
            pipe.expire(key, EVENTS_TTL)
            entry, _ = await pipe.execute()
        return f"{scope}.{stream_id.encode().hex()}.{_text(entry)}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        """``XRANGE`` this session's events after ``last_event_id``; the stream id, or None."""
        parts = _split(last_event_id)
        if parts is None or parts[0] != _scope():
            return None
        scope, stream, entry = parts
        try:
            rows: Any = await self._r.xrange(self._key(scope, stream), min=f"({entry}", max="+")
        except Exception as exc:  # a malformed id, or Redis away: nothing to replay
            logger.warning("could not replay SSE events: %s", exc)
            return None
        for row_id, fields in rows or []:
            message = _load(_text(fields.get("m", "")))
            if message is not None:
                await send_callback(EventMessage(message, f"{scope}.{stream.encode().hex()}.{_text(row_id)}"))
        return stream


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
