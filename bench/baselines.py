"""Baseline MCP servers the benchmarks compare crew-mcp against.

``python -m bench.baselines floor [--http]``
    The floor for the MCP layer: a bare ``MCPServer`` whose ``get_status`` tool does the same single GET to the
    crew's status endpoint through one shared ``httpx2.AsyncClient`` (opened in the lifespan), and an ``echo``
    tool that does nothing. Nothing can be faster than this and still call the crew over MCP.

``python -m bench.baselines naive [--http]``
    The naive bridge: the shape of the official crewAIInc/enterprise-mcp-server, which opens a new HTTP client
    for every tool call (``async with httpx.AsyncClient() as client: await client.get(...)``), here with httpx2.

Both read the crew's URL and token from ``BENCH_CREW_URL`` and ``BENCH_CREW_TOKEN``. With ``--http`` they serve
streamable HTTP at ``http://127.0.0.1:PORT/mcp`` (a free port, printed on stdout) plus ``/healthz``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp.server import MCPServer
from mcp.server.mcpserver import Context


def _config() -> tuple[str, dict[str, str]]:
    url = os.environ["BENCH_CREW_URL"].rstrip("/")
    return url, {"Authorization": f"Bearer {os.environ['BENCH_CREW_TOKEN']}"}


def floor_server() -> MCPServer:
    url, headers = _config()

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[httpx2.AsyncClient]:
        async with httpx2.AsyncClient(headers=headers) as http:
            yield http

    mcp = MCPServer("bench-floor", lifespan=lifespan, log_level="WARNING")

    @mcp.tool()
    async def get_status(kickoff_id: str, ctx: Context) -> dict[str, Any]:
        """One GET of the run's status, through the shared client."""
        http = ctx.request_context.lifespan_context
        assert isinstance(http, httpx2.AsyncClient)
        response = await http.get(f"{url}/status/{kickoff_id}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    @mcp.tool()
    async def echo(text: str = "") -> str:
        """Do nothing: the cost of the MCP layer alone."""
        return text

    return mcp


def naive_server() -> MCPServer:
    url, headers = _config()
    mcp = MCPServer("bench-naive", log_level="WARNING")

    @mcp.tool()
    async def get_status(kickoff_id: str) -> dict[str, Any]:
        """One GET of the run's status through a client built for this call (the official bridge's shape)."""
        async with httpx2.AsyncClient() as http:
            response = await http.get(f"{url}/status/{kickoff_id}", headers=headers)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    return mcp


def serve_http(mcp: MCPServer) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Mount, Route

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, like crew-mcp
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    app = Starlette(routes=[Route("/healthz", healthz), Mount("/", app=mcp_app)], lifespan=lifespan)
    print(f"bench: serving MCP at http://127.0.0.1:{port}/mcp", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])


def main(argv: list[str]) -> None:
    kind = argv[0] if argv else "floor"
    mcp = {"floor": floor_server, "naive": naive_server}[kind]()
    if "--http" in argv:
        serve_http(mcp)
    else:
        mcp.run("stdio")


if __name__ == "__main__":
    main(sys.argv[1:])
