"""The run tracker: finding a caller's run, and the one path by which a run's status changes.

Every status change goes through :class:`RunTracker`: a read of the crew's status API (on demand, or by
the shared poll loop of :mod:`crew_mcp.watch`), a webhook, or a decision. It merges what it learned into
the ledger (only when something changed), hands the fresh record to waiters, and tells subscribers.

Every change goes out through the fleet's fan-out (:mod:`crew_mcp.fleet`): :meth:`RunTracker.apply` is what each
replica, this one included, does with it. That is also what keeps running records cached in memory true.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from . import errors as e
from .client import validate_kickoff_id
from .clock import Clock
from .crews import CrewRegistry
from .fleet import Change, Fleet
from .identity import Caller
from .ledger import Decision, Ledger, RecordState, RunRecord
from .models import ExecutionState, ExecutionStatus, PendingHumanInput
from .normalize import normalize_status
from .watch import POLL_INITIAL, Observation, OnUpdate, StatusHub

__all__ = ["FINISHED_CACHE", "RESAVE_AFTER", "OnChange", "RunTracker", "live", "shown"]

logger = logging.getLogger(__name__)

OnChange = Callable[[str], Awaitable[None]]
"""Told the kickoff_id of a run whose state, progress or pending task changed (subscriptions)."""

FINISHED_CACHE = 1024
"""How many finished records a tracker keeps in memory (they never change; see :mod:`crew_mcp.fleet.cache`)."""
FRESH_FOR = 0.25
"""Default seconds a status read from the crew (here, or by another replica's poll) answers a no-wait status call
without a new read (``CREW_MCP_STATUS_FRESH``); a change learned meanwhile (a webhook, a decision, another replica's
poll) replaces or drops it at once."""
RESAVE_AFTER = 30.0
"""Seconds after which an unchanged status is saved again (keeps ``status_fetched_at`` honest)."""

_PENDING_WORDS = ("pending_human_input", "pending human input", "awaiting_human_input", "paused")


class RunTracker:
    """Finds runs for callers and keeps their status in the ledger (see the module docstring).

    Args:
        ledger: where records live.
        registry: the crews, to read a run's status from its crew.
        clock: stamps and poll intervals.
        on_change: told about every change subscribers should hear of.
        poll_initial: the poll loop's first interval in seconds.
        fleet: how changes, leases and cached records are shared with other replicas (default: this process only).
        fresh_for: see :data:`FRESH_FOR` (0: every no-wait status call reads the crew).
    """

    def __init__(
        self,
        ledger: Ledger,
        registry: CrewRegistry,
        clock: Clock,
        *,
        on_change: OnChange | None = None,
        poll_initial: float = POLL_INITIAL,
        fleet: Fleet | None = None,
        fresh_for: float = FRESH_FOR,
    ) -> None:
        self.ledger = ledger
        self.registry = registry
        self.clock = clock
        # fleet hooks (crew_mcp/fleet): changes fan out through apply(); the poll loops respect the leases
        self.fleet = fleet or Fleet.local()
        self.fleet.fanout.attach(self.apply)
        self._cache = self.fleet.cache()
        self.hub = StatusHub(
            self.refresh,
            clock,
            initial=poll_initial,
            leases=self.fleet.leases,
            follow=lambda r: Observation(shown(r), r),
        )
        self._on_change = on_change
        self._recent: OrderedDict[str, tuple[float, Observation]] = OrderedDict()
        self._fresh_for = fresh_for

    async def find(self, kickoff_id: str | None, caller: Caller) -> RunRecord:
        """The caller's record for ``kickoff_id``; with no id, the conversation's latest run.

        Raises:
            InvalidInputError: the kickoff_id is malformed.
            RunNotFoundError: nothing matches (another owner's run is reported exactly like an unknown one).
            LedgerError: the ledger could not be read.
        """
        if not kickoff_id:
            latest = await self.ledger.latest(owner=caller.owner, conversation_id=caller.conversation_id)
            if latest is None:
                raise e.RunNotFoundError(
                    f"This conversation ({caller.conversation_id}) has no runs yet. Call list_executions to find runs "
                    "from other conversations and pass their kickoff_id, or kickoff_crew to start one."
                )
            return latest
        validate_kickoff_id(kickoff_id)
        record = self._cache.get(kickoff_id)
        if record is None or record.owner != caller.owner:
            record = await self.ledger.get(kickoff_id, owner=caller.owner)
            self._remember(record)
        if record is None:
            raise e.RunNotFoundError(
                f"No run with kickoff_id {kickoff_id!r} is known to crew-mcp for you. "
                "Call list_executions to see your runs (kickoff_ids are case-sensitive)."
            )
        return record

    async def observe(self, record: RunRecord, *, wait: float = 0.0, on_update: OnUpdate | None = None) -> Observation:
        """The run's current status, reading the crew unless the record is final; waits up to ``wait`` seconds.

        Raises:
            UpstreamError: the crew could not be asked.
            LedgerError: what changed could not be saved.
        """
        if not live(record):
            return Observation(shown(record), record)
        if wait <= 0 and (seen := self._fresh(record)) is not None:
            return seen
        try:
            if wait > 0:
                seen = await self.hub.wait(record, timeout=wait, on_update=on_update)
                if seen is not None:
                    return seen
            return await self.refresh(record)
        except e.CrewAPIError as exc:
            raise e.UpstreamError.from_api(exc, crew=record.crew, action="read the run's status") from None

    async def refresh(self, record: RunRecord) -> Observation:
        """Read the run's status from its crew, save it when it changed, and tell subscribers.

        An unchanged status is written again only after :data:`RESAVE_AFTER` seconds, so polling a long run
        does not cost a ledger write (or read) per poll.

        Raises:
            CrewAPIError: the crew could not be asked.
            LedgerError: the change could not be saved.
        """
        assert record.kickoff_id is not None
        crew = self.registry.get(record.crew)
        upstream = await crew.client.status(record.kickoff_id)
        if _changed(record, upstream, self.clock.now()):
            saved = await self.ledger.save_status(record.kickoff_id, upstream, now=self.clock.now())
            if saved is not None:
                shown_now = _merge_pending(upstream, saved)
                notify = _state_changed(record, upstream)
                await self._publish(Change(record.kickoff_id, saved, shown_now, notify=notify))
                return Observation(shown_now, saved)
        observation = Observation(_merge_pending(upstream, record), record)
        self._note(record.kickoff_id, observation)
        return observation

    async def webhook(self, record: RunRecord, kind: str, payload: dict[str, Any]) -> None:
        """Apply an authenticated webhook from the crew (task, step, crew, or human-input request).

        Raises:
            LedgerError: the change could not be saved.
        """
        assert record.kickoff_id is not None
        kickoff_id = record.kickoff_id
        saved: RunRecord | None = None
        status: ExecutionStatus | None = None
        if _is_human_request(kind, payload):
            task_id = _text(payload.get("task_id") or payload.get("name")) or "unknown"
            pending = PendingHumanInput(task_id=task_id, output=_text(payload.get("output")), since=self.clock.now())
            saved = await self.ledger.set_pending(kickoff_id, pending, now=self.clock.now())
        elif kind == "crew":
            status = _crew_webhook_status(kickoff_id, payload)
            saved = await self.ledger.save_status(kickoff_id, status, now=self.clock.now())
        await self._publish(Change(kickoff_id, saved, status if saved is not None else None, poke=True))

    async def decide(self, kickoff_id: str, decision: Decision) -> RunRecord | None:
        """Record a decision the crew accepted, and wake the run's poll loop: the crew acts on it next.

        Raises:
            LedgerError: the decision could not be saved.
        """
        saved = await self.ledger.add_decision(kickoff_id, decision, now=self.clock.now())
        await self._publish(Change(kickoff_id, saved, poke=True))
        return saved

    async def apply(self, change: Change) -> None:
        """What every replica does with a change (its own and, through the fan-out, the others'): keep the
        record, hand it to the run's waiters (poking the poll loop for webhooks and decisions), tell subscribers."""
        if change.record is not None:
            self._remember(change.record)
            observation = Observation(change.status or shown(change.record), change.record)
            self.hub.push(change.kickoff_id, observation, poke=change.poke)
            if change.poke or change.status is None:  # a webhook or a decision: the next look asks the crew
                self._recent.pop(change.kickoff_id, None)
            else:  # what a poll just read (here or on another replica)
                self._note(change.kickoff_id, observation)
        else:
            self._recent.pop(change.kickoff_id, None)
            self._cache.forget(change.kickoff_id)
            if change.poke:
                self.hub.push(change.kickoff_id)
        if change.notify:
            await self._tell(change.kickoff_id)

    def _fresh(self, record: RunRecord) -> Observation | None:
        """What the crew said less than :data:`FRESH_FOR` s ago, if nothing changed the record since."""
        assert record.kickoff_id is not None
        entry = self._recent.get(record.kickoff_id)
        if entry is None or time.monotonic() - entry[0] > self._fresh_for:
            return None
        if entry[1].record.updated_at != record.updated_at:  # the ledger moved on (e.g. another process wrote it)
            return None
        return entry[1]

    def _note(self, kickoff_id: str, observation: Observation) -> None:
        if self._fresh_for <= 0:
            return
        self._recent[kickoff_id] = (time.monotonic(), observation)
        self._recent.move_to_end(kickoff_id)
        while len(self._recent) > FINISHED_CACHE:
            self._recent.popitem(last=False)

    def forget_live(self) -> None:
        """Forget every cached running record (the fan-out may have missed changes)."""
        self._cache.forget_live()

    async def _publish(self, change: Change) -> None:
        await self.fleet.fanout.publish(change)

    async def _tell(self, kickoff_id: str) -> None:
        if self._on_change is not None:
            await self._on_change(kickoff_id)

    def _remember(self, record: RunRecord | None) -> None:
        """Keep records in memory: finished ones never change; running ones stay true through the fan-out."""
        self._cache.put(record)


def live(record: RunRecord) -> bool:
    """True when the run's crew may still have news: it was started and has not finished."""
    if record.kickoff_id is None or record.state in (RecordState.UNCONFIRMED, RecordState.KICKOFF_FAILED):
        return False
    return record.status is None or not record.status.terminal


def shown(record: RunRecord) -> ExecutionStatus:
    """The status to show from the ledger alone: the last one read (with a webhook's pause merged), or the record's
    own state when the crew was never asked."""
    if record.status is not None:
        return _merge_pending(record.status, record)
    try:
        state = ExecutionState(record.state.value)
    except ValueError:  # unconfirmed or kickoff_failed: nothing upstream to show
        state = ExecutionState.UNKNOWN
    return ExecutionStatus(kickoff_id=record.kickoff_id or record.request_id, state=state, pending=record.pending)


def _changed(record: RunRecord, status: ExecutionStatus, now: datetime) -> bool:
    """True when ``status`` says something the ledger does not have yet (ignoring the raw body's timestamps)."""
    last = record.status
    if last is None or record.status_fetched_at is None or record.state.value != status.state.value:
        return True
    if now - record.status_fetched_at > timedelta(seconds=RESAVE_AFTER):
        return True
    return last.model_dump(exclude={"raw"}) != status.model_dump(exclude={"raw"})


def _state_changed(record: RunRecord, status: ExecutionStatus) -> bool:
    """True when subscribers should hear about it: the state, the progress or the pending task moved."""
    last = record.status
    if last is None:
        return True
    return (last.state, last.progress, last.pending) != (status.state, status.progress, status.pending)


def _merge_pending(status: ExecutionStatus, record: RunRecord) -> ExecutionStatus:
    """What to show: the ledger's pause (announced by webhook, which the documented status shape never reports)
    holds while the status API still says "running"; the ledger decides when it ends (see ``apply_status``)."""
    waiting = record.state is RecordState.WAITING_FOR_HUMAN and record.pending is not None
    if not waiting or status.state is not ExecutionState.RUNNING:
        return status
    return status.model_copy(update={"state": ExecutionState.WAITING_FOR_HUMAN, "pending": record.pending})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _is_human_request(kind: str, payload: dict[str, Any]) -> bool:
    if kind == "human":
        return True
    status = str(payload.get("status") or payload.get("event") or "").lower()
    return kind == "task" and any(w in status for w in _PENDING_WORDS)


def _crew_webhook_status(kickoff_id: str, payload: dict[str, Any]) -> ExecutionStatus:
    """The final status a crew webhook reports (its ``status`` word, else success)."""
    body = {key: payload.get(key) for key in ("result", "result_json", "error", "token_usage")}
    body["state"] = str(payload.get("status") or "SUCCESS")
    status = normalize_status(kickoff_id, body)
    if status.state is ExecutionState.UNKNOWN:
        status = normalize_status(kickoff_id, {**body, "state": "SUCCESS"})
    return status
