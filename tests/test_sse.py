"""The deprecated HTTP+SSE transport (protocol 2024-11-05) beside streamable HTTP in ``serve --http`` (issue 10,
defect 8): ``GET /sse`` names the ``/messages/`` endpoint to post to, on the same port, behind the same Host/Origin
checks, sharing the one running service. Real uvicorn on 127.0.0.1 (port 0), the simulator as a real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from hitl_support import ok
from mcp import Client
from mcp.client.sse import sse_client
from test_http import TRIP, Stack, serve_crew_mcp

from crew_mcp.settings import load_settings
from crew_mcp.simulator import Simulator, serve_simulator


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    sim = Simulator(clock="manual")
    async with serve_simulator(sim) as sim_root:
        config = tmp_path / "crews.toml"
        config.write_text(f'[[crews]]\nname = "trip_planner"\nurl = "{sim_root}/trip_planner"\ntoken_env = "T"\n')
        env = {"T": "sim-token", "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db"}
        async with serve_crew_mcp(load_settings(env=env, config_path=str(config))) as root:
            yield Stack(root, sim)


async def test_an_sse_client_runs_a_crew_and_streamable_http_sees_the_same_run(stack: Stack) -> None:
    with anyio.fail_after(20):
        async with Client(sse_client(f"{stack.root}/sse"), mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"kickoff_crew", "get_status"} <= names
            run = await ok(client, "kickoff_crew", {"inputs": TRIP, "conversation_id": "sse"})
        await stack.sim.advance(3600)
        # One service behind both transports: the run the SSE connection started is followed over /mcp, and the
        # SSE connection closing did not stop the service.
        async with stack.client("auto") as client:
            done = await ok(client, "get_status", {"kickoff_id": run["kickoff_id"]})
        async with httpx2.AsyncClient() as http:
            health = await http.get(f"{stack.root}/healthz")
    assert done["state"] == "completed" and done["output"]["text"]
    assert health.status_code == 200


async def _events(response: httpx2.Response) -> AsyncIterator[tuple[str, str]]:
    event, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = line.removeprefix("data:").strip()
        elif not line and event:
            yield event, data
            event, data = "", ""


async def test_a_2024_11_05_client_is_answered_at_its_own_version_over_sse(stack: Stack) -> None:
    hello: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}},
    }
    with anyio.fail_after(20):
        async with httpx2.AsyncClient() as http, http.stream("GET", f"{stack.root}/sse") as stream:
            assert stream.status_code == 200
            events = _events(stream)
            kind, endpoint = await anext(events)
            assert kind == "endpoint" and endpoint.startswith("/messages/?session_id=")
            posted = await http.post(f"{stack.root}{endpoint}", json=hello)
            assert posted.status_code == 202
            kind, data = await anext(events)
    answer = json.loads(data)
    assert kind == "message" and answer["id"] == 1
    assert answer["result"]["protocolVersion"] == "2024-11-05"
    assert answer["result"]["serverInfo"]["name"] == "crew-mcp"


async def test_sse_refuses_a_foreign_host_or_origin_like_the_streamable_endpoint(stack: Stack) -> None:
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(10):
            foreign_host = await http.get(f"{stack.root}/sse", headers={"Host": "evil.example"})
            foreign_origin = await http.get(f"{stack.root}/sse", headers={"Origin": "http://evil.example"})
            post = await http.post(
                f"{stack.root}/messages/?session_id=" + "0" * 32,
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Origin": "http://evil.example"},
            )
            mcp_host = await http.post(f"{stack.root}/mcp", json={}, headers={"Host": "evil.example"})
    assert foreign_host.status_code == mcp_host.status_code == 421
    assert foreign_origin.status_code == 403 and post.status_code == 403
