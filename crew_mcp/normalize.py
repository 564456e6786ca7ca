"""Normalization: every status body the AMP API is known to send, turned into one :class:`ExecutionStatus`.

The documented ``status``-keyed bodies and the live ``TaskStatus`` (``state``-keyed) body alike; unknown
fields are ignored and unknown states become ``unknown`` with the service's own word kept.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .models import (
    ExecutionState,
    ExecutionStatus,
    FinalOutput,
    PendingHumanInput,
    Progress,
    TaskOutput,
    Usage,
)

__all__ = ["normalize_status"]

_STATES: dict[str, ExecutionState] = {
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
    state = _STATES.get(raw_state.lower(), ExecutionState.UNKNOWN) if raw_state else ExecutionState.UNKNOWN
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
