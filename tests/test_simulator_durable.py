"""The durable simulator (``state_path``): runs shared by every simulator on one file and kept across restarts.

Time is the wall clock here (that is the point), so crews use long tasks and tests move time with
``advance()``, which every simulator on the file sees. Where a test needs real time to pass while no simulator
runs, it uses a tiny ``time_scale`` and sleeps well past the due time; nothing asserts on how long anything took.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from sim_support import kickoff, resume, sim_http, sink, status

from crew_mcp.simulator import CrewSpec, InputSpec, Simulator, SimulatorStateError, TaskSpec, serve_simulator
from crew_mcp.simulator.durable import SCHEMA_VERSION, dump, load
from crew_mcp.simulator.engine import Execution, Hooks

REVIEW = CrewSpec(
    name="review",
    inputs=[InputSpec(name="topic")],
    tasks=[
        TaskSpec(id="draft", agent="Writer", duration=1000, output="Draft on {topic}."),
        TaskSpec(id="final", agent="Editor", duration=1000, human_input=True, output="Final on {topic}."),
    ],
)
GATE = CrewSpec(name="gate", tasks=[TaskSpec(id="check", agent="Checker", duration=0, human_input=True)])
NOT_FOUND_STATUS = "No execution found with ID: {}"


@asynccontextmanager
async def opened(path: Path, **kwargs: Any) -> AsyncIterator[tuple[Simulator, httpx2.AsyncClient]]:
    """A durable simulator on ``path`` (no token) and an in-process client of it."""
    kwargs.setdefault("token", None)
    crews = kwargs.pop("crews", [REVIEW, GATE])
    async with Simulator(crews, state_path=path, **kwargs) as sim, sim_http(sim) as client:
        yield sim, client


async def test_a_run_started_by_one_simulator_is_followed_and_decided_by_another(tmp_path: Path) -> None:
    db = tmp_path / "simulator.db"
    async with opened(db) as (a, client_a), opened(db) as (b, client_b):
        kid = await kickoff(client_a, "review", {"topic": "bats"})
        body = await status(client_b, "review", kid)
        assert (body["state"], body["progress"]["completed"]) == ("RUNNING", 0)
        assert b.kickoff_ids("review") == a.kickoff_ids("review") == [kid]
        assert b.executions[kid].inputs == {"topic": "bats"}

        await b.advance(2000)  # time moved in the file: both simulators see the pause
        for client in (client_a, client_b):
            body = await status(client, "review", kid)
            assert (body["state"], body["last_executed_task"]["output"]) == ("PAUSED", "Final on bats.")

        response = await resume(client_a, "review", kid, "final", "cite sources", approve=False)
        assert response.json()["status"] == "retrying"
        assert (await status(client_b, "review", kid))["state"] == "RUNNING"
        await a.advance(1000)
        body = await status(client_b, "review", kid)
        assert body["state"] == "PAUSED"
        assert "Revised per feedback: cite sources" in body["last_executed_task"]["output"]

        response = await resume(client_b, "review", kid, "final", "ship it", approve=True)
        assert response.json()["status"] == "completed"
        body = await status(client_a, "review", kid)
        assert body["state"] == "SUCCESS"
        assert "ship it" in body["result"]["output"]
        # Each simulator counts and logs only what reached it.
        assert (a.count("review", "POST", "/resume"), b.count("review", "POST", "/resume")) == (1, 1)
        assert [r["human_feedback"] for r in b.resume_log] == ["ship it"]


async def test_a_run_stopped_through_one_simulator_is_revoked_for_all(tmp_path: Path) -> None:
    db = tmp_path / "simulator.db"
    async with opened(db) as (a, client_a), opened(db) as (_, client_b):
        kid = await kickoff(client_a, "review", {"topic": "t"})
        await a.advance(2000)
        response = await client_b.post(f"/review/stop/{kid}")
        assert response.json() == {"status": "stopped", "kickoffId": kid}
        await a.advance(5000)
        assert (await status(client_a, "review", kid))["state"] == "REVOKED"
        response = await resume(client_a, "review", kid, "final", "", approve=True)
        assert response.status_code == 400
        response = await client_a.post(f"/review/stop/{kid}")
        assert response.json() == {"detail": "Cannot stop execution. Current state: REVOKED"}


async def test_unknown_kickoff_ids_get_the_amp_404_bodies(tmp_path: Path) -> None:
    missing = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    async with opened(tmp_path / "simulator.db") as (_, client):
        response = await client.get(f"/review/status/{missing}")
        assert (response.status_code, response.json()) == (
            404,
            {"error": "Execution not found", "message": NOT_FOUND_STATUS.format(missing)},
        )
        response = await resume(client, "review", missing, "final", "", approve=True)
        assert (response.status_code, response.json()) == (
            404,
            {"error": "Not Found", "message": "Execution ID not found"},
        )
        # A run of another crew in the same file is unknown to this crew.
        kid = await kickoff(client, "gate", {})
        response = await client.get(f"/review/{kid}/status")
        assert (response.status_code, response.json()["message"]) == (404, NOT_FOUND_STATUS.format(kid))
        response = await client.post(f"/review/stop/{missing}")
        assert (response.status_code, response.json()["message"]) == (404, NOT_FOUND_STATUS.format(missing))


async def test_a_restart_mid_run_carries_on_where_the_run_is(tmp_path: Path) -> None:
    db = tmp_path / "state" / "simulator.db"  # the directory is created
    async with opened(db) as (sim, client):
        kid = await kickoff(client, "review", {"topic": "moths"})
        await sim.advance(1000)
        assert (await status(client, "review", kid))["progress"]["completed"] == 1
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # inputs are the user's data

    async with opened(db) as (sim, client):
        body = await status(client, "review", kid)
        assert (body["state"], body["progress"]["completed"], body["progress"]["current"]) == ("RUNNING", 1, "final")
        await sim.advance(1000)
        assert (await status(client, "review", kid))["state"] == "PAUSED"
        assert (await resume(client, "review", kid, "final", "", approve=True)).json()["status"] == "completed"
        assert (await status(client, "review", kid))["result"]["output"] == "Final on moths."


async def test_a_run_goes_on_while_no_simulator_runs_and_missed_webhooks_are_not_sent(tmp_path: Path) -> None:
    crew = CrewSpec(
        name="slow",
        tasks=[TaskSpec(id="first", agent="A", duration=100), TaskSpec(id="second", agent="B", duration=100_000)],
    )
    db = tmp_path / "simulator.db"
    with anyio.fail_after(20):
        async with sink() as (receiver, root):
            hooks = {"taskWebhookUrl": f"{root}/task", "crewWebhookUrl": f"{root}/crew"}
            async with opened(db, crews=[crew], time_scale=0.001) as (_, client):
                kid = await kickoff(client, "slow", {}, **hooks)
            await anyio.sleep(0.3)  # "first" fell due 0.1 s after the kickoff, while nothing ran

            async with opened(db, crews=[crew]) as (sim, client):
                body = await status(client, "slow", kid)
                assert (body["state"], body["progress"]["completed"]) == ("RUNNING", 1)
                await sim.flush_webhooks()
                assert sim.webhook_log == []  # AMP would have sent it to a process that was gone
                await sim.advance(100)  # "second" falls due while this simulator runs: it is delivered
                assert (await status(client, "slow", kid))["state"] == "SUCCESS"
                assert [(d.kind, d.payload.get("task_id"), d.status_code) for d in sim.webhook_log] == [
                    ("task", "second", 200),
                    ("crew", None, 200),
                ]
            assert receiver.paths() == ["/task", "/crew"]


async def test_two_served_simulators_on_one_file_deliver_each_webhook_once(tmp_path: Path) -> None:
    db = tmp_path / "simulator.db"
    crew = CrewSpec(name="quick", tasks=[TaskSpec(id="a", agent="A"), TaskSpec(id="b", agent="B")])
    with anyio.fail_after(20):
        async with sink() as (receiver, hook_root):
            a = Simulator([crew], state_path=db, token=None, time_scale=0.001)
            b = Simulator([crew], state_path=db, token=None)
            async with (
                serve_simulator(a) as root_a,  # each lifespan runs a wall-clock ticker
                serve_simulator(b) as root_b,
                httpx2.AsyncClient(base_url=root_a) as client_a,
                httpx2.AsyncClient(base_url=root_b) as client_b,
            ):
                kid = await kickoff(
                    client_a, "quick", {}, taskWebhookUrl=f"{hook_root}/task", crewWebhookUrl=f"{hook_root}/crew"
                )
                await receiver.crew_done.wait()
                assert (await status(client_b, "quick", kid))["state"] == "SUCCESS"
                await a.advance(0)  # deliver whatever either simulator still holds
                await b.advance(0)
            assert receiver.paths() == ["/task", "/task", "/crew"]
            assert len(a.webhook_log) + len(b.webhook_log) == 3


async def test_two_simulators_deciding_the_same_runs_at_once_apply_each_decision_once(tmp_path: Path) -> None:
    db = tmp_path / "simulator.db"
    outcomes: dict[str, list[int]] = {}
    async with opened(db) as (_, client_a), opened(db) as (_, client_b):
        kids = [await kickoff(client_a, "gate", {}) for _ in range(15)]

        async def decide(client: httpx2.AsyncClient, kid: str) -> None:
            response = await resume(client, "gate", kid, "check", "ok", approve=True)
            outcomes.setdefault(kid, []).append(response.status_code)

        async def start(client: httpx2.AsyncClient) -> None:
            await kickoff(client, "review", {"topic": "t"})

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for kid in kids:
                    tg.start_soon(decide, client_a, kid)
                    tg.start_soon(decide, client_b, kid)
                    tg.start_soon(start, client_a)
                    tg.start_soon(start, client_b)
        assert {kid: sorted(codes) for kid, codes in outcomes.items()} == {kid: [200, 400] for kid in kids}
        for kid in kids:
            assert (await status(client_b, "gate", kid))["state"] == "SUCCESS"
        assert len(set(await opened_ids(client_a))) == 30


async def opened_ids(client: httpx2.AsyncClient) -> list[str]:
    transport = client._transport
    assert isinstance(transport, httpx2.ASGITransport)
    response = await client.get("/_sim/counts")
    ids: list[str] = response.json()["executions"]["review"]
    return ids


WRITER = """
import json, sys, anyio, httpx2
from crew_mcp.simulator import CrewSpec, Simulator

