"""Helpers shared by the long-run and human-in-the-loop tests (test_waits, test_approvals, test_webhooks).

Two set-ups:

* in-memory: the MCP server through the SDK's ``Client``, the simulator over ``httpx2.ASGITransport`` on a
  manual clock, and (when ``webhooks=True``) the simulator's webhooks delivered in-process to crew-mcp's
  receiver, so a pause that only a webhook announces (documented shape) is deterministic too;
* real sockets: the simulator under uvicorn (``serve_simulator``) and crew-mcp's HTTP app (``build_app``)
  under uvicorn, both on 127.0.0.1 port 0.

It is also the base the other support modules build on (it imports none of them): what any MCP client test needs
(``ERA``/``MODES``, ``ok``/``refused`` for a tool call, ``read_json`` for a resource, ``until``/``eventually``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import httpx2
import uvicorn
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.types import ElicitRequestParams, ElicitResult, TextResourceContents
from starlette.applications import Starlette

from crew_mcp.assembly import open_service
from crew_mcp.clock import Clock, ManualClock
from crew_mcp.ledger import Ledger, open_ledger
from crew_mcp.runtime import Runtime
from crew_mcp.server import ServiceOpener, build_server
from crew_mcp.service import CrewService
from crew_mcp.settings import Settings
from crew_mcp.simulator import CrewSpec, Simulator, TaskSpec
from crew_mcp.webhooks import webhook_routes

ERA = {"auto": "2026-07-28", "legacy": "2025-11-25"}  # the SDK Client's mode → the protocol version it speaks
MODES = list(ERA)
_T = TypeVar("_T")
HOOK_BASE = "http://crew-mcp.test"
OWNER = "tester"


def documented(spec: CrewSpec) -> CrewSpec:
    """``spec`` answering ``/status`` in the documented OpenAPI shape (a pause shows as ``running``)."""
    return spec.model_copy(update={"name": f"{spec.name}_doc", "shape": "documented"})


def instant_review_crew() -> CrewSpec:
    """A crew whose only task finishes at once and waits for review: it pauses on kickoff."""
    return CrewSpec(
        name="instant",
        description="Pauses for review immediately",
        inputs=[],
        tasks=[TaskSpec(id="check", agent="Checker", duration=0, human_input=True, output="Checked.")],
    )


@dataclass
class Env:
    """One connected client, the simulator behind it, and every service the server's lifespan built."""

    client: Client
    sim: Simulator
    settings: Settings
    services: list[CrewService] = field(default_factory=list)
    clock: ManualClock | None = None

    @property
    def service(self) -> CrewService:
        return self.services[-1]

    async def call(self, tool: str, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        r = await self.client.call_tool(tool, args or {}, **kw)
        assert not r.is_error, r.content
        data: dict[str, Any] = r.structured_content or {}
        assert data, r.content
        return data

    async def error(self, tool: str, args: dict[str, Any] | None = None) -> str:
        r = await self.client.call_tool(tool, args or {})
        assert r.is_error, r.structured_content
        return "".join(getattr(c, "text", "") for c in r.content)

    async def kickoff(self, crew: str, inputs: dict[str, Any] | None = None, **extra: Any) -> str:
        run = await self.call("kickoff_crew", {"crew": crew, "inputs": inputs or {"topic": "tides"}, **extra})
        kickoff_id = run["kickoff_id"]
        assert isinstance(kickoff_id, str)
        return kickoff_id


def service_opener(
    sim: Simulator,
    services: list[CrewService] | None = None,
    *,
    ledger_url: str = "memory://",
    wrap: Callable[[Ledger], Ledger] | None = None,
    clock: Clock | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    poll_initial: float = 0.01,
) -> ServiceOpener:
    """``open_service`` bound to ``sim`` (its crews served in-process), a ledger at ``ledger_url`` (optionally
    wrapped, to inject faults), a clock and fast polling; each opened service is appended to ``services``."""

    @asynccontextmanager
    async def opener(settings: Settings, **kw: Any) -> AsyncIterator[CrewService]:
        ledger = open_ledger(ledger_url)
        async with open_service(
            settings,
            simulator=sim,
            ledger=wrap(ledger) if wrap else ledger,
            clock=clock,
            transport=transport,
            poll_initial=poll_initial,
            **kw,
        ) as service:
            if services is not None:
                services.append(service)
            yield service

    return opener


@asynccontextmanager
async def in_memory(
    mode: str,
    settings: Settings | None = None,
    *,
    crews: Sequence[CrewSpec] | None = None,
    webhooks: bool = False,
    poll_initial: float = 0.01,
    elicitation: Any = None,
    clock: Clock | None = None,
) -> AsyncIterator[Env]:
    """The MCP server over the in-memory transport against a manual-clock simulator.

    With ``webhooks`` the service sends webhook URLs at kickoff and the simulator delivers them in-process to
    crew-mcp's receiver (the routes ``build_app`` mounts), during ``await sim.advance(s)``.
    """
    settings = settings or Settings(owner=OWNER)
    runtime = Runtime()
    hooks = Starlette(routes=webhook_routes(lambda: runtime.service))
    transport = httpx2.ASGITransport(app=hooks) if webhooks else None
    sim = Simulator(crews, clock="manual", webhook_transport=transport)
    services: list[CrewService] = []
    mcp = build_server(
        settings,
        opener=service_opener(sim, services, poll_initial=poll_initial, clock=clock),
        runtime=runtime,
        webhook_base=HOOK_BASE if webhooks else None,
    )
    async with sim, Client(mcp, mode=mode, elicitation_callback=elicitation) as client:
        yield Env(client, sim, settings, services, clock if isinstance(clock, ManualClock) else None)


async def until(condition: Callable[[], bool], *, timeout: float = 2.0) -> None:
    """Check ``condition`` every 10 ms until it holds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


async def eventually(read: Callable[[], Awaitable[_T]], holds: Callable[[_T], bool], *, timeout: float = 5.0) -> _T:
    """``await read()`` every 20 ms until ``holds`` is true of what it returned (returned); fail after ``timeout``
    seconds. :func:`until` for a state only a call can read (a ledger, an HTTP endpoint)."""
    with anyio.fail_after(timeout):
        while True:
            value = await read()
            if holds(value):
                return value
            await anyio.sleep(0.02)


async def read_json(client: Client, uri: str) -> Any:
    """A resource's JSON content."""
    result = await client.read_resource(uri)
    content = result.contents[0]
    assert isinstance(content, TextResourceContents), content
    return json.loads(content.text)


async def ok(
    client: Client, tool: str, args: dict[str, Any] | None = None, *, timeout: float | None = 20.0
) -> dict[str, Any]:
    """A tool's structured result (the call must succeed and return one) within ``timeout`` seconds (``None``: the
    caller bounds a long wait itself)."""
    with anyio.fail_after(timeout):
        r = await client.call_tool(tool, args or {})
    assert not r.is_error, r.content
    assert isinstance(r.structured_content, dict) and r.structured_content, r.content
    return r.structured_content


async def refused(client: Client, tool: str, args: dict[str, Any] | None = None) -> str:
    """A tool's error sentence (the call must fail as a tool error)."""
    with anyio.fail_after(20):
        r = await client.call_tool(tool, args or {})
    assert r.is_error, r.structured_content
    return "".join(getattr(c, "text", "") for c in r.content)


def answering(action: str, content: dict[str, Any] | None = None, seen: list[str] | None = None) -> Any:
    """An elicitation callback that answers every form with ``action`` (and ``content`` when accepting)."""

    async def answer(_: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        if seen is not None:
            seen.append(params.message)
        return ElicitResult(action=action, content=content if action == "accept" else None)

    return answer


# ------------------------------------------------------------------------------------------ real sockets


def loopback_socket() -> socket.socket:
    """A socket bound to 127.0.0.1 on a free port (port 0), so the URL is known before the app is built."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve_on(app: Any, sock: socket.socket) -> AsyncIterator[str]:
    """Serve ``app`` under uvicorn (lifespan on) on ``sock``; yield its root URL."""
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=2))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            await until(lambda: server.started, timeout=10)
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True
    finally:
        sock.close()
