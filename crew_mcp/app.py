"""Streamable HTTP: the MCP endpoint at ``/mcp``, ``/healthz``, and the webhook receiver.

Both protocol eras are served: 2025-11-25 clients get stateful sessions (``Mcp-Session-Id``), 2026-07-28
clients send self-contained requests. Only loopback addresses are bound until remote authentication
exists (see the README).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from . import __version__
from .fleet import build_fleet
from .fleet.events import RETRY_MS, SessionScope
from .fleet.http import DrainingServer, with_fleet
from .ledger import default_ledger_url
from .runtime import Runtime
from .server import ServiceOpener, build_server
from .service import open_service
from .settings import Settings
from .webhooks import webhook_routes

__all__ = ["build_app", "serve_http"]


def build_app(
    settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, opener: ServiceOpener = open_service
) -> Starlette:
    """The ASGI app of ``crew-mcp serve --http``.

    Webhooks are offered to crews (and their route served) only when crews can reach this server: with a
    configured public URL, or when every crew is local (the built-in simulator).
    """
    runtime = Runtime()
    # fleet hooks (docs/fleet.md): shared fan-out, leases and SSE event store; draining on shutdown
    fleet = build_fleet(settings, settings.ledger_url or default_ledger_url())
    opener = with_fleet(opener, fleet)
    draining = False
    local_base = f"http://{f'[{host}]' if ':' in host else host}:{port}" if port else None
    webhook_base = settings.public_url or (local_base if settings.simulated else None)
    mcp = build_server(settings, runtime=runtime, webhook_base=webhook_base, opener=opener)
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp", host=host, event_store=fleet.events, retry_interval=RETRY_MS
    )

    async def healthz(_: Request) -> Response:
        ready = runtime.service is not None and not draining
        state = "draining" if draining else "ok" if ready else "starting"
        body: dict[str, object] = {"status": state, "version": __version__, "replica": fleet.replica}
        if runtime.service is not None:  # executions this replica watches, and how many of them it polls (leases)
            hub = runtime.service.runs.hub
            body.update(watches=hub.active, waiters=hub.waiting, leases=len(fleet.leases.held))
        return JSONResponse(body, status_code=200 if ready else 503)

    async def drain() -> None:
        nonlocal draining
        draining = True
        service = runtime.service
        if service is not None:
            await service.runs.hub.drain()  # returns once the loops have released their leases

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            await fleet.aclose()

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    if webhook_base is not None:
        routes += webhook_routes(lambda: runtime.service)
    routes.append(Mount("/", app=SessionScope(mcp_app)))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.drain = drain
    app.state.fleet = fleet
    return app


def serve_http(settings: Settings, *, host: str, port: int) -> None:
    """Run the HTTP server until interrupted (uvicorn, one process)."""
    import math
    import socket

    import uvicorn

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
    # No access log: webhook URLs carry per-execution secrets.
    grace = settings.shutdown_grace_seconds
    # uvicorn takes whole seconds here; DrainingServer bounds the drain by the exact grace
    config = uvicorn.Config(
        app,
        log_level=settings.log_level.lower(),
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=math.ceil(grace),
    )
    DrainingServer(config, app.state.drain, grace).run(sockets=[sock])
