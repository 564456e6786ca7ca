"""What a simulated crew is: :class:`CrewSpec`, the built-in crews and :func:`load_crews`."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

__all__ = ["CrewSpec", "InputSpec", "TaskSpec", "builtin_crews", "load_crews"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Spec):
    """One input a crew asks for at kickoff."""

    name: str
    description: str = ""
    type: str = "string"
    example: str | None = None
    required: bool = True


class TaskSpec(_Spec):
    """One task of a crew, run in order.

    ``output`` is a :meth:`str.format` template; it may use every input by name and ``{feedback}``
    (the latest reviewer feedback on this task, empty at first), ``{task_id}``, ``{agent}``, ``{attempt}``.
    An empty template makes a generic output. ``duration`` is in simulated seconds (times ``time_scale``).
    """

    id: str
    agent: str
    description: str = ""
    duration: float = Field(default=2.0, ge=0)
    human_input: bool = False
    fail: bool = False
    output: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("task ids use letters, digits, '_' and '-' only")
        return value


class CrewSpec(_Spec):
    """One simulated AMP deployment, mounted at ``/{name}``.

    ``shape`` picks the status body (the live ``TaskStatus`` or the OpenAPI's documented shapes) and
    ``status_path`` the status route(s). ``stop_endpoint`` is ``"supported"`` for ``POST /stop/{kickoff_id}``,
    or ``"404"``/``"405"`` for an older deployment without it (any method answers that status).
    """

    name: str
    description: str = ""
    inputs: list[InputSpec] = Field(default_factory=list)
    tasks: list[TaskSpec]
    shape: Literal["documented", "taskstatus"] = "taskstatus"
    status_path: Literal["both", "/status/{kickoff_id}", "/{kickoff_id}/status"] = "both"
    stop_endpoint: Literal["supported", "404", "405"] = "supported"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value) or value.startswith("_"):
            raise ValueError("crew names use letters, digits, '_' and '-' only, and must not start with '_'")
        return value

    @model_validator(mode="after")
    def _unique(self) -> CrewSpec:
        if not self.tasks:
            raise ValueError("a crew needs at least one task")
        ids = [t.id for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"task ids must be unique, got {ids}")
        return self


def builtin_crews() -> list[CrewSpec]:
    """The demo crews: ``trip_planner``, ``research`` (one review), ``content_pipeline`` (two), ``flaky``."""
    trip = CrewSpec(
        name="trip_planner",
        description="Plans a trip from a budget, interests, a duration and the traveller's age.",
        inputs=[
            InputSpec(name="budget", description="Total budget with currency", example="1000 USD"),
            InputSpec(name="interests", description="Comma-separated interests", example="food, hikes"),
            InputSpec(name="duration", description="How long the trip lasts", example="7 days"),
            InputSpec(name="age", description="Age of the traveller", type="integer", example="35"),
        ],
        tasks=[
            TaskSpec(
                id="research_task",
                agent="Travel Researcher",
                duration=2.0,
                output="Destinations matching {interests} for a {age}-year-old within {budget}.",
            ),
            TaskSpec(
                id="planning_task",
                agent="Trip Planner",
                duration=2.5,
                output='{{"itinerary": "{duration} trip focused on {interests}", "budget": "{budget}"}}',
            ),
        ],
    )
    research = CrewSpec(
        name="research",
        description="Researches a topic and writes a report; a human reviews the report.",
        inputs=[InputSpec(name="topic", description="What to research", example="solid-state batteries")],
        tasks=[
            TaskSpec(id="research_task", agent="Researcher", duration=2.0, output="Findings on {topic}."),
            TaskSpec(
                id="write_task",
                agent="Writer",
                duration=2.0,
                human_input=True,
                output="Report on {topic}.",
            ),
        ],
    )
    content = CrewSpec(
        name="content_pipeline",
        description="Outline, draft and polish an article; a human reviews the outline and the draft.",
        inputs=[
            InputSpec(name="topic", description="Article topic", example="remote work"),
            InputSpec(name="audience", description="Who reads it", example="engineering managers"),
        ],
        tasks=[
            TaskSpec(id="outline", agent="Editor", duration=1.5, human_input=True, output="Outline: {topic}."),
            TaskSpec(
                id="draft", agent="Writer", duration=2.5, human_input=True, output="Draft on {topic} for {audience}."
            ),
            TaskSpec(id="polish", agent="Copy Editor", duration=1.5, output="Final article on {topic} for {audience}."),
        ],
    )
    flaky = CrewSpec(
        name="flaky",
        description="Always fails in its second task.",
        inputs=[InputSpec(name="topic", description="Anything", example="x")],
        tasks=[
            TaskSpec(id="first_task", agent="Worker", duration=1.5, output="Done with {topic}."),
            TaskSpec(id="second_task", agent="Worker", duration=1.5, fail=True),
        ],
    )
    return [trip, research, content, flaky]


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(crew)"


def load_crews(path: str | Path) -> list[CrewSpec]:
    """Read crews from a TOML (``[[crews]]`` tables) or JSON (``{"crews": [...]}`` or a list) file.

    Raises :class:`~crew_mcp.errors.ConfigError` naming the file, the crew and the field on any problem.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the crews file ({exc.strerror or exc}).") from None
    data: Any
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"{p}: not valid {kind}: {exc}.") from None
    entries = data.get("crews") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{p}: expected a non-empty list of crews ([[crews]] tables or a JSON 'crews' list).")
    crews: list[CrewSpec] = []
    for i, entry in enumerate(entries):
        label = f"crews[{i}]"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label = f"crew {entry['name']!r} ({label})"
        if not isinstance(entry, dict):
            raise ConfigError(f"{p}: {label} must be a table/object.")
        try:
            crews.append(CrewSpec.model_validate(entry))
        except ValidationError as exc:
            problems = "; ".join(f"field {_loc(e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            raise ConfigError(f"{p}: {label}: {problems}.") from None
    names = [c.name for c in crews]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{p}: crew names must be unique; repeated: {', '.join(dupes)}.")
    return crews
