"""Pydantic models of the CrewAI AMP API and the one normalized execution status.

Wire models accept unknown fields (``extra="allow"``) so a service that adds fields never breaks
parsing. :class:`ExecutionStatus` is what every other part of crew-mcp reads: it is built by
:func:`normalize_status` from the documented ``status``-keyed bodies and from the live ``TaskStatus``
(``state``-keyed) body alike.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from .errors import InvalidInputError

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
    "TaskOutput",
    "Usage",
    "WebhookUrls",
    "encode_input_value",
    "encode_inputs",
    "normalize_status",
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# ---------------------------------------------------------------------------------------------- requests


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


# --------------------------------------------------------------------------------------------- responses


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


class ErrorBody(_Wire):
    """The ``{error, message, details?}`` body of AMP errors."""

    error: str | None = None
    message: str | None = None
    details: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------- normalized status


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

_STATE_MAP: dict[str, ExecutionState] = {
    "pending": ExecutionState.RUNNING,
    "started": ExecutionState.RUNNING,
    "running": ExecutionState.RUNNING,
    "in_progress": ExecutionState.RUNNING,
    "queued": ExecutionState.RUNNING,
    "paused": ExecutionState.WAITING_FOR_HUMAN,
    "pending_human_input": ExecutionState.WAITING_FOR_HUMAN,
    "pending human input": ExecutionState.WAITING_FOR_HUMAN,
    "waiting_for_human": ExecutionState.WAITING_FOR_HUMAN,
    "success": ExecutionState.COMPLETED,
    "completed": ExecutionState.COMPLETED,
    "failed": ExecutionState.FAILED,
    "failure": ExecutionState.FAILED,
    "error": ExecutionState.FAILED,
    "revoked": ExecutionState.CANCELLED,
    "cancelled": ExecutionState.CANCELLED,
    "canceled": ExecutionState.CANCELLED,
    "not found": ExecutionState.NOT_FOUND,
    "not_found": ExecutionState.NOT_FOUND,
}


class Progress(BaseModel):
    """How far a run is: tasks done of total, and what is working now."""

    completed: int | None = None
    total: int | None = None
    current_task: str | None = None
    current_agent: str | None = None


class TaskOutput(BaseModel):
    """One task's result."""

    task_id: str | None = None
    output: str | None = None
    agent: str | None = None
    execution_time: float | None = None


class FinalOutput(BaseModel):
    """The final result: text, the parsed JSON when there is one, and per-task results."""

    text: str | None = None
    json_value: Annotated[
        dict[str, Any] | list[Any] | None,
        WithJsonSchema(
            {"anyOf": [{"type": "object"}, {"type": "array"}], "description": "The output parsed as JSON, if it is"}
        ),
    ] = Field(default=None, alias="json", serialization_alias="json")
    tasks: list[TaskOutput] = Field(default_factory=list)

    model_config = ConfigDict(populate_by_name=True)


