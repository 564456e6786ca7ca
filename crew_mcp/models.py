"""Pydantic models of the CrewAI AMP API and the one normalized execution status.

Wire models accept unknown fields (``extra="allow"``) so a service that adds fields never breaks
parsing. :class:`ExecutionStatus` is what every other part of crew-mcp reads: it is built by
:func:`normalize_status` from the documented ``status``-keyed bodies and from the live ``TaskStatus``
(``state``-keyed) body alike.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

__all__ = [
    "ErrorBody",
    "ExecutionState",
    "ExecutionStatus",
    "FinalOutput",
    "InputsResponse",
    "KickoffRequest",
    "KickoffResponse",
    "PendingHumanInput",
    "Progress",
    "ResumeRequest",
    "ResumeResponse",
    "StopResponse",
    "TaskOutput",
    "Usage",
    "WebhookUrls",
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class WebhookUrls(_Wire):
    """The three webhook URLs AMP accepts at kickoff and (again, because AMP drops them) at resume."""

    task: str | None = Field(default=None, alias="taskWebhookUrl")
    step: str | None = Field(default=None, alias="stepWebhookUrl")
    crew: str | None = Field(default=None, alias="crewWebhookUrl")

    def wire(self) -> dict[str, str]:
        """The non-empty URLs under their wire names."""
        return {k: v for k, v in self.model_dump(by_alias=True).items() if isinstance(v, str) and v}


class KickoffRequest(_Wire):
    """Body of ``POST /kickoff``."""

    inputs: dict[str, str]
    meta: dict[str, Any] | None = None
    task_webhook_url: str | None = Field(default=None, alias="taskWebhookUrl")
    step_webhook_url: str | None = Field(default=None, alias="stepWebhookUrl")
    crew_webhook_url: str | None = Field(default=None, alias="crewWebhookUrl")


class ResumeRequest(_Wire):
    """Body of ``POST /resume``; ``kickoff_id`` is sent as AMP's ``execution_id``."""

    kickoff_id: str = Field(alias="execution_id")
    task_id: str
    human_feedback: str
    is_approve: bool
    task_webhook_url: str | None = Field(default=None, alias="taskWebhookUrl")
    step_webhook_url: str | None = Field(default=None, alias="stepWebhookUrl")
    crew_webhook_url: str | None = Field(default=None, alias="crewWebhookUrl")


class InputsResponse(_Wire):
    """Body of ``GET /inputs``: input names. Some deployments answer with a dict; its keys are the names."""

    inputs: list[str]

    @field_validator("inputs", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [str(k) for k in value]
        return value


class KickoffResponse(_Wire):
    """Body of a successful ``POST /kickoff``."""

    kickoff_id: str


class ResumeResponse(_Wire):
    """Body of a successful ``POST /resume`` (``resumed``, ``retrying`` or ``completed``)."""

    status: str | None = None
    message: str | None = None


class StopResponse(_Wire):
    """Body of a successful ``POST /stop/{kickoff_id}``: ``{"status": "stopped", "kickoffId": ...}``."""

    status: str | None = None
    kickoff_id: str | None = Field(default=None, alias="kickoffId")


class ErrorBody(_Wire):
    """The ``{error, message, details?}`` body of AMP errors."""

    error: str | None = None
    message: str | None = None
    details: dict[str, Any] | None = None


class ExecutionState(StrEnum):
    """The one set of states crew-mcp reasons about, whatever shape the service answered in."""

    RUNNING = "running"
    WAITING_FOR_HUMAN = "waiting_for_human"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        """True when the run will never change again (a cached copy is as good as a fresh one)."""
        return self in _TERMINAL


_TERMINAL = frozenset({ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED})


class Progress(BaseModel):
    """How far a run is: tasks done of total, and what is working now."""

    completed: int | None = Field(default=None, description="Tasks finished")
    total: int | None = Field(default=None, description="Tasks in the run")
    current_task: str | None = Field(default=None, description="The task working now")
    current_agent: str | None = Field(default=None, description="The agent working now")


class TaskOutput(BaseModel):
    """One task's result."""

    task_id: str | None = Field(default=None, description="The task")
    output: str | None = Field(default=None, description="What it produced")
    agent: str | None = Field(default=None, description="The agent that did it")
    execution_time: float | None = Field(default=None, description="Seconds it took")


class FinalOutput(BaseModel):
    """The final result: text, the parsed JSON when there is one, and per-task results."""

    text: str | None = Field(default=None, description="The final output as text")
    json_value: Annotated[
        dict[str, Any] | list[Any] | None,
        WithJsonSchema(
            {"anyOf": [{"type": "object"}, {"type": "array"}], "description": "The output parsed as JSON, if it is"}
        ),
    ] = Field(default=None, alias="json", serialization_alias="json")
    tasks: list[TaskOutput] = Field(default_factory=list, description="Each task's result")

    model_config = ConfigDict(populate_by_name=True)


class Usage(BaseModel):
    """Token usage, when the service reports it."""

    model_config = ConfigDict(extra="allow")

    total_tokens: int | None = Field(default=None, description="Tokens used in all")
    prompt_tokens: int | None = Field(default=None, description="Tokens sent to the models")
    completion_tokens: int | None = Field(default=None, description="Tokens the models produced")


class PendingHumanInput(BaseModel):
    """A task that has paused the run until a human approves or rejects its output."""

    task_id: str = Field(description="The task whose output waits for review")
    output: str | None = Field(default=None, description="The output to review")
    since: datetime | None = Field(default=None, description="When the run paused for it")


class ExecutionStatus(BaseModel):
    """One execution's status, normalized from any shape the AMP API answers in.

    ``raw_state`` is the service's own word for the state (``"PAUSED"``, ``"running"``, ...), kept so an
    ``unknown`` state can be reported exactly; ``raw`` is the whole body for debugging.
    """

    kickoff_id: str
    state: ExecutionState
    raw_state: str | None = None
    message: str | None = None
    progress: Progress = Field(default_factory=Progress)
    output: FinalOutput | None = None
    error: str | None = None
    usage: Usage | None = None
    execution_time: float | None = None
    pending: PendingHumanInput | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """True when the run has finished one way or another."""
        return self.state.terminal
