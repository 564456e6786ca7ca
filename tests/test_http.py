"""``crew-mcp serve --http``: the real ASGI app under uvicorn on 127.0.0.1 (port 0), the SDK's HTTP Client in both
protocol eras, the simulator as a real server on a manual clock, and the loopback-only refusal."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
import uvicorn
from hitl_support import ERA, ok
from mcp import Client

from crew_mcp.app import build_app
from crew_mcp.cli import main
from crew_mcp.settings import Settings, load_settings
from crew_mcp.simulator import Simulator, serve_simulator

TRIP = {"budget": "1000 USD", "interests": "food, hikes", "duration": "7 days", "age": 35}


@asynccontextmanager
async def serve_crew_mcp(settings: Settings) -> AsyncIterator[str]:
    """Serve ``build_app(settings)`` with uvicorn on a socket bound here to 127.0.0.1:0; yield its root URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP proto: asyncio sets NODELAY
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # listening already: early clients wait in the backlog until uvicorn (and its lifespan) is up
    port = sock.getsockname()[1]
    app = build_app(settings, host="127.0.0.1", port=port)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=2))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


@dataclass
class Stack:
    root: str
    sim: Simulator

    @asynccontextmanager
    async def client(self, mode: str) -> AsyncIterator[Client]:
        with anyio.fail_after(15):
            async with Client(f"{self.root}/mcp", mode=mode) as client:
                assert client.protocol_version == ERA[mode]
                yield client


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The simulator (manual clock) and crew-mcp over HTTP, configured by a TOML file like a deployment."""
    sim = Simulator(clock="manual")
    async with serve_simulator(sim) as sim_root:
        config = tmp_path / "crews.toml"
        config.write_text(
            "".join(
                f'[[crews]]\nname = "{n}"\nurl = "{sim_root}/{n}"\ntoken_env = "SIM_TOKEN"\n\n'
                for n in ("trip_planner", "research")
            ),
            encoding="utf-8",
        )
        settings = load_settings(
            env={"SIM_TOKEN": "sim-token", "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db"},
            config_path=str(config),
        )
        async with serve_crew_mcp(settings) as root:
            yield Stack(root, sim)


async def test_healthz_answers_200_once_the_service_runs(stack: Stack) -> None:
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(10):
            r = await http.get(f"{stack.root}/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_lists_kicks_off_and_follows_a_run_to_completion(stack: Stack, mode: str) -> None:
    async with stack.client(mode) as client:
        crews = await ok(client, "list_crews")
        assert [c["name"] for c in crews["crews"]] == ["trip_planner", "research"] and crews["simulated"] is False
        inputs = await ok(client, "list_inputs", {"crew": "trip_planner"})
        assert [i["name"] for i in inputs["inputs"]] == ["budget", "interests", "duration", "age"]

        with anyio.fail_after(15):
            bad = await client.call_tool("kickoff_crew", {"crew": "nope", "inputs": TRIP})
        assert bad.is_error and "Unknown crew 'nope'" in "".join(getattr(c, "text", "") for c in bad.content)

        run = await ok(client, "kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})
        assert run["state"] == "running"
        await stack.sim.advance(10)
        done = await ok(client, "get_status", {"kickoff_id": run["kickoff_id"]})
        assert done["state"] == "completed"
        assert done["output"]["json"]["budget"] == "1000 USD"
        assert stack.sim.count("trip_planner", "POST", "/kickoff") == 1


async def test_legacy_http_session_id_is_the_conversation_of_runs_started_without_one(stack: Stack) -> None:
    async with stack.client("legacy") as first, stack.client("legacy") as second:
        mine = await ok(second, "kickoff_crew", {"crew": "research", "inputs": {"topic": "mine"}})
        theirs = await ok(first, "kickoff_crew", {"crew": "research", "inputs": {"topic": "theirs"}})
        assert mine["conversation_id"].startswith("session:")
        assert theirs["conversation_id"].startswith("session:")
        assert mine["conversation_id"] != theirs["conversation_id"]

        # The other session's run is newer, yet get_status() without an id follows this session's conversation.
        assert (await ok(second, "get_status"))["kickoff_id"] == mine["kickoff_id"]
        assert (await ok(first, "get_status"))["kickoff_id"] == theirs["kickoff_id"]
        # Passing the other conversation's id explicitly reaches it (same owner).
        other = await ok(second, "get_status", {"conversation_id": theirs["conversation_id"]})
        assert other["kickoff_id"] == theirs["kickoff_id"]
        listed = await ok(second, "list_executions", {"conversation_id": mine["conversation_id"]})
        assert [r["kickoff_id"] for r in listed["executions"]] == [mine["kickoff_id"]]


async def test_a_new_legacy_session_without_runs_does_not_see_another_sessions_run(stack: Stack) -> None:
    async with stack.client("legacy") as first, stack.client("legacy") as second:
        await ok(first, "kickoff_crew", {"crew": "research", "inputs": {"topic": "theirs"}})
        with anyio.fail_after(15):
            r = await second.call_tool("get_status", {})
        assert r.is_error
        assert "has no runs yet" in r.content[0].text  # type: ignore[union-attr]


async def test_modern_requests_without_a_session_share_the_default_conversation(stack: Stack) -> None:
    async with stack.client("auto") as first, stack.client("auto") as second:
        run = await ok(first, "kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
        assert run["conversation_id"] == "default"
        assert (await ok(second, "get_status"))["kickoff_id"] == run["kickoff_id"]
        scoped = await ok(
            second, "kickoff_crew", {"crew": "research", "inputs": {"topic": "y"}, "conversation_id": "t1"}
        )
        assert (await ok(first, "get_status"))["kickoff_id"] == run["kickoff_id"]
        assert (await ok(first, "get_status", {"conversation_id": "t1"}))["kickoff_id"] == scoped["kickoff_id"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_serve_http_on_a_non_loopback_host_is_refused_with_the_reason(
    host: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("CREW_MCP_CONFIG", "CREW_MCP_CREW_URL", "MCP_CREWAI_ENTERPRISE_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    assert main(["serve", "--http", "--host", host, "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"crew-mcp: Refusing to serve on {host}") and "authentication" in err
    assert err.count("\n") == 1 and "Traceback" not in err
