"""The MCP surface through the SDK's in-memory Client, in both protocol eras, against the simulator.

The simulator runs on a manual clock, so each test moves time explicitly; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hitl_support import Env, read_json, service_opener
from mcp import Client, MCPError
from mcp.types import ToolAnnotations

from crew_mcp.server import build_server
from crew_mcp.settings import CrewConfig, Settings
from crew_mcp.simulator import Simulator

CORE_TOOLS = {"list_inputs", "kickoff_crew", "get_status", "resume_with_feedback"}
TRIP = {"budget": "1000 USD", "interests": "food, hikes", "duration": "7 days", "age": 35}


@pytest.fixture(params=["auto", "legacy"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    sim = Simulator(clock="manual")
    # Every no-wait status call asks the crew: these tests move the simulated crew between two calls in no time.
    settings = Settings(owner="tester", status_fresh_seconds=0)
    mcp = build_server(settings, opener=service_opener(sim))
    async with Client(mcp, mode=request.param) as client:
        yield Env(client, sim, settings)


def _walk(schema: Any) -> list[Any]:
    out = [schema]
    if isinstance(schema, dict):
        for v in schema.values():
            out += _walk(v)
    elif isinstance(schema, list):
        for v in schema:
            out += _walk(v)
    return out


async def test_tools_have_exact_names_flat_schemas_annotations_and_output_schemas(env: Env) -> None:
    tools = {t.name: t for t in (await env.client.list_tools()).tools}
    assert set(tools) >= CORE_TOOLS
    assert {"list_crews", "list_executions", "list_pending_approvals", "run_trip_planner"} <= set(tools)
    for tool in tools.values():
        nodes = _walk(tool.input_schema)
        assert not any(isinstance(n, dict) and ("anyOf" in n or "oneOf" in n) for n in nodes), tool.name
        assert tool.output_schema is not None, tool.name
        assert tool.annotations is not None and tool.description, tool.name
    hints = {name: tool.annotations for name, tool in tools.items()}
    assert (hints["get_status"] or ToolAnnotations()).read_only_hint is True
    assert (hints["kickoff_crew"] or ToolAnnotations()).read_only_hint is False
    assert (hints["resume_with_feedback"] or ToolAnnotations()).destructive_hint is True


async def test_typed_crew_tool_has_one_typed_parameter_per_input(env: Env) -> None:
    tools = {t.name: t for t in (await env.client.list_tools()).tools}
    schema = tools["run_trip_planner"].input_schema
    assert {"budget", "interests", "duration", "age"} <= set(schema["properties"])
    assert {"budget", "interests", "duration", "age"} <= set(schema["required"])
    run = await env.call("run_trip_planner", TRIP)
    assert run["state"] == "running" and run["kickoff_id"]
    assert env.sim.count("trip_planner", "POST", "/kickoff") == 1


async def test_list_crews_says_the_crews_are_simulated(env: Env) -> None:
    crews = await env.call("list_crews")
    assert crews["simulated"] is True
    assert "simulat" in crews["note"]
    assert {"trip_planner", "research"} <= {c["name"] for c in crews["crews"]}


async def test_list_inputs_merges_api_names_with_descriptions(env: Env) -> None:
    out = await env.call("list_inputs", {"crew": "trip_planner"})
    names = [i["name"] for i in out["inputs"]]
    assert names == ["budget", "interests", "duration", "age"]
    assert all(i["description"] for i in out["inputs"])
    await env.call("list_inputs", {"crew": "trip_planner"})
    assert env.sim.count("trip_planner", "GET", "/inputs") == 1  # cached per crew


async def test_kickoff_with_missing_inputs_names_each_and_sends_nothing(env: Env) -> None:
    text = await env.error("kickoff_crew", {"crew": "trip_planner", "inputs": {"budget": "10"}})
    for name in ("interests", "duration", "age"):
        assert name in text
    assert "Missing required inputs" in text and "list_inputs" in text
    assert env.sim.count("trip_planner", "POST", "/kickoff") == 0


async def test_kickoff_with_unknown_input_is_refused_with_the_known_ones(env: Env) -> None:
    text = await env.error("kickoff_crew", {"crew": "trip_planner", "inputs": {**TRIP, "budjet": "x"}})
    assert "Unknown inputs: budjet" in text and "budget" in text
    assert env.sim.count("trip_planner", "POST", "/kickoff") == 0


async def test_unknown_crew_and_ambiguous_crew_are_actionable(env: Env) -> None:
    assert "Unknown crew 'nope'" in await env.error("list_inputs", {"crew": "nope"})
    assert "pass crew=" in await env.error("list_inputs", {})


async def test_kickoff_then_status_to_completion_then_served_from_ledger(env: Env) -> None:
    run = await env.call("kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})
    kid = run["kickoff_id"]
    assert run["status_uri"] == f"crew://executions/{kid}" and "get_status" in run["next_step"]
    assert (await read_json(env.client, run["status_uri"]))["state"] == "running"
    await env.sim.advance(3600)
    done = await env.call("get_status", {"kickoff_id": kid})
    assert done["state"] == "completed" and done["output"]["text"]
    reads = env.sim.count("trip_planner", "GET", "/status")
    again = await env.call("get_status", {"kickoff_id": kid})
    assert again["from_ledger"] is True and again["output"] == done["output"]
    assert env.sim.count("trip_planner", "GET", "/status") == reads


async def test_get_status_without_id_answers_for_the_conversations_latest_run(env: Env) -> None:
    first = await env.call("kickoff_crew", {"crew": "trip_planner", "inputs": TRIP, "conversation_id": "c1"})
    second = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}, "conversation_id": "c1"})
    await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "y"}, "conversation_id": "c2"})
    latest = await env.call("get_status", {"conversation_id": "c1"})
    assert latest["kickoff_id"] == second["kickoff_id"] != first["kickoff_id"]
    listed = await env.call("list_executions", {"conversation_id": "c1"})
    assert [r["kickoff_id"] for r in listed["executions"]] == [second["kickoff_id"], first["kickoff_id"]]
    everything = await env.call("list_executions", {})
    assert everything["count"] == 3


async def test_unknown_and_malformed_kickoff_ids_are_actionable(env: Env) -> None:
    assert "list_executions" in await env.error("get_status", {"kickoff_id": "0f9d2c1e-unknown"})
    assert "kickoff_id" in await env.error("get_status", {"kickoff_id": "../inputs"})
    with pytest.raises(MCPError) as info:
        await env.client.read_resource("crew://executions/nope")
    assert info.value.error.code == -32602


async def test_review_reject_then_approve_with_feedback_visible_in_output(env: Env) -> None:
    run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
    kid = run["kickoff_id"]
    await env.sim.advance(3600)
    paused = await env.call("get_status", {"kickoff_id": kid})
    assert paused["state"] == "waiting_for_human"
    assert paused["pending"]["task_id"] and paused["pending"]["output"]
    assert "resume_with_feedback" in paused["next_step"]
    pending = await env.call("list_pending_approvals")
    assert [a["kickoff_id"] for a in pending["approvals"]] == [kid]

    rejected = await env.call(
        "resume_with_feedback", {"kickoff_id": kid, "approve": False, "feedback": "Mention the moon."}
    )
    assert rejected["approve"] is False and rejected["task_id"] == paused["pending"]["task_id"]
    await env.sim.advance(3600)
    again = await env.call("get_status", {"kickoff_id": kid})
    assert again["state"] == "waiting_for_human" and "Mention the moon." in again["pending"]["output"]

    await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True, "feedback": "Great."})
    await env.sim.advance(3600)
    done = await env.call("get_status", {"kickoff_id": kid})
    assert done["state"] == "completed"
    assert [d["approve"] for d in done["decisions"]] == [False, True]
    assert all(d["by"] == "model" for d in done["decisions"])


async def test_resume_on_a_finished_run_is_refused_without_an_upstream_call(env: Env) -> None:
    run = await env.call("kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})
    await env.sim.advance(3600)
    await env.call("get_status", {"kickoff_id": run["kickoff_id"]})
    text = await env.error("resume_with_feedback", {"kickoff_id": run["kickoff_id"], "approve": True})
    assert "already completed" in text
    assert env.sim.count("trip_planner", "POST", "/resume") == 0


async def test_resume_on_a_running_run_says_to_wait(env: Env) -> None:
    run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
    text = await env.error("resume_with_feedback", {"kickoff_id": run["kickoff_id"], "approve": True})
    assert "not waiting for human review" in text
    assert env.sim.count("research", "POST", "/resume") == 0


async def test_wait_seconds_returns_when_the_run_pauses_with_progress_reported(env: Env) -> None:
    run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
    await env.sim.advance(3600)
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(p: float, total: float | None, message: str | None) -> None:
        seen.append((p, total, message))

    out = await env.call(
        "get_status", {"kickoff_id": run["kickoff_id"], "wait_seconds": 30}, progress_callback=progress
    )
    assert out["state"] == "waiting_for_human"
    assert seen and seen[-1][2] is not None and "waiting_for_human" in seen[-1][2]


async def test_prompt_walks_through_the_flow(env: Env) -> None:
    prompts = (await env.client.list_prompts()).prompts
    assert "run_crew" in {p.name for p in prompts}
    got = await env.client.get_prompt("run_crew", {"crew": "research"})
    text = got.messages[0].content.text  # type: ignore[union-attr]
    assert "list_inputs" in text and "resume_with_feedback" in text


async def test_resources_list_crews_inputs_and_conversations(env: Env) -> None:
    crews = await read_json(env.client, "crew://crews")
    assert crews["simulated"] is True
    inputs = await read_json(env.client, "crew://trip_planner/inputs")
    assert [i["name"] for i in inputs["inputs"]][:1] == ["budget"]
    run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}, "conversation_id": "conv9"})
    conv = await read_json(env.client, "crew://conversations/conv9")
    assert [r["kickoff_id"] for r in conv["executions"]] == [run["kickoff_id"]]
    approvals = await read_json(env.client, "crew://approvals")
    assert approvals["approvals"] == []


async def test_upstream_auth_failure_is_explained_as_configuration_without_the_token() -> None:
    sim = Simulator(clock="manual")
    secret = "wrong-token-0123456789"
    crews = [CrewConfig(name="trip_planner", url="http://sim.invalid/trip_planner", token=secret)]
    settings = Settings(owner="tester", crews=crews)
    mcp = build_server(settings, opener=service_opener(sim))
    async with Client(mcp) as client:
        with pytest.raises(MCPError) as refused:  # not the model's to fix: a protocol error for the host to show
            await client.call_tool("list_inputs", {})
    text = refused.value.error.message
    assert "token" in text and "configuration" in text
    assert secret not in text


async def test_pending_approvals_include_a_run_that_paused_since_anyone_last_looked(env: Env) -> None:
    run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
    await env.sim.advance(3600)  # paused upstream; no webhook, no get_status since
    listed = await env.call("list_pending_approvals")
    assert [a["kickoff_id"] for a in listed["approvals"]] == [run["kickoff_id"]]
    assert listed["approvals"][0]["output"]


async def test_a_decision_sends_the_run_back_to_running_until_the_crew_asks_again(env: Env) -> None:
    run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
    await env.sim.advance(3600)
    await env.call("get_status", {"kickoff_id": run["kickoff_id"]})
    await env.call("resume_with_feedback", {"kickoff_id": run["kickoff_id"], "approve": False, "feedback": "more"})
    listed = await env.call("list_executions", {"state": "running"})
    assert [r["kickoff_id"] for r in listed["executions"]] == [run["kickoff_id"]]
    text = await env.error("resume_with_feedback", {"kickoff_id": run["kickoff_id"], "approve": True})
    assert "not waiting for human review" in text


async def test_published_output_schemas_are_portable(env: Env) -> None:
    for tool in (await env.client.list_tools()).tools:
        nodes = _walk(tool.output_schema)
        assert not any(isinstance(n, dict) and ("$ref" in n or n.get("type") == "null") for n in nodes), tool.name
