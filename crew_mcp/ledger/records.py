"""What the run ledger stores: :class:`RunRecord` and the pure rules of every update to it.

The ``apply_*`` functions hold the semantics of each update, so the backends only differ in how they read and
write a record atomically.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from crew_mcp.errors import LedgerError
from crew_mcp.models import ExecutionState, ExecutionStatus, FinalOutput, PendingHumanInput, Progress, WebhookUrls

__all__ = [
    "Decision",
    "RecordState",
    "RunRecord",
    "Stop",
    "apply_claim",
    "apply_confirm",
    "apply_decision",
    "apply_failed",
    "apply_pending",
    "apply_status",
    "apply_stop",
    "check_prune_args",
    "is_pending_approval",
    "matches",
    "merge_status",
    "micros",
    "pause_key",
    "utcnow",
    "visible",
]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UTCDateTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalized to UTC (naive datetimes are refused)."""


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class RecordState(StrEnum):
    """A record's state: every :class:`~crew_mcp.models.ExecutionState` plus the kickoff-time states.

    ``unconfirmed``: the kickoff request is on its way (or crew-mcp stopped before the answer came).
    ``kickoff_failed``: the crew refused the kickoff, or it never left: no run was started.
    ``may_have_started``: the crew may have received the kickoff but its answer was lost or unreadable, so a run
    may exist whose kickoff_id crew-mcp does not know.
    """

    UNCONFIRMED = "unconfirmed"
    KICKOFF_FAILED = "kickoff_failed"
    MAY_HAVE_STARTED = "may_have_started"
    RUNNING = "running"
    WAITING_FOR_HUMAN = "waiting_for_human"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


class Decision(BaseModel):
    """One answer to a human-input request: who approved or rejected which task, how and when."""

    task_id: str = Field(description="The task decided on")
    approve: bool = Field(description="True: approved; false: sent back with the feedback")
    feedback: str = Field(description="The feedback sent to the crew")
    by: Literal["model", "human", "system"] = Field(description='"system": crew-mcp itself (approval expiry)')
    via: str = Field(description='"tool", "elicitation", "app", "cli" or "expiry"')
    actor: str = Field(description="The owner or principal on whose behalf it was decided")
    at: UTCDateTime = Field(default_factory=utcnow, description="When it was decided")
    outcome: Literal["applied", "unknown"] = Field(
        default="applied",
        description='"unknown": the crew\'s answer was lost, so it may or may not have acted on the decision',
    )


StopResult = Literal["stopped", "already_ended", "refused", "unsupported"]


class Stop(BaseModel):
    """One request to stop a run (``POST /stop``) that the crew answered: who asked, how, when, and what came of it."""

    result: StopResult = Field(
        description='"stopped"; "already_ended" (it had finished first); "refused" (the crew said no); '
        '"unsupported" (the deployment has no stop endpoint)'
    )
    detail: str = Field(default="", description="The crew's own words, when it said more")
    by: Literal["model", "human", "system"] = Field(description="Who asked: the model, a person, or crew-mcp")
    via: str = Field(description='"tool", "elicitation", "cli", ...')
    actor: str = Field(description="The owner or principal on whose behalf it was asked")
    at: UTCDateTime = Field(default_factory=utcnow, description="When the crew answered")


class RunRecord(BaseModel):
    """Everything the ledger knows about one run.

    ``request_id`` is the client's id (the key before AMP answers); ``kickoff_id`` is None until confirmed.
    ``inputs`` is ``{}`` when the configuration keeps only ``input_names``. ``started_outside`` marks a run
    started elsewhere (the AMP dashboard, a script) and adopted when its owner asked about it: its inputs are
    unknown.
    """

    request_id: str
    kickoff_id: str | None = None
    crew: str
    conversation_id: str
    owner: str
    inputs: dict[str, str] = Field(default_factory=dict)
    input_names: builtins.list[str] = Field(default_factory=builtins.list)
    meta: dict[str, Any] = Field(default_factory=dict)
    webhooks: WebhookUrls | None = None
    webhook_secret: str | None = None
    created_at: UTCDateTime = Field(default_factory=utcnow)
    updated_at: UTCDateTime = Field(default_factory=utcnow)
    state: RecordState = RecordState.UNCONFIRMED
    status: ExecutionStatus | None = None
    status_fetched_at: UTCDateTime | None = None
    pending: PendingHumanInput | None = None
    decisions: builtins.list[Decision] = Field(default_factory=builtins.list)
    error: str | None = None
    stops: builtins.list[Stop] = Field(default_factory=builtins.list)
    notified: builtins.list[str] = Field(
        default_factory=builtins.list, description="The pauses (pause_key) a reviewer notice was sent for"
    )
    started_outside: bool = False


