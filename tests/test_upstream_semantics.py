"""What crew-mcp says and records when the crew's side is not what the ledger expects (issue 10).

Runs started elsewhere are adopted; a run the crew forgot is an error the model can act on; statuses merge
instead of overwriting; next steps stay within the wait cap; a decision whose answer was lost is checked against
the run's status, recorded as applied or unknown, and never sent twice. All against the manual-clock simulator
in-process (``hitl_support.in_memory``); the fault-injecting proxy suite is ``test_faults.py``.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
import sim_support
import stamina
from hitl_support import OWNER, Env, documented, eventually, in_memory, instant_review_crew, read_json, until
from mcp import Client

from crew_mcp.adoption import ADOPT_MAX_CREWS, ADOPT_PER_MINUTE
from crew_mcp.errors import RunNotFoundError
from crew_mcp.identity import Caller
from crew_mcp.ledger import RecordState, RunRecord
from crew_mcp.runtime import Runtime
from crew_mcp.server import INSTRUCTIONS, build_server
from crew_mcp.settings import CrewConfig, Settings
from crew_mcp.simulator import Simulator, builtin_crews
from crew_mcp.views import Guidance, RunView

CREWS = [*builtin_crews(), instant_review_crew()]
RESEARCH_DOC = documented(next(c for c in builtin_crews() if c.name == "research"))
MODE = "legacy"
STATUS_ERROR = "Error executing tool get_status: "


def not_found_text(kickoff_id: str) -> str:
    """The refusal for an id that is not the caller's, word for word as before adoption existed."""
    return (
        f"No run with kickoff_id {kickoff_id!r} is known to crew-mcp for you. "
        "Call list_executions to see your runs (kickoff_ids are case-sensitive)."
    )


def status_reads(sim: Simulator) -> dict[str, int]:
    return {name: sim.count(name, "GET", "/status") for name in sim.crews}


# ------------------------------------------------------------------------------------------- 2: adoption


async def test_a_run_started_outside_is_adopted_followed_and_approved_like_any_other() -> None:
    async with in_memory(MODE, crews=CREWS) as env, sim_support.sim_http(env.sim) as dashboard:
        kid = await sim_support.kickoff(dashboard, "instant", {})
        await env.sim.advance(0)
        run = await env.call("get_status", {"kickoff_id": kid})
        assert (run["state"], run["started_outside"], run["pending"]["task_id"]) == ("waiting_for_human", True, "check")
        listed = await env.call("list_executions")
        assert [(r["kickoff_id"], r["started_outside"]) for r in listed["executions"]] == [(kid, True)]
        decided = await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True, "feedback": "ok"})
        assert decided["outcome"] == "applied"
        assert [r["execution_id"] for r in env.sim.resume_log] == [kid]
        await env.sim.advance(60)
        done = await env.call("get_status", {"kickoff_id": kid})
        assert done["state"] == "completed" and "inputs are unknown" in (await _text(env, kid))


async def _text(env: Env, kid: str) -> str:
    r = await env.client.call_tool("get_status", {"kickoff_id": kid})
    return "".join(getattr(c, "text", "") for c in r.content)


async def test_with_several_crews_each_is_asked_in_turn_and_a_named_crew_alone() -> None:
    async with in_memory(MODE, crews=CREWS) as env, sim_support.sim_http(env.sim) as dashboard:
        kid = await sim_support.kickoff(dashboard, "instant", {})
        named = await sim_support.kickoff(dashboard, "instant", {})
        before = status_reads(env.sim)
        await env.call("get_status", {"kickoff_id": kid})
        asked = {n: c - before[n] for n, c in status_reads(env.sim).items() if c > before[n]}
        order = [c.name for c in CREWS]
        assert list(asked) == order[: order.index("instant") + 1][:ADOPT_MAX_CREWS] or asked == {"instant": 1}
        before = status_reads(env.sim)
        await env.call("get_status", {"kickoff_id": named, "crew": "instant"})
        assert {n: c - before[n] for n, c in status_reads(env.sim).items() if c > before[n]} == {"instant": 1}


