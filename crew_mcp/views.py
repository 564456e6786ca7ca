"""Structured results of crew-mcp's tools and resources (their output schemas), and their text renderings.

Every view carries a ``next_step`` sentence written for a model: what to do with this result. A run's view
builds itself from a ledger record and the status in hand (:meth:`RunView.of`), next step included, so the
tools, the resources and the CLI all say the same thing about the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from .inputs import InputInfo
from .ledger import Decision, RunRecord
from .models import ExecutionState, ExecutionStatus, FinalOutput, PendingHumanInput, Progress, Usage

__all__ = [
    "ApprovalList",
    "ApprovalView",
    "CrewInputs",
    "CrewList",
    "CrewSummary",
    "ExecutionList",
    "Guidance",
    "ResumeView",
    "RunView",
    "decision_notice",
    "dump",
    "execution_uri",
    "human_only_message",
]


def execution_uri(kickoff_id: str) -> str:
    """The resource URI of one execution's status."""
    return f"crew://executions/{kickoff_id}"


@dataclass(frozen=True)
class Guidance:
    """What next-step sentences may promise: the approval policy, and the wait to recommend (within the cap)."""

    approval_policy: Literal["model", "human"] = "model"
    wait_seconds: int = 30

    def follow(self, kickoff_id: str | None) -> str:
        """The get_status call that follows a run, waiting as long as recommended (no wait when that is 0)."""
        if self.wait_seconds <= 0:
            return f"get_status(kickoff_id={kickoff_id!r})"
        return f"get_status(kickoff_id={kickoff_id!r}, wait_seconds={self.wait_seconds})"


def human_only_message(kickoff_id: str) -> str:
    """How the person (not the model) can decide under the ``human`` approval policy."""
    return (
        "crew-mcp's approval policy is 'human': a model may not approve or reject. Ask the user to decide, either by "
        f'running `crew-mcp resume {kickoff_id} --approve` (or `--reject --feedback "..."`) in a terminal, or by '
        "calling resume_with_feedback without approve in a client that can show them a form."
    )


class CrewSummary(BaseModel):
    """One crew this server can run."""

    name: str = Field(description="The crew's name: pass it as crew= to the other tools")
    description: str = Field(default="", description="What the crew does")
    simulated: bool = Field(default=False, description="True for the built-in simulator's crews")
    inputs_uri: str = Field(description="Resource with the crew's inputs")
    typed_tool: str | None = Field(default=None, description="Name of the run_<crew> tool, when there is one")


class CrewList(BaseModel):
    """The crews this server can run."""

    crews: list[CrewSummary] = Field(description="Every configured crew")
    simulated: bool = Field(description="True when these are the built-in simulator's crews (no crew configured)")
    note: str = Field(default="", description="Something to tell the user about these crews")

    def text(self) -> str:
        lines = [self.note] if self.note else []
        lines += [f"- {c.name}: {c.description}" for c in self.crews]
        return "\n".join(lines)


