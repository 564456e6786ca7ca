"""Property-based fuzzing of tool arguments (issue 10, defects 5 and 18): over the in-memory client in both protocol
eras, the real stdio subprocess and real streamable HTTP, every call is answered (a result, or a protocol error
for what is not a call at all), a refusal never shows pydantic's raw report or a bare crash, and the server still
answers afterwards. Example counts are bounded so the suite stays fast; waits are capped at 0 s."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hitl_support import MODES, OWNER, in_memory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from test_http import serve_crew_mcp
from test_stdio import server_env

from crew_mcp.settings import Settings
from crew_mcp.stdio import screen_line

pytestmark = pytest.mark.anyio

TOOLS: dict[str, list[str]] = {
    "list_crews": [],
    "list_inputs": ["crew"],
    "kickoff_crew": ["inputs", "crew", "conversation_id", "wait_seconds"],
    "get_status": ["kickoff_id", "conversation_id", "wait_seconds"],
    "resume_with_feedback": ["kickoff_id", "approve", "feedback", "task_id"],
    "list_executions": ["conversation_id", "crew", "state", "limit"],
    "list_pending_approvals": [],
    "run_trip_planner": ["budget", "interests", "duration", "age", "conversation_id", "wait_seconds"],
    "run_research": ["topic", "conversation_id", "wait_seconds"],
    "no_such_tool": [],
}
RAW = ("validation error", "errors.pydantic.dev", "input_value=", "Input should be", "Traceback")
FAST = Settings(owner=OWNER, wait_cap_seconds=0)
CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["trip_planner", "research", "", "0", "true", "../../inputs", "x" * 200]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A tool (sometimes one that does not exist) and arguments: its own names and others, any JSON values."""
    tool = draw(st.sampled_from(sorted(TOOLS)))
    own = st.sampled_from(TOOLS[tool]) if TOOLS[tool] else st.text(max_size=12)
    names = draw(st.lists(own | st.text(max_size=12), max_size=6, unique=True))
    return tool, {name: draw(json_values) for name in names}


async def check_call(client: Client, tool: str, arguments: dict[str, Any]) -> None:
    """One fuzzed call: answered, never raw validation text or a bare crash; the server answers afterwards."""
    with anyio.fail_after(20):
        refusal: MCPError | None = None
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:  # a protocol-level refusal is an answer too, if it says something
            refusal = exc
        if refusal is not None:
            message = refusal.error.message
            assert message and not any(raw in message for raw in RAW), refusal.error
        elif result.is_error:
            text = "".join(getattr(c, "text", "") for c in result.content)
            assert not any(raw in text for raw in RAW), text
            assert text.strip() != f"Error executing tool {tool}", f"crashed on {arguments!r}"
        else:
            assert result.structured_content is not None, result.content
        alive = await client.call_tool("list_crews", {})
    assert not alive.is_error


@pytest.fixture(params=MODES)
async def memory_client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    async with in_memory(str(request.param), FAST) as env:
        yield env.client


@settings(max_examples=150, deadline=None, suppress_health_check=CHECKS)
@given(call=calls())
async def test_fuzzed_arguments_over_the_in_memory_client(memory_client: Client, call: tuple[str, Any]) -> None:
    await check_call(memory_client, *call)


@pytest.fixture
async def stdio_client_(tmp_path: Path) -> AsyncIterator[Client]:
    env = server_env(tmp_path, CREW_MCP_WAIT_CAP="0")
    params = StdioServerParameters(command=sys.executable, args=["-m", "crew_mcp", "serve"], cwd=str(tmp_path), env=env)
    with (tmp_path / "stderr.log").open("w") as errlog, anyio.fail_after(30):
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
            yield client


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=CHECKS)
@given(call=calls())
async def test_fuzzed_arguments_over_the_real_stdio_subprocess(stdio_client_: Client, call: tuple[str, Any]) -> None:
    await check_call(stdio_client_, *call)


@pytest.fixture
async def http_client(tmp_path: Path) -> AsyncIterator[Client]:
    served = serve_crew_mcp(FAST.model_copy(update={"ledger_url": f"sqlite:///{tmp_path}/ledger.db"}))
    async with served as root, Client(f"{root}/mcp") as client:
        yield client


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=CHECKS)
@given(call=calls())
async def test_fuzzed_arguments_over_real_streamable_http(http_client: Client, call: tuple[str, Any]) -> None:
    await check_call(http_client, *call)


@settings(max_examples=300, deadline=None)
@given(line=st.text(max_size=200) | json_values.map(json.dumps) | calls().map(lambda c: json.dumps({"id": 1, **c[1]})))
def test_the_stdio_screen_takes_any_line_without_raising(line: str) -> None:
    problem = screen_line(line)
    if problem is not None:
        rid, code, message = problem
        assert code in (-32700, -32600, -32602) and message
        assert rid is None or isinstance(rid, str | int)
