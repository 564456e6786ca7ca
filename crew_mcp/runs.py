"""The run tracker: finding a caller's run, and the one path by which a run's status changes.

Every status change goes through :class:`RunTracker`: a read of the crew's status API (on demand, or by
the shared poll loop of :mod:`crew_mcp.watch`), a webhook, or a decision. It merges what it learned into
the ledger (only when something changed, never erasing what was known), hands the fresh record to waiters,
and tells subscribers.

Every change goes out through the fleet's fan-out (:mod:`crew_mcp.fleet`): :meth:`RunTracker.apply` is what each
replica, this one included, does with it. That is also what keeps running records cached in memory true.

A kickoff_id the ledger does not know may be a run started elsewhere: :meth:`RunTracker.find_or_adopt` hands it
to :mod:`crew_mcp.adoption`, unless the ledger holds it for another owner.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from . import errors as e
from .adoption import Adopter
from .clock import Clock
from .crews import CrewRegistry
from .fleet import Change, Fleet
from .identity import Caller
from .ids import REQUEST_ID_META_KEY, is_kickoff_id, validate_kickoff_id
from .ledger import Decision, Ledger, RecordState, RunRecord, Stop
from .ledger.records import merge_status
from .models import ExecutionStatus, PendingHumanInput
from .statuses import (
    changed,
    crew_webhook_status,
    is_human_request,
    live,
    merge_pending,
    shown,
    state_changed,
    text_of,
)
from .watch import POLL_INITIAL, Observation, OnUpdate, StatusHub

__all__ = ["NoAnswerYet", "OnChange", "OnPause", "RunTracker", "not_found"]

logger = logging.getLogger(__name__)

OnChange = Callable[[str], Awaitable[None]]
"""Told the kickoff_id of a run whose state, progress or pending task changed (subscriptions)."""
OnPause = Callable[[RunRecord], None]
"""Told, synchronously, of a saved record that waits for review now (reviewer notices); it must not block."""

FRESH_KEPT = 1024
"""How many recent status reads a tracker keeps for reuse within ``fresh_for`` (records themselves are kept by
:mod:`crew_mcp.fleet.cache`)."""
FRESH_FOR = 0.0
"""Default seconds a status read from the crew (here, or by another replica's poll) answers a no-wait status call
without a new read (``CREW_MCP_STATUS_FRESH``). Off by default: every no-wait call asks the crew, as a user expects;
a change learned meanwhile (a webhook, a decision, another replica's poll) replaces or drops it at once."""


class NoAnswerYet(Exception):
    """A wait ended before the crew answered a single status read (its status API stalls)."""


class RunTracker:
    """Finds runs for callers and keeps their status in the ledger (see the module docstring).

    Args:
        ledger: where records live.
        registry: the crews, to read a run's status from its crew.
        clock: stamps and poll intervals.
        on_change: told about every change subscribers should hear of.
        on_pause: told of every save that left the run waiting for review (a repeat is possible: it dedupes).
        poll_initial: the poll loop's first interval in seconds.
        adopt: look runs unknown to the ledger up at the crews (see :mod:`crew_mcp.adoption`).
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
        on_pause: OnPause | None = None,
        poll_initial: float = POLL_INITIAL,
        adopt: bool = True,
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
        self.adopter = Adopter(ledger, registry, clock) if adopt else None
        self._on_change = on_change
        self._on_pause = on_pause
        self._recent: OrderedDict[str, tuple[float, Observation]] = OrderedDict()
        self._fresh_for = fresh_for

    async def find(self, kickoff_id: str | None, caller: Caller) -> RunRecord:
        """The caller's record for ``kickoff_id`` (or for a kickoff's request id); with no id, the conversation's
        latest run.

        Raises:
            InvalidInputError: the kickoff_id is malformed.
            RunNotFoundError: nothing matches (another owner's run is reported exactly like an unknown one, unless the
                caller is an approver and the run waits for review).
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
        record, _ = await self._lookup(kickoff_id, caller)
        if record is None:
            raise not_found(kickoff_id)
        return record

    async def find_or_adopt(
        self, kickoff_id: str, caller: Caller, *, crew: str | None = None, within: float = 10.0
    ) -> tuple[RunRecord, bool]:
        """:meth:`find`, else the run adopted from the crew that knows it; True when it was adopted just now (its
        status is fresh from the crew). ``crew`` (else each crew in turn) is asked within ``within`` seconds.

        Raises:
            InvalidInputError, RunNotFoundError, LedgerError: see :meth:`find`.
            UnknownCrewError: ``crew`` names no crew.
            UpstreamError: the crews could not be asked.
        """
        if not kickoff_id:
            return await self.find(kickoff_id, caller), False
        record, held_by_other = await self._lookup(kickoff_id, caller)
        if record is not None:
            return record, False
        # Never for an id the ledger holds for another owner: no upstream call, and the same words.
        if self.adopter is None or held_by_other:
            raise not_found(kickoff_id)
        adopted = await self.adopter.adopt(kickoff_id, caller, crew, within)
        if adopted is None:
            raise not_found(kickoff_id)
        # Like any run the tracker learns about: remembered, and a reviewer told if it already waits for review.
        self._remember(adopted)
        self._paused(adopted)
        return adopted, True

    async def _lookup(self, kickoff_id: str, caller: Caller) -> tuple[RunRecord | None, bool]:
        """The caller's record for ``kickoff_id`` (or for a kickoff's request id), and whether the ledger holds that
        kickoff_id for another owner; one ledger read by kickoff_id whatever the owner (the cache first).

        Raises:
            InvalidInputError: the kickoff_id is malformed.
            LedgerError: the ledger could not be read.
        """
        validate_kickoff_id(kickoff_id)
        record = self._cache.get(kickoff_id)
        if record is not None and record.owner == caller.owner:
            return record, False
        held = await self.ledger.get(kickoff_id, owner=None)
        if held is not None and held.owner == caller.owner:
            self._remember(held)
            return held, False
        # An approver may read another's run only while it waits for a decision they may make.
        approvable = held is not None and held.state is RecordState.WAITING_FOR_HUMAN and caller.approver
        if held is not None and approvable and caller.may_decide(held.owner):
            return held, False
        by_request = await self.ledger.get_request(kickoff_id, owner=caller.owner)
        return by_request, held is not None and by_request is None

    def lost(self, record: RunRecord) -> e.RunLostError:
        """The error for a run the ledger holds but its crew says it does not know."""
        last = record.status_fetched_at or record.updated_at
        inputs = f" with inputs {', '.join(record.input_names)}" if record.input_names else ""
        return e.RunLostError(
            f"Crew {record.crew!r} no longer knows run {record.kickoff_id} (it answered 'not found'), though crew-mcp "
            f"started or followed it (last seen {record.state.value} at {last.isoformat(timespec='seconds')}). The "
            "crew may have expired it, or its URL now points at another deployment. Tell the user; if the result is "
            f"still wanted, start a new run (kickoff_crew(crew={record.crew!r}, ...){inputs}). list_executions "
            "shows your other runs."
        )

    async def observe(self, record: RunRecord, *, wait: float = 0.0, on_update: OnUpdate | None = None) -> Observation:
        """The run's current status, reading the crew unless the record is final; waits up to ``wait`` seconds.

        Raises:
            UpstreamError: the crew could not be asked.
            LedgerError: what changed could not be saved.
        """
        if not live(record):
            return Observation(shown(record), record)
        if wait <= 0 and (fresh := self._fresh(record)) is not None:
            return fresh
        try:
            if wait > 0:
                seen = await self.hub.wait(record, timeout=wait, on_update=on_update)
                if seen is None:  # the poll loop's read is still out: another read would only stall beside it
                    raise NoAnswerYet
                return seen
            return await self.refresh(record)
        except e.CrewAPIError as exc:
            note = "Call get_status again in a minute."
            raise e.UpstreamError.from_api(exc, crew=record.crew, action="read the run's status", note=note) from None

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
        upstream = merge_status(record.status, await crew.client.status(record.kickoff_id))
        if changed(record, upstream, self.clock.now()):
            saved = await self.ledger.save_status(record.kickoff_id, upstream, now=self.clock.now())
            if saved is not None:
                notify = state_changed(record, upstream)
                shown_now = merge_pending(saved.status or upstream, saved)
                await self._publish(Change(record.kickoff_id, saved, shown_now, notify=notify))
                if notify:
                    self._paused(saved)
                return Observation(shown_now, saved)
        observation = Observation(merge_pending(upstream, record), record)
        self._note(record.kickoff_id, observation)
        return observation

    async def webhook(self, record: RunRecord, kind: str, payload: dict[str, Any]) -> None:
        """Apply an authenticated webhook from the crew (task, step, crew, or human-input request).

        Raises:
            LedgerError: the change could not be saved.
        """
        assert record.kickoff_id is not None
        kickoff_id = record.kickoff_id
        payload = self.registry.get(record.crew).client.redact(payload)  # a crew may echo its token
        saved: RunRecord | None = None
        status: ExecutionStatus | None = None
        if is_human_request(kind, payload):
            task_id = text_of(payload.get("task_id") or payload.get("name")) or "unknown"
            pending = PendingHumanInput(task_id=task_id, output=text_of(payload.get("output")), since=self.clock.now())
            saved = await self.ledger.set_pending(kickoff_id, pending, now=self.clock.now())
            if saved is not None:
                self._paused(saved)
        elif kind == "crew":
            status = crew_webhook_status(kickoff_id, payload)
            saved = await self.ledger.save_status(kickoff_id, status, now=self.clock.now())
        # What the ledger made of it (merged), never the bare webhook: it carries no progress.
        await self._publish(Change(kickoff_id, saved, shown(saved) if saved is not None else None, poke=True))

    async def confirm_by_webhook(self, record: RunRecord, kickoff_id: str) -> RunRecord | None:
        """Confirm ``record`` (no kickoff_id yet) with the ``kickoff_id`` its own authenticated webhook names.

        Returns None when the id is not a usable kickoff_id.

        Raises:
            LedgerError: the record could not be confirmed.
        """
        if not is_kickoff_id(kickoff_id):
            return None
        confirmed = await self.ledger.confirm(record.request_id, kickoff_id)
        logger.info("run %s of request %s confirmed by the crew's webhook", kickoff_id, record.request_id)
        return confirmed

    async def claim(self, kickoff_id: str, payload: dict[str, Any], secret: str) -> RunRecord | None:
        """The record a webhook for an unrecorded ``kickoff_id`` belongs to, confirmed with that id; else None.

        A kickoff whose answer was lost (``may_have_started``) or is still on its way has no kickoff_id yet, but
        AMP echoes the kickoff's ``meta`` (and so crew-mcp's request id) in every webhook. Only the request's own
        webhook secret may claim it.

        Raises:
            LedgerError: the record could not be confirmed.
        """
        meta = payload.get("meta")
        request_id = meta.get(REQUEST_ID_META_KEY) if isinstance(meta, dict) else None
        if not isinstance(request_id, str) or not request_id or not is_kickoff_id(kickoff_id):
            return None
        record = await self.ledger.get_request(request_id, owner=None)
        expected = record.webhook_secret if record is not None else None
        if record is None or record.kickoff_id is not None or not expected:
            return None
        if not secrets.compare_digest(expected.encode(), secret.encode(errors="replace")):
            return None
        return await self.confirm_by_webhook(record, kickoff_id)

    async def decide(self, kickoff_id: str, decision: Decision) -> RunRecord | None:
        """Record a decision the crew accepted, and wake the run's poll loop: the crew acts on it next.

        Raises:
            LedgerError: the decision could not be saved.
        """
        saved = await self.ledger.add_decision(kickoff_id, decision, now=self.clock.now())
        await self._publish(Change(kickoff_id, saved, poke=True))
        return saved

    async def stopped(self, kickoff_id: str, stop: Stop) -> RunRecord | None:
        """Record a stop the crew answered; a carried-out one ends the run's watch at once with ``cancelled``.

        Raises:
            LedgerError: the stop could not be saved.
        """
        saved = await self.ledger.add_stop(kickoff_id, stop, now=self.clock.now())
        await self._publish(Change(kickoff_id, saved, shown(saved) if saved is not None else None, poke=True))
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
        """What the crew said less than ``fresh_for`` s ago, if nothing changed the record since."""
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
        while len(self._recent) > FRESH_KEPT:
            self._recent.popitem(last=False)

    def forget_live(self) -> None:
        """Forget every cached running record (the fan-out may have missed changes)."""
        self._cache.forget_live()

    async def _publish(self, change: Change) -> None:
        await self.fleet.fanout.publish(change)

    def _paused(self, saved: RunRecord) -> None:
        if self._on_pause is not None and saved.state is RecordState.WAITING_FOR_HUMAN and saved.pending is not None:
            self._on_pause(saved)

    async def _tell(self, kickoff_id: str) -> None:
        if self._on_change is not None:
            await self._on_change(kickoff_id)

    def _remember(self, record: RunRecord | None) -> None:
        """Keep records in memory: finished ones never change; running ones stay true through the fan-out."""
        self._cache.put(record)


def not_found(kickoff_id: str) -> e.RunNotFoundError:
    """The refusal for an id the caller may not see: the same words whether it is unknown or another owner's."""
    return e.RunNotFoundError(
        f"No run with kickoff_id {kickoff_id!r} is known to crew-mcp for you. "
        "Call list_executions to see your runs (kickoff_ids are case-sensitive)."
    )
