"""What the inbox page shows a person, as one JSON document (``GET /approvals/api/state``).

* ``pending``: the runs waiting for a decision this person may make (``CrewService.pending_approvals``: their
  own, and with the approval rules everyone's for an approver), each with the output to review;
* ``runs``: their own recent runs (progress, result, decisions and stops), so a decided run can be followed to
  its result;
* ``history``: decisions and stops on their runs, and the ones they made on others' runs (only the act itself:
  the run stays the other person's), newest first.

Nothing of another person's run is in it unless it waits for a decision this person may make. ``version`` changes
whenever anything shown changes, so the page re-renders only then.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from ..auth.config import readable_id
from ..identity import Caller
from ..ledger import RecordState, RunRecord
from ..service import CrewService
from ..statuses import live

__all__ = ["HISTORY_LIMIT", "RUNS_LIMIT", "InboxState", "Viewer", "build_state", "fingerprint", "owner_label"]

RUNS_LIMIT = 25
"""The person's own runs listed (newest first)."""
HISTORY_LIMIT = 60
"""Decisions and stops listed (newest first)."""
_ACTED_SCAN = 200
"""An approver's decisions on others' runs are found among this many newest runs of anyone."""


class Viewer(BaseModel):
    """Who the page is for and what they may do."""

    name: str
    principal: str
    kind: str
    approver: bool = False
    may_decide: bool = True
    may_stop: bool = True


class Pending(BaseModel):
    """A run waiting for this person's decision on one task's output."""

    kickoff_id: str
    crew: str
    task_id: str
    output: str = ""
    fingerprint: str = Field(description="Of the output: a decision names the output it was made on")
    round: int = Field(description="1 for the task's first review, 2 after one rejection, ...")
    owner: str = Field(description="'you', or whose run it is")
    yours: bool
    waiting_since: datetime | None = None
    expired: bool = False
    progress: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    earlier: list[dict[str, Any]] = Field(default_factory=list, description="Earlier decisions on this run")
    may_stop: bool = False


class Run(BaseModel):
    """One of this person's own runs."""

    kickoff_id: str
    crew: str
    state: str
    progress: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    result: str | None = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    may_stop: bool = False


class Event(BaseModel):
    """A decision or a stop, as the history lists it."""

    kind: str = Field(description="'decision' or 'stop'")
    kickoff_id: str
    crew: str
    at: datetime
    who: str = Field(description="'you', or who decided or stopped")
    by: str
    via: str
    task_id: str | None = None
    approve: bool | None = None
    feedback: str = ""
    outcome: str = ""


class InboxState(BaseModel):
    """The whole page's data."""

    viewer: Viewer
    policy: str
    poll_seconds: float
    pending: list[Pending]
    runs: list[Run]
    history: list[Event]
    version: str = ""


def fingerprint(output: str | None) -> str:
    """A short digest of an output under review."""
    return hashlib.sha256((output or "").encode()).hexdigest()[:16]


def owner_label(owner: str, viewer: str) -> str:
    """'you', or the readable part of another principal (the subject, the key's name, the local user)."""
    return "you" if owner == viewer else readable_id(owner)


