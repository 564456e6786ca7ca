"""CrewClient against a real peer: the AMP simulator in-process (``httpx2.ASGITransport``) and over uvicorn.

Retry safety is proven by the simulator's own books: how many ``POST /kickoff`` it received and how many
executions it created. Status-path learning is proven by recording every request path the client sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import stamina
from process_support import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from crew_mcp.client import CrewClient, StatusPathMode, Timeouts
from crew_mcp.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from crew_mcp.models import ExecutionState, WebhookUrls
from crew_mcp.simulator import DEFAULT_TOKEN, CrewSpec, Simulator, builtin_crews, serve_app, serve_simulator

TRIP_INPUTS = {"budget": "900 EUR", "interests": "food", "duration": "3 days", "age": 41}
# Every wait in this file is a client call, and each call is bounded by its ``total`` (anyio.fail_after).
BOUNDED = Timeouts(connect=1.0, read=2.0, write=1.0, total=5.0)
QUICK = Timeouts(connect=1.0, read=0.5, write=1.0, total=3.0)


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """Retries happen as configured, but stamina never sleeps between them."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


def _recording(app: ASGIApp, paths: list[str]) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            paths.append(f"{scope['method']} {scope['path']}")
        await app(scope, receive, send)

    return wrapped


def in_process(sim: Simulator, crew: str, paths: list[str] | None = None, **kw: Any) -> CrewClient:
    """A client of ``crew`` through ``httpx2.ASGITransport``; every request path is appended to ``paths``."""
    app = _recording(sim.app, paths if paths is not None else [])
    kw.setdefault("token", DEFAULT_TOKEN)
    kw.setdefault("timeouts", BOUNDED)
    return CrewClient(f"http://sim/{crew}", kw.pop("token"), name=crew, transport=httpx2.ASGITransport(app=app), **kw)


def real(root: str, crew: str, **kw: Any) -> CrewClient:
    """A client of ``crew`` on a simulator served over real HTTP at ``root``."""
    kw.setdefault("timeouts", BOUNDED)
    return CrewClient(f"{root}/{crew}", kw.pop("token", DEFAULT_TOKEN), name=crew, **kw)


def crews(**overrides: Any) -> list[CrewSpec]:
    """The built-in crews plus a copy of ``research`` named ``review`` with ``overrides`` applied."""
    research = next(c for c in builtin_crews() if c.name == "research")
    return [*builtin_crews(), research.model_copy(update={"name": "review", **overrides})]


# ------------------------------------------------------------------------------------------ endpoints


async def test_every_endpoint_works_against_the_simulator(sim: Simulator) -> None:
    async with in_process(sim, "trip_planner") as c:
        assert await c.health() == "Healthy"
        assert await c.inputs() == ["budget", "interests", "duration", "age"]
        started = await c.kickoff(TRIP_INPUTS, meta={"user": "u1"})
        running = await c.status(started.kickoff_id)
        assert running.state is ExecutionState.RUNNING
        await sim.advance(10)
        done = await c.status(started.kickoff_id)
    assert done.state is ExecutionState.COMPLETED
    assert done.output is not None
    assert "food" in (done.output.text or "")
    ex = sim.executions[started.kickoff_id]
    assert ex.inputs["age"] == "41"
    assert ex.meta == {"user": "u1", "crew_mcp_request_id": started.request_id}


@pytest.mark.parametrize("shape", ["taskstatus", "documented"])
async def test_human_review_round_trip_in_both_status_shapes(shape: str) -> None:
    hooks = WebhookUrls(task="http://127.0.0.1:9/task")
    async with Simulator(crews(shape=shape), clock="manual") as sim, in_process(sim, "review") as c:
        run = await c.kickoff({"topic": "batteries"}, webhooks=hooks)
        await sim.advance(4.5)
        paused = await c.status(run.kickoff_id)
        # The documented shapes know no pause: a paused run reads as running there.
        expected = ExecutionState.WAITING_FOR_HUMAN if shape == "taskstatus" else ExecutionState.RUNNING
        assert paused.state is expected
        retry = await c.resume(run.kickoff_id, task_id="write_task", feedback="cite sources", approve=False)
        assert retry.status == "retrying"
        await sim.advance(2.5)
        approved = await c.resume(run.kickoff_id, task_id="write_task", feedback="good", approve=True, webhooks=hooks)
        assert approved.status in {"resumed", "completed"}
        await sim.advance(5)
        done = await c.status(run.kickoff_id)
    assert done.state is ExecutionState.COMPLETED
    assert [r["is_approve"] for r in sim.resume_log] == [False, True]
    assert "taskWebhookUrl" not in sim.resume_log[0]
    assert sim.resume_log[1]["taskWebhookUrl"] == "http://127.0.0.1:9/task"


