"""Human-in-the-loop approvals from chat, in both protocol eras, against the manual-clock simulator.

Pauses are seen from the status API (taskstatus shape, PAUSED) and from webhooks alone (documented shape);
decisions come from the model, from an elicitation form, from the CLI, or from crew-mcp itself on expiry.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hitl_support import MODES, OWNER, Env, answering, documented, in_memory

from crew_mcp.clock import ManualClock
from crew_mcp.errors import HumanOnlyError
from crew_mcp.identity import Caller
from crew_mcp.models import PendingHumanInput
from crew_mcp.settings import Settings
from crew_mcp.simulator import builtin_crews
from crew_mcp.views import human_only_message

RESEARCH_DOC = documented(next(c for c in builtin_crews() if c.name == "research"))
ALL_CREWS = [*builtin_crews(), RESEARCH_DOC]
APPROVE = {"approve": True, "feedback": "Ship it."}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _paused(env: Env, crew: str = "research", **extra: Any) -> str:
    kid = await env.kickoff(crew, **extra)
    await env.sim.advance(3600)
    return kid


async def _later(env: Env, seconds: float) -> None:
    """Let ``seconds`` pass on the service's manual clock (no sleeping)."""
    assert env.clock is not None, "use in_memory(..., clock=ManualClock())"
    await env.clock.advance(seconds)


# ------------------------------------------------------------------------------------------- paused runs


async def test_a_paused_taskstatus_run_is_waiting_for_human_with_task_output_and_next_step(mode: str) -> None:
    async with in_memory(mode) as env:
        kid = await _paused(env)
        r = await env.client.call_tool("get_status", {"kickoff_id": kid})
        out = r.structured_content
        assert out is not None
        assert out["state"] == "waiting_for_human" and out["raw_state"] == "PAUSED"
        assert out["pending"]["task_id"] == "write_task" and out["pending"]["output"] == "Report on tides."
        assert f"resume_with_feedback(kickoff_id={kid!r}" in out["next_step"]
        assert "Do not decide on the user's behalf" in out["next_step"]
        text = r.content[0].text  # type: ignore[union-attr]
        assert "Waiting for review of task write_task" in text and "Report on tides." in text


async def test_a_pause_known_only_from_a_webhook_is_waiting_for_human_in_the_documented_shape(mode: str) -> None:
    async with in_memory(mode, crews=ALL_CREWS, webhooks=True) as env:
        kid = await _paused(env, RESEARCH_DOC.name)
        pauses = [
            d for d in env.sim.webhook_log if d.kind == "task" and d.payload.get("status") == "pending_human_input"
        ]
        assert [d.status_code for d in pauses] == [202]
        out = await env.call("get_status", {"kickoff_id": kid})
        assert out["raw_state"] == "running"  # the documented shape knows no pause ...
        assert out["state"] == "waiting_for_human"  # ... the webhook did
        assert out["pending"]["task_id"] == "write_task" and out["pending"]["output"] == "Report on tides."
        assert "resume_with_feedback" in out["next_step"]

        await env.call("resume_with_feedback", {"kickoff_id": kid, **APPROVE})
        await env.sim.advance(3600)
        done = await env.call("get_status", {"kickoff_id": kid})
        assert done["state"] == "completed" and "Ship it." in done["output"]["text"]


# --------------------------------------------------------------------------------------------- listings


async def test_pending_approvals_tool_and_resource_list_newest_first_with_waited_seconds(mode: str) -> None:
    async with in_memory(mode, clock=ManualClock()) as env:
        first = await env.kickoff("research")
        await _later(env, 1)  # listings are newest first by creation time
        second = await env.kickoff("research", {"topic": "waves"})
        await env.sim.advance(3600)
        await env.call("get_status", {"kickoff_id": first})
        await _later(env, 30)
        await env.call("get_status", {"kickoff_id": second})
        listed = await env.call("list_pending_approvals")
        assert [a["kickoff_id"] for a in listed["approvals"]] == [second, first]
        older = listed["approvals"][1]
        assert older["task_id"] == "write_task" and older["output"] == "Report on tides."
        assert 30 <= older["waited_seconds"] < 60 and older["expired"] is False
        assert 0 <= listed["approvals"][0]["waited_seconds"] < 30
        assert "resume_with_feedback" in listed["next_step"]

        resource = json.loads((await env.client.read_resource("crew://approvals")).contents[0].text)  # type: ignore[union-attr]
        assert [a["kickoff_id"] for a in resource["approvals"]] == [second, first]
        assert resource["approvals"][1]["waited_seconds"] >= 30


