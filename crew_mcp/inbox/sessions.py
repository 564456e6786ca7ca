"""Inbox sessions and sign-ins in progress, kept server-side in a :class:`~crew_mcp.inbox.store.Store`.

The browser holds only opaque random values (32 bytes, URL-safe): the session id in the session cookie and, while
a sign-in is under way, a sign-in id in its own short-lived cookie. The store keys them by their SHA-256, so a copy
of the store (a Redis dump, the SQLite file) holds nothing a browser could present. A session carries who signed
in (the principal, their groups and scopes as granted at sign-in), how (``oauth``, ``key`` or ``local``), when it
ends (a fixed lifetime from sign-in, ``CREW_MCP_INBOX_SESSION_HOURS``), and its CSRF token (the synchronizer token
every POST must carry). Access tokens are verified at sign-in and then dropped: the inbox never calls anything with
them, so it keeps none.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from .store import Store

__all__ = ["LOGIN_SECONDS", "Session", "Sessions", "new_token"]

LOGIN_SECONDS = 600.0
"""How long a sign-in may take, from the start page to the identity provider's redirect back."""

SessionKind = Literal["oauth", "key", "local"]


def new_token() -> str:
    """A fresh opaque value: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


def _key(kind: str, token: str) -> str:
    return f"{kind}:{hashlib.sha256(token.encode()).hexdigest()}"


class Session(BaseModel):
    """One signed-in browser: who, how, until when, and the CSRF token its pages carry."""

    principal: str = Field(description="The owner string of the person's runs (oauth:<iss>#<sub>, key:<name>, ...)")
    name: str = Field(description="What the page calls them")
    kind: SessionKind
    scopes: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    csrf: str = Field(description="The synchronizer token every POST of this session must carry")
    created: float
    expires: float


class Sessions:
    """Create, find and end sessions, and hold the state of sign-ins in progress (see the module docstring)."""

    def __init__(self, store: Store, *, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.lifetime = lifetime
        self._clock = clock

    async def create(
        self,
        *,
        principal: str,
        name: str,
        kind: SessionKind,
        scopes: list[str] | None = None,
        groups: list[str] | None = None,
    ) -> tuple[str, Session]:
        """A new session (a new id: signing in never reuses an id the browser held before); returns (id, session)."""
        now = self._clock()
        session = Session(
            principal=principal,
            name=name,
            kind=kind,
            scopes=sorted(scopes or []),
            groups=sorted(groups or []),
            csrf=new_token(),
            created=now,
            expires=now + self.lifetime,
        )
        sid = new_token()
        await self.store.put(_key("session", sid), session.model_dump_json(), self.lifetime)
        return sid, session

    async def find(self, sid: str | None) -> Session | None:
        """The live session ``sid`` names, or None (unknown, ended, expired, or unreadable)."""
        if not sid or len(sid) > 200:
            return None
        raw = await self.store.get(_key("session", sid))
        if raw is None:
            return None
        try:
            session = Session.model_validate_json(raw)
        except ValidationError:
            return None
        return session if session.expires > self._clock() else None

    async def end(self, sid: str | None) -> None:
        """End the session ``sid`` names (signing out)."""
        if sid:
            await self.store.delete(_key("session", sid))

    async def start_login(self, data: dict[str, Any]) -> str:
        """Remember a sign-in in progress (its state, PKCE verifier, form token); returns the id for its cookie."""
        lid = new_token()
        await self.store.put(_key("login", lid), json.dumps(data), LOGIN_SECONDS)
        return lid

    async def login(self, lid: str | None) -> dict[str, Any] | None:
        """The sign-in in progress ``lid`` names, left in place (the key form shows it again after a wrong key)."""
        raw = await self.store.get(_key("login", lid)) if lid and len(lid) <= 200 else None
        return _object(raw)

    async def finish_login(self, lid: str | None) -> dict[str, Any] | None:
        """The sign-in in progress ``lid`` names, removed: an authorization code is redeemed at most once."""
        raw = await self.store.take(_key("login", lid)) if lid and len(lid) <= 200 else None
        return _object(raw)


def _object(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
