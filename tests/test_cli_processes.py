"""``crew-mcp`` commands as separate processes, the way a new user runs them (issue 10, defects 7 and 18).

Each command is a real ``python -m crew_mcp`` subprocess with its own HOME and no crew configured, so it uses the
default SQLite ledger and the embedded simulator. The simulator keeps its runs in ``simulator.db`` beside the
ledger, so a run one command started goes on in the next; ``--json`` works after the command as well as before it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

pytestmark = pytest.mark.slow


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def crew_mcp(home: Path, *argv: str) -> Done:
    """Run ``crew-mcp *argv`` as a new process whose HOME is ``home`` and whose environment names no crew."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_MCP_", "MCP_CREWAI_", "XDG_"))}
    env["HOME"] = str(home)
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-m", "crew_mcp", *argv], env=env, cwd=home, check=False)
    return Done(done.returncode, done.stdout.decode(), done.stderr.decode())


async def test_a_run_one_command_kicks_off_on_the_embedded_simulator_is_found_by_the_next(tmp_path: Path) -> None:
    started = await crew_mcp(tmp_path, "kickoff", "research", "topic=tides", "--json")
    assert started.code == 0, started.err
    kickoff_id = started.json()["kickoff_id"]
    data = tmp_path / ".local" / "share" / "crew-mcp"  # the default ledger's folder under this HOME
    assert (data / "ledger.db").is_file() and (data / "simulator.db").is_file()
    assert str(data / "simulator.db") in started.err  # the note says where the runs are kept

    status = await crew_mcp(tmp_path, "status", kickoff_id, "--json")

    assert status.code == 0, status.err
    shown = status.json()
    # The research crew pauses for a human review after its first task: without a decision it never finishes.
    assert shown["kickoff_id"] == kickoff_id and shown["state"] in {"running", "waiting_for_human"}, shown
    runs = await crew_mcp(tmp_path, "runs", "--json")
    assert runs.code == 0, runs.err
    assert [r["kickoff_id"] for r in runs.json()["executions"]] == [kickoff_id]


async def test_json_after_the_command_prints_json(tmp_path: Path) -> None:
    crews = await crew_mcp(tmp_path, "crews", "--json")
    runs = await crew_mcp(tmp_path, "runs", "--json")
    assert crews.code == 0 and runs.code == 0, (crews.err, runs.err)
    listed = crews.json()
    assert listed["simulated"] is True and "research" in {c["name"] for c in listed["crews"]}
    assert runs.json()["executions"] == []
