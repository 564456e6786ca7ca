"""Change fan-out: every status change one replica learns reaches every replica, once.

A :class:`Change` says which run changed, carries the record after the change (and the status to show, when
a read or a webhook gave one) and whether subscribers should hear of it. :meth:`Fanout.publish` delivers it
to this replica at once (no round trip: waiters on the same replica wake in microseconds) and, with Redis, to
every other replica through one ``PUBLISH`` on a channel they all subscribe to.

Why pub/sub and not streams: a change is a *notification*, not the record of truth (the ledger is). A replica
that misses one (its subscription dropped) loses nothing durable: when it subscribes again it forgets its cached
running records (:meth:`Fanout.run` calls ``on_gap``), and its own poll loops and the lease holder's next poll
bring it back.
Streams would add a per-replica cursor, trimming and a read loop per replica for a replay nobody needs, and
cost a write plus a read per change instead of one ``PUBLISH``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from ..ledger import RunRecord
from ..models import ExecutionStatus

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Change", "Deliver", "Fanout", "RedisFanout", "new_replica_id"]

logger = logging.getLogger(__name__)

RECONNECT_WAIT = 0.5
"""Seconds between attempts to re-subscribe after the Redis connection dropped."""


def new_replica_id() -> str:
    """A random name for this process in the fleet (leases and echoes are recognised by it)."""
    return secrets.token_hex(6)


@dataclass(frozen=True)
class Change:
    """One change to one run, as every replica hears of it.

    Attributes:
        kickoff_id: the run.
        record: the ledger record after the change (None: only "look again", e.g. a decision the ledger refused).
        status: the status to show, when the change came with one (a poll or a webhook); else derived from record.
        notify: subscribers (``notifications/resources/updated``) should hear of it.
        poke: the run's poll loop should read the crew now (a webhook or a decision: the full status may differ).
        origin: the replica that learned it.
    """

    kickoff_id: str
    record: RunRecord | None = None
    status: ExecutionStatus | None = None
    notify: bool = True
    poke: bool = False
    origin: str = ""

    def dumps(self) -> str:
        """The change as one JSON message."""
        body: dict[str, Any] = {"k": self.kickoff_id, "n": self.notify, "p": self.poke, "o": self.origin}
        if self.record is not None:
            body["r"] = self.record.model_dump(mode="json")
        if self.status is not None:
            body["s"] = self.status.model_dump(mode="json")
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes) -> Change:
        """Parse :meth:`dumps`' output (ValueError or pydantic's ValidationError when it is not one)."""
        body = json.loads(raw)
        record = RunRecord.model_validate(body["r"]) if body.get("r") is not None else None
        status = ExecutionStatus.model_validate(body["s"]) if body.get("s") is not None else None
        return cls(
            kickoff_id=str(body["k"]),
            record=record,
            status=status,
            notify=bool(body.get("n")),
            poke=bool(body.get("p")),
            origin=str(body.get("o", "")),
        )


Deliver = Callable[[Change], Awaitable[None]]
"""What a replica does with a change (wake waiters, tell subscribers, refresh its cache)."""
OnGap = Callable[[], None]
"""Told that changes may have been missed (the subscription dropped): forget what they would have corrected."""


class Fanout:
    """Delivers changes to this replica; the base class is the one-process fan-out (memory and SQLite ledgers).

    Args:
        replica: this process's name in the fleet.
    """

    shared = False
    """True when other processes hear what this one publishes."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self._deliver: Deliver | None = None

    def attach(self, deliver: Deliver) -> None:
        """Set what this replica does with a change (the run tracker's ``apply``)."""
        self._deliver = deliver

    async def publish(self, change: Change) -> None:
        """Deliver ``change`` here now, and to the other replicas."""
        await self._local(change)

    async def run(self, on_gap: OnGap, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Receive other replicas' changes until cancelled (nothing to receive in one process)."""
        task_status.started()
        await anyio.sleep_forever()

    async def _local(self, change: Change) -> None:
        if self._deliver is None:
            return
        try:
            await self._deliver(change)
        except Exception:  # one bad change must not stop the feed (or fail the writer that published it)
            logger.exception("applying a change to run %s failed", change.kickoff_id)


class RedisFanout(Fanout):
    """Fan-out through Redis pub/sub on ``{prefix}fleet:changes``.

    Publishing never fails the caller: with Redis away the change still reaches this replica, and the failure
    is logged (the others catch up through their own polls; see docs/fleet.md).

    Args:
        client: a ``redis.asyncio.Redis`` to publish with (short timeouts; the fleet closes it).
        prefix: the ledger's key prefix, so fleets sharing one Redis stay apart.
        replica: this process's name.
        listener: the client to subscribe with (no read timeout: a quiet channel is not an error); default ``client``.
    """

    shared = True

    def __init__(self, client: Redis, *, prefix: str, replica: str, listener: Redis | None = None) -> None:
        super().__init__(replica)
        self._r = client
        self._listener = listener or client
        self.channel = f"{prefix}fleet:changes"
        self.connected = anyio.Event()

    async def publish(self, change: Change) -> None:
        """Deliver ``change`` here, then ``PUBLISH`` it once for the others."""
        change = change if change.origin else _with_origin(change, self.replica)
        await self._local(change)
        try:
            await self._r.publish(self.channel, change.dumps())
        except Exception as exc:  # Redis away: this replica still knows; the others poll (docs/fleet.md)
            logger.warning("could not publish a change of run %s to the fleet: %s", change.kickoff_id, exc)

    async def run(self, on_gap: OnGap, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe and deliver other replicas' changes; re-subscribe after a drop (telling ``on_gap``)."""
        started = False
        while True:
            try:
                async with self._listener.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    if started:
                        on_gap()  # anything published while we were away is lost: drop what it would have fixed
                    self.connected.set()
                    if not started:
                        started = True
                        task_status.started()
                    async for message in pubsub.listen():
                        await self._receive(message)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                self.connected = anyio.Event()
                logger.warning("fleet change feed lost its Redis subscription (%s); retrying", exc)
                if not started:
                    started = True
                    task_status.started()
                # Cached running records stay trusted for their bounded time while Redis is away (nobody can change
                # the ledger then either); whatever was published meanwhile is dropped when the feed comes back.
                await anyio.sleep(RECONNECT_WAIT)

    async def _receive(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            change = Change.loads(message["data"])
        except Exception:  # another version or garbage on our channel: skip it, keep listening
            logger.warning("ignored an unreadable message on %s", self.channel)
            return
        if change.origin == self.replica:
            return  # delivered locally when it was published
        await self._local(change)


def _with_origin(change: Change, origin: str) -> Change:
    return Change(change.kickoff_id, change.record, change.status, change.notify, change.poke, origin)