@pytest.mark.parametrize("mode", ["legacy"])  # era-independent service semantics: one era
async def test_expiry_flag_marks_an_old_approval_expired_and_decides_nothing(mode: str) -> None:
    settings = Settings(owner=OWNER, approval_expiry_seconds=60, approval_expiry_action="flag")
    async with in_memory(mode, settings, clock=ManualClock()) as env:
        kid = await _paused(env)
        await env.call("get_status", {"kickoff_id": kid})
        await _later(env, 61)
        listed = await env.call("list_pending_approvals")
        assert [(a["kickoff_id"], a["expired"]) for a in listed["approvals"]] == [(kid, True)]
        assert env.sim.count("research", "POST", "/resume") == 0


@pytest.mark.parametrize("mode", ["auto"])  # era-independent service semantics: one era
async def test_expiry_reject_sends_a_system_rejection_with_the_reason_when_approvals_are_listed(mode: str) -> None:
    settings = Settings(owner=OWNER, approval_expiry_seconds=60, approval_expiry_action="reject")
    async with in_memory(mode, settings, webhooks=True, clock=ManualClock()) as env:
        kid = await _paused(env)
        await env.call("get_status", {"kickoff_id": kid})
        await _later(env, 61)
        listed = await env.call("list_pending_approvals")
        assert listed["approvals"] == []
        reason = "Rejected automatically: no human decision within 60 s"
        [sent] = env.sim.resume_log
        assert sent["is_approve"] is False and sent["human_feedback"] == reason and sent["task_id"] == "write_task"
        assert sent["taskWebhookUrl"].startswith("http://crew-mcp.test/webhooks/")  # the normal resume path
        record = await env.service.ledger.get(kid, owner=None)
        assert record is not None
        [decision] = record.decisions
        assert (decision.by, decision.via, decision.approve, decision.feedback) == ("system", "expiry", False, reason)

        await env.sim.advance(3600)  # the task re-runs with the reason as feedback and asks again
        again = await env.call("get_status", {"kickoff_id": kid})
        assert again["state"] == "waiting_for_human" and reason in again["pending"]["output"]
        assert len(env.sim.resume_log) == 1  # a fresh pause is not expired


@pytest.mark.parametrize("mode", ["legacy"])  # era-independent service semantics: one era
async def test_expiry_reject_also_happens_when_get_status_meets_the_expired_pause(mode: str) -> None:
    settings = Settings(owner=OWNER, approval_expiry_seconds=60, approval_expiry_action="reject")
    async with in_memory(mode, settings, clock=ManualClock()) as env:
        kid = await _paused(env)
        await env.call("get_status", {"kickoff_id": kid})
        await _later(env, 3600)
        out = await env.call("get_status", {"kickoff_id": kid})
        assert out["state"] == "running" and out.get("pending") is None
        assert out["decisions"][-1]["by"] == "system" and out["decisions"][-1]["approve"] is False
        assert "Rejected automatically" in out["message"] and "get_status" in out["next_step"]
        assert env.sim.count("research", "POST", "/resume") == 1


@pytest.mark.parametrize("mode", ["auto"])  # era-independent service semantics: one era
async def test_expiry_reject_is_allowed_under_the_human_only_policy(mode: str) -> None:
    settings = Settings(
        owner=OWNER, approval_policy="human", approval_expiry_seconds=60, approval_expiry_action="reject"
    )
    async with in_memory(mode, settings, clock=ManualClock()) as env:
        kid = await _paused(env)
        await env.call("get_status", {"kickoff_id": kid})
        await _later(env, 61)
        assert (await env.call("list_pending_approvals"))["approvals"] == []
        assert [r["is_approve"] for r in env.sim.resume_log] == [False]


# ------------------------------------------------------------------------------------ resume_with_feedback


