"""Many replicas, one fleet: what crosses processes besides the ledger (docs/fleet.md).

* :mod:`~crew_mcp.fleet.fanout`: every status change a replica learns reaches every replica's waiters,
  subscribers and caches (Redis pub/sub; in one process, a direct call).
* :mod:`~crew_mcp.fleet.leases`: one replica polls a given execution; the others follow through the fan-out.
* :mod:`~crew_mcp.fleet.cache`: running records served from memory while the fan-out keeps them true.
* :mod:`~crew_mcp.fleet.events`: resumable SSE streams (an event store, per session).
* :mod:`~crew_mcp.fleet.http`: graceful shutdown (:class:`~crew_mcp.fleet.http.DrainingServer` runs
  :meth:`crew_mcp.runtime.Runtime.drain`: ``/readyz`` says draining, waits end, leases are handed over; then the
  server stops accepting).

:func:`build_fleet` picks the pieces from the settings: with ``CREW_MCP_FLEET_URL`` (or, when that is unset, a
``redis://`` ledger URL) they go through that Redis; otherwise they work within this process.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cache import RecordCache
from .fanout import Change, Fanout, RedisFanout, new_replica_id
from .leases import DEFAULT_LEASE_SECONDS, Leases, RedisLeases

if TYPE_CHECKING:
    from mcp.server.streamable_http import EventStore
    from redis.asyncio import Redis

    from ..settings import Settings

__all__ = ["Change", "Fleet", "build_fleet", "fleet_url"]

logger = logging.getLogger(__name__)

LIVE_SECONDS_SHARED = 10.0
"""How long a running record is trusted with a Redis fan-out (a safety net: pub/sub is at most once)."""
LIVE_SECONDS_SQLITE = 1.0
"""With SQLite other processes may write the same file unseen: trust a running record this long."""
_DEFAULT_PREFIX = "crew-mcp:"


@dataclass
class Fleet:
    """The fleet pieces of one replica. Build it with :func:`build_fleet`; close it with :meth:`aclose`."""

    replica: str
    fanout: Fanout
    leases: Leases
    events: EventStore | None
    live_seconds: float
    where: str = "this process"
    clients: list[Any] = field(default_factory=list)

    @classmethod
    def local(cls, live_seconds: float = math.inf, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Fleet:
        """A fleet of one process (no event store: the HTTP app asks :func:`build_fleet` for one)."""
        replica = new_replica_id()
        return cls(replica, Fanout(replica), Leases(lease_seconds), None, live_seconds)

    @property
    def shared(self) -> bool:
        """True when other processes take part (Redis)."""
        return self.fanout.shared

    def cache(self) -> RecordCache:
        """A record cache trusting running records as long as this fleet allows."""
        return RecordCache(self.live_seconds)

    async def aclose(self) -> None:
        """Close the Redis connections (nothing to do in one process)."""
        for client in self.clients:
            try:
                await client.aclose()
            except Exception:  # closing a dead connection
                logger.debug("closing a fleet connection failed", exc_info=True)


def fleet_url(settings: Settings, ledger_url: str) -> str | None:
    """The Redis URL the fleet uses: ``CREW_MCP_FLEET_URL``, else a ``redis://`` ledger's; None: one process."""
    url = settings.fleet_url or ledger_url
    if url.split(":", 1)[0].lower() in ("redis", "rediss", "unix"):
        return url
    if settings.fleet_url:
        logger.warning("CREW_MCP_FLEET_URL is not a redis:// URL; the fleet features work within this process only")
    return None


def build_fleet(settings: Settings, ledger_url: str) -> Fleet:
    """The fleet of this replica (nothing is connected until used)."""
    from .events import MemoryEventStore, RedisEventStore

    replica = new_replica_id()
    url = fleet_url(settings, ledger_url)
    if url is None:
        sqlite = ledger_url.startswith("sqlite:")
        return Fleet(
            replica=replica,
            fanout=Fanout(replica),
            leases=Leases(settings.lease_seconds),
            events=MemoryEventStore(),
            live_seconds=LIVE_SECONDS_SQLITE if sqlite else math.inf,
        )
    commands, listener, prefix, where = _redis_clients(url)
    fanout = RedisFanout(commands, prefix=prefix, replica=replica, listener=listener)
    leases = RedisLeases(commands, prefix=prefix, replica=replica, seconds=settings.lease_seconds)
    return Fleet(
        replica=replica,
        fanout=fanout,
        leases=leases,
        events=RedisEventStore(commands, prefix=prefix),
        live_seconds=LIVE_SECONDS_SHARED,
        where=where,
        clients=[commands, listener],
    )


def _redis_clients(url: str) -> tuple[Redis, Redis, str, str]:
    """Two clients (commands with short timeouts; a subscriber that may block), the key prefix, a safe name."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    from ..ledger.redis_keys import redact_url, split_prefix

    bare, prefix = split_prefix(url, _DEFAULT_PREFIX)
    # One quick retry only: a lease check or a publish must not hold a poll loop or a writer for seconds while
    # Redis is away (both fail open; see leases.py and fanout.py).
    quick = Retry(ExponentialBackoff(cap=0.05, base=0.01), 1)
    commands = redis.asyncio.Redis.from_url(
        bare, decode_responses=True, socket_connect_timeout=1.0, socket_timeout=2.0, retry=quick
    )
    listener = redis.asyncio.Redis.from_url(bare, decode_responses=True, socket_connect_timeout=2.0)
    return commands, listener, prefix, redact_url(url)