def apply_confirm(record: RunRecord, kickoff_id: str, now: datetime) -> RunRecord:
    """The record confirmed with ``kickoff_id``; confirming again with the same id changes nothing.

    Raises:
        LedgerError: the record is already confirmed with another kickoff_id.
    """
    if record.kickoff_id == kickoff_id:
        return record
    if record.kickoff_id is not None:
        raise LedgerError(
            f"Run request {record.request_id!r} is already confirmed as kickoff {record.kickoff_id!r}, "
            f"not {kickoff_id!r}."
        )
    return record.model_copy(
        update={"kickoff_id": kickoff_id, "state": RecordState.RUNNING, "error": None, "updated_at": now}
    )


def apply_failed(record: RunRecord, error: str, now: datetime, *, may_have_started: bool = False) -> RunRecord:
    """The record marked ``kickoff_failed`` (no run started) or ``may_have_started``, with ``error``.

    A record already confirmed with a kickoff_id (a webhook told its id first) stays as it is: the run exists.
    """
    if record.kickoff_id is not None:
        return record
    state = RecordState.MAY_HAVE_STARTED if may_have_started else RecordState.KICKOFF_FAILED
    return record.model_copy(update={"state": state, "error": error, "updated_at": now})


def merge_status(old: ExecutionStatus | None, new: ExecutionStatus) -> ExecutionStatus:
    """``new``, keeping what ``old`` knew and ``new`` does not say: a status or webhook that brings less never erases
    progress, output or usage; the task count never goes down; a finished run stays finished as it finished."""
    if old is not None and old.terminal and new.state is not old.state:
        return old
    if old is not None:
        fields = Progress.model_fields
        progress = Progress(
            **{f: v if (v := getattr(new.progress, f)) is not None else getattr(old.progress, f) for f in fields}
        )
        if old.progress.completed is not None and new.progress.completed is not None:
            progress.completed = max(old.progress.completed, new.progress.completed)
        new = new.model_copy(
            update={
                "progress": progress,
                "output": _merge_output(old.output, new.output),
                "usage": new.usage or old.usage,
                "execution_time": new.execution_time if new.execution_time is not None else old.execution_time,
                "error": new.error or (old.error if new.state is ExecutionState.FAILED else None),
            }
        )
    p = new.progress
    if new.state is ExecutionState.COMPLETED and p.total is not None and (p.completed or 0) < p.total:
        new = new.model_copy(update={"progress": p.model_copy(update={"completed": p.total})})
    return new


def _merge_output(old: FinalOutput | None, new: FinalOutput | None) -> FinalOutput | None:
    if old is None or new is None:
        return new or old
    return FinalOutput(text=new.text or old.text, json=new.json_value or old.json_value, tasks=new.tasks or old.tasks)


def apply_status(record: RunRecord, status: ExecutionStatus, now: datetime) -> RunRecord:
    """The record with a freshly fetched status, merged with what it knew (:func:`merge_status`): state follows it,
    pending is kept only while waiting.

    A pending task that was already known keeps its ``since``; a new one gets ``now`` when it has none.
    """
    status = merge_status(record.status, status)
    pending = record.pending
    state = RecordState(status.state.value)
    if _webhook_pause_holds(record, status):
        # ``record.status`` is the status API's own last word: when it never reported this pause (documented
        # shape), the pause came from a webhook and "running" does not end it; a decision or a final state does.
        state = RecordState.WAITING_FOR_HUMAN
    elif status.state is ExecutionState.WAITING_FOR_HUMAN:
        if status.pending is not None:
            pending = _stamped(status.pending, record.pending, now)
    else:
        pending = None
    return record.model_copy(
        update={"status": status, "status_fetched_at": now, "state": state, "pending": pending, "updated_at": now}
    )


def _webhook_pause_holds(record: RunRecord, status: ExecutionStatus) -> bool:
    api_reported_pause = record.status is not None and record.status.state is ExecutionState.WAITING_FOR_HUMAN
    return (
        status.state is ExecutionState.RUNNING
        and record.pending is not None
        and record.state is RecordState.WAITING_FOR_HUMAN
        and not api_reported_pause
    )


def apply_pending(record: RunRecord, pending: PendingHumanInput | None, now: datetime) -> RunRecord:
    """The record with ``pending`` set; a pending task on a run that has not finished makes it ``waiting_for_human``."""
    update: dict[str, Any] = {"pending": None, "updated_at": now}
    if pending is not None:
        update["pending"] = _stamped(pending, record.pending, now)
        if record.state not in _FINAL_STATES:
            update["state"] = RecordState.WAITING_FOR_HUMAN
    return record.model_copy(update=update)


