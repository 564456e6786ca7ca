"""Behaviour of the AMP simulator: runs, reviews, errors, status paths, webhooks, faults, control API, config.

Time only moves through the manual clock (``await sim.advance(s)``); every real-server wait is bounded.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx2
import pytest
from sim_support import closed_port_url, kickoff, resume, sim_http, sink, status

from crew_mcp.errors import ConfigError, UsageError
from crew_mcp.models import ExecutionState
from crew_mcp.normalize import normalize_status
from crew_mcp.simulator import (
    DEFAULT_TOKEN,
    CrewSpec,
    InputSpec,
    Simulator,
    TaskSpec,
    builtin_crews,
    load_crews,
    serve_simulator,
)
from crew_mcp.simulator.durable import SqliteStore
from crew_mcp.simulator.engine import Execution, Hooks
from crew_mcp.simulator.store import MemoryStore, Session, Store

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
TRIP_INPUTS = {"budget": "1000 USD", "interests": "food", "duration": "7 days", "age": "35"}


# ------------------------------------------------------------------------------------------- runs


async def test_kickoff_progresses_to_completed(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    kid = await kickoff(sim_client, "trip_planner", TRIP_INPUTS, meta={"crew_mcp_request_id": "r1"})
    body = await status(sim_client, "trip_planner", kid)
    assert body["state"] == "RUNNING"
    assert body["source"] == "memory"
    assert body["progress"]["completed"] == 0
    assert body["progress"]["total"] == 2
    assert body["progress"]["current"] == "research_task"
    assert body["progress"]["current_agent"] == "Travel Researcher"

    await sim.advance(2.0)
    body = await status(sim_client, "trip_planner", kid)
    assert (body["state"], body["progress"]["completed"], body["progress"]["current"]) == (
        "RUNNING",
        1,
        "planning_task",
    )
    assert body["last_executed_task"]["name"] == "research_task"

    await sim.advance(2.5)
    body = await status(sim_client, "trip_planner", kid)
    assert body["state"] == "SUCCESS"
    assert body["status"] is None
    assert body["result_json"] == {"itinerary": "7 days trip focused on food", "budget": "1000 USD"}
    assert [t["task_id"] for t in body["result"]["tasks"]] == ["research_task", "planning_task"]
    assert body["usage_metrics"]["total_tokens"] > 0

    normalized = normalize_status(kid, body)
    assert normalized.state is ExecutionState.COMPLETED
    assert normalized.output is not None
    assert normalized.output.json_value == body["result_json"]
    assert sim.count("trip_planner", "POST", "/kickoff") == 1
    assert sim.count("trip_planner", "get", "/status") == 3


async def test_review_reject_then_approve(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    kid = await kickoff(sim_client, "research", {"topic": "bats"})
    await sim.advance(4.0)
    body = await status(sim_client, "research", kid)
    assert (body["state"], body["status"]) == ("PAUSED", "Pending Human Input")
    assert body["last_executed_task"] == {"name": "write_task", "output": "Report on bats."}
    paused = normalize_status(kid, body)
    assert paused.state is ExecutionState.WAITING_FOR_HUMAN
    assert paused.pending is not None
    assert paused.pending.task_id == "write_task"

    # Time does not move a paused run.
    await sim.advance(100.0)
    assert (await status(sim_client, "research", kid))["state"] == "PAUSED"

    response = await resume(sim_client, "research", kid, "write_task", "cover echolocation", approve=False)
    assert response.json() == {"status": "retrying", "message": "Task will be retried with your feedback"}
    await sim.advance(1.9)
    assert (await status(sim_client, "research", kid))["state"] == "RUNNING"
    await sim.advance(0.1)
    body = await status(sim_client, "research", kid)
    assert body["state"] == "PAUSED"
    assert "Revised per feedback: cover echolocation" in body["last_executed_task"]["output"]

    response = await resume(sim_client, "research", kid, "write_task", "ship it", approve=True)
    assert response.json()["status"] == "completed"
    body = await status(sim_client, "research", kid)
    assert body["state"] == "SUCCESS"
    output = body["result"]["output"]
    assert "Revised per feedback: cover echolocation" in output
    assert "ship it" in output
    assert [r["human_feedback"] for r in sim.resume_log] == ["cover echolocation", "ship it"]


async def test_content_pipeline_pauses_twice(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    kid = await kickoff(sim_client, "content_pipeline", {"topic": "remote work", "audience": "managers"})
    await sim.advance(1.5)
    body = await status(sim_client, "content_pipeline", kid)
    assert (body["state"], body["last_executed_task"]["name"]) == ("PAUSED", "outline")
    response = await resume(sim_client, "content_pipeline", kid, "outline", "", approve=True)
    assert response.json() == {"status": "resumed", "message": "Execution resumed successfully"}
    assert (await status(sim_client, "content_pipeline", kid))["progress"]["current"] == "draft"
    await sim.advance(2.5)
    body = await status(sim_client, "content_pipeline", kid)
    assert (body["state"], body["last_executed_task"]["name"]) == ("PAUSED", "draft")
    # Approving the wrong task or an unknown one is refused; the run stays paused.
    assert (await resume(sim_client, "content_pipeline", kid, "outline", "", approve=True)).status_code == 404
    assert (await resume(sim_client, "content_pipeline", kid, "nope", "", approve=True)).status_code == 404
    response = await resume(sim_client, "content_pipeline", kid, "draft", "shorter intro", approve=True)
    assert response.json()["status"] == "resumed"
    await sim.advance(1.5)
    body = await status(sim_client, "content_pipeline", kid)
    assert body["state"] == "SUCCESS"
    assert body["result"]["output"].startswith("Final article on remote work for managers.")
    assert "draft: shorter intro" in body["result"]["output"]


async def test_failure(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    kid = await kickoff(sim_client, "flaky", {"topic": "x"})
    await sim.advance(3.0)
    body = await status(sim_client, "flaky", kid)
    assert body["state"] == "FAILED"
    assert "second_task" in body["status"]
    normalized = normalize_status(kid, body)
    assert normalized.state is ExecutionState.FAILED
    assert normalized.error is not None
    assert "second_task" in normalized.error


async def test_time_scale_and_zero_duration_tasks() -> None:
    crew = CrewSpec(name="quick", tasks=[TaskSpec(id="a", agent="A", duration=0), TaskSpec(id="b", agent="B")])
    async with Simulator([crew], clock="manual", time_scale=0.5, token=None) as sim, sim_http(sim) as client:
        kid = await kickoff(client, "quick", {})
        assert (await status(client, "quick", kid))["progress"]["completed"] == 1
        await sim.advance(1.0)  # 2.0 simulated seconds * 0.5
        assert (await status(client, "quick", kid))["state"] == "SUCCESS"


# ------------------------------------------------------------------------------- errors and routes


async def test_error_bodies(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    unauthorized = {"error": "Unauthorized", "message": "Invalid or missing bearer token"}
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        response = await sim_client.get("/research/inputs", headers=headers)
        assert (response.status_code, response.json()) == (401, unauthorized)
    assert (await sim_client.get("/_sim/counts", headers={"Authorization": ""})).status_code == 401

    missing = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    response = await sim_client.get(f"/research/status/{missing}")
    assert response.status_code == 404
    assert response.json() == {"error": "Execution not found", "message": f"No execution found with ID: {missing}"}

    not_found = {"error": "Not Found", "message": "The requested resource was not found"}
    for path in ("/research/nope", "/nocrew/inputs", "/", "/research/status/a/b"):
        response = await sim_client.get(path)
        assert (response.status_code, response.json()) == (404, not_found), path

    response = await sim_client.post("/trip_planner/kickoff", json={"inputs": {"budget": "1"}})
    assert response.status_code == 422
    assert response.json() == {
        "error": "Validation Error",
        "message": "Missing required inputs",
        "details": {"missing_inputs": ["interests", "duration", "age"]},
    }
    response = await sim_client.post("/research/kickoff", content=b"{not json", headers={"Content-Type": "x"})
    assert (response.status_code, response.json()["error"]) == (400, "Invalid Request")
    response = await sim_client.post("/research/kickoff", json={"inputs": {"topic": 3}})
    assert response.status_code == 400
    assert "inputs.topic" in response.json()["message"]
    assert (await sim_client.post("/research/kickoff", json=[1])).status_code == 400
    response = await sim_client.post("/research/kickoff", json={"inputs": {"topic": "t"}, "humanInputWebhook": 3})
    assert response.status_code == 400

    kid = await kickoff(sim_client, "research", {"topic": "t"})
    response = await resume(sim_client, "research", kid, "write_task", "x", approve=True)
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid Request", "message": "Execution is not in pending human input state"}
    response = await resume(sim_client, "research", missing, "write_task", "x", approve=True)
    assert (response.status_code, response.json()["error"]) == (404, "Not Found")
    response = await sim_client.post("/research/resume", json={"execution_id": kid})
    assert response.status_code == 400
    # A kickoff_id of another crew is unknown here.
    assert (await sim_client.get(f"/trip_planner/status/{kid}")).status_code == 404

    response = await sim_client.get("/research/kickoff")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    response = await sim_client.get("/research/")
    assert (response.status_code, response.text) == (200, "Healthy")
    assert sim.count("research", "GET", "/") == 1
    assert sim.count("research", "GET", "/inputs") == 3


async def test_token_none_disables_auth() -> None:
    async with Simulator(clock="manual", token=None) as sim, sim_http(sim) as client:
        response = await client.get("/trip_planner/inputs")
        assert response.json() == {"inputs": ["budget", "interests", "duration", "age"]}


@pytest.mark.parametrize(
    ("status_path", "new_ok", "old_ok"),
    [("both", True, True), ("/status/{kickoff_id}", True, False), ("/{kickoff_id}/status", False, True)],
)
async def test_status_paths(status_path: str, new_ok: bool, old_ok: bool) -> None:
    crew = CrewSpec.model_validate(
        {"name": "c", "tasks": [{"id": "t", "agent": "A"}], "status_path": status_path, "shape": "documented"}
    )
    async with Simulator([crew], clock="manual") as sim, sim_http(sim) as client:
        kid = await kickoff(client, "c", {})
        for path, ok in ((f"/c/status/{kid}", new_ok), (f"/c/{kid}/status", old_ok)):
            response = await client.get(path)
            if ok:
                assert response.json()["status"] == "running"
            else:
                assert response.status_code == 404
                assert response.json() == {"error": "Not Found", "message": "The requested resource was not found"}
        assert sim.count("c", "GET", "/status") == new_ok + old_ok


async def test_documented_shape() -> None:
    crews = [c.model_copy(update={"shape": "documented"}) for c in builtin_crews()]
    async with Simulator(crews, clock="manual") as sim, sim_http(sim) as client:
        kid = await kickoff(client, "research", {"topic": "t"})
        body = await status(client, "research", kid)
        assert body == {
            "status": "running",
            "current_task": "research_task",
            "progress": {"completed_tasks": 0, "total_tasks": 2},
        }
        await sim.advance(4.0)  # paused: the documented shape has no such state
        body = await status(client, "research", kid)
        assert body == {
            "status": "running",
            "current_task": "write_task",
            "progress": {"completed_tasks": 1, "total_tasks": 2},
        }
        await resume(client, "research", kid, "write_task", "", approve=True)
        body = await status(client, "research", kid)
        assert body["status"] == "completed"
        assert body["execution_time"] == 4.0
        assert body["result"]["tasks"][1] == {
            "task_id": "write_task",
            "output": "Report on t.",
            "agent": "Writer",
            "execution_time": 2.0,
        }

        kid = await kickoff(client, "flaky", {"topic": "t"})
        await sim.advance(3.0)
        body = await status(client, "flaky", kid)
        assert body["status"] == "error"
        assert body["execution_time"] == 3.0
        assert normalize_status(kid, body).state is ExecutionState.FAILED


# ------------------------------------------------------------------------------------------------ stop
# POST /stop/{kickoff_id} as documented in crewAIInc/crewAI PR #5208 (docs/enterprise-api.en.yaml, commit 0650d19).


async def stop(client: httpx2.AsyncClient, crew: str, kickoff_id: str) -> httpx2.Response:
    return await client.post(f"/{crew}/stop/{kickoff_id}")


async def test_stop_revokes_a_running_run_for_good(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    kid = await kickoff(sim_client, "trip_planner", TRIP_INPUTS)
    await sim.advance(2.0)
    response = await stop(sim_client, "trip_planner", kid)
    assert (response.status_code, response.json()) == (200, {"status": "stopped", "kickoffId": kid})

    await sim.advance(100.0)  # a stopped run never moves again
    body = await status(sim_client, "trip_planner", kid)
    assert (body["state"], body["status"], body["result"], body["last_step"]) == (
        "REVOKED",
        "Execution stopped",
        None,
        None,
    )
    assert (body["progress"]["completed"], body["progress"]["duration_seconds"]) == (1, 2.0)
    assert body["last_executed_task"]["name"] == "research_task"
    assert normalize_status(kid, body).state is ExecutionState.CANCELLED

    response = await stop(sim_client, "trip_planner", kid)
    assert (response.status_code, response.json()) == (400, {"detail": "Cannot stop execution. Current state: REVOKED"})
    assert sim.count("trip_planner", "POST", "/stop") == 2


async def test_a_stopped_paused_run_cannot_be_resumed(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    kid = await kickoff(sim_client, "research", {"topic": "t"})
    await sim.advance(4.0)
    assert (await status(sim_client, "research", kid))["state"] == "PAUSED"
    assert (await stop(sim_client, "research", kid)).json() == {"status": "stopped", "kickoffId": kid}
    response = await resume(sim_client, "research", kid, "write_task", "ok", approve=True)
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid Request", "message": "Execution is not in pending human input state"}
    assert (await status(sim_client, "research", kid))["state"] == "REVOKED"


async def test_stop_refuses_finished_and_unknown_runs(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    done = await kickoff(sim_client, "trip_planner", TRIP_INPUTS)
    failed = await kickoff(sim_client, "flaky", {"topic": "t"})
    await sim.advance(10.0)
    for crew, kid, state in (("trip_planner", done, "SUCCESS"), ("flaky", failed, "FAILED")):
        response = await stop(sim_client, crew, kid)
        assert (response.status_code, response.json()) == (
            400,
            {"detail": f"Cannot stop execution. Current state: {state}"},
        )
        assert (await status(sim_client, crew, kid))["state"] == state

    missing = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    for crew, kid in (("research", missing), ("research", done)):  # another crew's run is unknown here
        response = await stop(sim_client, crew, kid)
        assert response.status_code == 404
        assert response.json() == {"error": "Execution not found", "message": f"No execution found with ID: {kid}"}
    response = await sim_client.get(f"/research/stop/{done}")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert (await sim_client.post("/research/stop")).status_code == 404  # no kickoff_id: unrouted


async def test_stop_sends_the_crew_webhook(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    with anyio.fail_after(10):
        async with sink() as (receiver, root):
            hooks = {"taskWebhookUrl": f"{root}/task", "crewWebhookUrl": f"{root}/crew"}
            kid = await kickoff(sim_client, "trip_planner", TRIP_INPUTS, meta={"m": 1}, **hooks)
            await sim.advance(1.0)
            await stop(sim_client, "trip_planner", kid)
            await sim.advance(10.0)
            assert receiver.paths() == ["/crew"]
            crew = receiver.received[0][2]
            assert (crew["kickoff_id"], crew["status"], crew["result"], crew["meta"]) == (
                kid,
                "revoked",
                None,
                {"m": 1},
            )
            assert crew["execution_time"] == 1.0


async def test_stop_in_the_documented_shape() -> None:
    crews = [c.model_copy(update={"shape": "documented"}) for c in builtin_crews()]
    async with Simulator(crews, clock="manual", token=None) as sim, sim_http(sim) as client:
        kid = await kickoff(client, "research", {"topic": "t"})
        await sim.advance(3.0)
        assert (await stop(client, "research", kid)).status_code == 200
        body = await status(client, "research", kid)
        assert body == {"status": "revoked", "execution_time": 3.0}
        assert normalize_status(kid, body).state is ExecutionState.CANCELLED


@pytest.mark.parametrize(("variant", "allow"), [("404", None), ("405", "GET")])
async def test_a_deployment_without_stop(variant: str, allow: str | None) -> None:
    crew = CrewSpec.model_validate({"name": "old", "tasks": [{"id": "t", "agent": "A"}], "stop_endpoint": variant})
    async with Simulator([crew], clock="manual") as sim, sim_http(sim) as client:
        kid = await kickoff(client, "old", {})
        for method in ("POST", "GET"):
            response = await client.request(method, f"/old/stop/{kid}")
            assert response.status_code == int(variant)
            assert response.headers.get("allow") == allow
            assert set(response.json()) == {"error", "message"}
        assert (await status(client, "old", kid))["state"] == "RUNNING"
        assert sim.count("old", "POST", "/stop") == 1
        assert (await client.post(f"/old/stop/{kid}", headers={"Authorization": "Bearer x"})).status_code == 401


# ------------------------------------------------------------------------------------------ webhooks


async def test_webhooks_delivered_and_dropped_after_resume(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    meta = {"crew_mcp_request_id": "req-1", "conversation": "c1"}
    with anyio.fail_after(10):
        async with sink() as (receiver, root):
            hooks = {
                "taskWebhookUrl": f"{root}/task",
                "stepWebhookUrl": f"{root}/step",
                "crewWebhookUrl": f"{root}/crew",
            }
            human = {"url": f"{root}/human", "authentication": {"strategy": "bearer", "token": "hi-secret"}}
            kid = await kickoff(sim_client, "research", {"topic": "t"}, meta=meta, humanInputWebhook=human, **hooks)
            assert receiver.received == []  # nothing is delivered inside a request on the manual clock
            await sim.advance(0)
            assert receiver.paths() == ["/step"]
            await sim.advance(4.0)
            assert receiver.paths() == ["/step", "/step", "/task", "/step", "/step", "/task", "/human"]
            for _, _, payload in receiver.received:
                assert payload["kickoff_id"] == kid
                assert payload["meta"] == meta
            steps = [p for path, _, p in receiver.received if path == "/step"]
            assert [s["step_type"] for s in steps] == ["thought", "final_answer", "thought", "final_answer"]
            tasks = [p for path, _, p in receiver.received if path == "/task"]
            assert [(t["task_id"], t["status"], t["agent"]) for t in tasks] == [
                ("research_task", "completed", "Researcher"),
                ("write_task", "pending_human_input", "Writer"),
            ]
            _, authorization, pending = receiver.received[-1]
            assert authorization == "Bearer hi-secret"
            assert pending["execution_id"] == kid
            assert pending["task_id"] == "write_task"
            assert pending["output"] == "Report on t."

            # AMP forgets the kickoff's webhook URLs on /resume: a resume without them means silence.
            seen = len(receiver.received)
            await resume(sim_client, "research", kid, "write_task", "more", approve=False)
            await sim.advance(2.0)
            assert (await status(sim_client, "research", kid))["state"] == "PAUSED"
            assert len(receiver.received) == seen

            # Given again on the next /resume, they are used again.
            response = await resume(sim_client, "research", kid, "write_task", "ok", approve=True, **hooks)
            assert response.json()["status"] == "completed"
            await sim.advance(0)
            path, _, crew = receiver.received[-1]
            assert (path, len(receiver.received)) == ("/crew", seen + 1)
            assert crew["status"] == "completed"
            assert crew["meta"] == meta
            assert "ok" in crew["result"]["output"]
            assert crew["token_usage"]["total_tokens"] > 0
            assert [d.url for d in sim.webhook_log] == [f"{root}{p}" for p in receiver.paths()]
            assert all(d.status_code == 200 for d in sim.webhook_log)


async def test_webhook_failures_are_recorded_not_raised(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    with anyio.fail_after(10):
        async with sink() as (receiver, root):
            hooks = {
                "taskWebhookUrl": f"{root}/fail",
                "crewWebhookUrl": closed_port_url(),
                "stepWebhookUrl": "nope://x",
            }
            await kickoff(sim_client, "trip_planner", TRIP_INPUTS, **hooks)
            await sim.advance(10.0)
            kinds = [(d.kind, d.status_code, d.error is not None) for d in sim.webhook_log]
            assert ("task", 500, False) in kinds
            assert ("crew", None, True) in kinds
            assert ("step", None, True) in kinds
            assert receiver.paths() == ["/fail", "/fail"]
            assert (await sim_client.get("/trip_planner/")).text == "Healthy"


async def test_a_request_catches_up_the_run_it_reads_and_leaves_its_webhooks_for_the_next_flush() -> None:
    crew = CrewSpec(name="quick", tasks=[TaskSpec(id="a", agent="A", duration=1.0)])
    async with Simulator([crew], clock="wall", time_scale=0.001, token=None) as sim:
        transport = httpx2.ASGITransport(app=sim.app)  # no lifespan and no run_clock: no ticker moves runs here
        with anyio.fail_after(10):
            async with sink() as (receiver, root), httpx2.AsyncClient(transport=transport, base_url="http://sim") as c:
                kid = await kickoff(c, "quick", {}, crewWebhookUrl=f"{root}/crew")
                await anyio.sleep(0.05)  # well past the run's 1 ms task
                assert sim.executions[kid].state == "RUNNING"
                assert (await status(c, "quick", kid))["state"] == "SUCCESS"
                assert receiver.received == []  # never delivered inside a crew request
                await sim.flush_webhooks()
                assert receiver.paths() == ["/crew"]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_every_store_catches_up_the_run_a_unit_of_work_reads(kind: str, tmp_path: Path) -> None:
    store: Store = MemoryStore("manual") if kind == "memory" else SqliteStore(tmp_path / "sim.db")
    crew = CrewSpec(name="quick", tasks=[TaskSpec(id="a", agent="A", duration=10)])

    def start(s: Session) -> None:
        hooks = Hooks(crew="http://127.0.0.1/crew")
        s.add(Execution(id="k1", crew=crew, inputs={}, meta={}, hooks=hooks, created_at=s.now, epoch=s.epoch))

    def state(s: Session) -> str | None:
        ex = s.get("k1")
        return None if ex is None else ex.state

    try:
        await store.transact(start)
        await store.advance_clock(20)  # moves time only: no transition runs here
        found, out = await store.transact(state)
    finally:
        await store.aclose()
    assert found == "SUCCESS"
    assert [o.url for o in out] == ["http://127.0.0.1/crew"]  # handed back to be queued, not delivered


# -------------------------------------------------------------------------------------------- faults


async def test_fail_next_with_retry_after(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    sim.faults("research").fail_next(2, status=503, retry_after=7)
    sim.faults("research").fail_next(1, status=429, body={"error": "slow down"})
    for _ in range(2):
        response = await sim_client.get("/research/inputs")
        assert (response.status_code, response.headers["retry-after"]) == (503, "7")
        assert response.json() == {"error": "Service Unavailable", "message": "Simulated failure"}
    response = await sim_client.get("/research/inputs")
    assert (response.status_code, response.json()) == (429, {"error": "slow down"})
    assert "retry-after" not in response.headers
    assert (await sim_client.get("/research/inputs")).status_code == 200
    assert sim.count("research", "GET", "/inputs") == 4
    assert sim.kickoff_ids("research") == []


async def test_after_processing_500_still_creates_the_kickoff(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    sim.faults("research").fail_next(1, status=500, after_processing=True)
    response = await sim_client.post("/research/kickoff", json={"inputs": {"topic": "t"}})
    assert response.status_code == 500
    assert len(sim.kickoff_ids("research")) == 1
    assert sim.count("research", "POST", "/kickoff") == 1


async def test_drop_next_in_process_is_a_transport_error(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    sim.faults("research").drop_next(1).drop_next(1, after_processing=True)
    with pytest.raises(httpx2.TransportError):
        await sim_client.post("/research/kickoff", json={"inputs": {"topic": "t"}})
    assert sim.kickoff_ids("research") == []
    with pytest.raises(httpx2.TransportError):
        await sim_client.post("/research/kickoff", json={"inputs": {"topic": "t"}})
    assert len(sim.kickoff_ids("research")) == 1
    assert (await sim_client.get("/research/inputs")).status_code == 200


async def test_latency(sim: Simulator, sim_client: httpx2.AsyncClient) -> None:
    sim.faults("research").latency(0.05)
    with anyio.fail_after(5):
        started = anyio.current_time()
        assert (await sim_client.get("/research/inputs")).status_code == 200
        assert anyio.current_time() - started >= 0.05
    sim.faults("research").latency(0)
    assert sim.faults("research").extra_latency == 0


# ------------------------------------------------------------------------------- real server, control API


async def test_real_server_with_control_api() -> None:
    timeout = httpx2.Timeout(5.0, read=0.5)
    with anyio.fail_after(20):
        async with Simulator(clock="manual") as sim, serve_simulator(sim) as root:
            assert root.startswith("http://127.0.0.1:")
            async with httpx2.AsyncClient(base_url=root, headers=AUTH, timeout=timeout) as client:
                assert (await client.get("/research/")).text == "Healthy"
                kid = await kickoff(client, "research", {"topic": "t"})
                response = await client.post("/_sim/advance", json={"seconds": 4})
                assert response.json() == {"now": 4.0}
                assert (await client.get(f"/research/{kid}/status")).json()["state"] == "PAUSED"
                await resume(client, "research", kid, "write_task", "fine", approve=True)
                assert (await client.get("/_sim/resumes")).json()["resumes"][0]["human_feedback"] == "fine"
                assert (await client.get("/_sim/webhooks")).json() == {"webhooks": []}
                assert (await client.post("/_sim/advance", json={"seconds": -1})).status_code == 400

                # A dropped connection on a real socket.
                response = await client.post("/_sim/faults/research", json={"drop_next": 1})
                assert response.json() == {"ok": True, "queued": 1}
                with pytest.raises(httpx2.TransportError):
                    await client.get("/research/inputs")

                # A response held beyond the client's read timeout, after the kickoff was created.
                await client.post("/_sim/faults/research", json={"delay_next": 1, "seconds": 30})
                with pytest.raises(httpx2.ReadTimeout):
                    await client.post("/research/kickoff", json={"inputs": {"topic": "t"}})

                await client.post("/_sim/faults/research", json={"fail_next": 1, "status": 503, "retry_after": 2})
                response = await client.get("/research/inputs")
                assert (response.status_code, response.headers["retry-after"]) == (503, "2")
                await client.post("/_sim/faults/research", json={"fail_next": 1, "after_processing": True})
                assert (await client.post("/research/kickoff", json={"inputs": {"topic": "t"}})).status_code == 500
                assert (await client.post("/_sim/faults/research", json={"bogus": 1})).status_code == 400
                assert (await client.post("/_sim/faults/nocrew", json={})).status_code == 404

                counts = (await client.get("/_sim/counts")).json()
                assert counts["counts"]["research"]["POST /kickoff"] == 3
                assert counts["counts"]["research"]["GET /status"] == 1
                assert counts["counts"]["research"]["POST /resume"] == 1
                assert len(counts["executions"]["research"]) == 3
                assert (await client.get("/_sim/counts", headers={"Authorization": "Bearer x"})).status_code == 401


async def test_wall_clock_ticker_runs_under_a_real_server() -> None:
    with anyio.fail_after(10):
        async with sink() as (receiver, hook_root):
            sim = Simulator(clock="wall", time_scale=0.001)
            async with serve_simulator(sim) as root, httpx2.AsyncClient(base_url=root, headers=AUTH) as client:
                kid = await kickoff(client, "trip_planner", TRIP_INPUTS, crewWebhookUrl=f"{hook_root}/crew")
                await receiver.crew_done.wait()  # delivered by the lifespan's ticker, not by a request
                assert (await status(client, "trip_planner", kid))["state"] == "SUCCESS"


def test_refuses_non_loopback_hosts() -> None:
    from crew_mcp.simulator import check_loopback, run

    check_loopback("127.0.0.1")
    check_loopback("::1")
    check_loopback("localhost")
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(UsageError, match="loopback"):
            check_loopback(host)
    with pytest.raises(UsageError):
        run(host="0.0.0.0")


async def test_serve_simulator_refuses_non_loopback() -> None:
    with pytest.raises(UsageError):
        async with serve_simulator(Simulator(clock="manual"), host="0.0.0.0"):
            pass


# ------------------------------------------------------------------------------------------- config


def test_load_crews_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "crews.toml"
    toml.write_text(
        """
