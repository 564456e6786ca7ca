"""The simulated execution: a clock-driven state machine and the bodies it answers with.

Nothing here does I/O. :meth:`Execution.advance` moves a run to a given simulated time and returns the
webhook deliveries that became due, each stamped with the simulated time it happened at.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from .specs import CrewSpec, TaskSpec

__all__ = ["Execution", "Hooks", "Outgoing", "TaskResult"]

State = Literal["RUNNING", "PAUSED", "SUCCESS", "FAILED", "REVOKED"]


@dataclass
class Hooks:
    """Where one (segment of a) run reports: AMP forgets these on every ``/resume``."""

    task: str | None = None
    step: str | None = None
    crew: str | None = None
    human_input: str | None = None
    human_input_auth: dict[str, Any] | None = None


@dataclass
class Outgoing:
    """A webhook delivery that became due at simulated time ``at``."""

    at: float
    url: str
    kind: str
    payload: dict[str, Any]
    auth: dict[str, Any] | None = None


@dataclass
class TaskResult:
    """One finished task attempt (the latest attempt of a task replaces earlier ones)."""

    task_id: str
    agent: str
    output: str
    execution_time: float
    tokens: int


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(task: TaskSpec, inputs: Mapping[str, str], feedback: str, attempt: int) -> str:
    """The output of one attempt of ``task``; a revision always says which feedback it follows."""
    values = _Blank(inputs)
    values.update(feedback=feedback, task_id=task.id, agent=task.agent, attempt=attempt)
    template = task.output or "{agent} completed {task_id} for " + ", ".join(f"{k}={{{k}}}" for k in inputs)
    try:
        text = string.Formatter().vformat(template, (), values)
    except (ValueError, IndexError, AttributeError, KeyError):
        text = template
    if attempt > 1 and feedback:
        if text[:1] in "{[":
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                parsed["revision_note"] = f"Revised per feedback: {feedback}"
                return json.dumps(parsed)
        text += f"\n\nRevised per feedback: {feedback}"
    return text


def _json(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Execution:
    """One run of a crew; times are simulated seconds since the simulator started."""

    id: str
    crew: CrewSpec
    inputs: dict[str, str]
    meta: dict[str, Any]
    hooks: Hooks
    created_at: float
    epoch: datetime
    time_scale: float = 1.0
    state: State = "RUNNING"
    index: int = 0
    task_started_at: float = 0.0
    attempt: int = 1
    feedback: str = ""
    results: list[TaskResult] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    pending_output: str | None = None
    error: str | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    spent: float = 0.0

    def __post_init__(self) -> None:
        self.task_started_at = self.updated_at = self.created_at

    @property
    def task(self) -> TaskSpec:
        """The task running, paused or last reached."""
        return self.crew.tasks[min(self.index, len(self.crew.tasks) - 1)]

    def start(self) -> list[Outgoing]:
        """The deliveries due when the current task starts."""
        return self._step(self.task_started_at, "thought", f"{self.task.agent} is working on {self.task.id}")

    def advance(self, now: float) -> list[Outgoing]:
        """Run every transition due at or before ``now``; return the deliveries they caused, in order."""
        out: list[Outgoing] = []
        while self.state == "RUNNING":
            task = self.task
            duration = task.duration * self.time_scale
            done_at = self.task_started_at + duration
            if done_at > now:
                break
            self.updated_at = done_at
            self.spent += duration
            if task.fail:
                self.state, self.finished_at = "FAILED", done_at
                self.error = f"Task {task.id} failed: {task.agent} could not complete it (simulated failure)"
                out += self._crew_done(done_at)
                break
            text = render(task, self.inputs, self.feedback, self.attempt)
            self.results = [r for r in self.results if r.task_id != task.id]
            self.results.append(TaskResult(task.id, task.agent, text, round(self.spent, 3), 40 + len(text) // 4))
            out += self._step(done_at, "final_answer", text)
            out += self._task_done(done_at, text, paused=task.human_input)
            if task.human_input:
                self.state, self.pending_output = "PAUSED", text
                break
            out += self._next(done_at)
        return out

    def resume(self, now: float, *, feedback: str, approve: bool, hooks: Hooks) -> tuple[str, list[Outgoing]]:
        """Apply a human decision to a paused run; returns the ``/resume`` status word and deliveries."""
        self.hooks, self.pending_output, self.updated_at = hooks, None, now
        if not approve:
            self.state, self.attempt, self.feedback, self.task_started_at = "RUNNING", self.attempt + 1, feedback, now
            return "retrying", self.start()
        if feedback:
            self.notes.append((self.task.id, feedback))
        self.state = "RUNNING"
        out = self._next(now)
        return ("completed" if self.finished_at is not None else "resumed"), out

    def stop(self, now: float) -> list[Outgoing]:
        """Revoke a running or paused run (``POST /stop``): it ends now and its crew webhook says so."""
        self.state, self.finished_at, self.updated_at, self.pending_output = "REVOKED", now, now, None
        return self._crew_done(now)

    def due_at(self) -> float | None:
        """The simulated time of the next transition; None while the run waits for a human or has ended."""
        if self.state != "RUNNING":
            return None
        return self.task_started_at + self.task.duration * self.time_scale

    def _next(self, at: float) -> list[Outgoing]:
        self.index += 1
        self.attempt, self.feedback, self.spent = 1, "", 0.0
        if self.index >= len(self.crew.tasks):
            self.index = len(self.crew.tasks)
            self.state, self.finished_at = "SUCCESS", at
            return self._crew_done(at)
        self.task_started_at = at
        return self.start()

    def _payload(self, **fields: Any) -> dict[str, Any]:
        return {"kickoff_id": self.id, **fields, "meta": self.meta}

    def _step(self, at: float, step_type: str, content: str) -> list[Outgoing]:
        if not self.hooks.step:
            return []
        body = self._payload(task_id=self.task.id, agent=self.task.agent, step_type=step_type, content=content)
        return [Outgoing(at, self.hooks.step, "step", body)]

    def _task_done(self, at: float, text: str, *, paused: bool) -> list[Outgoing]:
        task, out = self.task, []
        if self.hooks.task:
            body = self._payload(
                task_id=task.id,
                name=task.id,
                description=task.description,
                agent=task.agent,
                output=text,
                output_json=_json(text),
                summary=text[:80],
                status="pending_human_input" if paused else "completed",
                execution_time=round(self.spent, 3),
            )
            if paused:
                body["execution_id"] = self.id
            out.append(Outgoing(at, self.hooks.task, "task", body))
        if paused and self.hooks.human_input:
            body = self._payload(execution_id=self.id, task_id=task.id, output=text, status="pending_human_input")
            out.append(Outgoing(at, self.hooks.human_input, "human_input", body, self.hooks.human_input_auth))
        return out

    def _crew_done(self, at: float) -> list[Outgoing]:
        if not self.hooks.crew:
            return []
        words = {"SUCCESS": "completed", "REVOKED": "revoked"}
        body = self._payload(
            status=words.get(self.state, "failed"),
            result=self.result() if self.state == "SUCCESS" else None,
            result_json=_json(self.final_text()) if self.state == "SUCCESS" else None,
            token_usage=self.usage(),
            execution_time=self.execution_time(at),
        )
        if self.error:
            body["error"] = self.error
        return [Outgoing(at, self.hooks.crew, "crew", body)]

    def final_text(self) -> str:
        """The last task's output, with approval notes appended so a reviewer's words stay visible."""
        text = self.results[-1].output if self.results else ""
        if self.notes:
            text += "\n\nReviewer notes:\n" + "\n".join(f"- {task}: {note}" for task, note in self.notes)
        return text

    def result(self) -> dict[str, Any]:
        """``{output, tasks: [...]}`` of a finished run."""
        tasks = [
            {"task_id": r.task_id, "output": r.output, "agent": r.agent, "execution_time": r.execution_time}
            for r in self.results
        ]
        return {"output": self.final_text(), "tasks": tasks}

    def usage(self) -> dict[str, int]:
        """Deterministic fake token usage."""
        prompt = sum(r.tokens for r in self.results) * 3
        completion = sum(r.tokens for r in self.results)
        return {"total_tokens": prompt + completion, "prompt_tokens": prompt, "completion_tokens": completion}

    def execution_time(self, now: float) -> float:
        """Seconds since kickoff (until the end of a finished run)."""
        end = self.finished_at if self.finished_at is not None else now
        return round(end - self.created_at, 3)

    def _iso(self, at: float) -> str:
        return (self.epoch + timedelta(seconds=at)).isoformat()

    def taskstatus(self, now: float) -> dict[str, Any]:
        """The live service's ``TaskStatus`` body."""
        total, task = len(self.crew.tasks), self.task
        completed = min(self.index, total)
        running = self.state in ("RUNNING", "PAUSED")
        last = self.results[-1] if self.results else None
        status = {
            "RUNNING": f"Running task {task.id} ({task.agent})",
            "PAUSED": "Pending Human Input",
            "SUCCESS": None,
            "FAILED": self.error,
            "REVOKED": "Execution stopped",
        }[self.state]
        final = self.final_text() if self.state == "SUCCESS" else None
        return {
            "state": self.state,
            "status": status,
            "result": self.result() if self.state == "SUCCESS" else None,
            "result_json": _json(final) if final else None,
            "last_step": {"agent": task.agent, "task": task.id, "step_type": "thought"} if running else None,
            "last_executed_task": {"name": last.task_id, "output": last.output} if last else None,
            "usage_metrics": self.usage(),
            "progress": {
                "unit": "tasks",
                "completed": completed,
                "total": total,
                "remaining": total - completed,
                "current": task.id,
                "current_agent": task.agent,
                "started_at": self._iso(self.created_at),
                "updated_at": self._iso(self.updated_at),
                "duration_seconds": self.execution_time(now),
            },
            "source": "memory",
        }

    def documented(self, now: float) -> dict[str, Any]:
        """One of the three OpenAPI shapes; a paused run shows as ``running`` (the docs know no pause)."""
        if self.state == "SUCCESS":
            return {"status": "completed", "result": self.result(), "execution_time": self.execution_time(now)}
        if self.state == "FAILED":
            return {"status": "error", "error": self.error or "failed", "execution_time": self.execution_time(now)}
        if self.state == "REVOKED":
            # The OpenAPI has no stopped shape: the live state's word, keyed by status like the documented ones.
            return {"status": "revoked", "execution_time": self.execution_time(now)}
        completed = min(self.index, len(self.crew.tasks))
        return {
            "status": "running",
            "current_task": self.task.id,
            "progress": {"completed_tasks": completed, "total_tasks": len(self.crew.tasks)},
        }