def apply_decision(record: RunRecord, decision: Decision, now: datetime) -> RunRecord:
    """The record with ``decision`` appended and the pending human input cleared.

    A run that was waiting for that decision goes back to ``running``: the crew acts on it next.
    """
    update: dict[str, Any] = {"decisions": [*record.decisions, decision], "pending": None, "updated_at": now}
    if record.state is RecordState.WAITING_FOR_HUMAN:
        update["state"] = RecordState.RUNNING
    if record.status is not None and record.status.state is ExecutionState.WAITING_FOR_HUMAN:
        # The last status read said "waiting": listings must not show that once the decision is taken.
        update["status"] = record.status.model_copy(update={"state": ExecutionState.RUNNING, "pending": None})
    return record.model_copy(update=update)


def apply_stop(record: RunRecord, stop: Stop, now: datetime) -> RunRecord:
    """The record with ``stop`` appended; a stop the crew carried out makes the run ``cancelled`` at once.

    The crew's status API may say so only a little later (or, in the documented shape, never): the ledger
    records what the crew answered, so the run shows cancelled from the moment it was stopped.
    """
    update: dict[str, Any] = {"stops": [*record.stops, stop], "updated_at": now}
    if stop.result == "stopped":
        last = record.status
        when = stop.at.isoformat(timespec="seconds")
        update.update(
            state=RecordState.CANCELLED,
            pending=None,
            status_fetched_at=now,
            status=ExecutionStatus(
                kickoff_id=record.kickoff_id or record.request_id,
                state=ExecutionState.CANCELLED,
                raw_state="stopped",
                message=f"Stopped by {stop.actor} ({stop.by} via {stop.via}) at {when}",
                progress=last.progress if last is not None else Progress(),
                usage=last.usage if last is not None else None,
            ),
        )
    return record.model_copy(update=update)


def pause_key(record: RunRecord) -> str | None:
    """The identity of the pause the run waits in, ``{kickoff_id}:{task_id}:{attempt}``, or None when it waits for
    nothing. The attempt counts the decisions already given on that task, so a rejected task that pauses again is a
    new pause, the same in every process that reads the record."""
    if not is_pending_approval(record) or record.kickoff_id is None or record.pending is None:
        return None
    task = record.pending.task_id
    attempt = 1 + sum(1 for d in record.decisions if d.task_id == task)
    return f"{record.kickoff_id}:{task}:{attempt}"


def apply_claim(record: RunRecord, key: str) -> RunRecord | None:
    """The record with the reviewer notice of pause ``key`` claimed, or None when it may not be sent: it was claimed
    before (by this process, another replica, or before a restart), or the run no longer waits in that pause."""
    if key in record.notified or pause_key(record) != key:
        return None
    return record.model_copy(update={"notified": [*record.notified, key]})


def is_pending_approval(record: RunRecord) -> bool:
    """True when the run waits for a human decision that has not been given yet."""
    return record.state is RecordState.WAITING_FOR_HUMAN and record.pending is not None


def visible(record_owner: str, owner: str | None) -> bool:
    """True when a record owned by ``record_owner`` may be shown to ``owner`` (``None``: internal access, any owner)."""
    return owner is None or record_owner == owner


def matches(
    record: RunRecord, *, owner: str | None, conversation_id: str | None, crew: str | None, state: str | None
) -> bool:
    """True when ``record`` passes the :meth:`Ledger.list` filters (``owner=None``: any owner)."""
    return (
        visible(record.owner, owner)
        and (conversation_id is None or record.conversation_id == conversation_id)
        and (crew is None or record.crew == crew)
        and (state is None or record.state.value == str(state))
    )


def check_prune_args(max_age: timedelta, max_count: int) -> None:
    """Refuse nonsensical retention settings.

    Raises:
        ValueError: ``max_age`` is negative or ``max_count`` is below zero.
    """
    if max_age < timedelta(0) or max_count < 0:
        raise ValueError(f"prune needs max_age >= 0 and max_count >= 0, got {max_age} and {max_count}")


def micros(value: datetime) -> int:
    """Microseconds since the epoch: an exact, orderable integer for indexes and sorted-set scores."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FINAL_STATES = frozenset(
    {RecordState.COMPLETED, RecordState.FAILED, RecordState.CANCELLED, RecordState.KICKOFF_FAILED}
)


def _stamped(pending: PendingHumanInput, previous: PendingHumanInput | None, now: datetime) -> PendingHumanInput:
    if pending.since is not None:
        return pending
    since = previous.since if previous is not None and previous.task_id == pending.task_id else None
    return pending.model_copy(update={"since": since or now})