async def main(path: str, count: int) -> None:
    gate = CrewSpec(name="gate", tasks=[{"id": "check", "agent": "C", "duration": 0, "human_input": True}])
    async with Simulator([gate], state_path=path, token=None) as sim:
        transport = httpx2.ASGITransport(app=sim.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://sim") as client:
            won = []
            for kid in sim.kickoff_ids("gate")[:count]:
                body = {"execution_id": kid, "task_id": "check", "human_feedback": "", "is_approve": True}
                response = await client.post("/gate/resume", json=body)
                assert response.status_code in (200, 400), response.text
                if response.status_code == 200:
                    won.append(kid)
                await client.post("/gate/kickoff", json={"inputs": {}})
    print(json.dumps(won))

anyio.run(main, sys.argv[1], int(sys.argv[2]))
"""


@pytest.mark.slow
async def test_two_processes_share_one_file_without_losing_or_doubling_a_write(tmp_path: Path) -> None:
    db = tmp_path / "simulator.db"
    async with opened(db, crews=[GATE]) as (_, client):
        kids = [await kickoff(client, "gate", {}) for _ in range(80)]
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run() -> None:
        results.append(await anyio.run_process([sys.executable, "-c", WRITER, str(db), "80"], check=False))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(run)
    won: list[str] = []
    for done in results:
        assert done.returncode == 0, done.stderr.decode()
        won += json.loads(done.stdout)
    assert sorted(won) == sorted(kids)  # every paused run approved exactly once, by one process or the other
    async with opened(db, crews=[GATE]) as (sim, client):
        assert len(sim.kickoff_ids("gate")) == 80 + 2 * 80
        for kid in kids[:5]:
            assert (await status(client, "gate", kid))["state"] == "SUCCESS"


def test_a_run_round_trips_through_its_stored_form() -> None:
    ex = Execution(
        id="k1",
        crew=REVIEW,
        inputs={"topic": "t"},
        meta={"crew_mcp_request_id": "r1", "nested": {"a": [1, 2]}},
        hooks=Hooks(task="http://h/task", human_input="http://h/human", human_input_auth={"strategy": "bearer"}),
        created_at=1.5,
        epoch=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        time_scale=0.5,
    )
    ex.advance(2000)
    ex.resume(2000, feedback="more", approve=False, hooks=Hooks())
    ex.advance(3000)
    ex.notes.append(("final", "note"))
    again = load(dump(ex), REVIEW)
    assert again == ex
    assert dump(again) == dump(ex)


async def test_a_file_that_is_not_a_state_file_gives_500s_and_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "simulator.db"
    bad.write_bytes(b"this is not a database" * 100)
    async with opened(bad) as (sim, client):
        response = await client.get("/review/inputs")
        assert (response.status_code, response.json()["error"]) == (500, "Internal Server Error")
        with pytest.raises(SimulatorStateError, match=str(bad)):
            sim.kickoff_ids("review")


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "simulator.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SimulatorStateError, match="newer than this crew-mcp"):
        Simulator(state_path=db).now()


class _Warned(logging.Handler):
    """Sets :attr:`seen` once ``times`` warnings containing ``words`` were logged."""

    def __init__(self, words: str, times: int) -> None:
        super().__init__(logging.WARNING)
        self.words, self.left = words, times
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.left -= 1
            if self.left <= 0:
                self.seen.set()


async def test_the_clock_survives_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "simulator.db"
    bad.write_bytes(b"garbage" * 100)
    warned = _Warned("simulator clock: The simulator state file", times=3)
    logger = logging.getLogger("crew_mcp.simulator")
    logger.addHandler(warned)
    try:
        async with Simulator(state_path=bad) as sim:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sim.run_clock)
                    await warned.seen.wait()  # the ticker logs each failure and carries on
                    tg.cancel_scope.cancel()
    finally:
        logger.removeHandler(warned)


def test_a_durable_simulator_needs_the_wall_clock(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wall clock"):
        Simulator(clock="manual", state_path=tmp_path / "simulator.db")