async def test_another_owners_run_stays_not_found_word_for_word_with_no_upstream_call() -> None:
    async with in_memory(MODE, crews=CREWS) as env:
        kid = await env.kickoff("research")
        before = status_reads(env.sim)
        with pytest.raises(RunNotFoundError) as theirs:
            await env.service.status(kid, Caller("mallory"))
        assert status_reads(env.sim) == before
        with pytest.raises(RunNotFoundError) as unknown:
            await env.service.status("0d6f3c1e-0000-4000-8000-000000000000", Caller("mallory"))
    assert str(theirs.value) == not_found_text(kid)
    assert str(unknown.value) == not_found_text("0d6f3c1e-0000-4000-8000-000000000000")


async def test_an_id_no_crew_knows_is_not_found_after_a_bounded_number_of_lookups() -> None:
    async with in_memory(MODE, crews=CREWS) as env:
        before = sum(status_reads(env.sim).values())
        error = await env.error("get_status", {"kickoff_id": "nobody-knows-this-id"})
        assert error == STATUS_ERROR + not_found_text("nobody-knows-this-id")
        assert sum(status_reads(env.sim).values()) - before <= 2 * ADOPT_MAX_CREWS  # auto mode may probe 2 paths


async def test_probing_unknown_ids_is_rate_limited_per_owner() -> None:
    async with in_memory(MODE, crews=[instant_review_crew()]) as env, sim_support.sim_http(env.sim) as dashboard:
        for i in range(ADOPT_PER_MINUTE):
            await env.error("get_status", {"kickoff_id": f"probe-{i}"})
        reads = env.sim.count("instant", "GET", "/status")
        real = await sim_support.kickoff(dashboard, "instant", {})
        assert await env.error("get_status", {"kickoff_id": real}) == STATUS_ERROR + not_found_text(real)
        assert env.sim.count("instant", "GET", "/status") == reads  # refused without asking the crew
        run = await env.service.status(real, Caller("someone-else"))  # the budget is per owner
        assert run.started_outside


async def test_adoption_can_be_turned_off() -> None:
    settings = Settings(owner=OWNER, adopt_runs=False)
    async with in_memory(MODE, settings, crews=CREWS) as env, sim_support.sim_http(env.sim) as dashboard:
        kid = await sim_support.kickoff(dashboard, "instant", {})
        assert await env.error("get_status", {"kickoff_id": kid}) == STATUS_ERROR + not_found_text(kid)
        assert sum(status_reads(env.sim).values()) == 0


async def test_a_crew_that_fails_the_lookup_is_reported_not_hidden_behind_not_found() -> None:
    with stamina.set_testing(True, attempts=3):  # the read is retried, without sleeping
        async with in_memory(MODE, crews=[instant_review_crew()]) as env:
            env.sim.faults("instant").fail_next(10, status=500)
            error = await env.error("get_status", {"kickoff_id": "k-lookup"})
    assert "crew 'instant' failed to look up run k-lookup with HTTP 500 (Simulated failure) (3 attempts)" in error


# ------------------------------------------------------------------------------- 7: a run the crew forgot


async def test_a_run_the_ledger_holds_but_the_crew_does_not_know_is_an_error_with_a_next_step() -> None:
    async with in_memory(MODE, crews=CREWS) as env:
        ledger = env.service.ledger
        await ledger.create(RunRecord(request_id="r-gone", crew="research", conversation_id="c", owner=OWNER))
        await ledger.confirm("r-gone", "k-gone")
        for args in ({"kickoff_id": "k-gone"}, {"kickoff_id": "k-gone", "wait_seconds": 5}):
            error = await env.error("get_status", args)
            assert "Crew 'research' no longer knows run k-gone" in error
            assert "start a new run (kickoff_crew(crew='research'" in error
        record = await ledger.get("k-gone", owner=OWNER)
        assert record is not None and record.state is RecordState.NOT_FOUND


# ---------------------------------------------------------------------------- 6: merge, never regress


@pytest.mark.parametrize("crew", ["research", "research_doc"])
async def test_a_crew_webhook_after_polling_keeps_the_progress_polling_found(crew: str) -> None:
    async with in_memory(MODE, crews=[*builtin_crews(), RESEARCH_DOC], webhooks=True) as env:
        kid = await env.kickoff(crew)
        await env.sim.advance(3)
        running = await env.call("get_status", {"kickoff_id": kid})
        assert running["progress"]["total"] == 2
        await env.sim.advance(3600)  # the documented shape learns of the pause from its webhook only
        await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True})
        await env.sim.advance(3600)  # done: the crew webhook (no progress in it) lands before anyone polls
        record = await env.service.ledger.get(kid, owner=OWNER)
        assert record is not None and record.status is not None and record.state is RecordState.COMPLETED
        done = await env.call("get_status", {"kickoff_id": kid})
        assert (done["state"], done["progress"]["completed"], done["progress"]["total"]) == ("completed", 2, 2)
        assert done["output"]["text"] and done["usage"]["total_tokens"] > 0
        assert (await _text(env, kid)).startswith(f"Run {kid} of crew {crew}: completed (2/2 tasks)")


