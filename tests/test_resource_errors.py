"""Resource errors (issue 9): only an unknown run, crew or id is the protocol's "not found" (-32602); a ledger
outage or a crew that cannot be reached is an internal error (-32603) saying what failed, so a host never tells its
user that their runs or crews are gone when something is merely down.

The failures are real: the ledger is a private ``redis-server`` on a free loopback port, stopped under the running
server (the shared test Redis is left alone); the unreachable crew is configured on a loopback port nothing
listens on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import stamina
from anyio.abc import Process
from fleet_support import redis_server
from hitl_support import OWNER, service_opener
from mcp import Client, MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS
from process_support import free_port
from sim_support import closed_port_url

from crew_mcp.crewconfig import CrewConfig
from crew_mcp.runtime import Runtime
from crew_mcp.server import build_server
from crew_mcp.settings import Settings
from crew_mcp.simulator import Simulator

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@asynccontextmanager
async def private_redis(workdir: Path) -> AsyncIterator[tuple[int, Process]]:
    """A ``redis-server`` of this test's own on 127.0.0.1 (free port, no persistence); stopped on exit."""
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (scripts/ensure-redis installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    port = free_port()
    async with redis_server(port, workdir) as process:
        yield port, process


async def error_of(client: Client, uri: str) -> tuple[int, str]:
    """The protocol error a resource read ends with (code, message)."""
    with pytest.raises(MCPError) as caught:
        await client.read_resource(uri)
    return caught.value.error.code, caught.value.error.message


@pytest.mark.redis
async def test_resources_report_a_ledger_outage_as_an_internal_error_not_as_not_found(tmp_path: Path) -> None:
    async with private_redis(tmp_path) as (port, redis), Simulator(clock="manual") as sim:
        opener = service_opener(sim, ledger_url=f"redis://127.0.0.1:{port}/0")
        mcp = build_server(Settings(owner=OWNER), opener=opener, runtime=Runtime())
        async with Client(mcp, mode="auto") as client:
            run = await client.call_tool("kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
            assert not run.is_error and run.structured_content is not None, run.content
            conversation = run.structured_content["conversation_id"]
            code, message = await error_of(client, f"crew://executions/{UNKNOWN}")
            assert code == INVALID_PARAMS and "No run with kickoff_id" in message  # the ledger answered: not found

            redis.kill()  # the ledger goes away under the running server
            await redis.wait()

            for uri in (f"crew://executions/{UNKNOWN}", f"crew://conversations/{conversation}", "crew://approvals"):
                code, message = await error_of(client, uri)
                assert code == INTERNAL_ERROR, (uri, code, message)
                assert "run ledger is unavailable" in message and "Redis ledger" in message, message
                assert "No run with kickoff_id" not in message and "not found" not in message.lower(), message


async def test_a_crew_that_cannot_be_reached_is_an_internal_error_and_an_unknown_crew_is_not_found() -> None:
    down = CrewConfig(name="down", url=closed_port_url().removesuffix("/hook") + "/down", token="crew-token")
    settings = Settings(owner=OWNER, ledger_url="memory://", crews=[down])
    with stamina.set_testing(True, attempts=100, cap=True):  # the configured retries, without their sleeps
        async with Client(build_server(settings, runtime=Runtime()), mode="auto") as client:
            unreachable = await error_of(client, "crew://down/inputs")
            unknown = await error_of(client, "crew://nope/inputs")
    code, message = unreachable
    assert code == INTERNAL_ERROR and message.startswith("crew://down/inputs: "), unreachable
    assert "not found" not in message.lower() and "Unknown crew" not in message, message
    assert unknown[0] == INVALID_PARAMS and "Unknown crew 'nope'" in unknown[1], unknown
