"""Poll leases: exactly one replica polls a given execution, however many replicas have watchers on it.

A lease is one Redis key per execution, ``{prefix}fleet:lease:{kickoff_id}``, holding the holder's replica
name, set with ``NX`` and an expiry. The holder renews it (compare-and-expire, one Lua call) at every poll
and at least three times per lease period while it waits between polls; it deletes it (compare-and-delete)
when its last watcher leaves or it shuts down. A replica still watching takes it at its next poll interval (a
"handed over" message would make it poll at once: one request more in that interval). A replica that dies stops
renewing, so its leases expire within one lease period and the next replica whose watcher asks takes over. Any
failure to reach Redis counts as "holding" (the replica polls by itself): two pollers for a while beat none.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["DEFAULT_LEASE_SECONDS", "Leases", "RedisLeases"]

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 15.0
"""How long a lease lives without renewal: a dead replica's executions are taken over within this."""

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    """The lease interface; this base class grants every lease (one process: its hub already polls once).

    Args:
        seconds: the lease period.
    """

    shared = False

    def __init__(self, seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.seconds = seconds
        self.held: set[str] = set()

    async def acquire(self, kickoff_id: str) -> bool:
        """Take or renew the lease on ``kickoff_id``; True when this replica may poll it now."""
        self.held.add(kickoff_id)
        return True

    async def release(self, kickoff_id: str) -> None:
        """Give the lease up (only if this replica holds it)."""
        self.held.discard(kickoff_id)

    async def holder(self, kickoff_id: str) -> str | None:
        """Who holds the lease (a replica name), or None."""
        return "local" if kickoff_id in self.held else None


class RedisLeases(Leases):
    """Leases in Redis (see the module docstring).

    Args:
        client: a ``redis.asyncio.Redis`` with ``decode_responses=True``.
        prefix: the ledger's key prefix.
        replica: this process's name (the value of the leases it holds).
        seconds: the lease period.
    """

    shared = True

    def __init__(self, client: Redis, *, prefix: str, replica: str, seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        super().__init__(seconds)
        self._r = client
        self._prefix = prefix
        self.replica = replica
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def key(self, kickoff_id: str) -> str:
        """The Redis key of ``kickoff_id``'s lease."""
        return f"{self._prefix}fleet:lease:{kickoff_id}"

    async def acquire(self, kickoff_id: str) -> bool:
        """Take or renew the lease; True when held. Redis unreachable counts as held (poll rather than go blind)."""
        try:
            got = bool(await self._acquire(keys=[self.key(kickoff_id)], args=[self.replica, int(self.seconds * 1000)]))
        except Exception as exc:
            logger.warning("lease on %s not checked, polling anyway: %s", kickoff_id, exc)
            got = True
        if got:
            self.held.add(kickoff_id)
        else:
            self.held.discard(kickoff_id)
        return got

    async def release(self, kickoff_id: str) -> None:
        """Delete the lease if this replica still holds it (never another replica's)."""
        self.held.discard(kickoff_id)
        try:
            await self._release(keys=[self.key(kickoff_id)], args=[self.replica])
        except Exception as exc:  # it expires by itself within one lease period
            logger.warning("could not release the lease on %s: %s", kickoff_id, exc)

    async def holder(self, kickoff_id: str) -> str | None:
        """The replica holding ``kickoff_id``'s lease, or None."""
        value = await self._r.get(self.key(kickoff_id))
        return value if isinstance(value, str) else None
