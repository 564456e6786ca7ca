"""The webhook receiver over real sockets: the simulator and crew-mcp's HTTP app each under uvicorn.

The simulator keeps a manual clock, so ``await sim.advance(s)`` moves the runs and delivers their webhooks
over HTTP to crew-mcp at that moment; the ledger (SQLite in ``tmp_path``) is read by a second connection.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from hitl_support import MODES, OWNER, documented, loopback_socket, ok, serve_on
from mcp import Client

from crew_mcp.app import build_app
from crew_mcp.ledger import Ledger, RunRecord, open_ledger
from crew_mcp.settings import CrewConfig, Settings
from crew_mcp.simulator import CrewSpec, Simulator, builtin_crews, serve_simulator

RESEARCH_DOC = documented(next(c for c in builtin_crews() if c.name == "research"))
CREWS = [*builtin_crews(), RESEARCH_DOC]
TRIP = {"budget": "1000 USD", "interests": "food", "duration": "7 days", "age": "35"}


@dataclass
class Servers:
    sim: Simulator
    url: str  # crew-mcp's root URL
    ledger: Ledger

    async def record(self, kickoff_id: str) -> RunRecord:
        record = await self.ledger.get(kickoff_id, owner=None)
        assert record is not None
        return record

    async def post(self, path: str, **kw: Any) -> httpx2.Response:
        async with httpx2.AsyncClient(base_url=self.url) as http:
            return await http.post(path, **kw)


@asynccontextmanager
async def servers(tmp_path: Path, crews: Sequence[CrewSpec] = CREWS, **settings: Any) -> AsyncIterator[Servers]:
    sim = Simulator(crews, clock="manual")
    ledger_url = f"sqlite://{tmp_path}/ledger.db"
    async with sim, serve_simulator(sim) as root:
        sock = loopback_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        configs = [CrewConfig(name=c.name, url=f"{root}/{c.name}", token="sim-token") for c in crews]
        config = Settings(owner=OWNER, crews=configs, public_url=url, ledger_url=ledger_url, **settings)
        app = build_app(config, host="127.0.0.1", port=sock.getsockname()[1])
        ledger = open_ledger(ledger_url)
        try:
            async with serve_on(app, sock):
                yield Servers(sim, url, ledger)
        finally:
            await ledger.aclose()


async def test_each_kickoff_sends_its_own_secret_webhook_urls_on_this_server(tmp_path: Path) -> None:
    async with servers(tmp_path) as s, Client(f"{s.url}/mcp") as client:
        kids = [
            (await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": t}}))["kickoff_id"] for t in "ab"
        ]
        secrets = []
        for kid in kids:
            hooks = s.sim.executions[kid].hooks
            record = await s.record(kid)
            assert record.webhook_secret and len(record.webhook_secret) >= 32
            base = f"{s.url}/webhooks/{record.request_id}/{record.webhook_secret}"
            assert (hooks.task, hooks.step, hooks.crew) == (f"{base}/task", f"{base}/step", f"{base}/crew")
            secrets.append(record.webhook_secret)
        assert secrets[0] != secrets[1]


async def test_task_step_and_crew_webhooks_finish_the_run_in_the_ledger_without_polling(tmp_path: Path) -> None:
    async with servers(tmp_path) as s, Client(f"{s.url}/mcp") as client:
        kid = (await ok(client, "kickoff_crew", {"crew": "trip_planner", "inputs": TRIP}))["kickoff_id"]
        await s.sim.advance(3600)
        kinds = {d.kind for d in s.sim.webhook_log}
        assert kinds == {"step", "task", "crew"}
        assert {d.status_code for d in s.sim.webhook_log} == {202}
        record = await s.record(kid)
        assert record.state.value == "completed"
        assert record.status is not None and record.status.output is not None and record.status.output.text
        assert s.sim.count("trip_planner", "GET", "/status") == 0
        done = await ok(client, "get_status", {"kickoff_id": kid})
        assert done["state"] == "completed" and done["from_ledger"] is True
        assert s.sim.count("trip_planner", "GET", "/status") == 0


async def test_a_failed_run_reported_by_crew_webhook_keeps_the_crews_error(tmp_path: Path) -> None:
    async with servers(tmp_path) as s, Client(f"{s.url}/mcp") as client:
        kid = (await ok(client, "kickoff_crew", {"crew": "flaky", "inputs": {"topic": "x"}}))["kickoff_id"]
        await s.sim.advance(3600)
        record = await s.record(kid)
        assert record.state.value == "failed"
        assert record.status is not None and "simulated failure" in (record.status.error or "")
        assert s.sim.count("flaky", "GET", "/status") == 0


@pytest.mark.parametrize("mode", MODES)
async def test_a_documented_shape_pause_arrives_by_webhook_and_is_approved_end_to_end(
    tmp_path: Path, mode: str
) -> None:
    crew = RESEARCH_DOC.name
    async with servers(tmp_path) as s, Client(f"{s.url}/mcp", mode=mode) as client:
        kid = (await ok(client, "kickoff_crew", {"crew": crew, "inputs": {"topic": "tides"}}))["kickoff_id"]
        await s.sim.advance(3600)
        listed = await ok(client, "list_pending_approvals", {})
        assert [(a["kickoff_id"], a["task_id"], a["output"]) for a in listed["approvals"]] == [
            (kid, "write_task", "Report on tides.")
        ]
        assert s.sim.count(crew, "GET", "/status") == 0  # known from the webhook alone

        paused = await ok(client, "get_status", {"kickoff_id": kid})
        assert paused["state"] == "waiting_for_human" and paused["pending"]["task_id"] == "write_task"
        resumed = await ok(client, "resume_with_feedback", {"kickoff_id": kid, "approve": True, "feedback": "OK"})
        assert resumed["task_id"] == "write_task"
        record = await s.record(kid)
        assert record.webhooks is not None
        [sent] = s.sim.resume_log
        assert {k: sent[k] for k in record.webhooks.wire()} == record.webhooks.wire()

        await s.sim.advance(3600)
        record = await s.record(kid)
        assert record.state.value == "completed" and record.pending is None
        assert [(d.by, d.approve, d.feedback) for d in record.decisions] == [("model", True, "OK")]


async def test_a_wrong_secret_or_unknown_run_gets_404_and_changes_nothing(tmp_path: Path) -> None:
    async with servers(tmp_path) as s, Client(f"{s.url}/mcp") as client:
        kid = (await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}}))["kickoff_id"]
        before = await s.record(kid)
        assert before.webhook_secret
        pause = {"kickoff_id": kid, "task_id": "write_task", "output": "forged", "status": "pending_human_input"}
        rid, secret = before.request_id, before.webhook_secret
        wrong = "A" * len(secret)
        assert (await s.post(f"/webhooks/{rid}/{wrong}/task", json=pause)).status_code == 404
        assert (await s.post(f"/webhooks/{'0' * 32}/{secret}/task", json=pause)).status_code == 404
        assert (await s.post(f"/webhooks/../{secret}/task", json=pause)).status_code == 404
        other = {**pause, "kickoff_id": "0f9d2c1e-0000-0000-0000-000000000000"}
        assert (await s.post(f"/webhooks/{rid}/{secret}/task", json=other)).status_code == 404
        assert (await s.post(f"/webhooks/{rid}/{secret}/bogus", json=pause)).status_code == 404
        assert (await s.post(f"/webhooks/{rid}/{secret}/task", json=[pause])).status_code == 400
        assert await s.record(kid) == before

        right = await s.post(f"/webhooks/{rid}/{secret}/task", json=pause)
        assert right.status_code == 202
        assert (await s.record(kid)).pending is not None  # the same payload with the right secret is applied


async def test_a_run_recorded_with_the_old_url_scheme_still_receives_its_webhooks(tmp_path: Path) -> None:
    # Runs kicked off before the request id was in the URL keep /webhooks/{secret}/{kind} for their life.
    async with servers(tmp_path) as s, Client(f"{s.url}/mcp") as client:
        kid = (await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}}))["kickoff_id"]
        before = await s.record(kid)
        assert before.webhook_secret
        pause = {"kickoff_id": kid, "task_id": "write_task", "output": "draft", "status": "pending_human_input"}
        wrong = "A" * len(before.webhook_secret)
        assert (await s.post(f"/webhooks/{wrong}/task", json=pause)).status_code == 404
        assert (await s.post(f"/webhooks/{before.webhook_secret}/task", json={"output": "x"})).status_code == 404
        assert await s.record(kid) == before
        assert (await s.post(f"/webhooks/{before.webhook_secret}/task", json=pause)).status_code == 202
        assert (await s.record(kid)).pending is not None


async def test_malformed_deep_or_non_object_json_gets_400_and_changes_nothing(tmp_path: Path) -> None:
    async with servers(tmp_path) as s, Client(f"{s.url}/mcp") as client:
        kid = (await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}}))["kickoff_id"]
        before = await s.record(kid)
        headers = {"content-type": "application/json"}
        bodies = [
            b'{"kickoff_id": ',
            b"[" * 200_000 + b"]" * 200_000,  # Python's parser gives up (RecursionError): 400, never 500
            ('{"a": ' * 100 + "1" + "}" * 100).encode(),  # parses, but deeper than any AMP payload
            b'"just a string"',
        ]
        for path in (
            f"/webhooks/{before.request_id}/{before.webhook_secret}/task",
            f"/webhooks/{before.webhook_secret}/task",
        ):
            for body in bodies:
                bad = await s.post(path, content=body, headers=headers)
                assert bad.status_code == 400, (path, body[:20], bad.status_code)
        assert await s.record(kid) == before


async def test_ten_http_clients_waiting_on_one_run_share_one_upstream_poll_loop(tmp_path: Path) -> None:
    """The default schedule polls at 0, 0.5, 1.25 s ...: ten clients must not poll more often than that."""
    async with servers(tmp_path, wait_cap_seconds=0.4) as s, Client(f"{s.url}/mcp") as first:
        kid = (await ok(first, "kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}}))["kickoff_id"]
        clients = [Client(f"{s.url}/mcp", mode=MODES[i % 2]) for i in range(10)]
        for c in clients:
            await c.__aenter__()
        try:
            started = time.monotonic()
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for c in clients:
                        tg.start_soon(ok, c, "get_status", {"kickoff_id": kid, "wait_seconds": 30})
            elapsed = time.monotonic() - started
        finally:
            for c in reversed(clients):
                await c.__aexit__(None, None, None)
        polls = s.sim.count("research", "GET", "/status")
        slots, t, interval = 1, 0.0, 0.5
        while t + interval <= elapsed:
            t, interval, slots = t + interval, interval * 1.5, slots + 1
        assert 1 <= polls <= slots + 1, (polls, slots, elapsed)
