"""What the configuration says about crews: each deployment, its timeouts, and its inputs beyond their names.

These models are read by :mod:`crew_mcp.settings` (the only module that reads the environment and files) from
the TOML config file or the ``CREW_MCP_CREW_*`` variables; they hold values, never read anything themselves.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, WithJsonSchema, field_validator

__all__ = [
    "CREW_NAME_RE",
    "CrewConfig",
    "InputConfig",
    "InputType",
    "JSONValue",
    "StatusPathMode",
    "StrictModel",
    "TimeoutConfig",
]

CREW_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array")
JSONValue = Annotated[Any, WithJsonSchema({"anyOf": [{"type": t} for t in _JSON_TYPES]})]
"""Any TOML/JSON value (a default or an example); declared with its types so schemas never say "anything"."""
InputType = Literal["string", "integer", "number", "boolean", "object", "array"]
StatusPathMode = Literal["auto", "/status/{kickoff_id}", "/{kickoff_id}/status"]


class StrictModel(BaseModel):
    """A configuration model that refuses unknown fields (a typo in the config file is an error, not ignored)."""

    model_config = ConfigDict(extra="forbid")


class InputConfig(StrictModel):
    """What is known about one crew input beyond its name (AMP's ``/inputs`` gives names only)."""

    description: str = ""
    type: InputType = "string"
    enum: list[str] | None = None
    default: JSONValue = None
    example: JSONValue = None
    required: bool = True


class TimeoutConfig(StrictModel):
    """Per-crew HTTP timeouts in seconds."""

    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=30.0, gt=0)
    total: float = Field(default=60.0, gt=0)


class CrewConfig(StrictModel):
    """One configured crew deployment."""

    name: str
    url: str
    token: SecretStr | None = None
    description: str = ""
    inputs: dict[str, InputConfig] = Field(default_factory=dict)
    status_path: StatusPathMode = "auto"
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig)
    allow_extra_inputs: bool = False
    typed_tool: bool | None = None
    simulated: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not CREW_NAME_RE.match(v):
            raise ValueError("must be lower-case letters, digits and '_', starting with a letter (at most 48)")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")
