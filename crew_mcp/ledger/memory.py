"""An in-process ledger: dicts behind a lock. For tests, demos and single-process servers that may forget."""

from __future__ import annotations

import builtins
import heapq
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from crew_mcp.errors import LedgerError
from crew_mcp.ledger.base import LedgerBase
from crew_mcp.ledger.records import (
    RecordState,
    RunRecord,
    apply_confirm,
    apply_failed,
    check_prune_args,
    is_pending_approval,
    micros,
    utcnow,
    visible,
)

__all__ = ["MemoryLedger"]

_K = TypeVar("_K")


@dataclass(slots=True, frozen=True)
class _Entry:
    """One stored record: its JSON (so callers never share objects with the store) plus the indexed fields."""

    data: str
    owner: str
    conversation_id: str
    crew: str
    state: str
    created: int
    updated: int
    kickoff_id: str | None

    @classmethod
    def of(cls, record: RunRecord) -> _Entry:
        return cls(
            data=record.model_dump_json(),
            owner=record.owner,
            conversation_id=record.conversation_id,
            crew=record.crew,
            state=record.state.value,
            created=micros(record.created_at),
            updated=micros(record.updated_at),
            kickoff_id=record.kickoff_id,
        )

    def record(self) -> RunRecord:
        return RunRecord.model_validate_json(self.data)


class MemoryLedger(LedgerBase):
    """The :class:`~crew_mcp.ledger.Ledger` kept in this process's memory; it is gone when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._rows: dict[str, _Entry] = {}
        self._by_kickoff: dict[str, str] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._by_conversation: dict[tuple[str, str], set[str]] = {}

    async def create_many(self, records: Iterable[RunRecord]) -> None:
        """Store many new records at once (bulk import); all or none are stored."""
        self.create_many_sync(records)

    def create_many_sync(self, records: Iterable[RunRecord]) -> None:
        """Synchronous :meth:`create_many` (the store never blocks, so there is no thread to hop to)."""
        entries = [(r.request_id, _Entry.of(r)) for r in records]
        with self._lock:
            self._check_open()
            seen: set[str] = set()
            kickoffs: set[str] = set()
            for request_id, entry in entries:
                if request_id in self._rows or request_id in seen:
                    raise LedgerError(f"A run record with request id {request_id!r} already exists.")
                if entry.kickoff_id is not None and (
                    entry.kickoff_id in self._by_kickoff or entry.kickoff_id in kickoffs
                ):
                    raise LedgerError(f"A run record with kickoff id {entry.kickoff_id!r} already exists.")
                seen.add(request_id)
                if entry.kickoff_id is not None:
                    kickoffs.add(entry.kickoff_id)
            for request_id, entry in entries:
                self._put(request_id, entry)

    async def confirm(self, request_id: str, kickoff_id: str) -> RunRecord:
        """Attach the kickoff_id and move the record to ``running``; an unknown request_id raises LedgerError."""
        with self._lock:
            self._check_open()
            holder = self._by_kickoff.get(kickoff_id)
            if holder is not None and holder != request_id:
                raise LedgerError(f"A run record with kickoff id {kickoff_id!r} already exists.")
            return self._update_request(request_id, lambda r: apply_confirm(r, kickoff_id, utcnow()))

    async def mark_failed(self, request_id: str, error: str, *, may_have_started: bool = False) -> None:
        """Mark the record ``kickoff_failed`` or ``may_have_started``; an unknown request_id raises LedgerError."""
        with self._lock:
            self._check_open()
            self._update_request(
                request_id, lambda r: apply_failed(r, error, utcnow(), may_have_started=may_have_started)
            )

    async def prune(self, *, max_age: timedelta, max_count: int, now: datetime | None = None) -> int:
        """Delete records not updated within ``max_age`` of ``now`` and all but the newest ``max_count``."""
        check_prune_args(max_age, max_count)
        cutoff = micros((now or utcnow()) - max_age)
        with self._lock:
            self._check_open()
            newest = sorted(self._rows.items(), key=lambda kv: (kv[1].created, kv[0]), reverse=True)
            doomed = [rid for i, (rid, e) in enumerate(newest) if i >= max_count or e.updated < cutoff]
            for request_id in doomed:
                self._drop(request_id)
            return len(doomed)

    async def aclose(self) -> None:
        """Forget everything; the ledger is unusable afterwards."""
        with self._lock:
            self._closed = True
            self._rows.clear()
            self._by_kickoff.clear()
            self._by_owner.clear()
            self._by_conversation.clear()

    async def get(self, kickoff_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a run, or None (also when it belongs to another owner)."""
        with self._lock:
            self._check_open()
            request_id = self._by_kickoff.get(kickoff_id)
            entry = self._rows.get(request_id) if request_id is not None else None
        if entry is None or not visible(entry.owner, owner):
            return None
        return entry.record()

    async def get_request(self, request_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a kickoff request, or None (also when it belongs to another owner)."""
        with self._lock:
            self._check_open()
            entry = self._rows.get(request_id)
        if entry is None or not visible(entry.owner, owner):
            return None
        return entry.record()

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
        with self._lock:
            self._check_open()
            ids: Iterable[str]
            if owner is None:
                ids = self._rows.keys()
            elif conversation_id is not None:
                ids = self._by_conversation.get((owner, conversation_id), set())
            else:
                ids = self._by_owner.get(owner, set())
            rows = ((rid, self._rows[rid]) for rid in ids)
            hits = [
                (e.created, rid, e)
                for rid, e in rows
                if visible(e.owner, owner)
                and (conversation_id is None or e.conversation_id == conversation_id)
                and (crew is None or e.crew == crew)
                and (state is None or e.state == str(state))
            ]
        return [e.record() for _, _, e in heapq.nlargest(limit, hits, key=lambda h: (h[0], h[1]))]

    async def pending_count(self) -> int:
        """How many runs of every owner wait for a human decision."""
        with self._lock:
            self._check_open()
            waiting = [e for e in self._rows.values() if e.state == RecordState.WAITING_FOR_HUMAN.value]
        return sum(1 for e in waiting if is_pending_approval(e.record()))

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("The in-memory ledger is closed.")

    def _put(self, request_id: str, entry: _Entry) -> None:
        self._rows[request_id] = entry
        if entry.kickoff_id is not None:
            self._by_kickoff[entry.kickoff_id] = request_id
        self._by_owner.setdefault(entry.owner, set()).add(request_id)
        self._by_conversation.setdefault((entry.owner, entry.conversation_id), set()).add(request_id)

    def _drop(self, request_id: str) -> None:
        entry = self._rows.pop(request_id)
        if entry.kickoff_id is not None:
            self._by_kickoff.pop(entry.kickoff_id, None)
        _discard(self._by_owner, entry.owner, request_id)
        _discard(self._by_conversation, (entry.owner, entry.conversation_id), request_id)

    def _update_request(self, request_id: str, change: Callable[[RunRecord], RunRecord]) -> RunRecord:
        entry = self._rows.get(request_id)
        if entry is None:
            raise LedgerError(f"No run record with request id {request_id!r}.")
        updated = change(entry.record())
        self._put(request_id, _Entry.of(updated))
        return updated

    async def _update_kickoff(self, kickoff_id: str, change: Callable[[RunRecord], RunRecord]) -> RunRecord | None:
        with self._lock:
            self._check_open()
            request_id = self._by_kickoff.get(kickoff_id)
            if request_id is None:
                return None
            return self._update_request(request_id, change)


def _discard(index: dict[_K, set[str]], key: _K, request_id: str) -> None:
    ids = index[key]
    ids.discard(request_id)
    if not ids:
        del index[key]
