"""``crew-mcp serve`` as a real stdio subprocess, driven by the SDK's Client in both protocol eras.

The crews are the simulator served for real on 127.0.0.1 (manual clock, moved by the test between calls);
the server reaches it over HTTP like any AMP deployment. Three spawns in all (each costs about a second of CPU).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
from hitl_support import ERA
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from crew_mcp.simulator import Simulator, serve_simulator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRIP = {"budget": "1000 USD", "interests": "food, hikes", "duration": "7 days", "age": 35}


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The child's whole environment on top of the SDK's minimal default: nothing leaks in from the test run."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db",
        "CREW_MCP_LOG_LEVEL": "INFO",
        **extra,
    }


class StdioServer:
    """A connected Client plus what the child wrote on stderr and any stdout line that was not JSON-RPC."""

    def __init__(self, client: Client, stderr: Path, garbage: list[Exception]) -> None:
        self.client = client
        self.stderr = stderr
        self.garbage = garbage

    async def call(self, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        with anyio.fail_after(20):
            r = await self.client.call_tool(tool, args or {})
        assert not r.is_error, r.content
        assert isinstance(r.structured_content, dict)
        return r.structured_content

    async def error(self, tool: str, args: dict[str, Any]) -> str:
        with anyio.fail_after(20):
            r = await self.client.call_tool(tool, args)
        assert r.is_error, r.structured_content
        return "".join(getattr(c, "text", "") for c in r.content)


@asynccontextmanager
async def connect(
    tmp_path: Path, mode: str, env: dict[str, str], errlog: TextIO, *python_flags: str
) -> AsyncIterator[StdioServer]:
    params = StdioServerParameters(
        command=sys.executable, args=[*python_flags, "-m", "crew_mcp", "serve"], cwd=str(tmp_path), env=env
    )
    garbage: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):  # a stdout line that did not parse as JSON-RPC
            garbage.append(message)

    with anyio.fail_after(30):
        async with Client(stdio_client(params, errlog=errlog), mode=mode, message_handler=on_message) as client:
            assert client.protocol_version == ERA[mode]
            yield StdioServer(client, Path(errlog.name), garbage)


def sim_crews_toml(root: str) -> str:
    return "".join(
        f'[[crews]]\nname = "{name}"\nurl = "{root}/{name}"\ntoken_env = "SIM_TOKEN"\n\n'
        for name in ("trip_planner", "research")
    )


@pytest.mark.parametrize(
    ("mode", "configured_by"), [("auto", "env"), ("legacy", "toml")], ids=["modern-env", "legacy-toml"]
)
async def test_stdio_server_runs_a_crew_to_completion_against_a_real_simulator(
    tmp_path: Path, mode: str, configured_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    sim = Simulator(clock="manual")
    async with serve_simulator(sim) as root:
        if configured_by == "env":
            extra = {
                "CREW_MCP_CREW_URL": f"{root}/trip_planner",
                "CREW_MCP_CREW_TOKEN": "sim-token",
                "CREW_MCP_CREW_NAME": "trip_planner",
            }
            expected = ["trip_planner"]
        else:
            (tmp_path / "crews.toml").write_text(sim_crews_toml(root), encoding="utf-8")
            extra = {"CREW_MCP_CONFIG": str(tmp_path / "crews.toml"), "SIM_TOKEN": "sim-token"}
            expected = ["trip_planner", "research"]
        with (tmp_path / "stderr.txt").open("w") as errlog:
            async with connect(tmp_path, mode, server_env(tmp_path, **extra), errlog, "-X", "importtime") as srv:
                crews = await srv.call("list_crews")
                assert [c["name"] for c in crews["crews"]] == expected
                assert crews["simulated"] is False

                inputs = await srv.call("list_inputs", {"crew": "trip_planner"})
                assert [i["name"] for i in inputs["inputs"]] == ["budget", "interests", "duration", "age"]

                unknown = await srv.error("kickoff_crew", {"crew": "nope", "inputs": TRIP})
                assert "Unknown crew 'nope'" in unknown and "trip_planner" in unknown
                missing = await srv.error("kickoff_crew", {"crew": "trip_planner", "inputs": {"budget": "9 EUR"}})
                assert "Missing required inputs" in missing and "interests" in missing
                assert sim.count("trip_planner", "POST", "/kickoff") == 0

                run = await srv.call("kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})
                kickoff_id = run["kickoff_id"]
                assert run["state"] == "running"
                assert sim.count("trip_planner", "POST", "/kickoff") == 1

                await sim.advance(2.5)
                middle = await srv.call("get_status", {"kickoff_id": kickoff_id})
                assert middle["state"] == "running"

                await sim.advance(10)
                done = await srv.call("get_status", {"kickoff_id": kickoff_id})
                assert done["state"] == "completed"
                assert done["output"]["json"] == {
                    "itinerary": "7 days trip focused on food, hikes",
                    "budget": "1000 USD",
                }

                again = await srv.call("get_status", {})
                assert again["kickoff_id"] == kickoff_id and again["from_ledger"] is True
                assert srv.garbage == []

    stderr = (tmp_path / "stderr.txt").read_text()
    assert f"kicked off {kickoff_id}" in stderr  # logs go to stderr, the JSON-RPC wire stays clean
    assert not [r for r in caplog.records if r.name.startswith("mcp.client") and r.levelno >= logging.ERROR]
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    assert "crew_mcp.server" in imported
    assert not {m for m in imported if m == "redis" or m.startswith("crew_mcp.simulator")}, "eager heavy import"


async def test_stdio_server_with_no_crew_configured_serves_the_builtin_simulated_crews(tmp_path: Path) -> None:
    with (tmp_path / "stderr.txt").open("w") as errlog:
        async with connect(tmp_path, "auto", server_env(tmp_path), errlog) as srv:
            crews = await srv.call("list_crews")
            assert crews["simulated"] is True and "simulated" in crews["note"]
            names = {c["name"] for c in crews["crews"]}
            assert {"trip_planner", "research"} <= names
            assert all(c["simulated"] for c in crews["crews"])
            inputs = await srv.call("list_inputs", {"crew": "research"})
            assert [i["name"] for i in inputs["inputs"]] == ["topic"]
            run = await srv.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
            assert run["state"] == "running" and run["kickoff_id"]
            assert srv.garbage == []
