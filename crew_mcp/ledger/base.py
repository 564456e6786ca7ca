"""The storage interface every ledger backend implements, and the base class that owns what they share.

A backend supplies the primitives (``create_many``, ``confirm``, ``mark_failed``, ``get``, ``get_request``,
``list``, ``prune``, ``aclose`` and one atomic read-modify-write, ``_update_kickoff``); :class:`LedgerBase` builds
``create``, ``latest``, ``pending_approvals`` and the per-execution updates on them.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from crew_mcp.ledger.records import (
    Decision,
    RecordState,
    RunRecord,
    Stop,
    apply_claim,
    apply_decision,
    apply_pending,
    apply_status,
    apply_stop,
    is_pending_approval,
    utcnow,
)
from crew_mcp.models import ExecutionStatus, PendingHumanInput

__all__ = ["Ledger", "LedgerBase"]


@runtime_checkable
class Ledger(Protocol):
    """The storage interface every backend implements (see :mod:`crew_mcp.ledger` for the write order).

    Methods keyed by ``kickoff_id`` return None for an unknown kickoff_id. Methods keyed by ``request_id``
    raise :class:`LedgerError` for an unknown one. Every backend failure raises :class:`LedgerError`.
    """

    async def create(self, record: RunRecord) -> None:
        """Store a new record (before ``POST /kickoff``); a duplicate request_id raises LedgerError."""
        ...

    async def create_many(self, records: Iterable[RunRecord]) -> None:
        """Store many new records at once (bulk import); all or none are stored."""
        ...

    async def confirm(self, request_id: str, kickoff_id: str) -> RunRecord:
        """Attach the kickoff_id AMP returned and move the record to ``running``."""
        ...

    async def mark_failed(self, request_id: str, error: str, *, may_have_started: bool = False) -> None:
        """Record that the kickoff failed: ``kickoff_failed`` (no run started), or ``may_have_started`` when the crew
        may have received it. A record already confirmed with a kickoff_id is left as it is."""
        ...

    async def get(self, kickoff_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a run, or None; a record is visible only to its owner (None owner: internal access)."""
        ...

    async def get_request(self, request_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a kickoff request (confirmed or not), or None; visible only to its owner."""
        ...

    async def save_status(
        self, kickoff_id: str, status: ExecutionStatus, *, now: datetime | None = None
    ) -> RunRecord | None:
        """Store the last fetched status (as of ``now``, default the system time); state and pending follow it."""
        ...

    async def set_pending(
        self, kickoff_id: str, pending: PendingHumanInput | None, *, now: datetime | None = None
    ) -> RunRecord | None:
        """Set (or clear, with None) the human input the run waits for."""
        ...

    async def add_decision(
        self, kickoff_id: str, decision: Decision, *, now: datetime | None = None
    ) -> RunRecord | None:
        """Append a resume decision and clear the pending human input."""
        ...

    async def add_stop(self, kickoff_id: str, stop: Stop, *, now: datetime | None = None) -> RunRecord | None:
        """Append a stop the crew answered; a carried-out stop makes the run ``cancelled``."""
        ...

    async def claim_notice(self, kickoff_id: str, key: str) -> bool:
        """Atomically claim the reviewer notice of pause ``key`` (see ``pause_key``); True only for the one caller,
        in any process sharing this ledger, that may send it, and only while the run still waits in that pause."""
        ...

    async def list(
        self,
        *,
        owner: str | None,
        conversation_id: str | None = None,
        crew: str | None = None,
        state: str | None = None,
        limit: int = 20,
    ) -> builtins.list[RunRecord]:
        """The owner's records, newest first (by ``created_at``), filtered; ``owner=None``: every owner's (internal
        use: what approvers may review)."""
        ...

    async def latest(self, *, owner: str, conversation_id: str) -> RunRecord | None:
        """The newest record of one conversation."""
        ...

    async def pending_approvals(self, *, owner: str | None) -> builtins.list[RunRecord]:
        """Records waiting for a human decision (state ``waiting_for_human`` with a pending task), newest first;
        ``owner=None``: every owner's."""
        ...

    async def prune(self, *, max_age: timedelta, max_count: int, now: datetime | None = None) -> int:
        """Delete records not updated within ``max_age`` of ``now`` and all but the newest ``max_count``; return how
        many were deleted."""
        ...

    async def aclose(self) -> None:
        """Release connections; the ledger is unusable afterwards."""
        ...

    async def ping(self) -> None:
        """Check that the store answers (one cheap round trip); raise LedgerError when it does not (readiness)."""
        ...

    async def pending_count(self) -> int:
        """How many runs of every owner wait for a human decision (the operator's gauge)."""
        ...


class LedgerBase:
    """What the backends share: a backend implements the primitives, this class the rest of :class:`Ledger`."""

    async def create_many(self, records: Iterable[RunRecord]) -> None:
        """Store many new records at once; all or none are stored (Redis: per chunk)."""
        raise NotImplementedError

    async def list(
        self,
        *,
        owner: str | None,
        conversation_id: str | None = None,
        crew: str | None = None,
        state: str | None = None,
        limit: int = 20,
    ) -> builtins.list[RunRecord]:
        """The owner's records, newest first (by ``created_at``), filtered; ``owner=None``: every owner's (internal
        use: what approvers may review)."""
        raise NotImplementedError

    async def _update_kickoff(self, kickoff_id: str, change: Callable[[RunRecord], RunRecord]) -> RunRecord | None:
        """Atomically replace the record of ``kickoff_id`` by ``change(record)``; None when there is none."""
        raise NotImplementedError

    async def pending_count(self) -> int:
        """How many runs of every owner wait for a human decision."""
        raise NotImplementedError

    async def ping(self) -> None:
        """Check that the store answers: one small read (backends with a cheaper check override it)."""
        await self.list(owner="", limit=1)

    async def create(self, record: RunRecord) -> None:
        """Store a new record; a duplicate request_id or kickoff_id raises LedgerError."""
        await self.create_many([record])

    async def latest(self, *, owner: str, conversation_id: str) -> RunRecord | None:
        """The newest record of one conversation."""
        found = await self.list(owner=owner, conversation_id=conversation_id, limit=1)
        return found[0] if found else None

    async def pending_approvals(self, *, owner: str | None) -> builtins.list[RunRecord]:
        """Records waiting for a human decision, newest first (``owner=None``: every owner's)."""
        waiting = await self.list(owner=owner, state=RecordState.WAITING_FOR_HUMAN.value, limit=sys.maxsize)
        return [r for r in waiting if is_pending_approval(r)]

    async def save_status(
        self, kickoff_id: str, status: ExecutionStatus, *, now: datetime | None = None
    ) -> RunRecord | None:
        """Store the last fetched status, as of ``now`` (see :func:`~crew_mcp.ledger.records.apply_status`)."""
        return await self._update_kickoff(kickoff_id, lambda r: apply_status(r, status, now or utcnow()))

    async def set_pending(
        self, kickoff_id: str, pending: PendingHumanInput | None, *, now: datetime | None = None
    ) -> RunRecord | None:
        """Set or clear the pending human input, as of ``now``."""
        return await self._update_kickoff(kickoff_id, lambda r: apply_pending(r, pending, now or utcnow()))

    async def add_decision(
        self, kickoff_id: str, decision: Decision, *, now: datetime | None = None
    ) -> RunRecord | None:
        """Append a decision and clear the pending human input, as of ``now``."""
        return await self._update_kickoff(kickoff_id, lambda r: apply_decision(r, decision, now or utcnow()))

    async def add_stop(self, kickoff_id: str, stop: Stop, *, now: datetime | None = None) -> RunRecord | None:
        """Append a stop the crew answered, as of ``now`` (see :func:`~crew_mcp.ledger.records.apply_stop`)."""
        return await self._update_kickoff(kickoff_id, lambda r: apply_stop(r, stop, now or utcnow()))

    async def claim_notice(self, kickoff_id: str, key: str) -> bool:
        """Claim the reviewer notice of pause ``key`` inside the backend's atomic read-modify-write (SQLite's write
        lock, Redis's WATCH/MULTI), so two replicas, or a process and its restart, never both send it."""
        claimed = False

        def claim(record: RunRecord) -> RunRecord:
            nonlocal claimed  # the last run of ``claim`` is the one stored (Redis replays it on a conflict)
            updated = apply_claim(record, key)
            claimed = updated is not None
            return updated or record

        await self._update_kickoff(kickoff_id, claim)
        return claimed
