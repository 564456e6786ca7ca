"""Helpers for the opt-in third-party client tests (``make test-thirdparty``; docs/clients.md has the matrix).

crew-mcp serves its built-in simulated crews (no crew configured) on a fast clock with a SQLite ledger in tmp,
over stdio (a client starts ``crew-mcp serve`` itself) or as ``crew-mcp serve --http --port 0``. Each client runs in
the venv its dependencies need, under .thirdparty/ (the Makefile builds them): Python clients as scripts from
tests/thirdparty/clients/ that print a JSON transcript (tests/thirdparty/clients/walk.py), which the tests assert
on. A client that is not installed skips the test, and fails it under ``CREW_MCP_THIRDPARTY=1`` (what
``make test-thirdparty`` sets), so the opt-in run never passes by skipping.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from process_support import announced_url, reap

ROOT = Path(__file__).resolve().parents[1]
THIRDPARTY = ROOT / ".thirdparty"
CLIENTS = Path(__file__).resolve().parent / "thirdparty" / "clients"
REQUIRED = os.environ.get("CREW_MCP_THIRDPARTY") == "1"
CORE_TOOLS = {"list_crews", "list_inputs", "kickoff_crew", "get_status", "resume_with_feedback", "list_executions"}
# The protocol versions an older host may send in initialize (the MCP SDK 1.x client forces each one).
OLDER_PROTOCOLS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]


def missing(reason: str) -> None:
    """Skip for a client that is not installed; fail instead under ``make test-thirdparty``."""
    if REQUIRED:
        pytest.fail(f"{reason} (make test-thirdparty installs it under .thirdparty/)", pytrace=False)
    pytest.skip(reason)


def server_env(tmp_path: Path) -> dict[str, str]:
    """crew-mcp's whole environment: no crew configured (the built-in simulator), its clock 20 times faster."""
    return {
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db",
        "CREW_MCP_SIMULATOR_TIME_SCALE": "0.05",
    }


def crew_mcp_command(tmp_path: Path) -> str:
    """The absolute path of the ``crew-mcp`` command installed beside this interpreter."""
    command = shutil.which("crew-mcp", path=server_env(tmp_path)["PATH"])
    assert command is not None, "the crew-mcp command is not installed"
    return command


def walk_module() -> ModuleType:
    """tests/thirdparty/clients/walk.py, for a client driven from the test itself (the Inspector CLI)."""
    if "thirdparty_walk" in sys.modules:
        return sys.modules["thirdparty_walk"]
    spec = importlib.util.spec_from_file_location("thirdparty_walk", CLIENTS / "walk.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["thirdparty_walk"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ============================================================================ crew-mcp serve --http, for real


@contextlib.asynccontextmanager
async def http_server(tmp_path: Path) -> AsyncIterator[str]:
    """``crew-mcp serve --http --port 0`` as a subprocess; yields its MCP URL; always killed on exit."""
    log = tmp_path / "http-stderr.txt"
    with log.open("ab") as err:
        process = await anyio.open_process(
            [crew_mcp_command(tmp_path), "serve", "--http", "--port", "0"],
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
        await reap(process)


# ================================================================================ client scripts, per venv


def venv_python(venv: str) -> Path:
    """The interpreter of .thirdparty/<venv>; a missing venv skips (or fails under make test-thirdparty)."""
    python = THIRDPARTY / venv / "bin" / "python"
    if not (THIRDPARTY / venv / ".installed").exists() or not python.exists():
        missing(f".thirdparty/{venv} is not installed")
    return python


def stdio_target(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A client script's target: start ``crew-mcp serve`` over stdio itself, in crew-mcp's environment."""
    return {
        "transport": "stdio",
        "command": [crew_mcp_command(tmp_path), "serve"],
        "env": server_env(tmp_path),
        **extra,
    }


async def run_client(venv: str, script: str, target: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Run tests/thirdparty/clients/<script> with .thirdparty/<venv>'s Python; the transcript it printed."""
    python = venv_python(venv)
    env = {
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        # CrewAI would otherwise try to send telemetry and traces (there is no network but the registries here).
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_TRACING_ENABLED": "false",
        "OTEL_SDK_DISABLED": "true",
    }
    target = {"conversation_id": f"thread-{script.removesuffix('.py')}", **target}
    with anyio.fail_after(240):
        done = await anyio.run_process(
            [str(python), str(CLIENTS / script), json.dumps(target)], env=env, cwd=tmp_path, check=False
        )
    stderr = done.stderr.decode(errors="replace")[-3000:]
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    assert done.returncode == 0 and lines, f"{script} exited {done.returncode}:\n{stderr}"
    transcript: dict[str, Any] = json.loads(lines[-1])
    transcript["stderr"] = stderr
    return transcript


def explain(transcript: dict[str, Any]) -> str:
    """A failure message: who failed and why, then the calls (the client's stderr and traceback last)."""
    calls = [
        f"  {c['tool']}({json.dumps(c['arguments'])}) -> {c.get('state')} "
        f"{'ERROR ' if c.get('is_error') else ''}{(c.get('text') or '')[:300]!r}"
        for c in transcript["calls"]
    ]
    tail = transcript.get("traceback") or transcript.get("stderr") or ""
    return "\n".join([f"{transcript['client']}: {transcript['error']}", *calls, tail[-2500:]])


def assert_walked(transcript: dict[str, Any]) -> None:
    """The client listed the tools and walked kickoff → status → reject → re-run → approve → completed."""
    assert transcript["error"] is None, explain(transcript)
    assert set(transcript["tools"]) >= CORE_TOOLS, transcript["tools"]
    calls = transcript["calls"]
    assert not any(c["is_error"] for c in calls), explain(transcript)
    assert len({c["kickoff_id"] for c in calls}) == 1, explain(transcript)
    decisions = [c["arguments"]["approve"] for c in calls if c["tool"] == "resume_with_feedback"]
    assert decisions == [False, True], explain(transcript)
    final = calls[-1]
    topic = calls[0]["arguments"]["inputs"]["topic"]
    assert final["tool"] == "get_status" and final["state"] == "completed", explain(transcript)
    assert f"Report on {topic}" in final["text"], explain(transcript)
