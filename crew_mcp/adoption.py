"""Adopting runs started elsewhere (the AMP dashboard, a script, another host) when their owner asks about them.

A kickoff_id the ledger does not know at all is looked up on the crew (the one named, else each in turn) and,
when the crew knows it, recorded for the caller: marked ``started_outside``, its inputs unknown, followed and
decided on like any run from then on. An id the ledger holds for another owner is never looked up (the run
tracker checks first): that caller gets the same "not found" as for an unknown id, with no upstream call.

Probing ids on a shared deployment is bounded: at most :data:`ADOPT_PER_MINUTE` lookups per owner per minute,
at most :data:`ADOPT_MAX_CREWS` crews per lookup, within the call's time bound. A kickoff_id is an unguessable
UUID, so a lookup tells a caller nothing the crew's own API would not tell anyone holding the id; an adopted run
belongs to whoever adopted it first (``CREW_MCP_ADOPT_RUNS=false`` turns adoption off).
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict, deque
from datetime import datetime, timedelta

import anyio

from . import errors as e
from .clock import Clock
from .crews import Crew, CrewRegistry
from .identity import Caller
from .ledger import Ledger, RunRecord
from .ledger.records import apply_confirm, apply_status
from .models import ExecutionState, ExecutionStatus

__all__ = ["ADOPT_MAX_CREWS", "ADOPT_PER_MINUTE", "Adopter"]

logger = logging.getLogger(__name__)

ADOPT_MAX_CREWS = 5
"""With several crews and none named, how many are asked about an unknown kickoff_id (in configuration order)."""
ADOPT_PER_MINUTE = 10
"""How many unknown kickoff_ids one owner may have looked up on the crews per minute."""
_OWNERS = 10_000
"""How many owners' lookups are remembered (the oldest are forgotten first)."""


class Adopter:
    """Looks up unknown kickoff_ids on the crews and records the runs they know (see the module docstring)."""

    def __init__(self, ledger: Ledger, registry: CrewRegistry, clock: Clock) -> None:
        self.ledger = ledger
        self.registry = registry
        self.clock = clock
        self._lookups: OrderedDict[str, deque[datetime]] = OrderedDict()

    async def adopt(self, kickoff_id: str, caller: Caller, crew: str | None, within: float) -> RunRecord | None:
        """Ask ``crew`` (else each crew in turn, at most :data:`ADOPT_MAX_CREWS`) about a kickoff_id nobody recorded,
        within ``within`` seconds; record the run for ``caller`` when one knows it. None when none does, or when the
        owner asked about too many unknown ids this minute.

        Raises:
            UnknownCrewError: ``crew`` names no crew.
            UpstreamError: a crew could not be asked (and none knew the run).
            LedgerError: the adopted run could not be recorded.
        """
        # Only crews the caller may use (team deployments limit crews per member); another is as unknown as none.
        usable = [c for c in self.registry.crews.values() if caller.may_use(c.name)]
        crews = [self.registry.for_caller(crew, caller)] if crew else usable[:ADOPT_MAX_CREWS]
        if not self._may_look_up(caller.owner):
            logger.warning("adoption lookups paused for an owner who asked about too many unknown kickoff_ids")
            return None
        failures: list[tuple[Crew, e.CrewAPIError]] = []
        with anyio.move_on_after(within) as bound:
            for c in crews:
                try:
                    status = await c.client.status(kickoff_id)
                except e.CrewAPIError as exc:
                    failures.append((c, exc))
                    continue
                if status.state not in (ExecutionState.NOT_FOUND, ExecutionState.UNKNOWN):
                    return await self._record(kickoff_id, caller, c.name, status)
        if failures:
            failed, why = failures[0]
            raise e.UpstreamError.from_api(why, crew=failed.name, action=f"look up run {kickoff_id}")
        if bound.cancelled_caught:
            raise e.UpstreamError(f"The crews did not answer within {within:g} s when asked about run {kickoff_id}.")
        return None

    async def _record(self, kickoff_id: str, caller: Caller, crew: str, status: ExecutionStatus) -> RunRecord | None:
        now = self.clock.now()
        record = RunRecord(
            request_id=uuid.uuid4().hex,
            crew=crew,
            conversation_id=caller.conversation_id,
            owner=caller.owner,
            created_at=now,
            updated_at=now,
            started_outside=True,
        )
        record = apply_status(apply_confirm(record, kickoff_id, now), status, now)
        try:
            await self.ledger.create(record)
        except e.LedgerError:  # adopted at the same moment by another call: theirs, if it is the caller's, wins
            return await self.ledger.get(kickoff_id, owner=caller.owner)
        logger.info("adopted run %s of crew %s, started outside crew-mcp", kickoff_id, crew)
        return record

    def _may_look_up(self, owner: str) -> bool:
        """A sliding minute of lookups per owner (the owners tracked are bounded too)."""
        now = self.clock.now()
        seen = self._lookups.pop(owner, None) or deque()
        while seen and now - seen[0] > timedelta(minutes=1):
            seen.popleft()
        self._lookups[owner] = seen
        while len(self._lookups) > _OWNERS:
            self._lookups.popitem(last=False)
        if len(seen) >= ADOPT_PER_MINUTE:
            return False
        seen.append(now)
        return True