class CrewInputs(BaseModel):
    """What a crew needs to start: each input with its description, type, allowed values and example."""

    crew: str = Field(description="The crew's name")
    inputs: list[InputInfo] = Field(description="The crew's inputs, API order first")
    uri: str = Field(description="Resource with the same catalogue")
    next_step: str = Field(description="What to do next")

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
    """One run as the ledger and the crew know it, with the next step to take."""

    kickoff_id: str | None = Field(default=None, description="The run's id at the crew (None until confirmed)")
    request_id: str | None = Field(default=None, description="crew-mcp's own id for the kickoff request")
    crew: str = Field(description="The crew that runs it")
    conversation_id: str | None = Field(default=None, description="The conversation the run is filed under")
    state: str = Field(
        description="running | waiting_for_human | completed | failed | cancelled | not_found | unknown | "
        "unconfirmed (the kickoff's answer has not come yet, or crew-mcp stopped before it) | may_have_started (the "
        "crew may have received the kickoff but its answer was lost or unreadable) | kickoff_failed (refused: no "
        "run started)"
    )
    raw_state: str | None = Field(default=None, description="The crew's own word for the state")
    message: str | None = Field(default=None, description="A status message from the crew or from crew-mcp")
    progress: Progress = Field(default_factory=Progress, description="Tasks done of total, current task and agent")
    pending: PendingHumanInput | None = Field(default=None, description="The task output waiting for review")
    output: FinalOutput | None = Field(default=None, description="The final result of a completed run")
    error: str | None = Field(default=None, description="Why the run or its kickoff failed")
    usage: Usage | None = Field(default=None, description="Token usage reported by the crew")
    created_at: datetime | None = Field(default=None, description="When crew-mcp recorded the kickoff")
    updated_at: datetime | None = Field(default=None, description="When the record last changed")
    status_uri: str | None = Field(default=None, description="Resource with this run's status (subscribable)")
    from_ledger: bool = Field(default=False, description="Served from the run ledger with no upstream call")
    decisions: list[Decision] = Field(default_factory=list, description="Every approval or rejection so far")
    started_outside: bool = Field(
        default=False, description="Started outside crew-mcp (dashboard, script) and adopted: its inputs are unknown"
    )
    next_step: str = Field(default="", description="What to do next")

    @classmethod
    def of(
        cls,
        record: RunRecord,
        status: ExecutionStatus | None = None,
        *,
        guidance: Guidance,
        from_ledger: bool = False,
    ) -> RunView:
        """The view of ``record``, showing ``status`` (default: the record's last status), with its next step."""
        st = status or record.status
        confirmed = st is not None and record.kickoff_id is not None
        state = st.state.value if confirmed and st is not None else record.state.value
        waiting = state == ExecutionState.WAITING_FOR_HUMAN.value
        completed = st is not None and st.state is ExecutionState.COMPLETED
        view = cls(
            kickoff_id=record.kickoff_id,
            request_id=record.request_id,
            crew=record.crew,
            conversation_id=record.conversation_id,
            state=state,
            raw_state=st.raw_state if st else None,
            message=st.message if st else None,
            progress=st.progress if st else Progress(),
            pending=(record.pending or (st.pending if st else None)) if waiting else None,
            output=st.output if st and completed else None,
            error=(st.error if st else None) or record.error,
            usage=st.usage if st else None,
            created_at=record.created_at,
            updated_at=record.updated_at,
            status_uri=execution_uri(record.kickoff_id) if record.kickoff_id else None,
            from_ledger=from_ledger,
            decisions=record.decisions,
            started_outside=record.started_outside,
        )
        view.next_step = view.suggest(guidance)
        return view

    def suggest(self, guidance: Guidance) -> str:
        """The next step for a model that holds this view."""
        kid = self.kickoff_id
        wait = guidance.wait_seconds
        follow = guidance.follow(kid)
        match self.state:
            case "running":
                if wait <= 0:
                    return f"The crew is still working. Call {follow} again in a little while."
                return f"The crew is still working. Call {follow} to wait for it."
            case "unknown":
                said = f"state {self.raw_state!r}" if self.raw_state else "a status"
                return (
                    f"The crew reported {said}, which crew-mcp does not understand, so it cannot tell whether the run "
                    f"is still working. Call {follow} again later; if it stays so, ask the user to check the run in "
                    "the crew's CrewAI AMP dashboard."
                )
            case "not_found":
                return (
                    "The crew no longer knows this run (it may have expired it). Tell the user; start a new run if "
                    "the result is still wanted."
                )
            case "waiting_for_human":
                if guidance.approval_policy == "human":
                    return "The crew waits for the user's review. " + human_only_message(kid or "")
                return (
                    "The crew waits for human review. Show the user the output to review and ask whether to approve "
                    f"it or what to change; then call resume_with_feedback(kickoff_id={kid!r}, approve=true|false, "
                    "feedback=...). Do not decide on the user's behalf."
                )
            case "completed":
                return "The run finished; its final output is above. No further call is needed."
            case "failed":
                return "The run failed (see error). Fix the cause if it is in the inputs and start a new run."
            case "cancelled":
                return "The run was cancelled upstream. Start a new run if it is still wanted."
            case "unconfirmed":
                return (
                    "crew-mcp has no kickoff_id for this kickoff yet: the crew's answer is still on its way, or "
                    f"crew-mcp stopped or lost it mid-request (request id {self.request_id}). A run may have "
                    "started; check with the user before starting another. "
                    f"get_status(kickoff_id={self.request_id!r}) shows the run once its answer has come."
                )
            case "may_have_started":
                return (
                    f"A run may have started (request id {self.request_id}), but crew-mcp does not know its "
                    "kickoff_id. Do not start another run before the user has checked the crew's runs in the CrewAI "
                    "AMP dashboard "
                    f"(a run whose meta has crew_mcp_request_id={self.request_id}); if there is one, "
                    f"get_status(kickoff_id=<its id>, crew={self.crew!r}) follows it. If there is none, a new kickoff "
                    "is safe."
                )
            case "kickoff_failed":
                return (
                    "The crew refused the kickoff (see error): no run was started. Start a new run when the cause is "
                    "fixed."
                )
        return ""

    def text(self) -> str:
        head = f"Run {self.kickoff_id or '(no kickoff_id)'} of crew {self.crew}: {self.state}"
        if self.kickoff_id is None and self.request_id:
            head = f"Run (no kickoff_id; request id {self.request_id}) of crew {self.crew}: {self.state}"
        p = self.progress
        if p.total:
            head += f" ({p.completed or 0}/{p.total} tasks"
            head += f", now {p.current_task}" if p.current_task and self.state == "running" else ""
            head += ")"
        lines = [head]
        if self.started_outside:
            lines.append("Started outside crew-mcp (its inputs are unknown).")
        if self.message and self.state in _EXPLAINED and self.message != self.error:
            lines.append(self.message)
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