async def test_right_after_a_decision_listings_say_running_not_waiting() -> None:
    async with in_memory(MODE) as env:
        kid = await env.kickoff("research")
        await env.sim.advance(3600)
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "waiting_for_human"
        await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True})
        listed = await env.call("list_executions")
        assert [r["state"] for r in listed["executions"]] == ["running"]


# ------------------------------------------------------------------------------- 9: hints within the cap


def _waits(text: str) -> list[int]:
    return [int(w) for w in re.findall(r"wait_seconds=(\d+)", text)]


@pytest.mark.parametrize(("cap", "recommended", "expected"), [(5, None, 5), (45, 8, 8), (45, None, 30), (0, None, 0)])
async def test_every_hint_stays_within_the_wait_cap_and_uses_the_recommended_wait(
    cap: float, recommended: float | None, expected: int
) -> None:
    settings = Settings(owner=OWNER, wait_cap_seconds=cap, recommended_wait_seconds=recommended)
    async with in_memory(MODE, settings) as env:
        said: list[str] = [INSTRUCTIONS.format(wait=settings.recommended_wait)]
        prompt = await env.client.get_prompt("run_crew", {"crew": "research"})
        said += [getattr(m.content, "text", "") for m in prompt.messages]
        kid = await env.kickoff("research")
        said.append((await env.call("get_status", {"kickoff_id": kid}))["next_step"])
        said.append(await env.error("resume_with_feedback", {"kickoff_id": kid, "approve": True}))
        await env.sim.advance(3600)
        said.append((await env.call("get_status", {"kickoff_id": kid}))["next_step"])
        said.append((await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True}))["next_step"])
    found = [w for text in said for w in _waits(text)]
    assert found and all(w == expected for w in found), (found, said)
    if expected == 0:
        assert not any("wait_seconds=0" in text for text in said[2:])


def test_a_recommended_wait_above_the_cap_is_refused() -> None:
    from crew_mcp.errors import ConfigError
    from crew_mcp.settings import load_settings

    with pytest.raises(ConfigError, match=r"CREW_MCP_RECOMMENDED_WAIT.*must not exceed the wait cap"):
        load_settings({"CREW_MCP_WAIT_CAP": "5", "CREW_MCP_RECOMMENDED_WAIT": "10"})


# ------------------------------------------------------------------------- 10: decisions whose answer was lost


async def _waiting(env: Env, crew: str = "research") -> str:
    kid = await env.kickoff(crew)
    await env.sim.advance(3600)
    assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "waiting_for_human"
    return kid


async def test_a_decision_answered_500_after_the_crew_acted_is_recorded_applied_from_the_status() -> None:
    async with in_memory(MODE) as env:
        kid = await _waiting(env)
        env.sim.faults("research").fail_next(1, status=500, after_processing=True)
        decided = await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True})
        assert decided["outcome"] == "applied"
        assert "HTTP 500" in decided["message"] and "The run has moved on since" in decided["message"]
        record = await env.service.ledger.get(kid, owner=OWNER)
        assert record is not None and [d.outcome for d in record.decisions] == ["applied"]
        assert len(env.sim.resume_log) == 1


@pytest.mark.parametrize("crew", ["research", "research_doc"])
async def test_a_decision_whose_answer_was_lost_is_unknown_with_what_to_do_and_never_sent_twice(crew: str) -> None:
    async with in_memory(MODE, crews=[*builtin_crews(), RESEARCH_DOC], webhooks=True) as env:
        kid = await _waiting(env, crew)
        # Before processing: the crew never saw it. After (documented shape): it did, but its status cannot say so.
        env.sim.faults(crew).fail_next(1, status=502, after_processing=crew == "research_doc")
        # A rejection, so the run does not simply finish (which would show the decision was applied).
        decided = await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": False, "feedback": "More."})
        assert decided["outcome"] == "unknown"
        assert "cannot tell whether the crew applied the decision" in decided["message"]
        assert "Do not send the decision again yet" in decided["next_step"]
        record = await env.service.ledger.get(kid, owner=OWNER)
        assert record is not None and [d.outcome for d in record.decisions] == ["unknown"]
        assert env.sim.count(crew, "POST", "/resume") == 1


