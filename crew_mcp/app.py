"""Streamable HTTP: the MCP endpoint at ``/mcp``, ``/healthz``, ``/readyz``, ``/metrics``, and the webhook receiver.

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
from .ops import counted_webhooks, http_telemetry, operator_routes
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
    runtime = Runtime(telemetry=http_telemetry())
    local_base = f"http://{f'[{host}]' if ':' in host else host}:{port}" if port else None
    webhook_base = settings.public_url or (local_base if settings.simulated else None)
    mcp = build_server(settings, runtime=runtime, webhook_base=webhook_base, opener=opener)
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", host=host)

    async def healthz(_: Request) -> Response:
        ready = runtime.service is not None
        return JSONResponse(
            {"status": "ok" if ready else "starting", "version": __version__}, status_code=200 if ready else 503
        )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"]), *operator_routes(settings, runtime)]
    if webhook_base is not None:
        routes += counted_webhooks(webhook_routes(lambda: runtime.service), runtime.telemetry)
    routes.append(Mount("/", app=mcp_app))
    return Starlette(routes=routes, lifespan=lifespan)


def serve_http(settings: Settings, *, host: str, port: int) -> None:
    """Run the HTTP server until interrupted (uvicorn, one process)."""
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
    # No access log: webhook URLs carry per-execution secrets. No log config of uvicorn's own: its records go to
    # crew-mcp's handler (crew_mcp.logs), in the configured format and with secrets masked.
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), lifespan="on", access_log=False, log_config=None)
    uvicorn.Server(config).run(sockets=[sock])
