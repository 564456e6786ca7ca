"""Real third-party MCP clients against crew-mcp: opt-in, run by ``make test-thirdparty`` (``pytest -m thirdparty``).

- OpenAI Agents SDK 0.24 (``openai-agents``, no model involved): the README's example run as written over stdio,
  and ``MCPServerStreamableHttp`` against ``crew-mcp serve --http --port 0``.
- MCP Inspector CLI 2.12.0 (node 22): ``tools/list --strict`` in both protocol eras, ``tools/call`` over stdio and
  HTTP.

crew-mcp serves its built-in simulated crews (no crew configured) on a fast clock, with a SQLite ledger in tmp.
The addopts' ``-m "not thirdparty"`` keeps these out of the default run. The clients are not in .venv: if one is
missing (say ``-m "not redis"`` selected these in .venv) the test skips, and under ``make test-thirdparty``
(``CREW_MCP_THIRDPARTY=1``) it fails instead.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from process_support import announced_url

pytestmark = pytest.mark.thirdparty

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CORE_TOOLS = {"list_crews", "list_inputs", "kickoff_crew", "get_status"}
TRIP = {"budget": "1000 USD", "interests": "food, hikes", "duration": "7 days", "age": 35}
ITINERARY = "7 days trip focused on food, hikes"
INSPECTOR_VERSION = "2.12.0"
REQUIRED = os.environ.get("CREW_MCP_THIRDPARTY") == "1"


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (make test-thirdparty installs it under .thirdparty/)", pytrace=False)
    pytest.skip(reason)


def _agents_mcp() -> ModuleType:
    try:
        return importlib.import_module("agents.mcp")
    except ImportError as exc:
        _missing(f"openai-agents is not installed: {exc}")
        raise


def _inspector() -> str:
    found = os.environ.get("CREW_MCP_INSPECTOR") or shutil.which("mcp-inspector")
    if not found or not Path(found).exists():
        _missing("the MCP Inspector CLI (mcp-inspector) is not installed")
    assert found is not None
    return found


def server_env(tmp_path: Path) -> dict[str, str]:
    """crew-mcp's whole environment: no crew configured (the built-in simulator), its clock 20 times faster."""
    return {
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db",
        "CREW_MCP_SIMULATOR_TIME_SCALE": "0.05",
    }


def _block_after(marker: str, lang: str) -> str:
    text = README.read_text()
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, text.index(marker))
    assert match is not None, f"no ```{lang} block after {marker}"
    return match.group(1)


# ============================================================================ crew-mcp serve --http, for real


@contextlib.asynccontextmanager
async def http_server(tmp_path: Path) -> AsyncIterator[str]:
    """``crew-mcp serve --http --port 0`` as a subprocess; yields its MCP URL; always killed on exit."""
    command = shutil.which("crew-mcp", path=server_env(tmp_path)["PATH"])
    assert command is not None, "the crew-mcp command is not installed"
    log = tmp_path / "http-stderr.txt"
    with log.open("ab") as err:
        process = await anyio.open_process(
            [command, "serve", "--http", "--port", "0"],
            env=server_env(tmp_path),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        with anyio.fail_after(30):
            url = await announced_url(process, log)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp"), url
        yield url
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


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


# ================================================================================ MCP Inspector CLI 2.x

PROBLEM = re.compile(r'^(Warning|Error): tool "([^"]+)"\n  Path: (.*)\n  Issue: (.*)$', re.M)
SUMMARY = re.compile(r"^(\d+) errors?, (\d+) warnings? across (\d+) tools?\.$", re.M)


async def inspector(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``mcp-inspector --cli ...`` with HOME in tmp (its catalog and client config land there)."""
    env = {**os.environ, "HOME": str(tmp_path)}
    with anyio.fail_after(90):
        return await anyio.run_process([_inspector(), "--cli", *args], env=env, check=False, cwd=tmp_path)


def stdio_target(tmp_path: Path) -> list[str]:
    env = server_env(tmp_path)
    pairs = [arg for key in ("HOME", "CREW_MCP_LEDGER_URL") for arg in ("-e", f"{key}={env[key]}")]
    return [*pairs, "--cwd", str(tmp_path), "crew-mcp", "serve"]


async def test_inspector_is_the_pinned_2x_release(tmp_path: Path) -> None:
    done = await inspector(tmp_path, "--version")
    assert done.returncode == 0, done.stderr.decode()
    assert INSPECTOR_VERSION in done.stdout.decode(), "node < 22 makes npm install the old 0.15.0"


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_inspector_strict_finds_no_schema_portability_errors(tmp_path: Path, era: str) -> None:
    done = await inspector(
        tmp_path, *stdio_target(tmp_path), "--method", "tools/list", "--strict", "--protocol-era", era
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
        *stdio_target(tmp_path),
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