async def test_resume_takes_the_task_from_the_ledger_and_resends_the_kickoffs_webhook_urls(mode: str) -> None:
    async with in_memory(mode, webhooks=True) as env:
        kid = await _paused(env)
        record = await env.service.ledger.get(kid, owner=None)
        assert record is not None and record.webhooks is not None and record.pending is not None
        kickoff_hooks = record.webhooks.wire()
        assert set(kickoff_hooks) == {"taskWebhookUrl", "stepWebhookUrl", "crewWebhookUrl"}

        out = await env.call("resume_with_feedback", {"kickoff_id": kid, **APPROVE})
        assert out["task_id"] == "write_task"
        [sent] = env.sim.resume_log
        assert sent["task_id"] == "write_task"
        assert {k: sent[k] for k in kickoff_hooks} == kickoff_hooks
        await env.sim.advance(3600)
        # The resumed segment reported to the same receiver: its crew webhook was accepted.
        crew_hooks = [d for d in env.sim.webhook_log if d.kind == "crew"]
        assert [(d.url, d.status_code) for d in crew_hooks] == [(kickoff_hooks["crewWebhookUrl"], 202)]


@pytest.mark.parametrize("mode", ["auto"])  # era-independent service semantics: one era
async def test_resume_on_a_run_that_is_not_waiting_is_refused_without_an_upstream_resume(mode: str) -> None:
    async with in_memory(mode) as env:
        running = await env.kickoff("research")
        text = await env.error("resume_with_feedback", {"kickoff_id": running, **APPROVE})
        assert f"Run {running} is running, not waiting for human review" in text and "get_status" in text
        finished = await env.kickoff("trip_planner", {"budget": "1", "interests": "x", "duration": "1", "age": 3})
        await env.sim.advance(3600)
        await env.call("get_status", {"kickoff_id": finished})
        text = await env.error("resume_with_feedback", {"kickoff_id": finished, **APPROVE})
        assert "already completed" in text
        assert env.sim.resume_log == []


@pytest.mark.parametrize("mode", ["legacy"])  # era-independent service semantics: one era
async def test_a_decision_is_recorded_with_who_when_verdict_and_feedback(mode: str) -> None:
    async with in_memory(mode) as env:
        kid = await _paused(env)
        before = datetime.now(UTC)
        out = await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": False, "feedback": "Shorter."})
        assert out["decided_by"] == "model via tool" and out["run"]["state"] == "running"
        assert "get_status" in out["run"]["next_step"]
        record = await env.service.ledger.get(kid, owner=None)
        assert record is not None
        [d] = record.decisions
        assert (d.task_id, d.approve, d.feedback, d.by, d.via, d.actor) == (
            "write_task",
            False,
            "Shorter.",
            "model",
            "tool",
            OWNER,
        )
        assert before <= d.at <= datetime.now(UTC)


@pytest.mark.parametrize("mode", ["auto"])  # era-independent service semantics: one era
async def test_two_pauses_in_one_run_are_each_reviewed_in_turn(mode: str) -> None:
    async with in_memory(mode) as env:
        kid = await _paused(env, "content_pipeline", inputs={"topic": "tides", "audience": "sailors"})
        first = await env.call("get_status", {"kickoff_id": kid})
        assert first["pending"] == {**first["pending"], "task_id": "outline", "output": "Outline: tides."}
        await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True, "feedback": "Good outline."})
        await env.sim.advance(3600)
        second = await env.call("get_status", {"kickoff_id": kid})
        assert second["state"] == "waiting_for_human" and second["pending"]["task_id"] == "draft"
        assert (await env.call("list_pending_approvals"))["approvals"][0]["task_id"] == "draft"
        await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True, "feedback": "Good draft."})
        await env.sim.advance(3600)
        done = await env.call("get_status", {"kickoff_id": kid})
        assert done["state"] == "completed"
        assert [(d["task_id"], d["approve"]) for d in done["decisions"]] == [("outline", True), ("draft", True)]
        assert "Good outline." in done["output"]["text"] and "Good draft." in done["output"]["text"]


@pytest.mark.parametrize("mode", ["legacy"])  # era-independent service semantics: one era
async def test_reject_then_approve_leaves_both_feedbacks_in_the_final_output(mode: str) -> None:
    async with in_memory(mode) as env:
        kid = await _paused(env)
        rejected = await env.call(
            "resume_with_feedback", {"kickoff_id": kid, "approve": False, "feedback": "Mention the moon."}
        )
        assert rejected["upstream_status"] == "retrying"
        await env.sim.advance(3600)
        again = await env.call("get_status", {"kickoff_id": kid})
        assert "Revised per feedback: Mention the moon." in again["pending"]["output"]
        await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True, "feedback": "Lovely."})
        await env.sim.advance(3600)
        done = await env.call("get_status", {"kickoff_id": kid})
        assert done["state"] == "completed"
        assert "Mention the moon." in done["output"]["text"] and "Lovely." in done["output"]["text"]


