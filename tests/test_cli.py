"""The ``crew-mcp`` commands for people and scripts, against the simulator served for real on 127.0.0.1.

Each command runs ``crew_mcp.cli.main`` in a worker thread (it starts its own event loop, like a fresh process)
while the simulator serves from the test's loop. Every command is a new service on the same SQLite ledger; the
runs themselves live in the simulator, whose manual clock the test moves between commands.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sim_support import sink

from crew_mcp.cli import main
from crew_mcp.ledger import open_ledger
from crew_mcp.simulator import Simulator, serve_simulator

ROOT = Path(__file__).resolve().parents[1]
WRONG_TOKEN = "tok-WRONG-8c1f3a9e77"
CREWS = ("trip_planner", "research")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    sim: Simulator
    config: Path
    ledger_url: str
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *argv: str, timeout: float = 20) -> Result:
        self.capsys.readouterr()
        with anyio.fail_after(timeout):
            code = await anyio.to_thread.run_sync(main, list(argv))
        out, err = self.capsys.readouterr()
        return Result(code, out, err)


def write_config(path: Path, root: str, token_env: str = "SIM_TOKEN") -> None:
    path.write_text(
        "".join(f'[[crews]]\nname = "{n}"\nurl = "{root}/{n}"\ntoken_env = "{token_env}"\n\n' for n in CREWS),
        encoding="utf-8",
    )


def isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **values: str) -> None:
    for var in list(os.environ):
        if var.startswith(("CREW_MCP_", "MCP_CREWAI_ENTERPRISE_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    for k, v in values.items():
        monkeypatch.setenv(k, v)


async def cli_for(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Cli]:
    async with serve_simulator(sim) as root:
        config = tmp_path / "crews.toml"
        write_config(config, root)
        ledger_url = f"sqlite:///{tmp_path}/ledger.db"
        isolate_env(
            monkeypatch,
            tmp_path,
            CREW_MCP_CONFIG=str(config),
            SIM_TOKEN="sim-token",
            CREW_MCP_LEDGER_URL=ledger_url,
            CREW_MCP_OWNER="alice",
        )
        yield Cli(sim, config, ledger_url, capsys)


@pytest.fixture
async def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Cli]:
    async for c in cli_for(Simulator(clock="manual"), tmp_path, monkeypatch, capsys):
        yield c


def one_line_error(r: Result, code: int) -> str:
    assert r.code == code, (r.out, r.err)
    assert r.out == ""
    assert r.err.startswith("crew-mcp: ") and r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err
    return r.err


async def test_crews_and_inputs_list_what_the_config_file_names(cli: Cli) -> None:
    crews = await cli("crews")
    assert crews.code == 0
    assert "trip_planner" in crews.out and "research" in crews.out
    listed = (await cli("--json", "crews")).json()
    assert [c["name"] for c in listed["crews"]] == list(CREWS) and listed["simulated"] is False

    inputs = await cli("inputs", "trip_planner")
    assert inputs.code == 0
    for name in ("budget", "interests", "duration", "age"):
        assert name in inputs.out


async def test_kickoff_json_then_status_and_runs_across_separate_commands(cli: Cli) -> None:
    started = await cli(
        "--json", "kickoff", "trip_planner", "budget=900 EUR", "interests=museums", "duration=3 days", "age:=35"
    )
    assert started.code == 0, started.err
    run = started.json()
    kickoff_id = run["kickoff_id"]
    assert run["state"] == "running" and run["crew"] == "trip_planner" and run["conversation_id"] == "cli"
    assert cli.sim.executions[kickoff_id].inputs["age"] == "35"  # key:=JSON sent as AMP's string form

    await cli.sim.advance(10)
    status = await cli("--json", "status", kickoff_id)
    assert status.code == 0
    done = status.json()
    assert done["state"] == "completed"
    assert done["output"]["json"] == {"itinerary": "3 days trip focused on museums", "budget": "900 EUR"}

    text = await cli("status", kickoff_id)
    assert text.code == 0 and kickoff_id in text.out and "completed" in text.out

    runs = await cli("runs")
    assert runs.code == 0 and kickoff_id in runs.out and "completed" in runs.out
    # The CLI files runs under CREW_MCP_OWNER, the same owner the MCP server uses.
    ledger = open_ledger(cli.ledger_url)
    try:
        assert [r.kickoff_id for r in await ledger.list(owner="alice")] == [kickoff_id]
    finally:
        await ledger.aclose()


async def test_resume_approve_continues_a_paused_research_run(cli: Cli) -> None:
    kickoff_id = (await cli("--json", "kickoff", "research", "topic=tides")).json()["kickoff_id"]
    await cli.sim.advance(5)
    paused = (await cli("--json", "status", kickoff_id)).json()
    assert paused["state"] == "waiting_for_human"
    task_id = paused["pending"]["task_id"]

    approvals = await cli("--json", "approvals")
    assert [(a["kickoff_id"], a["task_id"]) for a in approvals.json()["approvals"]] == [(kickoff_id, task_id)]

    resumed = await cli("--json", "resume", kickoff_id, "--approve", "--feedback", "looks right")
    assert resumed.code == 0, resumed.err
    view = resumed.json()
    assert view["approve"] is True and view["decided_by"] == "human via cli"
    (body,) = cli.sim.resume_log
    assert body["task_id"] == task_id and body["is_approve"] is True and body["human_feedback"] == "looks right"

    await cli.sim.advance(10)
    done = (await cli("--json", "status", kickoff_id)).json()
    assert done["state"] == "completed"
    assert [d["by"] for d in done["decisions"]] == ["human"]
    assert (await cli("--json", "approvals")).json()["approvals"] == []


async def test_doctor_passes_with_the_right_token(cli: Cli) -> None:
    r = await cli("doctor")
    assert r.code == 0, r.out
    assert "All checks passed." in r.out
    assert "crew trip_planner" in r.out and "budget" in r.out
    report = (await cli("--json", "doctor")).json()
    assert report["ok"] is True and len(report["checks"]) == 2 + len(CREWS)


async def test_doctor_with_a_wrong_token_fails_saying_it_was_rejected_without_printing_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_TOKEN", WRONG_TOKEN)
    r = await cli("doctor")
    assert r.code == 1
    assert "FAIL crew trip_planner: the token was rejected" in r.out
    assert WRONG_TOKEN not in r.out + r.err
    js = await cli("--json", "doctor")
    assert js.code == 1 and js.json()["ok"] is False and WRONG_TOKEN not in js.out + js.err


async def test_bad_usage_exits_2_with_one_line_and_sends_nothing(cli: Cli) -> None:
    assert "Unknown crew 'nope'" in one_line_error(await cli("kickoff", "nope", "topic=x"), 2)
    assert "Unknown crew 'nope'" in one_line_error(await cli("inputs", "nope"), 2)
    assert "'notkeyvalue' is not key=value" in one_line_error(await cli("kickoff", "trip_planner", "notkeyvalue"), 2)
    assert "JSON" in one_line_error(await cli("kickoff", "trip_planner", "age:=thirty"), 2)
    missing = one_line_error(await cli("kickoff", "trip_planner", "budget=1"), 2)
    assert "Missing required inputs" in missing and "interests" in missing
    assert "Several crews" in one_line_error(await cli("kickoff", "topic=x"), 2)
    assert cli.sim.count("trip_planner", "POST", "/kickoff") == 0
    assert (await cli("--json", "runs")).json()["executions"] == []


async def test_unknown_run_id_fails_with_one_line(cli: Cli) -> None:
    assert "No run with kickoff_id 'k-404'" in one_line_error(await cli("status", "k-404"), 1)


async def test_bad_config_file_exits_2_naming_the_file(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[crews]]\nname = "trip"\nurl = "not-a-url"\n', encoding="utf-8")
    err = one_line_error(await cli("--config", str(bad), "crews"), 2)
    assert str(bad) in err and "'trip'" in err and "'url'" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[[crews]\n", encoding="utf-8")
    assert "not valid TOML" in one_line_error(await cli("--config", str(broken), "doctor"), 2)
    assert "does not exist" in one_line_error(await cli("--config", str(tmp_path / "none.toml"), "runs"), 2)


async def test_kickoff_wait_shows_progress_on_stderr_and_ends_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The wall clock is the point here: the simulator runs the whole 4.5 s trip in about 0.9 s.
    async for cli in cli_for(Simulator(time_scale=0.2), tmp_path, monkeypatch, capsys):
        r = await cli(
            "--json", "kickoff", "trip_planner", "budget=1", "interests=x", "duration=1 day", "age:=30", "--wait"
        )
        assert r.code == 0, r.err
        assert r.json()["state"] == "completed"
        progress = [line for line in r.err.splitlines() if line.strip()]
        assert len(progress) >= 2, r.err
        assert re.match(r"\[[01]/2\] running · task \w+", progress[0]), r.err
        assert all(re.match(r"\[\d/2\] (running|completed)", line) for line in progress), r.err
        assert progress[-1].startswith("[2/2] completed"), r.err


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv", [["-c", "import crew_mcp.cli"], ["-m", "crew_mcp", "--help"]], ids=["import-cli", "help"]
)
def test_cli_start_up_imports_neither_mcp_nor_redis_simulator_or_uvicorn(argv: Sequence[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "crew_mcp.cli" in imported
    heavy = {m for m in imported if m.split(".")[0] in {"redis", "uvicorn", "mcp", "httpx2"}}
    heavy |= {m for m in imported if m.startswith("crew_mcp.simulator")}
    assert heavy == set()


async def test_cancel_without_a_terminal_needs_yes_then_stops_the_run_as_a_human(cli: Cli) -> None:
    kickoff_id = (await cli("--json", "kickoff", "research", "topic=tides")).json()["kickoff_id"]
    await cli.sim.advance(5)

    unconfirmed = one_line_error(await cli("cancel", kickoff_id), 2)
    assert "cannot be undone: add --yes" in unconfirmed
    assert cli.sim.count("research", "POST", "/stop") == 0

    stopped = await cli("--json", "cancel", kickoff_id, "--yes")
    assert stopped.code == 0, stopped.err
    view = stopped.json()
    assert view["stopped"] is True and view["stopped_by"] == "human via cli" and view["run"]["state"] == "cancelled"
    assert cli.sim.executions[kickoff_id].state == "REVOKED"

    shown = (await cli("--json", "status", kickoff_id)).json()
    assert shown["state"] == "cancelled" and shown["message"].startswith("Stopped by alice (human via cli)")
    again = one_line_error(await cli("cancel", kickoff_id, "--yes"), 1)
    assert "has already been stopped" in again
    assert cli.sim.count("research", "POST", "/stop") == 1


async def test_a_pause_a_cli_command_sees_is_noticed_once_before_the_command_exits(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sink() as (receiver, root):
        monkeypatch.setenv("CREW_MCP_NOTIFY_WEBHOOK_URL", f"{root}/notices")
        monkeypatch.setenv("CREW_MCP_NOTIFY_WEBHOOK_SECRET", "cli-notice-secret-0123456789")
        kickoff_id = (await cli("--json", "kickoff", "research", "topic=tides")).json()["kickoff_id"]
        await cli.sim.advance(5)
        assert (await cli("--json", "status", kickoff_id)).json()["state"] == "waiting_for_human"
        assert [body["id"] for _, _, body in receiver.received] == [f"{kickoff_id}:write_task:1"]
        await cli("approvals")
        await cli("status", kickoff_id)  # later commands, each a new service on the same ledger: no repeat
        assert len(receiver.received) == 1