async def test_a_decision_that_never_left_is_not_recorded_and_says_so() -> None:
    async with in_memory(MODE) as env:
        kid = await _waiting(env)
        env.sim.faults("research").fail_next(1, status=409)
        r = await env.client.call_tool("resume_with_feedback", {"kickoff_id": kid, "approve": True})
        assert r.is_error
        record = await env.service.ledger.get(kid, owner=OWNER)
        assert record is not None and record.decisions == [] and record.state is RecordState.WAITING_FOR_HUMAN


async def test_a_second_decision_while_the_first_is_on_its_way_is_refused_without_sending() -> None:
    settings = Settings(owner=OWNER, answer_margin_seconds=0.2)
    async with in_memory(MODE, settings) as env:
        kid = await _waiting(env)
        env.sim.faults("research").delay_next(1, seconds=1.0, after_processing=True)
        first = await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True})
        assert first["outcome"] == "sent" and "has not answered within 0.2 s" in first["message"]
        second = await env.error("resume_with_feedback", {"kickoff_id": kid, "approve": False, "feedback": "no"})
        assert "already on its way to the crew; it is never sent twice" in second
        await until(lambda: bool(env.sim.resume_log), timeout=5)
        record = await eventually(lambda: env.service.ledger.get(kid, owner=OWNER), lambda r: bool(r and r.decisions))
        assert record is not None and [d.approve for d in record.decisions] == [True]
        assert len(env.sim.resume_log) == 1


# ------------------------------------------------------------------- 12: kickoffs still in flight at the bound


async def test_a_kickoff_unanswered_at_the_bound_says_may_have_started_and_records_the_id_when_it_comes() -> None:
    settings = Settings(owner=OWNER, answer_margin_seconds=0.2)
    async with in_memory(MODE, settings) as env:
        await env.call("list_inputs", {"crew": "research"})  # cached: the held request is the POST
        env.sim.faults("research").delay_next(1, seconds=0.6, after_processing=True)
        run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}, "wait_seconds": 30})
        assert run["state"] == "may_have_started" and "kickoff_id" not in run
        assert "has not answered within 0.2 s" in run["message"] and run["request_id"] in run["message"]
        assert f"get_status(kickoff_id={run['request_id']!r})" in run["next_step"]
        found = await eventually(
            lambda: env.call("get_status", {"kickoff_id": run["request_id"]}), lambda r: r.get("kickoff_id") is not None
        )
        assert found["kickoff_id"] == env.sim.kickoff_ids("research")[0] and found["state"] == "running"
        assert env.sim.count("research", "POST", "/kickoff") == 1


# ------------------------------------------------------------------------------ 13: decisions need an id


@pytest.mark.parametrize("kickoff_id", ["", " "])
async def test_a_decision_without_a_kickoff_id_is_refused_before_any_upstream_call(kickoff_id: str) -> None:
    async with in_memory(MODE) as env:
        kid = await _waiting(env)
        reads = env.sim.count("research", "GET", "/status")
        error = await env.error("resume_with_feedback", {"kickoff_id": kickoff_id, "approve": True})
        assert "needs the kickoff_id" in error or "not a valid kickoff_id" in error
        assert (env.sim.count("research", "POST", "/resume"), env.sim.count("research", "GET", "/status")) == (
            0,
            reads,
        )
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "waiting_for_human"


# ------------------------------------------------------------------ 18: a status the crew answers unreadably


def test_an_unknown_state_word_is_not_called_still_working() -> None:
    view = RunView(kickoff_id="k-1", crew="research", state="unknown", raw_state="ARCHIVED")
    step = view.suggest(Guidance(wait_seconds=10))
    assert "The crew is still working" not in step
    assert "state 'ARCHIVED', which crew-mcp does not understand" in step and "wait_seconds=10" in step


# --------------------------------------------- 11: a kickoff whose answer was unreadable, found by its webhook