# ------------------------------------------------------------------------------------- error statuses


async def test_wrong_token_is_an_authentication_error(sim: Simulator) -> None:
    async with in_process(sim, "research", token="not-the-token") as c:
        with pytest.raises(AuthenticationError, match="bearer token"):
            await c.inputs()
    assert sim.count("research", "GET", "/inputs") == 1


async def test_missing_token_is_an_authentication_error(sim: Simulator) -> None:
    async with in_process(sim, "research", token=None) as c:
        with pytest.raises(AuthenticationError):
            await c.health()


@pytest.mark.parametrize(("status", "cls"), [(403, PermissionDeniedError), (409, ConflictError)])
async def test_403_and_409_become_their_classes_and_are_not_retried(
    sim: Simulator, status: int, cls: type[Exception]
) -> None:
    sim.faults("research").fail_next(1, status=status)
    async with in_process(sim, "research") as c:
        with pytest.raises(cls):
            await c.kickoff({"topic": "x"})
    assert sim.count("research", "POST", "/kickoff") == 1
    assert sim.kickoff_ids("research") == []


async def test_unknown_crew_url_is_not_found(sim: Simulator) -> None:
    async with in_process(sim, "no_such_crew") as c:
        with pytest.raises(NotFoundError):
            await c.inputs()


async def test_missing_inputs_is_422_with_their_names(sim: Simulator) -> None:
    async with in_process(sim, "trip_planner") as c:
        with pytest.raises(UnprocessableEntityError) as info:
            await c.kickoff({"budget": "10"})
    assert info.value.missing_inputs == ["interests", "duration", "age"]
    assert sim.kickoff_ids("trip_planner") == []


async def test_resume_of_a_run_not_waiting_is_400(sim: Simulator) -> None:
    async with in_process(sim, "research") as c:
        run = await c.kickoff({"topic": "x"})
        with pytest.raises(BadRequestError, match="not in pending human input state"):
            await c.resume(run.kickoff_id, task_id="write_task", feedback="", approve=True)
    assert sim.count("research", "POST", "/resume") == 1


async def test_get_is_retried_through_429_and_5xx_with_retry_after(sim: Simulator) -> None:
    faults = sim.faults("research")
    faults.fail_next(1, status=429, retry_after=0.01).fail_next(1, status=500).fail_next(1, status=502)
    faults.fail_next(1, status=503, retry_after=0.01)
    async with in_process(sim, "research") as c:
        assert await c.inputs() == ["topic"]
    assert sim.count("research", "GET", "/inputs") == 5


async def test_retries_give_up_with_the_last_error_and_its_retry_after(sim: Simulator) -> None:
    sim.faults("research").fail_next(10, status=429, retry_after=2)
    async with in_process(sim, "research", max_retries=2) as c:
        with pytest.raises(RateLimitError) as info:
            await c.inputs()
    assert info.value.retry_after == 2.0
    assert sim.count("research", "GET", "/inputs") == 3


# ------------------------------------------------------------------------------------ kickoff safety


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_kickoff_answered_429_or_503_is_sent_once_whether_or_not_the_crew_acted(
    sim: Simulator, status: int, after: bool
) -> None:
    sim.faults("research").fail_next(1, status=status, retry_after=0.01, after_processing=after)
    async with in_process(sim, "research") as c:
        with pytest.raises(APIStatusError):
            await c.kickoff({"topic": "x"})
    assert sim.count("research", "POST", "/kickoff") == 1
    assert len(sim.kickoff_ids("research")) == (1 if after else 0)


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_kickoff_is_not_retried_after_a_server_error_that_followed_processing(
    sim: Simulator, status: int
) -> None:
    sim.faults("research").fail_next(1, status=status, after_processing=True)
    async with in_process(sim, "research") as c:
        with pytest.raises(InternalServerError):
            await c.kickoff({"topic": "x"}, request_id="req-lost")
    assert sim.count("research", "POST", "/kickoff") == 1
    [kickoff_id] = sim.kickoff_ids("research")
    # The lost response can still be matched: the one execution carries the client's request id.
    assert sim.executions[kickoff_id].meta["crew_mcp_request_id"] == "req-lost"


