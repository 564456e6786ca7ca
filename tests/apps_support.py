"""Helpers for the MCP App tests (test_apps.py, test_apps_browser.py): a crew-mcp server over the simulator, reached
by an SDK ``Client`` that advertises MCP Apps (as Claude or ChatGPT do) or not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from hitl_support import service_opener
from mcp import Client
from mcp.client.extension import advertise
from mcp.types import CallToolResult

from crew_mcp.server import build_server
from crew_mcp.service import CrewService
from crew_mcp.settings import Settings
from crew_mcp.simulator import CrewSpec, InputSpec, Simulator, TaskSpec, builtin_crews

APPS = advertise("io.modelcontextprotocol/ui", {"mimeTypes": ["text/html;profile=mcp-app"]})
OWNER = "tester"


def review_crew() -> CrewSpec:
    """Drafts at once (duration 0) and waits for review of the draft; the revision is instant too."""
    return CrewSpec(
        name="brief",
        description="Writes a brief; a human reviews the draft",
        inputs=[InputSpec(name="topic", description="What the brief is about")],
        tasks=[
            TaskSpec(id="draft", agent="Writer", duration=0, human_input=True, output="## Brief on {topic}"),
            TaskSpec(id="publish", agent="Editor", duration=2, output="Published: {topic}"),
        ],
    )


@asynccontextmanager
async def connected(
    mode: str,
    *,
    apps: bool,
    settings: Settings | None = None,
    sim: Simulator | None = None,
    ledger: str = "",
    crews: Sequence[CrewSpec] = (),
) -> AsyncIterator[tuple[Client, list[CrewService]]]:
    """A client (advertising MCP Apps or not) of a crew-mcp server over the simulator's crews."""
    settings = settings or Settings(owner=OWNER)
    if ledger:
        settings = settings.model_copy(update={"ledger_url": ledger})
    own_sim = sim is None
    sim = sim or Simulator([*crews, review_crew(), *builtin_crews()], clock="manual")
    services: list[CrewService] = []
    mcp = build_server(settings, opener=service_opener(sim, services, ledger_url=ledger or "memory://"))
    extensions: Sequence[Any] = [APPS] if apps else []
    if own_sim:
        async with sim, Client(mcp, mode=mode, extensions=extensions) as client:
            yield client, services
    else:
        async with Client(mcp, mode=mode, extensions=extensions) as client:
            yield client, services


async def ok(client: Client, tool: str, args: dict[str, Any]) -> CallToolResult:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return result


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return "".join(getattr(c, "text", "") for c in result.content)


async def paused_run(client: Client, topic: str = "tides") -> str:
    run = await ok(client, "kickoff_crew", {"crew": "brief", "inputs": {"topic": topic}})
    assert run.structured_content is not None
    kickoff_id = run.structured_content["kickoff_id"]
    assert isinstance(kickoff_id, str)
    return kickoff_id


async def card(client: Client, kickoff_id: str, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(structuredContent, _meta) of app_run_view."""
    result = await ok(client, "app_run_view", {"kickoff_id": kickoff_id, **extra})
    assert result.structured_content is not None
    return result.structured_content, dict(result.meta or {})
