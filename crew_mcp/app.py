"""HTTP: the MCP endpoint at ``/mcp``, the deprecated HTTP+SSE transport, ``/healthz``, ``/readyz``, ``/metrics``,
and the webhook receiver.

Both protocol eras are served: 2025-11-25 clients get stateful sessions (``Mcp-Session-Id``, expired when idle
and capped in number), 2026-07-28 clients send self-contained requests. Hosts and gateways that speak only the
2024-11-05 HTTP+SSE transport open ``GET /sse`` and post to the ``/messages/`` endpoint it names; those routes
have the same Host/Origin checks, body limit and authentication as ``/mcp`` and share the one running service.
With ``CREW_MCP_AUTH=oauth|keys`` the MCP endpoints are a protected resource (see :mod:`crew_mcp.auth` and
docs/auth.md): tokens are verified, RFC 9728 metadata is published, scopes and the per-principal limits are
enforced; without authentication only loopback addresses are served. ``/healthz`` stays open; webhooks keep their
own per-execution secrets. The approvals inbox (:mod:`crew_mcp.inbox`) is served at ``/approvals``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .assembly import open_service
from .auth.wiring import is_loopback
from .errors import ConfigError
from .fleet import Fleet, build_fleet
from .fleet.events import RETRY_MS, SessionScope
from .fleet.http import DrainingServer, with_fleet
from .inbox.app import build_inbox
from .ledger import default_ledger_url
from .ops import counted_webhooks, http_telemetry, operator_routes
from .runtime import Runtime
from .server import ServiceOpener, build_server
from .settings import Settings
from .webhooks import webhook_routes

__all__ = ["MESSAGES_PATH", "SSE_PATH", "build_app", "check_exposure", "serve_http"]

SSE_PATH = "/sse"
MESSAGES_PATH = "/messages/"


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve a non-loopback address without authentication.

    Raises:
        ConfigError: ``host`` is reachable from other machines and ``CREW_MCP_AUTH`` is not configured.
    """
    if is_loopback(host) or settings.auth.mode != "none":
        return
    raise ConfigError(
        f"Refusing to serve on {host} without authentication: anyone who can reach the port could run your crews "
        "with your tokens. Configure it: CREW_MCP_AUTH=oauth with CREW_MCP_OAUTH_ISSUER=<your identity provider> "
        "and CREW_MCP_PUBLIC_URL=<the https URL people use>, or CREW_MCP_AUTH=keys with keys made by "
        "`crew-mcp keys new` (README: Run it for a team). Or bind 127.0.0.1."
    )


def build_app(
    settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, opener: ServiceOpener = open_service
) -> Assembled:
    """The ASGI app of ``crew-mcp serve --http``.

    Webhooks are offered to crews (and their route served) only when crews can reach this server: with a
    configured public URL, or when every crew is local (the built-in simulator).

    Raises:
        ConfigError: a non-loopback ``host`` without authentication, or without a public URL to derive the
            Host/Origin allow-lists from.
    """
    from .auth import (
        GateVerified,
        Limiter,
        ScopeGate,
        auth_settings,
        build_verifier,
        protected_resource_routes,
        transport_security,
    )

    check_exposure(settings, host)
    config = settings.auth
    limits = config.limits
    security = transport_security(settings.public_url, host)
    runtime = Runtime(telemetry=http_telemetry())
    # fleet hooks (docs/fleet.md): shared fan-out, leases and SSE event store; draining on shutdown
    fleet = build_fleet(settings, settings.ledger_url or default_ledger_url())
    opener = with_fleet(opener, fleet)
    # One client for the server's lifetime: the identity provider's metadata, keys, introspection and the inbox's
    # sign-in. Only OAuth talks to one (API keys are checked locally).
    http = httpx2.AsyncClient() if config.mode == "oauth" else None
    verifier = build_verifier(config, http)
    if verifier is not None:
        runtime.limiter = Limiter(limits)
    local_base = f"http://{f'[{host}]' if ':' in host else host}:{port}" if port else None
    webhook_base = settings.public_url or (local_base if settings.simulated else None)
    mcp = build_server(
        settings,
        runtime=runtime,
        webhook_base=webhook_base,
        opener=opener,
        # behind the ScopeGate below: the SDK reuses the gate's verification of a tool call's token
        token_verifier=GateVerified(verifier) if verifier is not None else None,
        auth=auth_settings(config),
    )
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        host=host,
        transport_security=security,
        max_request_body_size=limits.max_body_bytes,
        session_idle_timeout=limits.session_idle_seconds,
        max_sessions=limits.max_sessions,
        event_store=fleet.events,
        retry_interval=RETRY_MS,
    )
    # The SDK's whole SSE app (GET /sse, POST /messages/), middleware included: with auth configured, that
    # middleware authenticates the request and puts the principal where the tools read it (the owner of runs).
    sse_app = mcp.sse_app(
        sse_path=SSE_PATH,
        message_path=MESSAGES_PATH,
        host=host,
        transport_security=security,
        max_request_body_size=limits.max_body_bytes,
    )

    # Approvals inbox (issue 13, crew_mcp/inbox/, docs/inbox.md): /approvals, mounted before the MCP app.
    inbox = build_inbox(settings, host=host, runtime=runtime, security=security, http=http, verifier=verifier)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            await fleet.aclose()
            if inbox is not None:
                await inbox.aclose()
            if http is not None:
                await http.aclose()

    routes: list[BaseRoute] = [
        _healthz(runtime, fleet),
        *operator_routes(settings, runtime, verifier=verifier),
        *protected_resource_routes(config),
    ]
    if webhook_base is not None:
        routes += counted_webhooks(webhook_routes(lambda: runtime.service), runtime.telemetry)
    if inbox is not None:
        routes += inbox.routes
    routes.append(Mount("/", app=SessionScope(mcp_app)))
    app: ASGIApp = _SseDispatch(Starlette(routes=routes, lifespan=lifespan), sse_app)
    if verifier is not None:
        # Per-tool scopes (403 insufficient_scope with the scope to ask for) and the kickoff rate (429 Retry-After).
        # Both transports that carry tool calls: /mcp, and the HTTP+SSE transport's message endpoint.
        app = ScopeGate(
            app,
            verifier=verifier,
            config=config,
            limiter=runtime.limiter,
            paths=("/mcp", MESSAGES_PATH),
            max_body=limits.max_body_bytes,
        )
    return Assembled(app, runtime.drain, fleet)


