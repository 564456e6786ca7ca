"""Completions and the logging capability (issue 10, defect 19), through the SDK client in both protocol eras:
crew names and the caller's own kickoff_ids complete, ``logging/setLevel`` is served, and the events of a run a
call waits on arrive as log messages at the level the client set (2025-era) or opted in to (2026-07-28)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hitl_support import MODES, OWNER, in_memory, service_opener
from mcp import Client
from mcp.types import LoggingMessageNotificationParams, PromptReference, ResourceTemplateReference

from crew_mcp.server import build_server
from crew_mcp.settings import Settings
from crew_mcp.simulator import Simulator

TRIP = {"budget": "1", "interests": "x", "duration": "1 day", "age": 30}
SIMULATED = ["content_pipeline", "flaky", "research", "trip_planner"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _values(client: Client, ref: Any, name: str, value: str = "") -> list[str]:
    result = await client.complete(ref, {"name": name, "value": value})
    return list(result.completion.values)


async def test_crew_names_complete_the_inputs_template_and_the_prompt(mode: str) -> None:
    async with in_memory(mode) as env:
        template = ResourceTemplateReference(uri="crew://{crew}/inputs")
        prompt = PromptReference(name="run_crew")
        assert sorted(await _values(env.client, template, "crew")) == SIMULATED
        assert await _values(env.client, prompt, "crew", "TR") == ["trip_planner"]
        assert await _values(env.client, prompt, "crew", "nope") == []
        # What the conformance suite asks: an unknown prompt completes to nothing, not an error.
        assert await _values(env.client, PromptReference(name="test_prompt_with_arguments"), "arg1", "t") == []


@asynccontextmanager
async def _two_owners(ledger: Path, mode: str) -> AsyncIterator[tuple[Client, Client]]:
    """Two servers (owners alice and bob) sharing one SQLite ledger and one simulator."""
    sim = Simulator(clock="manual")
    url = f"sqlite:///{ledger}"
    servers = [build_server(Settings(owner=o), opener=service_opener(sim, ledger_url=url)) for o in ("alice", "bob")]
    async with sim, Client(servers[0], mode=mode) as alice, Client(servers[1], mode=mode) as bob:
        yield alice, bob


async def test_kickoff_ids_and_conversations_complete_from_the_callers_own_runs_only(mode: str, tmp_path: Path) -> None:
    async with _two_owners(tmp_path / "ledger.db", mode) as (alice, bob):
        mine = []
        for conversation in ("trip-a", "trip-b"):
            args = {"crew": "trip_planner", "inputs": TRIP, "conversation_id": conversation}
            mine.append((await alice.call_tool("kickoff_crew", args)).structured_content or {})
        theirs = (
            await bob.call_tool("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
        ).structured_content
        executions = ResourceTemplateReference(uri="crew://executions/{kickoff_id}")
        conversations = ResourceTemplateReference(uri="crew://conversations/{conversation_id}")
        offered = await _values(alice, executions, "kickoff_id")
        first = await _values(alice, executions, "kickoff_id", mine[0]["kickoff_id"][:-1])
        talks = await _values(alice, conversations, "conversation_id", "trip-")
    assert offered == [mine[1]["kickoff_id"], mine[0]["kickoff_id"]]  # newest first, alice's only
    assert theirs and theirs["kickoff_id"] not in offered
    assert mine[0]["kickoff_id"] in first
    assert talks == ["trip-b", "trip-a"]


async def test_legacy_clients_see_the_completions_and_logging_capabilities() -> None:
    async with in_memory("legacy") as env:
        caps = env.client.server_capabilities
        assert caps is not None and caps.completions is not None and caps.logging is not None
        assert await env.client.set_logging_level("debug") is not None  # {} on the wire


async def _wait_for_the_end(client: Client, sim: Simulator, kickoff_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def wait() -> None:
        r = await client.call_tool("get_status", {"kickoff_id": kickoff_id, "wait_seconds": 30})
        out.update(r.structured_content or {})

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            while not out:
                await sim.advance(0.5)
                await anyio.sleep(0.02)
    return out


@asynccontextmanager
async def _logged(mode: str, level: str | None) -> AsyncIterator[tuple[Client, Simulator, list[Any]]]:
    logs: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)

    sim = Simulator(clock="manual")
    opener = service_opener(sim)
    mcp = build_server(Settings(owner=OWNER, wait_cap_seconds=30), opener=opener)
    modern_level: Any = level if mode == "auto" else None
    async with sim, Client(mcp, mode=mode, logging_callback=on_log, log_level=modern_level) as client:
        if mode == "legacy" and level is not None:
            await client.set_logging_level(level)  # type: ignore[arg-type]
        yield client, sim, logs


async def test_run_events_arrive_as_log_messages_at_the_level_the_client_set(mode: str) -> None:
    async with _logged(mode, "info") as (client, sim, logs):
        run = (await client.call_tool("kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})).structured_content
        assert run is not None
        done = await _wait_for_the_end(client, sim, run["kickoff_id"])
    assert done["state"] == "completed"
    levels = [entry.level for entry in logs]
    assert "info" in levels and levels[-1] == "notice", levels
    assert all(entry.logger == "crew-mcp" and entry.data["kickoff_id"] == run["kickoff_id"] for entry in logs)
    assert logs[-1].data["state"] == "completed" and "completed" in logs[-1].data["message"]


async def test_no_run_event_below_the_level_the_client_set(mode: str) -> None:
    async with _logged(mode, "error") as (client, sim, logs):
        run = (await client.call_tool("kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})).structured_content
        assert run is not None
        assert (await _wait_for_the_end(client, sim, run["kickoff_id"]))["state"] == "completed"
        failing = (
            await client.call_tool("kickoff_crew", {"crew": "flaky", "inputs": {"topic": "x"}})
        ).structured_content
        assert failing is not None
        assert (await _wait_for_the_end(client, sim, failing["kickoff_id"]))["state"] == "failed"
    assert [(entry.level, entry.data["state"]) for entry in logs] == [("error", "failed")]


async def test_a_modern_request_that_did_not_opt_in_gets_no_log_message() -> None:
    async with _logged("auto", None) as (client, sim, logs):
        run = (await client.call_tool("kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})).structured_content
        assert run is not None
        assert (await _wait_for_the_end(client, sim, run["kickoff_id"]))["state"] == "completed"
    assert logs == []