_EXPLAINED = frozenset({"may_have_started", "unconfirmed", "unknown", "kickoff_failed"})
"""States whose message (what crew-mcp knows) belongs in the text, not only in the structured result."""


class ExecutionList(BaseModel):
    """Runs from the ledger, newest first."""

    executions: list[RunView] = Field(description="The runs, newest first")
    count: int = Field(description="How many runs are listed")
    next_step: str = Field(default="", description="What to do next")

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

    @classmethod
    def of(cls, records: list[RunRecord], guidance: Guidance) -> ExecutionList:
        """The listing of ``records`` as the ledger has them."""
        runs = [RunView.of(r, guidance=guidance, from_ledger=True) for r in records]
        hint = "Call get_status(kickoff_id=...) for the current status and output of one run."
        if not runs:
            hint = "No runs match. Call list_crews and kickoff_crew to start one."
        return cls(executions=runs, count=len(runs), next_step=hint)


class ApprovalView(BaseModel):
    """A run waiting for a human decision on one task's output."""

    kickoff_id: str = Field(description="The waiting run")
    crew: str = Field(description="Its crew")
    conversation_id: str = Field(description="The conversation it is filed under")
    task_id: str = Field(description="The task whose output waits for review")
    output: str | None = Field(default=None, description="The output to review")
    waiting_since: datetime | None = Field(default=None, description="When the run paused")
    waited_seconds: float | None = Field(default=None, description="How long it has waited")
    expired: bool = Field(default=False, description="True when it waited longer than the approval expiry")
    status_uri: str = Field(description="Resource with this run's status")


class ApprovalList(BaseModel):
    """Runs waiting for a human decision, newest first."""

    approvals: list[ApprovalView] = Field(description="The waiting runs")
    next_step: str = Field(default="", description="What to do next")

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
    """A decision sent to the crew, and the run as it stands after it."""

    kickoff_id: str = Field(description="The run decided on")
    task_id: str = Field(description="The task decided on")
    approve: bool = Field(description="True: approved; false: sent back with the feedback")
    feedback: str = Field(description="The feedback sent with the decision")
    decided_by: str = Field(description="Who decided and how (model via tool, human via elicitation, ...)")
    outcome: Literal["applied", "unknown", "sent"] = Field(
        default="applied",
        description="applied: the crew took it | unknown: its answer was lost and the run did not show whether | "
        "sent: no answer yet (crew-mcp records it when it comes)",
    )
    upstream_status: str | None = Field(default=None, description="The crew's answer (resumed, retrying, ...)")
    message: str | None = Field(default=None, description="The crew's message about the decision")
    run: RunView = Field(description="The run after the decision")
    next_step: str = Field(default="", description="What to do next")

    def text(self) -> str:
        verdict = "Approved" if self.approve else "Rejected"
        fb = f" with feedback: {self.feedback}" if self.feedback else ""
        lines = [f"{verdict} task {self.task_id} of run {self.kickoff_id}{fb}."]
        if self.message:
            lines.append(self.message)
        lines += [self.run.text(), self.next_step] if self.outcome != "applied" else [self.run.text()]
        return "\n".join(lines)


def decision_notice(task_id: str, approve: bool, outcome: str) -> str:
    """The sentence a person reads after deciding on ``task_id`` in the inbox or the run card: what was decided, and
    what the crew does with it given the decision's ``outcome`` (a :class:`ResumeView`'s)."""
    verdict = "Approved" if approve else "Sent back"
    if outcome == "sent":
        tail = "the crew has not confirmed it yet; it is never sent twice."
    elif outcome == "unknown":
        tail = "the crew's answer was lost, so it may or may not have acted on it; it was not sent again."
    else:
        tail = "the crew continues." if approve else "the crew is revising it with your feedback."
    return f"{verdict} task {task_id}; {tail}"


def dump(model: BaseModel, *, compact: bool = False) -> dict[str, Any]:
    """JSON-ready dict of a view (what resources and ``--json`` print).

    ``compact`` leaves out empty (null) fields: tool results use it because hosts validate every result against
    the output schema, and each null costs them a schema branch (275 µs → 102 µs for a running run).
    """
    return model.model_dump(mode="json", by_alias=True, exclude_none=compact)