async def build_state(
    service: CrewService, caller: Caller, viewer: Viewer, *, poll_seconds: float, refresh: bool = True
) -> InboxState:
    """The page's data for ``caller`` (see the module docstring).

    With ``refresh``, the running runs the caller may review are re-read from their crews first and overdue
    approvals expired (:meth:`CrewService.pending_approvals`); without, everything comes from the ledger.

    Raises:
        LedgerError: the ledger could not be read.
    """
    overdue: set[str] = set()
    if refresh:
        approvals = (await service.pending_approvals(caller)).approvals
        overdue = {a.kickoff_id for a in approvals if a.expired}
    waiting = await service.ledger.pending_approvals(owner=None if caller.approver else caller.owner)
    expiry = service.settings.approval_expiry_seconds
    now = service.clock.now()
    pending = []
    for r in waiting:
        if r.kickoff_id is None or r.pending is None or not caller.may_decide(r.owner):
            continue
        since = r.pending.since or r.updated_at
        expired = r.kickoff_id in overdue or bool(expiry and (now - since).total_seconds() > expiry)
        pending.append(_pending(r, caller, viewer, expired=expired))
    own = await service.ledger.list(owner=caller.owner, limit=RUNS_LIMIT)
    runs = [_run(r, viewer) for r in own if r.kickoff_id]
    events = [e for r in own for e in _events(r, caller.owner)]
    if caller.approver:
        seen = {r.kickoff_id for r in own}
        for r in await service.ledger.list(owner=None, limit=_ACTED_SCAN):
            if r.owner != caller.owner and r.kickoff_id not in seen:
                events += [e for e in _events(r, caller.owner) if e.who == "you"]
    events.sort(key=lambda e: e.at, reverse=True)
    state = InboxState(
        viewer=viewer,
        policy=service.settings.approval_policy,
        poll_seconds=poll_seconds,
        pending=pending,
        runs=runs,
        history=events[:HISTORY_LIMIT],
    )
    body = state.model_dump_json(exclude={"version"})
    state.version = hashlib.sha256(body.encode()).hexdigest()[:16]
    return state


def _progress(record: RunRecord) -> dict[str, Any]:
    status = record.status
    if status is None:
        return {}
    return status.progress.model_dump(exclude_none=True)


def _pending(record: RunRecord, caller: Caller, viewer: Viewer, *, expired: bool) -> Pending:
    assert record.kickoff_id is not None
    assert record.pending is not None
    task = record.pending.task_id
    yours = record.owner == caller.owner
    return Pending(
        kickoff_id=record.kickoff_id,
        crew=record.crew,
        task_id=task,
        output=record.pending.output or "",
        fingerprint=fingerprint(record.pending.output),
        round=1 + sum(1 for d in record.decisions if d.task_id == task),
        owner=owner_label(record.owner, caller.owner),
        yours=yours,
        waiting_since=record.pending.since or record.updated_at,
        expired=expired,
        progress=_progress(record),
        inputs=dict(record.inputs),
        earlier=[e.model_dump(mode="json") for e in _events(record, caller.owner)],
        may_stop=yours and viewer.may_stop,
    )


def _run(record: RunRecord, viewer: Viewer) -> Run:
    assert record.kickoff_id is not None
    status = record.status
    result = None
    if record.state is RecordState.COMPLETED and status is not None and status.output is not None:
        out = status.output
        result = out.text if out.text else (json.dumps(out.json_value, indent=2) if out.json_value else None)
    return Run(
        kickoff_id=record.kickoff_id,
        crew=record.crew,
        state=record.state.value,
        progress=_progress(record),
        inputs=dict(record.inputs),
        result=result,
        error=record.error or (status.error if status else None),
        created_at=record.created_at,
        updated_at=record.updated_at,
        may_stop=viewer.may_stop and live(record),
    )


def _events(record: RunRecord, viewer: str) -> list[Event]:
    kid = record.kickoff_id or record.request_id
    events = [
        Event(
            kind="decision",
            kickoff_id=kid,
            crew=record.crew,
            at=d.at,
            who=owner_label(d.actor, viewer) if d.by != "system" else "crew-mcp",
            by=d.by,
            via=d.via,
            task_id=d.task_id,
            approve=d.approve,
            feedback=d.feedback,
            outcome=d.outcome,
        )
        for d in record.decisions
    ]
    events += [
        Event(
            kind="stop",
            kickoff_id=kid,
            crew=record.crew,
            at=s.at,
            who=owner_label(s.actor, viewer),
            by=s.by,
            via=s.via,
            outcome=s.result,
            feedback=s.detail,
        )
        for s in record.stops
    ]
    return events
