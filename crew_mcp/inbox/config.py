"""The approvals inbox's settings (the ``[inbox]`` table and ``CREW_MCP_INBOX_*``); data only, no I/O.

``settings.py`` imports this module, so it imports nothing beyond pydantic.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["INBOX_PATH", "InboxConfig"]

INBOX_PATH = "/approvals"
"""Where the approvals inbox lives (under ``CREW_MCP_PUBLIC_URL``); reviewer notices link there."""

_STORE_URL = re.compile(r"^(memory://|sqlite:|redis://|rediss://|unix://)")


class InboxConfig(BaseModel):
    """How ``serve --http`` serves the approvals inbox at ``/approvals``.

    ``client_id`` / ``client_secret``: crew-mcp's own OAuth client at the identity provider, used to sign people in
    (authorization code + PKCE; no secret: a public client). Unset: crew-mcp registers one itself (RFC 7591) when the
    provider allows it. ``sessions_url``: where sessions live (``memory://``, ``sqlite:///path.db``, ``redis://...``);
    unset: beside the ledger (a ``inbox-sessions.db`` next to a SQLite ledger, the same Redis under the ledger's
    prefix, memory for a memory ledger).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    client_id: str | None = Field(default=None, min_length=1, max_length=200)
    client_secret: SecretStr | None = None
    sessions_url: str | None = None
    session_hours: float = Field(default=8.0, gt=0, le=720)
    poll_seconds: float = Field(default=5.0, ge=1, le=60)

    @field_validator("sessions_url")
    @classmethod
    def _store_url(cls, v: str | None) -> str | None:
        if v is not None and not _STORE_URL.match(v):
            raise ValueError("must be memory://, sqlite:///path/sessions.db or redis://host:6379/0")
        return v or None

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value() else None