[[crews]]
name = "reviewer"
shape = "documented"
status_path = "/{kickoff_id}/status"
inputs = [{ name = "doc", description = "The document" }]

[[crews.tasks]]
id = "review"
agent = "Reviewer"
duration = 1.0
human_input = true
output = "Reviewed {doc}. {feedback}"
""",
        encoding="utf-8",
    )
    (crew,) = load_crews(toml)
    assert (crew.name, crew.shape, crew.status_path) == ("reviewer", "documented", "/{kickoff_id}/status")
    assert crew.tasks[0].human_input
    assert crew.inputs[0] == InputSpec(name="doc", description="The document")

    js = tmp_path / "crews.json"
    js.write_text(json.dumps({"crews": [c.model_dump() for c in builtin_crews()]}), encoding="utf-8")
    assert load_crews(str(js)) == builtin_crews()
    js.write_text(json.dumps([builtin_crews()[0].model_dump()]), encoding="utf-8")
    assert [c.name for c in load_crews(js)] == ["trip_planner"]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.toml", '[[crews]]\nname = "x"\n[[crews.tasks]]\nid = "t"\n', ["bad.toml", "crew 'x'", "tasks[0].agent"]),
        (
            "bad.toml",
            '[[crews]]\nname = "x"\n[[crews.tasks]]\nid = "t"\nagent = "A"\nduration = "long"\n',
            ["crew 'x'", "tasks[0].duration"],
        ),
        ("bad.toml", '[[crews]]\nname = "x"\nshape = "weird"\ntasks = []\n', ["crew 'x'", "field shape"]),
        ("bad.toml", '[[crews]]\nname = "x"\ntasks = []\n', ["crew 'x'", "at least one task"]),
        ("bad.toml", '[[crews]]\nname = "x"\ncolour = 1\ntasks = [{id="t", agent="A"}]\n', ["field colour"]),
        ("bad.toml", '[[crews]]\nname = "has space"\ntasks = [{id="t", agent="A"}]\n', ["field name"]),
        ("bad.toml", "[[crews]\n", ["bad.toml", "not valid TOML"]),
        ("bad.json", "{", ["bad.json", "not valid JSON"]),
        ("bad.json", '{"crews": []}', ["bad.json", "non-empty list"]),
        ("bad.json", '{"crews": [1]}', ["crews[0]", "table/object"]),
        (
            "bad.json",
            json.dumps([{"name": "a", "tasks": [{"id": "t", "agent": "A"}]}] * 2),
            ["unique", "a"],
        ),
    ],
)
def test_load_crews_errors(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_crews(path)
    message = str(info.value)
    assert "Traceback" not in message
    for part in expected:
        assert part in message, message


def test_load_crews_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_crews(tmp_path / "absent.toml")


async def test_run_clock_drives_a_wall_clock_simulator_in_process() -> None:
    # No lifespan under sim_http: run_clock() stands in for it.
    async with Simulator(clock="wall", time_scale=0.001) as sim, sim_http(sim) as client:
        with anyio.fail_after(5):
            async with sink() as (receiver, hook_root), anyio.create_task_group() as tg:
                tg.start_soon(sim.run_clock)
                await kickoff(client, "trip_planner", TRIP_INPUTS, crewWebhookUrl=f"{hook_root}/crew")
                await receiver.crew_done.wait()
                tg.cancel_scope.cancel()
