"""The official MCP conformance suite against ``crew-mcp serve --http``: opt-in, run by ``make test-thirdparty``.

``@modelcontextprotocol/conformance`` (npm, node 22, both under .thirdparty/) runs one scenario per test against a
fresh server and writes each check's verdict to ``checks.json``. Only the scenarios that apply to any server run:
the others expect the reference server's own tools (``test_reconnection``, image and audio tools, ...).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import anyio
import pytest
from thirdparty_support import THIRDPARTY, http_server, missing

pytestmark = pytest.mark.thirdparty

CONFORMANCE_VERSION = "0.1.16"
SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "dns-rebinding-protection",
    # Served since issue 10, defect 19 (completions, the logging capability); they failed with -32601 before.
    "logging-set-level",
    "completion-complete",
]


def _conformance() -> Path:
    found = THIRDPARTY / "conformance" / "node_modules" / ".bin" / "conformance"
    if not found.exists():
        missing("the MCP conformance suite (@modelcontextprotocol/conformance) is not installed")
    return found


async def test_conformance_suite_is_the_pinned_release(tmp_path: Path) -> None:
    package = THIRDPARTY / "conformance" / "node_modules" / "@modelcontextprotocol" / "conformance" / "package.json"
    _conformance()
    assert json.loads(package.read_text())["version"] == CONFORMANCE_VERSION


async def test_conformance_lists_every_scenario_this_suite_runs(tmp_path: Path) -> None:
    # A renamed scenario would otherwise fail as "unknown" and hide what the suite meant to check.
    done = await _run(tmp_path, "list")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    listed = done.stdout.decode()
    assert [s for s in SCENARIOS if f"  - {s} [" not in listed] == []


async def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    node = THIRDPARTY / "node" / "node_modules" / ".bin"
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{node}{os.pathsep}{os.environ.get('PATH', '')}"}
    with anyio.fail_after(120):
        return await anyio.run_process([str(_conformance()), *args], env=env, cwd=tmp_path, check=False)


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_conformance_scenario_passes(tmp_path: Path, scenario: str) -> None:
    results = tmp_path / "results"
    async with http_server(tmp_path) as url:
        done = await _run(tmp_path, "server", "--url", url, "--scenario", scenario, "--output-dir", str(results))
    report = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    found = list(results.glob("*/checks.json"))
    assert len(found) == 1, report
    checks = json.loads(found[0].read_text())
    assert checks, report
    failed = {c["name"]: c.get("errorMessage", c["status"]) for c in checks if c["status"] not in {"SUCCESS", "INFO"}}
    assert failed == {}, f"{scenario}: {failed}"
    assert done.returncode == 0, report[-3000:]