# ------------------------------------------------------------------------------------------- elicitation


async def test_without_approve_an_elicitation_form_shows_the_output_and_records_a_human_decision(mode: str) -> None:
    forms: list[str] = []
    answer = answering("accept", {"approve": False, "feedback": "Cite sources."}, forms)
    async with in_memory(mode, elicitation=answer) as env:
        kid = await _paused(env)
        out = await env.call("resume_with_feedback", {"kickoff_id": kid})
        assert forms and "Report on tides." in forms[0] and "write_task" in forms[0]
        assert out["approve"] is False and out["feedback"] == "Cite sources."
        assert out["decided_by"] == "human via elicitation"
        record = await env.service.ledger.get(kid, owner=None)
        assert record is not None
        assert [(d.by, d.via, d.approve) for d in record.decisions] == [("human", "elicitation", False)]
        assert [r["human_feedback"] for r in env.sim.resume_log] == ["Cite sources."]


@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_a_declined_or_cancelled_form_leaves_the_run_paused_without_an_upstream_resume(
    mode: str, action: str
) -> None:
    async with in_memory(mode, elicitation=answering(action)) as env:
        kid = await _paused(env)
        text = await env.error("resume_with_feedback", {"kickoff_id": kid})
        assert f"did not answer the approval form; run {kid} stays paused" in text and "Ask them in chat" in text
        assert env.sim.resume_log == []
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "waiting_for_human"


async def test_a_client_without_elicitation_is_told_to_ask_the_user_in_chat(mode: str) -> None:
    async with in_memory(mode) as env:
        kid = await _paused(env)
        text = await env.error("resume_with_feedback", {"kickoff_id": kid})
        assert "cannot show the user an approval form" in text
        assert "Ask the user in chat" in text and "approve=true|false" in text
        assert env.sim.resume_log == []


# ------------------------------------------------------------------------------------ human-only policy


async def test_human_policy_refuses_a_models_decision_and_says_how_the_person_decides(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER, approval_policy="human")) as env:
        kid = await _paused(env)
        text = await env.error("resume_with_feedback", {"kickoff_id": kid, **APPROVE})
        assert human_only_message(kid) in text
        assert env.sim.resume_log == []
        paused = await env.call("get_status", {"kickoff_id": kid})
        assert human_only_message(kid) in paused["next_step"]


async def test_human_policy_accepts_an_elicitation_answer(mode: str) -> None:
    settings = Settings(owner=OWNER, approval_policy="human")
    async with in_memory(mode, settings, elicitation=answering("accept", APPROVE)) as env:
        kid = await _paused(env)
        out = await env.call("resume_with_feedback", {"kickoff_id": kid})
        assert out["approve"] is True and out["decided_by"] == "human via elicitation"
        assert [r["is_approve"] for r in env.sim.resume_log] == [True]


@pytest.mark.parametrize("mode", ["auto"])  # era-independent service semantics: one era
async def test_human_policy_accepts_the_cli_and_refuses_a_model_caller_of_the_service(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER, approval_policy="human")) as env:
        kid = await _paused(env)
        with pytest.raises(HumanOnlyError, match="approval policy is 'human'"):
            await env.service.resume(kid, Caller(OWNER), approve=True)
        view = await env.service.resume(kid, Caller(OWNER, by="human", via="cli"), approve=True, feedback="ok")
        assert view.decided_by == "human via cli"
        assert [r["is_approve"] for r in env.sim.resume_log] == [True]


@pytest.mark.parametrize("mode", ["legacy"])  # era-independent service semantics: one era
async def test_the_ledger_keeps_a_webhook_pause_as_pending_across_a_status_that_says_running(mode: str) -> None:
    """Documented shape: a status read after the webhook must not erase the pause the webhook announced."""
    async with in_memory(mode, crews=ALL_CREWS, webhooks=True) as env:
        kid = await _paused(env, RESEARCH_DOC.name)
        for _ in range(2):
            await env.call("get_status", {"kickoff_id": kid})
        record = await env.service.ledger.get(kid, owner=None)
        assert record is not None and record.pending == PendingHumanInput(
            task_id="write_task", output="Report on tides.", since=record.pending.since if record.pending else None
        )
        listed = await env.call("list_pending_approvals")
        assert [a["kickoff_id"] for a in listed["approvals"]] == [kid]