async def test_kickoff_is_not_retried_after_the_connection_drops_after_sending(sim: Simulator) -> None:
    sim.faults("research").drop_next(1, after_processing=True)
    async with in_process(sim, "research") as c:
        with pytest.raises(APIConnectionError) as info:
            await c.kickoff({"topic": "x"})
    assert info.value.sent is True
    assert sim.count("research", "POST", "/kickoff") == 1
    assert len(sim.kickoff_ids("research")) == 1


async def test_resume_is_not_retried_after_a_500_that_followed_processing(sim: Simulator) -> None:
    async with in_process(sim, "research") as c:
        run = await c.kickoff({"topic": "x"})
        await sim.advance(4.5)
        sim.faults("research").fail_next(1, status=500, after_processing=True)
        with pytest.raises(InternalServerError):
            await c.resume(run.kickoff_id, task_id="write_task", feedback="ok", approve=True)
    assert sim.count("research", "POST", "/resume") == 1
    assert len(sim.resume_log) == 1


# --------------------------------------------------------------------------------------- status paths


@pytest.mark.parametrize(
    ("served", "first_call"),
    [
        ("both", ["/status/{id}"]),
        ("/status/{kickoff_id}", ["/status/{id}"]),
        ("/{kickoff_id}/status", ["/status/{id}", "/{id}/status"]),
    ],
)
async def test_auto_mode_learns_the_served_path_then_sends_exactly_one_request_per_call(
    served: str, first_call: list[str]
) -> None:
    paths: list[str] = []
    async with Simulator(crews(status_path=served), clock="manual") as sim, in_process(sim, "review", paths) as c:
        run = await c.kickoff({"topic": "x"})
        paths.clear()
        await c.status(run.kickoff_id)
        assert paths == [f"GET /review{p.format(id=run.kickoff_id)}" for p in first_call]
        learned = c.learned_status_path
        assert learned is not None
        assert learned.format(kickoff_id="{id}") == first_call[-1]
        for _ in range(3):
            paths.clear()
            await sim.advance(1)
            assert (await c.status(run.kickoff_id)).state is not ExecutionState.NOT_FOUND
            assert paths == [f"GET /review{learned.format(kickoff_id=run.kickoff_id)}"]
        paths.clear()
        gone = await c.status("no-such-run")
        assert gone.state is ExecutionState.NOT_FOUND
        assert len(paths) == 1, "after learning, a 404 means not found at once"
    assert sim.count("review", "GET", "/status") == 5


async def test_unknown_kickoff_id_on_a_fresh_client_is_not_found_after_trying_both_paths(sim: Simulator) -> None:
    async with in_process(sim, "research") as c:
        status = await c.status("0b7c-unknown")
        assert status.state is ExecutionState.NOT_FOUND
        assert c.learned_status_path is None
    assert sim.count("research", "GET", "/status") == 2


@pytest.mark.parametrize("mode", ["/status/{kickoff_id}", "/{kickoff_id}/status"])
async def test_configured_status_path_is_used_without_probing(mode: StatusPathMode) -> None:
    paths: list[str] = []
    async with (
        Simulator(crews(status_path=mode), clock="manual") as sim,
        in_process(sim, "review", paths, status_path=mode) as c,
    ):
        run = await c.kickoff({"topic": "x"})
        paths.clear()
        assert (await c.status(run.kickoff_id)).state is ExecutionState.RUNNING
        assert (await c.status("unknown")).state is ExecutionState.NOT_FOUND
    assert paths == [f"GET /review{mode.format(kickoff_id=k)}" for k in (run.kickoff_id, "unknown")]


# ---------------------------------------------------------------------------------------- real sockets


