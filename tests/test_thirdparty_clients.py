"""Third-party Python MCP clients walking a crew run through its approval: opt-in, run by ``make test-thirdparty``.

Each client runs in its own venv under .thirdparty/ as a script from tests/thirdparty/clients/ and prints a JSON
transcript (tests/thirdparty_support.py says how). Each lists the tools and walks kickoff → status → reject with
feedback → re-run → approve → completed against the simulated ``research`` crew:

- MCP Python SDK 1.30 (mcp<2): forcing each older protocol version in initialize, over stdio and streamable HTTP,
  and over the deprecated HTTP+SSE transport at 2024-11-05 (issue 10, defect 8).
- langchain-mcp-adapters 0.3.2: one session, and the default ``get_tools()`` that opens a session, over stdio a
  crew-mcp process, per call (defect 7).
- fastmcp 2.14 (mcp 1.x) and 4.2 (mcp 2.3): every structured result parses against its output schema (defect 3).
- CrewAI ``MCPServerAdapter`` (crewai-tools 1.15): text results only, followed through crew-mcp's text rendering.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from thirdparty_support import (
    OLDER_PROTOCOLS,
    assert_walked,
    explain,
    http_server,
    run_client,
    stdio_target,
)

pytestmark = pytest.mark.thirdparty


async def _walk(venv: str, script: str, transport: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Run a client script against crew-mcp over ``transport`` (stdio: the client starts it; else serve --http)."""
    if transport == "stdio":
        return await run_client(venv, script, stdio_target(tmp_path, **extra), tmp_path)
    async with http_server(tmp_path) as mcp_url:
        url = mcp_url.removesuffix("/mcp") + "/sse" if transport == "sse" else mcp_url
        return await run_client(venv, script, {"transport": transport, "url": url, **extra}, tmp_path)


# ======================================================================== MCP Python SDK 1.30 (mcp 1.x)


@pytest.mark.parametrize("protocol", OLDER_PROTOCOLS)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_mcp1_client_walks_a_run_at_an_older_protocol(tmp_path: Path, transport: str, protocol: str) -> None:
    transcript = await _walk("mcp1", "mcp1_client.py", transport, tmp_path, protocol_version=protocol)
    assert transcript["client"].startswith("mcp 1.30."), transcript["client"]
    assert_walked(transcript)
    assert transcript["protocol_version"] == protocol


async def test_mcp1_client_walks_a_run_over_the_deprecated_sse_transport(tmp_path: Path) -> None:
    # Hosts and gateways that speak only HTTP+SSE (GET /sse, then POSTs to the endpoint it names) at 2024-11-05.
    transcript = await _walk("mcp1", "mcp1_client.py", "sse", tmp_path, protocol_version="2024-11-05")
    assert_walked(transcript)
    assert transcript["protocol_version"] == "2024-11-05"


async def test_mcp1_client_sees_progress_increase_within_each_call(tmp_path: Path) -> None:
    # The protocol: progress MUST increase with each notification of one request (issue 10, defect 4).
    transcript = await _walk("mcp1", "mcp1_client.py", "stdio", tmp_path, protocol_version="2025-11-25")
    assert_walked(transcript)
    progress = transcript["progress"]
    assert any(progress), "no progress notification at all"
    for call, values in zip(transcript["calls"], progress, strict=True):
        assert all(a < b for a, b in itertools.pairwise(values)), (call["tool"], values)


# ============================================================================= langchain-mcp-adapters 0.3.2


@pytest.mark.parametrize(
    ("mode", "transport"), [("session", "stdio"), ("session", "http"), ("per-call", "stdio"), ("per-call", "http")]
)
async def test_langchain_adapters_walk_a_run(tmp_path: Path, mode: str, transport: str) -> None:
    # per-call over stdio: every tool call is a new crew-mcp process sharing only the ledger (defect 7).
    transcript = await _walk("mcp1", "langchain_client.py", transport, tmp_path, mode=mode)
    assert transcript["client"] == "langchain-mcp-adapters 0.3.2", transcript["client"]
    assert_walked(transcript)


# ============================================================================= fastmcp 2.14 and 4.2 clients


@pytest.mark.parametrize(("venv", "release"), [("fastmcp2", "2.14."), ("venv", "4.2.")])
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_fastmcp_client_parses_every_structured_result(
    tmp_path: Path, venv: str, release: str, transport: str
) -> None:
    transcript = await _walk(venv, "fastmcp_client.py", transport, tmp_path)
    assert transcript["client"].startswith(f"fastmcp {release}"), transcript["client"]
    assert_walked(transcript)
    # The walk's results, then list_inputs and list_executions: every one validated against its output schema.
    listings = transcript.get("listings", [])
    assert [c["tool"] for c in listings] == ["list_inputs", "list_executions"], explain(transcript)
    for call in transcript["calls"] + listings:
        assert call["structured"] is not None and not call["is_error"], call
    unparsed = {
        c["tool"]: [" | ".join(e.splitlines()[:3]) for e in c["parse_errors"]] or "no data"
        for c in transcript["calls"] + listings
        if c["parse_errors"] or not c["parsed"]
    }
    assert unparsed == {}, "\n".join(f"{tool}: {errors}" for tool, errors in unparsed.items())
    assert transcript["calls"][-1]["data"]["state"] == "completed", explain(transcript)


# ======================================================================= CrewAI MCPServerAdapter (1.15)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_crewai_adapter_walks_a_run(tmp_path: Path, transport: str) -> None:
    transcript = await _walk("crewai", "crewai_client.py", transport, tmp_path)
    assert transcript["client"].startswith("crewai-tools 1.15."), transcript["client"]
    assert_walked(transcript)