def _healthz(runtime: Runtime, fleet: Fleet) -> Route:
    async def healthz(_: Request) -> Response:
        """Liveness: 200 while the process serves (draining included: /readyz is what turns traffic away)."""
        alive = runtime.service is not None
        state = "draining" if runtime.draining else "ok" if alive else "starting"
        body: dict[str, object] = {"status": state, "version": __version__, "replica": fleet.replica}
        if runtime.service is not None:  # executions this replica watches, and how many of them it polls (leases)
            hub = runtime.service.runs.hub
            body.update(watches=hub.active, waiters=hub.waiting, leases=len(fleet.leases.held))
        return JSONResponse(body, status_code=200 if alive else 503)

    return Route("/healthz", healthz, methods=["GET"])


class _SseDispatch:
    """Send the HTTP+SSE transport's two paths to the SDK's SSE app (its own routes and middleware), everything
    else (and the lifespan) to the main app."""

    def __init__(self, main: ASGIApp, sse: ASGIApp) -> None:
        self._main = main
        self._sse = sse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == SSE_PATH or path.startswith(MESSAGES_PATH):
            await self._sse(scope, receive, send)
        else:
            await self._main(scope, receive, send)


class Assembled:
    """The ASGI app of ``serve --http``, with what serving it needs besides: ``drain`` (called on SIGTERM, see
    :class:`~crew_mcp.fleet.http.DrainingServer`) and the replica's ``fleet`` pieces."""

    def __init__(self, app: ASGIApp, drain: Callable[[], Awaitable[None]], fleet: Fleet) -> None:
        self.app = app
        self.drain = drain
        self.fleet = fleet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def serve_http(settings: Settings, *, host: str, port: int) -> None:
    """Run the HTTP server until interrupted (uvicorn, one process).

    Raises:
        ConfigError: see :func:`build_app`.
        OSError: the address cannot be bound.
    """
    import math
    import socket

    import uvicorn

    check_exposure(settings, host)
    # IPPROTO_TCP explicitly, so asyncio sets TCP_NODELAY on every accepted connection (it checks the proto);
    # without it each keep-alive response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listen before announcing the URL: a client that connects at once then waits in the backlog until the
    # server (and its lifespan) is up, instead of being refused.
    sock.listen(2048)
    bound = sock.getsockname()[1]
    app = build_app(settings, host=host, port=bound)
    print(f"crew-mcp: serving MCP at http://{host}:{bound}/mcp", flush=True)
    if settings.auth.mode != "none":
        public = f"{settings.public_url}/mcp" if settings.public_url else f"http://{host}:{bound}/mcp"
        print(f"crew-mcp: clients connect to {public} (authentication: {settings.auth.mode})", flush=True)
    # No access log: webhook URLs carry per-execution secrets. No log config of uvicorn's own: its records go to
    # crew-mcp's handler (crew_mcp.logs), in the configured format and with secrets masked.
    grace = settings.shutdown_grace_seconds
    # uvicorn takes whole seconds here; DrainingServer bounds the drain by the exact grace
    config = uvicorn.Config(
        app,
        log_level=settings.log_level.lower(),
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=math.ceil(grace),
    )
    DrainingServer(config, app.drain, grace).run(sockets=[sock])