async def test_review_round_trip_over_real_http(sim: Simulator) -> None:
    async with serve_simulator(sim) as root, real(root, "research") as c:
        assert await c.health() == "Healthy"
        assert await c.inputs() == ["topic"]
        run = await c.kickoff({"topic": "tides"})
        await sim.advance(4.5)
        assert (await c.status(run.kickoff_id)).state is ExecutionState.WAITING_FOR_HUMAN
        assert (await c.resume(run.kickoff_id, task_id="write_task", feedback="ok", approve=True)).status
        await sim.advance(5)
        assert (await c.status(run.kickoff_id)).state is ExecutionState.COMPLETED
        assert c.learned_status_path == "/status/{kickoff_id}"


async def test_kickoff_is_not_retried_after_read_timeout(sim: Simulator) -> None:
    sim.faults("research").delay_next(1, seconds=5, after_processing=True)
    async with serve_simulator(sim) as root, real(root, "research", timeouts=QUICK) as c:
        with pytest.raises(APITimeoutError) as info:
            await c.kickoff({"topic": "x"})
    assert info.value.sent is True
    assert sim.count("research", "POST", "/kickoff") == 1
    assert len(sim.kickoff_ids("research")) == 1


async def test_status_is_retried_after_read_timeout(sim: Simulator) -> None:
    async with serve_simulator(sim) as root, real(root, "research", timeouts=QUICK) as c:
        run = await c.kickoff({"topic": "x"})
        sim.faults("research").delay_next(1, seconds=5)
        assert (await c.status(run.kickoff_id)).state is ExecutionState.RUNNING
    assert sim.count("research", "GET", "/status") == 2


async def test_kickoff_is_not_retried_after_a_dropped_connection_over_real_http(sim: Simulator) -> None:
    sim.faults("research").drop_next(1, after_processing=True)
    async with serve_simulator(sim) as root, real(root, "research", timeouts=QUICK) as c:
        with pytest.raises(APIConnectionError) as info:
            await c.kickoff({"topic": "x"})
    assert info.value.sent is True
    assert sim.count("research", "POST", "/kickoff") == 1
    assert len(sim.kickoff_ids("research")) == 1


async def test_kickoff_answered_503_over_real_http_is_not_sent_again(sim: Simulator) -> None:
    sim.faults("research").fail_next(1, status=503, retry_after=0.01, after_processing=True)
    async with serve_simulator(sim) as root, real(root, "research") as c:
        with pytest.raises(InternalServerError):
            await c.kickoff({"topic": "x"})
    assert sim.count("research", "POST", "/kickoff") == 1
    assert len(sim.kickoff_ids("research")) == 1


async def test_total_timeout_over_real_http_is_an_api_timeout(sim: Simulator) -> None:
    sim.faults("research").delay_next(1, seconds=5)
    total = Timeouts(connect=1, read=5, write=1, total=0.3)
    async with serve_simulator(sim) as root, real(root, "research", timeouts=total) as c:
        with pytest.raises(APITimeoutError, match="in total"):
            await c.inputs()


def _recording_app(peers: list[tuple[str, int]]) -> Starlette:
    async def inputs(request: Request) -> JSONResponse:
        assert request.client is not None
        peers.append((request.client.host, request.client.port))
        return JSONResponse({"inputs": ["topic"]})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("Healthy")

    return Starlette(routes=[Route("/c/inputs", inputs), Route("/c/", health)])


async def test_one_pooled_connection_serves_many_calls_over_a_real_socket() -> None:
    peers: list[tuple[str, int]] = []
    async with serve_app(_recording_app(peers)) as root, real(root, "c", token="t") as c:
        for _ in range(5):
            assert await c.inputs() == ["topic"]
        assert await c.health() == "Healthy"
    assert len(peers) == 5
    assert len(set(peers)) == 1, f"expected one kept-alive connection, got {set(peers)}"


async def test_refused_connection_is_not_sent_and_a_kickoff_is_retried_then_reported() -> None:
    port = free_port()
    # Nothing listens on ``port`` now: every attempt is refused before anything is sent.
    with stamina.set_testing(True, attempts=3):
        async with CrewClient(f"http://127.0.0.1:{port}/c", "t", timeouts=QUICK) as c:
            with pytest.raises(APIConnectionError) as info:
                await c.kickoff({"topic": "x"})
    assert info.value.sent is False
    assert f"127.0.0.1:{port}" in str(info.value)
