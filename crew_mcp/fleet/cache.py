"""Records in memory: finished ones forever (they never change), running ones while the fan-out keeps them true.

A running record may be changed by any replica. Every change made through a run tracker is fanned out
(:mod:`crew_mcp.fleet.fanout`), and applying it here replaces the cached copy, so a cached running record is
as fresh as the ledger. What the fan-out cannot see (another process on the same SQLite file, a change lost
while the Redis subscription was down) is bounded by ``live_seconds``: past that a running record is read from
the ledger again, and a gap in the feed forgets every running record at once.

Writes never trust the cache: every ledger update is a read-modify-write on the stored record, so a stale
copy here can delay what is *shown* by at most ``live_seconds``, never overwrite what another replica saved.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from ..ledger import RunRecord

__all__ = ["FINISHED_MAX", "LIVE_MAX", "RecordCache"]

FINISHED_MAX = 1024
"""How many finished records are kept."""
LIVE_MAX = 4096
"""How many running records are kept."""


class RecordCache:
    """Finished and running records by kickoff_id (see the module docstring).

    Args:
        live_seconds: how long a running record is trusted without news (0: running records are not cached).
    """

    def __init__(self, live_seconds: float = 0.0) -> None:
        self.live_seconds = live_seconds
        self._finished: OrderedDict[str, RunRecord] = OrderedDict()
        self._live: OrderedDict[str, tuple[float, RunRecord]] = OrderedDict()

    def get(self, kickoff_id: str) -> RunRecord | None:
        """The cached record, if it is finished or a running one still trusted."""
        record = self._finished.get(kickoff_id)
        if record is not None:
            return record
        entry = self._live.get(kickoff_id)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.live_seconds:
            del self._live[kickoff_id]
            return None
        return entry[1]

    def put(self, record: RunRecord | None) -> None:
        """Remember ``record`` (the newest known copy of its run)."""
        if record is None or record.kickoff_id is None:
            return
        kickoff_id = record.kickoff_id
        if record.status is not None and record.status.terminal:
            self._live.pop(kickoff_id, None)
            self._finished[kickoff_id] = record
            self._finished.move_to_end(kickoff_id)
            while len(self._finished) > FINISHED_MAX:
                self._finished.popitem(last=False)
            return
        if self.live_seconds <= 0 or kickoff_id in self._finished:
            return
        held = self._live.get(kickoff_id)
        if held is not None and held[1].updated_at > record.updated_at:
            return  # two replicas' changes crossed on the way: keep the newer copy
        self._live[kickoff_id] = (time.monotonic(), record)
        self._live.move_to_end(kickoff_id)
        while len(self._live) > LIVE_MAX:
            self._live.popitem(last=False)

    def forget(self, kickoff_id: str) -> None:
        """Drop the running copy of one run (its next read goes to the ledger)."""
        self._live.pop(kickoff_id, None)

    def forget_live(self) -> None:
        """Drop every running record (changes may have been missed)."""
        self._live.clear()