async def test_a_may_have_started_kickoff_is_confirmed_by_the_first_webhook_carrying_its_request_id() -> None:
    async with in_memory(MODE, webhooks=True) as env:
        await env.call("list_inputs", {"crew": "research"})
        env.sim.faults("research").fail_next(1, status=200, body={"unexpected": "shape"}, after_processing=True)
        run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
        assert (
            run["state"] == "may_have_started"
            and "answered HTTP 200, but its answer could not be read" in (run["message"])
        )
        await env.sim.advance(3)  # the first task ends: its webhook echoes the kickoff's meta
        found = await env.call("get_status", {"kickoff_id": run["request_id"]})
        assert (found["kickoff_id"], found["state"]) == (env.sim.kickoff_ids("research")[0], "running")
        assert env.sim.count("research", "POST", "/kickoff") == 1


async def test_a_webhook_with_another_requests_secret_claims_nothing() -> None:
    async with in_memory(MODE, webhooks=True) as env:
        await env.call("list_inputs", {"crew": "research"})
        env.sim.faults("research").fail_next(1, status=502, after_processing=True)
        run = await env.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
        claimed = await env.service.runs.claim(
            "forged-1", {"meta": {"crew_mcp_request_id": run["request_id"]}}, "not-the-secret"
        )
        assert claimed is None
        record = await env.service.ledger.get_request(run["request_id"], owner=OWNER)
        assert record is not None and (record.kickoff_id, record.state) == (None, RecordState.MAY_HAVE_STARTED)


# ------------------------------------------------------------------- 16: secrets everywhere a crew can reach


ECHO_TOKEN = "crew-token-0123456789abcdef-SECRET"
URL_PASSWORD = "url-pass-9876543210"


def _echoing_crew() -> Any:
    """A crew that echoes a 20-character prefix of its token everywhere it can (a misbehaving proxy does)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    prefix = ECHO_TOKEN[:20]

    async def inputs(_: Request) -> JSONResponse:
        return JSONResponse({"inputs": ["topic"]})

    async def kickoff(_: Request) -> JSONResponse:
        return JSONResponse({"kickoff_id": "k-echo"})

    async def status(_: Request) -> JSONResponse:
        return JSONResponse({"state": "FAILED", "status": f"token {prefix} expired", "error": f"auth {prefix}..."})

    async def health(_: Request) -> PlainTextResponse:
        return PlainTextResponse(f"Healthy ({prefix})")

    return Starlette(
        routes=[
            Route("/inputs", inputs),
            Route("/kickoff", kickoff, methods=["POST"]),
            Route("/status/{kid}", status),
            Route("/", health),
        ]
    )


async def test_a_token_fragment_echoed_by_the_crew_reaches_no_result_resource_ledger_log_or_doctor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from crew_mcp.doctor import run_doctor
    from crew_mcp.simulator import serve_app

    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with serve_app(_echoing_crew()) as root:
        url = root.replace("http://", f"http://crew:{URL_PASSWORD}@")
        crew = CrewConfig(name="echo", url=url, token=ECHO_TOKEN)
        settings = Settings(crews=[crew], owner=OWNER, ledger_url="memory://")
        runtime = Runtime()
        async with Client(build_server(settings, runtime=runtime)) as client:
            started = await client.call_tool("kickoff_crew", {"inputs": {"topic": "x"}})
            run = started.structured_content or {}
            r = await client.call_tool("get_status", {"kickoff_id": run["kickoff_id"]})
            seen += [json.dumps(r.structured_content), "".join(getattr(c, "text", "") for c in r.content)]
            seen.append(json.dumps(await read_json(client, f"crew://executions/{run['kickoff_id']}")))
            assert runtime.service is not None
            seen.append((await runtime.service.ledger.get("k-echo", owner=OWNER) or "").__repr__())
            seen.append((await run_doctor(runtime.service)).text())
    seen += [r.getMessage() for r in caplog.records]
    assert any("HTTP Request" in s for s in seen), "httpx2 logged its request lines"
    everything = "\n".join(seen)
    assert "expired" in everything and "Healthy" in everything  # what the crew said is there, redacted
    assert not [ECHO_TOKEN[i : i + 8] for i in range(len(ECHO_TOKEN) - 7) if ECHO_TOKEN[i : i + 8] in everything]
    assert URL_PASSWORD not in everything and URL_PASSWORD[:8] not in everything
