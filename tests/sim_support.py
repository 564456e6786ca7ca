"""Helpers for tests that talk to the AMP simulator: crew calls in AMP's words, and a webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from process_support import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crew_mcp.simulator import Simulator, serve_app


@asynccontextmanager
async def sim_http(sim: Simulator) -> AsyncIterator[httpx2.AsyncClient]:
    """An in-process client of ``sim`` at ``http://sim`` (a crew's base is ``/{name}``), with the simulator's bearer
    token unless it wants none: the AMP API as the dashboard or a script reaches it. No ASGI lifespan runs: with
    ``clock="manual"`` none is needed (``advance()`` moves time and delivers webhooks)."""
    headers = {"Authorization": f"Bearer {sim.token}"} if sim.token is not None else {}
    transport = httpx2.ASGITransport(app=sim.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://sim", headers=headers) as client:
        yield client


async def kickoff(client: httpx2.AsyncClient, crew: str, inputs: dict[str, str], **extra: Any) -> str:
    """POST /kickoff; the new kickoff_id (asserts a 200)."""
    response = await client.post(f"/{crew}/kickoff", json={"inputs": inputs, **extra})
    assert response.status_code == 200, response.text
    kickoff_id = response.json()["kickoff_id"]
    assert isinstance(kickoff_id, str)
    return kickoff_id


async def status(client: httpx2.AsyncClient, crew: str, kickoff_id: str) -> dict[str, Any]:
    """GET /status/{kickoff_id}; the body (asserts a 200)."""
    response = await client.get(f"/{crew}/status/{kickoff_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def resume(
    client: httpx2.AsyncClient, crew: str, kickoff_id: str, task_id: str, feedback: str, approve: bool, **extra: Any
) -> httpx2.Response:
    """POST /resume with a decision; the raw response."""
    body = {"execution_id": kickoff_id, "task_id": task_id, "human_feedback": feedback, "is_approve": approve}
    return await client.post(f"/{crew}/resume", json={**body, **extra})


class Sink:
    """A webhook receiver: records ``(path, authorization header, JSON body)``; paths with "fail" answer 500."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str | None, dict[str, Any]]] = []
        self.crew_done = anyio.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> JSONResponse:
        self.received.append((request.url.path, request.headers.get("authorization"), await request.json()))
        if request.url.path == "/crew":
            self.crew_done.set()
        return JSONResponse({"ok": True}, status_code=500 if "fail" in request.url.path else 200)

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.received]


@asynccontextmanager
async def sink() -> AsyncIterator[tuple[Sink, str]]:
    """A :class:`Sink` served on loopback, and its root URL."""
    receiver = Sink()
    async with serve_app(receiver.app) as root:
        yield receiver, root


def closed_port_url() -> str:
    """A URL on a loopback port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/hook"
