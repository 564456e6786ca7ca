"""Structured results of crew-mcp's tools and resources (their output schemas), and their text renderings.

Every view carries a ``next_step`` sentence written for a model: what to do with this result.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from .crews import InputInfo
from .ledger import Decision
from .models import FinalOutput, PendingHumanInput, Progress, Usage

__all__ = [
    "ApprovalList",
    "ApprovalView",
    "CrewInputs",
    "CrewList",
    "CrewSummary",
    "ExecutionList",
    "ResumeView",
    "RunView",
    "execution_uri",
]


def execution_uri(kickoff_id: str) -> str:
    """The resource URI of one execution's status."""
    return f"crew://executions/{kickoff_id}"


class CrewSummary(BaseModel):
    name: str
    description: str = ""
    simulated: bool = False
    inputs_uri: str
    typed_tool: str | None = Field(default=None, description="Name of the run_<crew> tool, when there is one")


class CrewList(BaseModel):
    crews: list[CrewSummary]
    simulated: bool = Field(description="True when these are the built-in simulator's crews (no crew configured)")
    note: str = ""

    def text(self) -> str:
        lines = [self.note] if self.note else []
        lines += [f"- {c.name}: {c.description}" for c in self.crews]
        return "\n".join(lines)


class CrewInputs(BaseModel):
    crew: str
    inputs: list[InputInfo]
    uri: str
    next_step: str

    def text(self) -> str:
        lines = [f"Inputs of crew {self.crew}:"]
        for i in self.inputs:
            extra: list[str] = []
            if i.type != "string":
                extra.append(i.type)
            if i.enum:
                extra.append("one of " + ", ".join(i.enum))
            if i.example is not None:
                extra.append(f"e.g. {i.example}")
            if not i.required:
                extra.append("optional")
            tail = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"- {i.name}{tail}: {i.description}".rstrip(": "))
        lines.append(self.next_step)
        return "\n".join(lines)


class RunView(BaseModel):
    """One run as the ledger and the crew know it."""

    kickoff_id: str | None = None
    request_id: str | None = None
    crew: str
    conversation_id: str | None = None
    state: str = Field(
        description="running | waiting_for_human | completed | failed | cancelled | not_found | unknown | "
        "unconfirmed (crew-mcp crashed or lost the answer during kickoff) | kickoff_failed"
    )
    raw_state: str | None = None
    message: str | None = None
    progress: Progress = Field(default_factory=Progress)
    pending: PendingHumanInput | None = None
    output: FinalOutput | None = None
    error: str | None = None
    usage: Usage | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    status_uri: str | None = None
    from_ledger: bool = Field(default=False, description="Served from the run ledger with no upstream call")
    decisions: list[Decision] = Field(default_factory=list)
    next_step: str = ""

    def text(self) -> str:
        head = f"Run {self.kickoff_id or '(no kickoff_id)'} of crew {self.crew}: {self.state}"
        p = self.progress
        if p.total:
            head += f" ({p.completed or 0}/{p.total} tasks"
            head += f", now {p.current_task}" if p.current_task and self.state == "running" else ""
            head += ")"
        lines = [head]
        if self.pending:
            lines.append(f"Waiting for review of task {self.pending.task_id}. Output to review:")
            lines.append(self.pending.output or "(the crew did not include the task output)")
        if self.output and self.output.text:
            lines.append("Final output:")
            lines.append(self.output.text)
        if self.error:
            lines.append(f"Error: {self.error}")
        if self.next_step:
            lines.append(self.next_step)
        return "\n".join(lines)


class ExecutionList(BaseModel):
    executions: list[RunView]
    count: int
    next_step: str = ""

    def text(self) -> str:
        if not self.executions:
            return self.next_step or "No runs found."
        lines = [
            f"- {r.kickoff_id or r.request_id} [{r.crew}] {r.state}"
            f"{' (conversation ' + r.conversation_id + ')' if r.conversation_id else ''}"
            f"{' ' + r.created_at.isoformat(timespec='seconds') if r.created_at else ''}"
            for r in self.executions
        ]
        return "\n".join([*lines, self.next_step] if self.next_step else lines)


class ApprovalView(BaseModel):
    kickoff_id: str
    crew: str
    conversation_id: str
    task_id: str
    output: str | None = None
    waiting_since: datetime | None = None
    waited_seconds: float | None = None
    expired: bool = False
    status_uri: str


class ApprovalList(BaseModel):
    approvals: list[ApprovalView]
    next_step: str = ""

    def text(self) -> str:
        if not self.approvals:
            return "No run is waiting for human review."
        lines = []
        for a in self.approvals:
            waited = f", waiting {int(a.waited_seconds)} s" if a.waited_seconds is not None else ""
            flag = " [EXPIRED]" if a.expired else ""
            lines.append(f"- {a.kickoff_id} [{a.crew}] task {a.task_id}{waited}{flag}")
        return "\n".join([*lines, self.next_step])


class ResumeView(BaseModel):
    kickoff_id: str
    task_id: str
    approve: bool
    feedback: str
    decided_by: str
    upstream_status: str | None = None
    message: str | None = None
    run: RunView
    next_step: str = ""

    def text(self) -> str:
        verdict = "Approved" if self.approve else "Rejected"
        fb = f" with feedback: {self.feedback}" if self.feedback else ""
        return f"{verdict} task {self.task_id} of run {self.kickoff_id}{fb}.\n{self.run.text()}"


def dump(model: BaseModel, *, compact: bool = False) -> dict[str, Any]:
    """JSON-ready dict of a view (what resources and ``--json`` print).

    ``compact`` leaves out empty (null) fields: tool results use it because hosts validate every result against
    the output schema, and each null costs them a schema branch (275 µs → 102 µs for a running run).
    """
    data: dict[str, Any] = json.loads(model.model_dump_json(by_alias=True, exclude_none=compact))
    return data
