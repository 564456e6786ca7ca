"""What every inbox route shares: the settings, the running service, sessions, the web guard, and who is asking.

A session becomes a :class:`~crew_mcp.identity.Caller` here, once per request, by the rule the MCP boundary uses
for a token (:meth:`~crew_mcp.identity.Caller.for_principal`): the same owner string, crews and approval rights,
with the decision attributed to ``human`` via ``inbox``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..auth.config import (
    SCOPE_APPROVE,
    SCOPE_READ,
    SCOPE_RUN,
    Principal,
    missing_scope,
)
from ..identity import Caller
from ..intake import ClientDisconnect, TooLarge, read_capped
from ..runtime import Runtime
from ..service import CrewService
from ..settings import Settings
from .security import WebGuard
from .sessions import Session, Sessions
from .state import Viewer

__all__ = ["InboxContext", "json_error", "read_body"]


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` bytes (declared or sent): never read further.

    A body the client cut off reads as empty: it is refused like any incomplete request (nobody is left to read
    the answer), not a server error.
    """
    try:
        return await read_capped(request, limit)
    except TooLarge:
        return None
    except ClientDisconnect:
        return b""


def json_error(status: int, message: str, **extra: Any) -> Response:
    """A refusal for the page's scripts: ``{"error": sentence}`` with the security headers."""
    return WebGuard.protect(JSONResponse({"error": message, **extra}, status_code=status))


@dataclass
class InboxContext:
    """The shared state of the inbox routes."""

    settings: Settings
    runtime: Runtime
    guard: WebGuard
    sessions: Sessions

    @property
    def mode(self) -> str:
        """``none`` (the local user, no sign-in), ``oauth`` or ``keys``."""
        return self.settings.auth.mode

    @property
    def service(self) -> CrewService | None:
        """The running service (None while the server starts)."""
        return self.runtime.service

    async def session(self, request: Request) -> tuple[str | None, Session | None]:
        """The request's session id and live session (None, None without one)."""
        sid = request.cookies.get(self.guard.session_cookie)
        session = await self.sessions.find(sid)
        return (sid, session) if session is not None else (None, None)

    def principal(self, session: Session) -> Principal:
        """The principal a session stands for (groups and scopes as granted at sign-in)."""
        return Principal(session.principal, frozenset(session.scopes), frozenset(session.groups))

    def lacks(self, session: Session, scope: str) -> str | None:
        """``scope`` when the deployment enforces it and the session's sign-in did not grant it, else None."""
        if session.kind == "local":
            return None
        return missing_scope(self.principal(session), scope, self.settings.auth)

    def caller(self, session: Session) -> Caller:
        """The caller a session's requests act as: a person, through the inbox."""
        if session.kind == "local":
            return Caller(owner=session.principal, by="human", via="inbox")
        return Caller.for_principal(self.principal(session), self.settings.auth, by="human", via="inbox")

    def viewer(self, session: Session) -> Viewer:
        """What the page says about the person and what it offers them."""
        caller = self.caller(session)
        return Viewer(
            name=session.name,
            principal=session.principal,
            kind=session.kind,
            approver=caller.approver,
            may_decide=self.lacks(session, SCOPE_APPROVE) is None,
            may_stop=self.lacks(session, SCOPE_RUN) is None,
        )

    def may_read(self, session: Session) -> bool:
        """Whether the session may see the inbox at all (crew:read, when enforced)."""
        return self.lacks(session, SCOPE_READ) is None