class Usage(BaseModel):
    """Token usage, when the service reports it."""

    model_config = ConfigDict(extra="allow")

    total_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class PendingHumanInput(BaseModel):
    """A task that has paused the run until a human approves or rejects its output."""

    task_id: str
    output: str | None = None
    since: datetime | None = None


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


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return int(text)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _name(value: Any) -> str | None:
    """A task or agent name from a string or a dict such as ``last_executed_task``."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        for key in ("name", "task_id", "id", "description", "role", "agent"):
            v = value.get(key)
            if isinstance(v, str) and v:
                return v
    return None


def _tasks(value: Any) -> list[TaskOutput]:
    if not isinstance(value, list):
        return []
    out = []
    for t in value:
        if isinstance(t, dict):
            out.append(
                TaskOutput(
                    task_id=_text(t.get("task_id") or t.get("id") or t.get("name")),
                    output=_text(t.get("output") if "output" in t else t.get("raw")),
                    agent=_name(t.get("agent")),
                    execution_time=_float(t.get("execution_time")),
                )
            )
    return out


def _json_of(value: Any) -> dict[str, Any] | list[Any] | None:
    if isinstance(value, dict | list):
        return value
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict | list) else None
    return None


def _final_output(result: Any, result_json: Any) -> FinalOutput | None:
    if result is None and result_json is None:
        return None
    tasks: list[TaskOutput] = []
    text: str | None
    if isinstance(result, dict) and ("output" in result or "tasks" in result or "raw" in result):
        text = _text(result.get("output", result.get("raw")))
        tasks = _tasks(result.get("tasks") or result.get("tasks_output"))
        parsed = _json_of(result.get("json_dict") or result.get("output"))
    else:
        text = _text(result)
        parsed = _json_of(result)
    if isinstance(result_json, dict | list):
        parsed = result_json
    return FinalOutput(text=text, json=parsed, tasks=tasks)


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    try:
        return Usage.model_validate({k: v for k, v in value.items() if not (k.endswith("tokens") and _int(v) is None)})
    except ValueError:
        return None


def _raw_state(body: dict[str, Any]) -> str | None:
    for key in ("state", "status"):
        v = body.get(key)
        if isinstance(v, str) and v.strip():
            # TaskStatus bodies carry ``state`` plus a human ``status`` message: ``state`` wins.
            return v.strip()
    return None


def normalize_status(kickoff_id: str, body: Any) -> ExecutionStatus:
    """Build an :class:`ExecutionStatus` from any status body the AMP API is known to send.

    Never raises: an unrecognised state becomes ``unknown`` with ``raw_state`` kept, and a body that is not a
    JSON object, or whose fields cannot be read, becomes ``unknown`` with the body in ``raw``.
    """
    try:
        return _normalize(kickoff_id, body)
    except (ValueError, TypeError, AttributeError, KeyError):
        raw = body if isinstance(body, dict) else {"body": body}
        return ExecutionStatus(kickoff_id=kickoff_id, state=ExecutionState.UNKNOWN, raw=raw)


def _normalize(kickoff_id: str, body: Any) -> ExecutionStatus:
    if not isinstance(body, dict):
        return ExecutionStatus(kickoff_id=kickoff_id, state=ExecutionState.UNKNOWN, raw={"body": body})
    is_taskstatus = isinstance(body.get("state"), str)
    raw_state = _raw_state(body)
    state = _STATE_MAP.get(raw_state.lower(), ExecutionState.UNKNOWN) if raw_state else ExecutionState.UNKNOWN
    message = body.get("status") if is_taskstatus and isinstance(body.get("status"), str) else None

    p: dict[str, Any] = body["progress"] if isinstance(body.get("progress"), dict) else {}
    last_step = body.get("last_step")
    step_agent = _name(last_step.get("agent")) if isinstance(last_step, dict) else None
    last_task = _name(body.get("last_executed_task"))
    progress = Progress(
        completed=_int(p.get("completed", p.get("completed_tasks"))),
        total=_int(p.get("total", p.get("total_tasks"))),
        current_task=_name(p.get("current")) or _name(body.get("current_task")) or last_task,
        current_agent=_name(p.get("current_agent")) or step_agent,
    )

    output = None
    if state is ExecutionState.COMPLETED or body.get("result") is not None or body.get("result_json") is not None:
        output = _final_output(body.get("result"), body.get("result_json"))

    error = None
    if state is ExecutionState.FAILED:
        error = _text(body.get("error")) or message or _text(body.get("result")) or "the crew reported a failure"
    elif isinstance(body.get("error"), str):
        error = body["error"]

    pending = None
    if state is ExecutionState.WAITING_FOR_HUMAN:
        task = body.get("pending_task") or body.get("last_executed_task") or progress.current_task
        task_id = _name(task)
        if task_id:
            task_output = task.get("output") if isinstance(task, dict) else None
            pending = PendingHumanInput(task_id=task_id, output=_text(task_output))

    return ExecutionStatus(
        kickoff_id=kickoff_id,
        state=state,
        raw_state=raw_state,
        message=message,
        progress=progress,
        output=output,
        error=error,
        usage=_usage(body.get("usage_metrics") or body.get("token_usage") or body.get("usage")),
        execution_time=_float(body.get("execution_time")),
        pending=pending,
        raw=body,
    )


# ---------------------------------------------------------------------------------------------- inputs


def encode_input_value(name: str, value: Any) -> str:
    """Turn one input value into the string AMP takes.

    The rule: strings pass unchanged; booleans become ``"true"``/``"false"``; integers and finite floats
    become their decimal text (``3``, ``2.5``); objects and lists become compact JSON text. ``None``,
    non-finite numbers and anything else are refused with :class:`InvalidInputError`.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"Input {name!r} is {value}, which is not a usable number.")
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, dict | list):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"Input {name!r} cannot be written as JSON text: {exc}.") from None
    if value is None:
        raise InvalidInputError(f"Input {name!r} is null; give it a value (an empty string is allowed).")
    raise InvalidInputError(f"Input {name!r} has an unsupported type {type(value).__name__}.")


def encode_inputs(inputs: dict[str, Any]) -> dict[str, str]:
    """Encode every input value with :func:`encode_input_value`."""
    return {str(k): encode_input_value(str(k), v) for k, v in inputs.items()}
