"""OpenAI Agents SDK and MCP Inspector CLI against crew-mcp: opt-in, run by ``make test-thirdparty``.

- OpenAI Agents SDK 0.24 (``openai-agents``, no model involved): the README's example run as written over stdio,
  ``MCPServerStreamableHttp`` against ``crew-mcp serve --http --port 0``, and the approval walk over both.
- MCP Inspector CLI 2.12.0 (node 22): ``tools/list --strict`` in both protocol eras, ``tools/call`` over stdio and
  HTTP, and the approval walk with one Inspector process per call (over stdio: one crew-mcp process per call too).

The other clients are in test_thirdparty_clients.py, the conformance suite in test_thirdparty_conformance.py;
tests/thirdparty_support.py says how crew-mcp and the clients are run. The addopts' ``-m "not thirdparty"`` keeps
these out of the default run.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from thirdparty_support import (
    THIRDPARTY,
    assert_walked,
    crew_mcp_command,
    http_server,
    missing,
    run_client,
    server_env,
    stdio_target,
    walk_module,
)

pytestmark = pytest.mark.thirdparty

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CORE_TOOLS = {"list_crews", "list_inputs", "kickoff_crew", "get_status"}
TRIP = {"budget": "1000 USD", "interests": "food, hikes", "duration": "7 days", "age": 35}
ITINERARY = "7 days trip focused on food, hikes"
INSPECTOR_VERSION = "2.12.0"


def _agents_mcp() -> ModuleType:
    try:
        return importlib.import_module("agents.mcp")
    except ImportError as exc:
        missing(f"openai-agents is not installed: {exc}")
        raise


def _inspector() -> str:
    found = THIRDPARTY / "inspector" / "node_modules" / ".bin" / "mcp-inspector"
    if not found.exists():
        missing("the MCP Inspector CLI (mcp-inspector) is not installed")
    return str(found)


def _block_after(marker: str, lang: str) -> str:
    text = README.read_text()
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, text.index(marker))
    assert match is not None, f"no ```{lang} block after {marker}"
    return match.group(1)


# ============================================================================== OpenAI Agents SDK (0.24)


async def test_readme_openai_agents_example_runs_a_crew_over_stdio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _agents_mcp()
    code = _block_after("<!-- openai-agents-example", "python")
    run_line = 'anyio.run(main, "thread-1")'
    params_line = 'params = {"command": "crew-mcp", "args": ["serve"]}'
    assert code.count(run_line) == 1 and code.count(params_line) == 1, "the README example changed shape"
    # The one change: the child's environment (the SDK gives it a minimal one), as the README's comment says.
    body = code.replace(run_line, "").replace(params_line, params_line[:-1] + ', "env": ENV}')
    namespace: dict[str, Any] = {"ENV": server_env(tmp_path)}
    exec(compile(body, "README.md", "exec"), namespace)
    with anyio.fail_after(90):
        await namespace["main"]("thread-1")

    tools_line, kickoff_line, final_line = capsys.readouterr().out.strip().splitlines()[-3:]
    assert set(ast.literal_eval(tools_line)) >= CORE_TOOLS
    kickoff_id, state = kickoff_line.split()
    assert kickoff_id and state in {"running", "completed"}
    assert final_line.startswith("completed ") and ITINERARY in final_line
    assert kickoff_id in (tmp_path / "ledger.db").read_bytes().decode(errors="replace")


async def test_openai_agents_streamable_http_runs_a_crew_on_a_thread(tmp_path: Path) -> None:
    agents_mcp = _agents_mcp()
    async with http_server(tmp_path) as url:
        server = agents_mcp.MCPServerStreamableHttp(params={"url": url}, client_session_timeout_seconds=60)
        with anyio.fail_after(90):
            async with server as crews:
                names = {tool.name for tool in await crews.list_tools()}
                assert names >= CORE_TOOLS, names

                args = {"crew": "trip_planner", "inputs": TRIP, "conversation_id": "thread-1"}
                run = await crews.call_tool("kickoff_crew", args)
                assert not run.is_error, run.content
                kickoff_id = run.structured_content["kickoff_id"]
                while run.structured_content["state"] == "running":
                    run = await crews.call_tool("get_status", {"conversation_id": "thread-1", "wait_seconds": 30})
                    assert not run.is_error, run.content
                    assert run.structured_content["kickoff_id"] == kickoff_id
                assert run.structured_content["state"] == "completed"
                assert run.structured_content["output"]["json"]["itinerary"] == ITINERARY

                listed = await crews.call_tool("list_executions", {"conversation_id": "thread-1"})
                assert not listed.is_error, listed.content
                assert [e["kickoff_id"] for e in listed.structured_content["executions"]] == [kickoff_id]
                other = await crews.call_tool("list_executions", {"conversation_id": "thread-2"})
                assert other.structured_content.get("executions", []) == []


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_openai_agents_walks_a_run_through_its_approval(tmp_path: Path, transport: str) -> None:
    if transport == "stdio":
        assert_walked(await run_client("venv", "agents_client.py", stdio_target(tmp_path), tmp_path))
        return
    async with http_server(tmp_path) as url:
        assert_walked(await run_client("venv", "agents_client.py", {"transport": "http", "url": url}, tmp_path))


# ================================================================================ MCP Inspector CLI 2.x

PROBLEM = re.compile(r'^(Warning|Error): tool "([^"]+)"\n  Path: (.*)\n  Issue: (.*)$', re.M)
SUMMARY = re.compile(r"^(\d+) errors?, (\d+) warnings? across (\d+) tools?\.$", re.M)


async def inspector(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``mcp-inspector --cli ...`` on node 22 with HOME in tmp (its catalog and client config land there)."""
    node = THIRDPARTY / "node" / "node_modules" / ".bin"
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{node}{os.pathsep}{os.environ.get('PATH', '')}"}
    with anyio.fail_after(90):
        return await anyio.run_process([_inspector(), "--cli", *args], env=env, check=False, cwd=tmp_path)


