"""What a status read or a webhook means for a run's record: pure functions the run tracker applies.

Whether a run may still have news (:func:`live`), what to show from the ledger alone (:func:`shown`), whether a
status says something new (:func:`changed`, :func:`state_changed`), a webhook-announced pause that holds while the
status API says "running" (:func:`merge_pending`), and what a crew or human-input webhook reports.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .ledger import RecordState, RunRecord
from .models import ExecutionState, ExecutionStatus
from .normalize import normalize_status

__all__ = [
    "RESAVE_AFTER",
    "changed",
    "crew_webhook_status",
    "is_human_request",
    "live",
    "merge_pending",
    "shown",
    "state_changed",
    "text_of",
]

RESAVE_AFTER = 30.0
"""Seconds after which an unchanged status is saved again (keeps ``status_fetched_at`` honest)."""

_NOT_STARTED = (RecordState.UNCONFIRMED, RecordState.KICKOFF_FAILED, RecordState.MAY_HAVE_STARTED)
_PENDING_WORDS = ("pending_human_input", "pending human input", "awaiting_human_input", "paused")


def live(record: RunRecord) -> bool:
    """True when the run's crew may still have news: it was started and has not finished."""
    if record.kickoff_id is None or record.state in _NOT_STARTED:
        return False
    return record.status is None or not record.status.terminal


def shown(record: RunRecord) -> ExecutionStatus:
    """The status to show from the ledger alone: the last one read (with a webhook's pause merged), or the record's
    own state when the crew was never asked."""
    if record.status is not None:
        return merge_pending(record.status, record)
    try:
        state = ExecutionState(record.state.value)
    except ValueError:  # unconfirmed, kickoff_failed or may_have_started: nothing upstream to show
        state = ExecutionState.UNKNOWN
    return ExecutionStatus(kickoff_id=record.kickoff_id or record.request_id, state=state, pending=record.pending)


def changed(record: RunRecord, status: ExecutionStatus, now: datetime) -> bool:
    """True when ``status`` says something the ledger does not have yet (ignoring the raw body's timestamps)."""
    last = record.status
    if last is None or record.status_fetched_at is None or record.state.value != status.state.value:
        return True
    if now - record.status_fetched_at > timedelta(seconds=RESAVE_AFTER):
        return True
    return last.model_dump(exclude={"raw"}) != status.model_dump(exclude={"raw"})


def state_changed(record: RunRecord, status: ExecutionStatus) -> bool:
    """True when subscribers should hear about it: the state, the progress or the pending task moved."""
    last = record.status
    if last is None:
        return True
    return (last.state, last.progress, last.pending) != (status.state, status.progress, status.pending)


def merge_pending(status: ExecutionStatus, record: RunRecord) -> ExecutionStatus:
    """What to show: the ledger's pause (announced by webhook, which the documented status shape never reports)
    holds while the status API still says "running"; the ledger decides when it ends (see ``apply_status``)."""
    waiting = record.state is RecordState.WAITING_FOR_HUMAN and record.pending is not None
    if not waiting or status.state is not ExecutionState.RUNNING:
        return status
    return status.model_copy(update={"state": ExecutionState.WAITING_FOR_HUMAN, "pending": record.pending})


def text_of(value: Any) -> str | None:
    """A webhook field as text: a string as it is, anything else as ``str()``, None when absent."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def is_human_request(kind: str, payload: dict[str, Any]) -> bool:
    """True when a webhook asks for human input: a ``human`` webhook, or a ``task`` one whose status says it waits."""
    if kind == "human":
        return True
    status = str(payload.get("status") or payload.get("event") or "").lower()
    return kind == "task" and any(w in status for w in _PENDING_WORDS)


def crew_webhook_status(kickoff_id: str, payload: dict[str, Any]) -> ExecutionStatus:
    """The final status a crew webhook reports (its ``status`` word, else success)."""
    body = {key: payload.get(key) for key in ("result", "result_json", "error", "token_usage")}
    body["state"] = str(payload.get("status") or "SUCCESS")
    status = normalize_status(kickoff_id, body)
    if status.state is ExecutionState.UNKNOWN:
        status = normalize_status(kickoff_id, {**body, "state": "SUCCESS"})
    return status
