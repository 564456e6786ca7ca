"""Stopping a run with ``cancel_run``, in both protocol eras, against the manual-clock simulator's ``POST /stop``.

Runs are stopped while running, while paused for review, after they finished (known to the ledger or not), and on
deployments without the endpoint (404 and 405); the user confirms in an elicitation form, or, in clients without
forms, the model passes confirm=true after asking in chat.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stamina
from hitl_support import MODES, OWNER, Env, answering, documented, eventually, in_memory

from crew_mcp.errors import RunNotFoundError
from crew_mcp.identity import Caller
from crew_mcp.ledger import RunRecord
from crew_mcp.runs import not_found
from crew_mcp.settings import Settings
from crew_mcp.simulator import CrewSpec, builtin_crews

BUILTIN = {c.name: c for c in builtin_crews()}
TRIP = {"budget": "1000 USD", "interests": "food", "duration": "7 days", "age": 35}
STOP = {"stop": True}


def without_stop(answer: str) -> CrewSpec:
    """The trip planner on a deployment that predates ``POST /stop`` (it answers ``answer`` to any method)."""
    return BUILTIN["trip_planner"].model_copy(update={"name": f"old_{answer}", "stop_endpoint": answer})


RESEARCH_DOC = documented(BUILTIN["research"])
CREWS = [*BUILTIN.values(), without_stop("404"), without_stop("405"), RESEARCH_DOC]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


async def _record(env: Env, kickoff_id: str) -> RunRecord:
    record = await env.service.ledger.get(kickoff_id, owner=OWNER)
    assert record is not None
    return record


def _stops(env: Env, crew: str) -> int:
    return env.sim.count(crew, "POST", "/stop")


async def test_cancel_run_is_a_destructive_tool_with_a_flat_schema(mode: str) -> None:
    async with in_memory(mode) as env:
        tool = next(t for t in (await env.client.list_tools()).tools if t.name == "cancel_run")
    assert tool.annotations is not None and tool.annotations.destructive_hint is True
    assert tool.annotations.read_only_hint is False
    assert set(tool.input_schema["properties"]) == {"kickoff_id", "confirm"}
    assert tool.input_schema["required"] == ["kickoff_id"] and "anyOf" not in str(tool.input_schema)
    assert tool.output_schema is not None and "stopped" in tool.output_schema["properties"]


async def test_a_running_run_is_stopped_once_the_user_confirms_in_the_form(mode: str) -> None:
    asked: list[str] = []
    async with in_memory(mode, crews=CREWS, elicitation=answering("accept", STOP, asked)) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        out = await env.call("cancel_run", {"kickoff_id": kid})
        assert (out["stopped"], out["result"], out["stopped_by"]) == (True, "stopped", "human via elicitation")
        assert out["run"]["state"] == "cancelled" and "start a new run" in out["next_step"]
        assert env.sim.executions[kid].state == "REVOKED" and _stops(env, "trip_planner") == 1

        reads = env.sim.count("trip_planner", "GET", "/status")
        shown = await env.call("get_status", {"kickoff_id": kid})
        assert shown["state"] == "cancelled" and shown["from_ledger"] is True
        assert shown["message"].startswith(f"Stopped by {OWNER} (human via elicitation)")
        assert env.sim.count("trip_planner", "GET", "/status") == reads  # a stopped run is final: no upstream read

        (stop,) = (await _record(env, kid)).stops
        assert (stop.result, stop.by, stop.via, stop.actor) == ("stopped", "human", "elicitation", OWNER)
        await env.sim.advance(3600)
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "cancelled"
    assert len(asked) == 1 and kid in asked[0] and "trip_planner" in asked[0] and "cannot be resumed" in asked[0]


async def test_a_paused_run_is_stopped_with_confirm_in_a_client_without_forms(mode: str) -> None:
    async with in_memory(mode, crews=CREWS) as env:
        kid = await env.kickoff("research")
        await env.sim.advance(3600)
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "waiting_for_human"

        refused = await env.error("cancel_run", {"kickoff_id": kid})
        assert "cannot be undone" in refused and "Ask the user in chat" in refused and "confirm=true" in refused
        assert _stops(env, "research") == 0

        out = await env.call("cancel_run", {"kickoff_id": kid, "confirm": True})
        assert out["stopped_by"] == "model via tool" and out["run"]["state"] == "cancelled"
        assert "pending" not in out["run"]
        assert (await env.call("list_pending_approvals"))["approvals"] == []
        assert "already cancelled" in await env.error("resume_with_feedback", {"kickoff_id": kid, "approve": True})
        assert "has already been stopped" in await env.error("cancel_run", {"kickoff_id": kid, "confirm": True})
        assert _stops(env, "research") == 1


@pytest.mark.parametrize(
    ("answer", "confirm"),
    [
        (answering("decline"), False),
        (answering("cancel"), False),
        (answering("accept", {"stop": False}), False),
        (answering("decline"), True),  # a client with forms always asks, whatever the model passed
    ],
    ids=["declined", "cancelled", "said-no", "confirm-still-asks"],
)
async def test_a_form_not_answered_yes_stops_nothing(mode: str, answer: Any, confirm: bool) -> None:
    async with in_memory(mode, crews=CREWS, elicitation=answer) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        said = await env.error("cancel_run", {"kickoff_id": kid, "confirm": confirm})
        assert "Nothing was stopped" in said and kid in said
        assert _stops(env, "trip_planner") == 0 and env.sim.executions[kid].state == "RUNNING"
        assert (await _record(env, kid)).stops == []


async def test_a_run_the_ledger_knows_finished_is_refused_without_asking_the_crew(mode: str) -> None:
    async with in_memory(mode, crews=CREWS, elicitation=answering("accept", STOP)) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        await env.sim.advance(3600)
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "completed"
        said = await env.error("cancel_run", {"kickoff_id": kid})
        assert f"Run {kid} has already completed; there is nothing to stop" in said
        assert _stops(env, "trip_planner") == 0


async def test_a_run_that_finished_unseen_is_reported_finished_and_the_attempt_recorded(mode: str) -> None:
    async with in_memory(mode, crews=CREWS) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        await env.sim.advance(3600)  # the ledger still says running
        said = await env.error("cancel_run", {"kickoff_id": kid, "confirm": True})
        assert f"Run {kid} had already completed before the stop reached its crew; nothing was stopped" in said
        assert _stops(env, "trip_planner") == 1
        record = await _record(env, kid)
        assert record.state.value == "completed"
        (stop,) = record.stops
        assert stop.result == "already_ended" and stop.detail == "Cannot stop execution. Current state: SUCCESS"
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "completed"


@pytest.mark.parametrize("answer", ["404", "405"])
async def test_a_deployment_without_stop_gets_a_clear_sentence_and_the_run_goes_on(mode: str, answer: str) -> None:
    crew = f"old_{answer}"
    async with in_memory(mode, crews=CREWS) as env:
        kid = await env.kickoff(crew, TRIP)
        said = await env.error("cancel_run", {"kickoff_id": kid, "confirm": True})
        assert f"Crew '{crew}' cannot stop runs: its deployment has no stop endpoint" in said
        assert f"HTTP {answer}" in said and "AMP dashboard" in said
        assert _stops(env, crew) == 1  # a 404/405 is an answer, not a reason to retry
        (stop,) = (await _record(env, kid)).stops
        assert (stop.result, stop.detail, stop.by) == ("unsupported", f"HTTP {answer}", "model")
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "running"
        await env.sim.advance(3600)
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "completed"


async def test_unknown_and_malformed_kickoff_ids_are_refused_before_any_request(mode: str) -> None:
    async with in_memory(mode, crews=CREWS, elicitation=answering("accept", STOP)) as env:
        assert "No run with kickoff_id 'nope'" in await env.error("cancel_run", {"kickoff_id": "nope"})
        assert "is not a valid kickoff_id" in await env.error("cancel_run", {"kickoff_id": "../x"})
        assert sum(_stops(env, c.name) for c in CREWS) == 0


async def test_a_stop_answered_500_or_503_is_not_sent_again_and_may_have_reached_the_crew(mode: str) -> None:
    """Like a kickoff: a gateway may answer 503 after forwarding, so only a request that never left is re-sent."""
    async with in_memory(mode, crews=CREWS) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        for sent, status in enumerate((500, 503), start=1):
            env.sim.faults("trip_planner").fail_next(1, status)
            said = await env.error("cancel_run", {"kickoff_id": kid, "confirm": True})
            assert f"failed to stop the run with HTTP {status}" in said and "may have reached the crew" in said
            assert _stops(env, "trip_planner") == sent and (await _record(env, kid)).stops == []

        out = await env.call("cancel_run", {"kickoff_id": kid, "confirm": True})
        assert out["result"] == "stopped" and _stops(env, "trip_planner") == 3


async def test_human_policy_refuses_a_models_confirm_and_accepts_the_users_form(mode: str) -> None:
    human = Settings(owner=OWNER, approval_policy="human")
    async with in_memory(mode, human, crews=CREWS) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        said = await env.error("cancel_run", {"kickoff_id": kid, "confirm": True})
        assert f"crew-mcp cancel {kid}" in said and _stops(env, "trip_planner") == 0
    async with in_memory(mode, human, crews=CREWS, elicitation=answering("accept", STOP)) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        assert (await env.call("cancel_run", {"kickoff_id": kid}))["stopped_by"] == "human via elicitation"


async def test_the_crews_revoked_webhook_after_a_stop_keeps_the_run_cancelled(mode: str) -> None:
    async with in_memory(mode, crews=CREWS, webhooks=True, elicitation=answering("accept", STOP)) as env:
        kid = await env.kickoff(RESEARCH_DOC.name)
        await env.sim.advance(3600)  # paused, known only from the task webhook (documented shape)
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "waiting_for_human"
        await env.call("cancel_run", {"kickoff_id": kid})
        await env.sim.advance(0)  # delivers the crew webhook the stop caused
        crew_hooks = [d for d in env.sim.webhook_log if d.kind == "crew"]
        assert [(d.payload["status"], d.status_code) for d in crew_hooks] == [("revoked", 202)]
        record = await _record(env, kid)
        assert record.state.value == "cancelled" and [s.result for s in record.stops] == ["stopped"]
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "cancelled"


@pytest.mark.parametrize("mode", ["auto"])  # era-independent service semantics: one era
async def test_a_stop_the_crew_does_not_answer_in_time_is_sent_and_recorded_when_the_answer_comes(mode: str) -> None:
    settings = Settings(owner=OWNER, answer_margin_seconds=0.2)
    async with in_memory(mode, settings, crews=CREWS) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        env.sim.faults("trip_planner").delay_next(1, seconds=0.6, after_processing=True)
        out = await env.call("cancel_run", {"kickoff_id": kid, "confirm": True})  # answered at the margin
        assert out["result"] == "sent" and out["stopped"] is False and "do not send the stop again" in out["next_step"]
        await eventually(lambda: _record(env, kid), lambda r: bool(r.stops))
        assert [s.result for s in (await _record(env, kid)).stops] == ["stopped"] and _stops(env, "trip_planner") == 1


@pytest.mark.parametrize("mode", ["auto"])  # era-independent service semantics: one era
async def test_an_approver_may_review_anothers_run_but_never_stop_it(mode: str) -> None:
    async with in_memory(mode, crews=CREWS) as env:
        kid = await env.kickoff("research", {"topic": "x"})
        await env.sim.advance(3600)
        await env.call("get_status", {"kickoff_id": kid})  # waiting for review now: an approver may read it
        reviewer = Caller("reviewer", approver=True, by="human", via="inbox")
        assert (await env.service.status(kid, reviewer)).state == "waiting_for_human"
        with pytest.raises(RunNotFoundError) as refused:
            await env.service.cancel(kid, reviewer)
        assert str(refused.value) == str(not_found(kid)) and _stops(env, "research") == 0
