"""Assembling the inbox: its routes under ``/approvals``, its session store and its sign-in, for ``build_app``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx2
from mcp.server.auth.provider import TokenVerifier
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..auth.keys import KeyVerifier
from ..ledger import default_ledger_url
from ..runtime import Runtime
from ..settings import Settings
from .api import InboxAPI
from .config import INBOX_PATH
from .context import InboxContext
from .oauth import OAuthSignIn
from .pages import render_signin, static_file
from .security import WebGuard
from .sessions import Sessions
from .signin import SignIn
from .store import Store, open_store, store_url

__all__ = ["Inbox", "build_inbox"]

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Inbox:
    """The inbox's routes (mount them before the MCP app) and its store (close it when the server stops)."""

    routes: list[BaseRoute]
    store: Store

    async def aclose(self) -> None:
        """Release the session store's connections."""
        await self.store.aclose()


def build_inbox(
    settings: Settings,
    *,
    host: str,
    runtime: Runtime,
    security: TransportSecuritySettings,
    http: httpx2.AsyncClient | None,
    verifier: TokenVerifier | None,
    store: Store | None = None,
) -> Inbox | None:
    """The approvals inbox of ``serve --http`` (None when ``CREW_MCP_INBOX_ENABLED=false``).

    ``security``, ``http`` and ``verifier`` are the app's own (the last two None without authentication): the inbox
    answers the Host names the MCP endpoint does, and sign-in verifies tokens exactly as the MCP endpoint does.
    ``store`` replaces the session store the settings name (tests).
    """
    config = settings.inbox
    if not config.enabled:
        return None
    guard = WebGuard.of(settings.public_url, host, security)
    store = store or open_store(store_url(config.sessions_url, settings.ledger_url or default_ledger_url()))
    ctx = InboxContext(settings, runtime, guard, Sessions(store, lifetime=config.session_hours * 3600))
    oauth = None
    auth = settings.auth
    if auth.mode == "oauth" and http is not None and verifier is not None:
        redirect = f"{settings.public_url}{INBOX_PATH}/callback"
        oauth = OAuthSignIn(auth, config, http=http, verifier=verifier, store=store, redirect_uri=redirect)
    keys = KeyVerifier(auth.keys) if auth.mode == "keys" else None
    signin = SignIn(ctx, oauth=oauth, keys=keys)
    api = InboxAPI(ctx)

    def checked(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            # DNS rebinding: a foreign Host gets nothing, not even a session for the local user.
            if not guard.host_ok(request):
                return WebGuard.protect(Response("Invalid Host header", status_code=421, media_type="text/plain"))
            if guard.problem and handler is not static_file:
                return render_signin(status=503, mode="none", message=guard.problem, tone="danger")
            return await handler(request)

        return endpoint

    p = INBOX_PATH
    routes: list[BaseRoute] = [
        Route(p, checked(signin.page), methods=["GET"]),
        Route(f"{p}/", checked(signin.page), methods=["GET"]),
        Route(f"{p}/login", checked(signin.login_page), methods=["GET"]),
        Route(f"{p}/login", checked(signin.key_login), methods=["POST"]),
        Route(f"{p}/login/start", checked(signin.start), methods=["GET"]),
        Route(f"{p}/callback", checked(signin.callback), methods=["GET"]),
        Route(f"{p}/logout", checked(signin.logout), methods=["POST"]),
        Route(f"{p}/api/state", checked(api.state), methods=["GET"]),
        Route(f"{p}/api/decide", checked(api.decide), methods=["POST"]),
        Route(f"{p}/api/stop", checked(api.stop), methods=["POST"]),
        Route(f"{p}/static/{{name}}", checked(static_file), methods=["GET"]),
    ]
    return Inbox(routes, store)