def inspector_stdio(tmp_path: Path) -> list[str]:
    env = server_env(tmp_path)
    pairs = [arg for key in env if key != "PATH" for arg in ("-e", f"{key}={env[key]}")]
    return [*pairs, "--cwd", str(tmp_path), crew_mcp_command(tmp_path), "serve"]


async def test_inspector_is_the_pinned_2x_release(tmp_path: Path) -> None:
    done = await inspector(tmp_path, "--version")
    assert done.returncode == 0, done.stderr.decode()
    assert INSPECTOR_VERSION in done.stdout.decode(), "node < 22 makes npm install the old 0.15.0"


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_inspector_strict_finds_no_schema_portability_errors(tmp_path: Path, era: str) -> None:
    done = await inspector(
        tmp_path, *inspector_stdio(tmp_path), "--method", "tools/list", "--strict", "--protocol-era", era
    )
    report = done.stderr.decode(errors="replace")
    assert done.returncode == 0, report  # --strict exits 6 on any error-severity problem
    # No errors and no warnings, in inputs (what strict hosts such as ChatGPT reject) and outputs alike: the
    # inspector prints a summary line only when it found something.
    assert SUMMARY.search(report) is None, report
    assert PROBLEM.findall(report) == [], report
    tools = {t["name"] for t in json.loads(done.stdout)["tools"]}
    assert tools >= CORE_TOOLS


def _tool_result(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The CallToolResult ``--format json`` printed; the call must have succeeded."""
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(done.stdout)["result"]
    assert not result.get("isError"), result
    return result


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_inspector_calls_list_crews_over_stdio(tmp_path: Path, era: str) -> None:
    done = await inspector(
        tmp_path,
        *inspector_stdio(tmp_path),
        *("--method", "tools/call", "--tool-name", "list_crews", "--protocol-era", era, "--format", "json", "-q"),
    )
    crews = _tool_result(done)["structuredContent"]
    assert crews["simulated"] is True
    assert {"trip_planner", "research"} <= {c["name"] for c in crews["crews"]}


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_inspector_calls_list_crews_over_http(tmp_path: Path, era: str) -> None:
    call = ("--method", "tools/call", "--protocol-era", era, "--format", "json", "-q")
    async with http_server(tmp_path) as url:
        done = await inspector(tmp_path, url, *call, "--tool-name", "list_crews")
        # A call with an argument too, in the Inspector's key=value form.
        inputs = await inspector(tmp_path, url, *call, "--tool-name", "list_inputs", "--tool-arg", "crew=research")
    crews = _tool_result(done)["structuredContent"]
    assert crews["simulated"] is True
    assert {"trip_planner", "research"} <= {c["name"] for c in crews["crews"]}
    assert [i["name"] for i in _tool_result(inputs)["structuredContent"]["inputs"]] == ["topic"]


async def _inspector_walk(tmp_path: Path, target: list[str]) -> dict[str, Any]:
    """The approval walk with one ``mcp-inspector --cli`` process per tool call, as a shell script would drive it."""
    walk = walk_module()
    transcript = walk.Transcript(f"mcp-inspector {INSPECTOR_VERSION}")
    listed = await inspector(tmp_path, *target, "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr.decode(errors="replace")
    transcript.data["tools"] = [t["name"] for t in json.loads(listed.stdout)["tools"]]

    async def call(tool: str, arguments: dict[str, Any]) -> Any:
        done = await inspector(
            tmp_path, *target, "--method", "tools/call", "--tool-name", tool, "--tool-args-json", json.dumps(arguments),
            "--format", "json", "-q",
        )  # fmt: skip
        if done.returncode != 0:
            return walk.Reply(True, done.stderr.decode(errors="replace")[-2000:])
        result = json.loads(done.stdout)["result"]
        text = "".join(c.get("text", "") for c in result.get("content", []))
        return walk.Reply(bool(result.get("isError")), text, result.get("structuredContent"))

    try:
        await walk.approval_walk(transcript.recorder(call), "thread-inspector")
    except Exception as exc:
        transcript.fail(exc)
    return dict(transcript.data)


async def test_inspector_walks_a_run_through_its_approval_over_http(tmp_path: Path) -> None:
    async with http_server(tmp_path) as url:
        assert_walked(await _inspector_walk(tmp_path, [url]))


async def test_inspector_walks_a_run_through_its_approval_over_stdio(tmp_path: Path) -> None:
    # Each Inspector call starts its own crew-mcp process: the run must go on across processes (issue 10, defect 7).
    assert_walked(await _inspector_walk(tmp_path, inspector_stdio(tmp_path)))
