"""CrewClient against faults no real server can produce, through ``httpx2.MockTransport``.

Behaviour a real peer can show (every endpoint, statuses, both shapes, status-path learning, retry
safety counted by the service) is proven against the simulator in ``test_client_e2e.py``.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import httpx2
import pytest
import stamina
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from crew_mcp import __version__, client
from crew_mcp.client import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUTS,
    MAX_RETRY_AFTER,
    CrewClient,
    KickoffResult,
    Timeouts,
)
from crew_mcp.errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    CrewMCPError,
    InternalServerError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    status_error,
)
from crew_mcp.models import ExecutionState, WebhookUrls
from crew_mcp.retry import may_have_acted

BASE = "https://trip.crewai.test/crew"
TOKEN = "tok-SECRET-9f8e7d6c5b4a"
Handler = Callable[[httpx2.Request], httpx2.Response | Awaitable[httpx2.Response]]


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    """Retries happen as configured, but stamina never sleeps between them."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


class Peer:
    """A scripted service: answers each request with the next scripted reply, records what it got."""

    def __init__(self, *replies: httpx2.Response | Exception | Handler) -> None:
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            result = reply(request)
            return await result if isinstance(result, Awaitable) else result
        return reply

    def paths(self) -> list[str]:
        return [r.url.path.removeprefix("/crew") for r in self.requests]


def ok(body: Any, status: int = 200, **headers: str) -> httpx2.Response:
    return httpx2.Response(status, json=body, headers=headers)


def text(body: str, status: int = 200, content_type: str = "text/html") -> httpx2.Response:
    return httpx2.Response(status, text=body, headers={"content-type": content_type})


def crew(peer: Peer, **kw: Any) -> CrewClient:
    kw.setdefault("name", "trip")
    return CrewClient(BASE, kw.pop("token", TOKEN), transport=httpx2.MockTransport(peer), **kw)


# ------------------------------------------------------------------------------------------- surface


def test_public_surface_is_pinned() -> None:
    assert sorted(client.__all__) == sorted(
        [
            "DEFAULT_MAX_RETRIES",
            "DEFAULT_TIMEOUTS",
            "MAX_RETRY_AFTER",
            "REQUEST_ID_META_KEY",
            "CrewClient",
            "KickoffResult",
            "StatusPathMode",
            "Timeouts",
            "validate_kickoff_id",
        ]
    )
    assert Timeouts(connect=5.0, read=30.0, write=30.0, total=60.0) == DEFAULT_TIMEOUTS
    assert DEFAULT_MAX_RETRIES == 4
    assert MAX_RETRY_AFTER == 30.0


@pytest.mark.parametrize("url", ["ftp://x.crewai.com", "x.crewai.com", "http://"])
def test_non_http_base_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="http"):
        CrewClient(url, TOKEN)


async def test_headers_carry_bearer_token_user_agent_and_accept() -> None:
    peer = Peer(ok({"inputs": []}))
    async with crew(peer) as c:
        await c.inputs()
    headers = peer.requests[0].headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["user-agent"] == f"crew-mcp/{__version__}"
    assert headers["accept"] == "application/json"


async def test_no_authorization_header_without_token() -> None:
    peer = Peer(ok({"inputs": []}))
    async with crew(peer, token=None) as c:
        await c.inputs()
    assert "authorization" not in peer.requests[0].headers


async def test_one_pooled_http_client_serves_every_call_until_closed() -> None:
    peer = Peer(ok({"inputs": ["a"]}))
    c = crew(peer)
    pool = c._http
    for _ in range(3):
        await c.inputs()
    assert c._http is pool
    assert not pool.is_closed
    await c.aclose()
    assert pool.is_closed


def test_timeouts_are_applied_per_phase() -> None:
    c = crew(Peer(ok({})), timeouts=Timeouts(connect=1.5, read=2.5, write=3.5, total=9.0))
    t = c._http.timeout
    assert (t.connect, t.read, t.write, t.pool) == (1.5, 2.5, 3.5, 1.5)


# -------------------------------------------------------------------------------------------- bodies


@pytest.mark.parametrize("body", [{"inputs": ["budget", "interests"]}, {"inputs": {"budget": "", "interests": ""}}])
async def test_inputs_accepts_list_and_dict_variants(body: dict[str, Any]) -> None:
    async with crew(Peer(ok(body))) as c:
        assert await c.inputs() == ["budget", "interests"]


async def test_kickoff_encodes_inputs_and_merges_request_id_into_caller_meta() -> None:
    peer = Peer(ok({"kickoff_id": "k-1"}))
    hooks = WebhookUrls(task="https://h/task", crew="https://h/crew")
    async with crew(peer) as c:
        result = await c.kickoff(
            {"budget": 1500, "days": 2.5, "vegan": True, "cities": ["Rome"], "note": "hi"},
            meta={"user": "u1"},
            webhooks=hooks,
        )
    assert isinstance(result, KickoffResult)
    assert result.kickoff_id == "k-1"
    assert re.fullmatch(r"[0-9a-f]{32}", result.request_id)
    sent = json.loads(peer.requests[0].content)
    assert sent == {
        "inputs": {"budget": "1500", "days": "2.5", "vegan": "true", "cities": '["Rome"]', "note": "hi"},
        "meta": {"user": "u1", "crew_mcp_request_id": result.request_id},
        "taskWebhookUrl": "https://h/task",
        "crewWebhookUrl": "https://h/crew",
    }


async def test_kickoff_uses_the_given_request_id() -> None:
    peer = Peer(ok({"kickoff_id": "k-1"}))
    async with crew(peer) as c:
        result = await c.kickoff({}, request_id="req-42")
    assert result.request_id == "req-42"
    assert json.loads(peer.requests[0].content)["meta"] == {"crew_mcp_request_id": "req-42"}


@pytest.mark.parametrize("value", [None, float("nan"), object()])
async def test_kickoff_with_unencodable_input_sends_nothing(value: Any) -> None:
    peer = Peer(ok({"kickoff_id": "k-1"}))
    async with crew(peer) as c:
        with pytest.raises(InvalidInputError, match="budget"):
            await c.kickoff({"budget": value})
    assert peer.requests == []


async def test_kickoff_with_unserializable_meta_sends_nothing() -> None:
    peer = Peer(ok({"kickoff_id": "k-1"}))
    async with crew(peer) as c:
        with pytest.raises(InvalidInputError, match="meta"):
            await c.kickoff({}, meta={"when": object()})
    assert peer.requests == []


async def test_resume_sends_execution_id_feedback_approval_and_webhooks_again() -> None:
    peer = Peer(ok({"status": "resumed", "message": "ok"}))
    async with crew(peer) as c:
        resp = await c.resume(
            "k-1", task_id="review", feedback="looks good", approve=True, webhooks=WebhookUrls(step="https://h/s")
        )
    assert resp.status == "resumed"
    assert peer.paths() == ["/resume"]
    assert json.loads(peer.requests[0].content) == {
        "execution_id": "k-1",
        "task_id": "review",
        "human_feedback": "looks good",
        "is_approve": True,
        "stepWebhookUrl": "https://h/s",
    }


async def test_health_returns_the_text_of_get_root() -> None:
    peer = Peer(text("Healthy", content_type="text/plain"))
    async with crew(peer) as c:
        assert await c.health() == "Healthy"
    assert peer.paths() == ["/"]


# ------------------------------------------------------------------------------ malformed 2xx bodies


@pytest.mark.parametrize(
    ("call", "reply", "why"),
    [
        ("inputs", text("<html><body>Sign in</body></html>"), "not JSON"),
        ("inputs", text('{"inputs": [', content_type="application/json"), "not JSON"),
        ("inputs", ok({"names": ["a"]}), "InputsResponse"),
        ("kickoff", ok({"id": "k"}), "KickoffResponse"),
        ("status", ok(["running"]), "JSON object"),
        ("status", text("<!doctype html><title>Login</title>"), "not JSON"),
        ("resume", text("resumed!", content_type="text/plain"), "not JSON"),
        ("health", text("<html>Welcome to nginx</html>"), "health"),
    ],
)
async def test_malformed_2xx_body_is_a_response_validation_error_with_excerpt(
    call: str, reply: httpx2.Response, why: str
) -> None:
    peer = Peer(reply)
    async with crew(peer) as c:
        with pytest.raises(APIResponseValidationError, match=why) as info:
            await _call(c, call)
    err = info.value
    assert err.status_code == 200
    assert err.body_excerpt
    assert err.body_excerpt in str(err)
    assert "Bearer" not in str(err)
    assert "content-type" not in str(err).lower()
    assert len(peer.requests) == 1, "a malformed 2xx is not retried"


async def test_malformed_kickoff_answer_names_the_request_id_so_the_run_can_be_matched() -> None:
    async with crew(Peer(ok({"id": "k"}))) as c:
        with pytest.raises(APIResponseValidationError, match="request id req-7"):
            await c.kickoff({}, request_id="req-7")


async def test_status_body_excerpt_is_short() -> None:
    async with crew(Peer(text("<html>" + "x" * 5000 + "</html>"))) as c:
        with pytest.raises(APIResponseValidationError) as info:
            await c.status("k-1")
    assert len(info.value.body_excerpt) <= 200


# --------------------------------------------------------------------------------------- status codes


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, InternalServerError),
        (503, InternalServerError),
        (418, APIStatusError),
    ],
)
async def test_each_status_becomes_its_own_class_with_parsed_body(status: int, cls: type[APIStatusError]) -> None:
    body = {"error": "Nope", "message": f"status {status}", "details": {"missing_inputs": ["budget"]}}
    async with crew(Peer(ok(body, status)), max_retries=0) as c:
        with pytest.raises(cls) as info:
            await c.inputs()
    err = info.value
    assert type(err) is cls
    assert (err.status_code, err.body, err.crew, err.method, err.path) == (status, body, "trip", "GET", "/inputs")
    assert f"HTTP {status}" in str(err)
    assert f"status {status}" in str(err)


async def test_422_exposes_missing_inputs() -> None:
    body = {"error": "Validation Error", "message": "Missing required inputs", "details": {"missing_inputs": ["a"]}}
    async with crew(Peer(ok(body, 422))) as c:
        with pytest.raises(UnprocessableEntityError) as info:
            await c.kickoff({})
    assert info.value.missing_inputs == ["a"]


async def test_html_error_page_gives_status_class_with_empty_body() -> None:
    async with crew(Peer(text("<html>502 Bad Gateway</html>", 502)), max_retries=0) as c:
        with pytest.raises(InternalServerError) as info:
            await c.inputs()
    assert info.value.body == {}


# ------------------------------------------------------------------------------------------ Retry-After


async def _retry_after_of(header: str) -> float | None:
    async with crew(Peer(ok({}, 429, **{"Retry-After": header})), max_retries=0) as c:
        with pytest.raises(RateLimitError) as info:
            await c.inputs()
    return info.value.retry_after


async def test_retry_after_seconds_are_parsed() -> None:
    assert await _retry_after_of("7") == 7.0


async def test_retry_after_http_date_is_parsed() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=12), usegmt=True)
    seconds = await _retry_after_of(when)
    assert seconds is not None
    assert 10.0 <= seconds <= 12.0


async def test_retry_after_is_capped() -> None:
    assert await _retry_after_of("3600") == MAX_RETRY_AFTER


async def test_retry_after_in_the_past_is_zero_and_garbage_is_ignored() -> None:
    assert await _retry_after_of("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert await _retry_after_of("soon") is None


async def test_get_waits_exactly_retry_after_before_retrying() -> None:
    waits: list[float] = []

    def record(details: RetryDetails) -> None:
        waits.append(details.wait_for)

    peer = Peer(ok({}, 503, **{"Retry-After": "0.05"}), ok({"inputs": ["a"]}))
    set_on_retry_hooks([record])
    try:
        with stamina.set_testing(False):
            async with crew(peer) as c:
                assert await c.inputs() == ["a"]
    finally:
        set_on_retry_hooks(None)
    assert waits == [pytest.approx(0.05)]
    assert len(peer.requests) == 2


async def test_retry_after_longer_than_the_total_budget_is_not_waited_for() -> None:
    peer = Peer(ok({}, 429, **{"Retry-After": "20"}), ok({"inputs": []}))
    async with crew(peer, timeouts=Timeouts(connect=1, read=1, write=1, total=2)) as c:
        with pytest.raises(RateLimitError) as info:
            await c.inputs()
    assert info.value.retry_after == 20.0
    assert len(peer.requests) == 1


# ---------------------------------------------------------------------------------------- retry rules


def _req_error(cls: type[httpx2.TransportError]) -> httpx2.TransportError:
    return cls("boom", request=httpx2.Request("GET", BASE))


NEVER_SENT = [httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout]
MAYBE_SENT = [httpx2.ReadTimeout, httpx2.WriteTimeout, httpx2.RemoteProtocolError, httpx2.ReadError]
POSTS = ["kickoff", "resume"]


async def _call(c: CrewClient, call: str) -> Any:
    if call == "kickoff":
        return await c.kickoff({"a": "1"})
    if call == "resume":
        return await c.resume("k-1", task_id="t", feedback="f", approve=True)
    if call == "status":
        return await c.status("k-1")
    return await getattr(c, call)()


def _success(call: str) -> httpx2.Response:
    return {
        "kickoff": ok({"kickoff_id": "k-1"}),
        "resume": ok({"status": "resumed"}),
        "inputs": ok({"inputs": ["a"]}),
        "status": ok({"state": "RUNNING"}),
        "health": text("Healthy", content_type="text/plain"),
    }[call]


@pytest.mark.parametrize("call", POSTS)
@pytest.mark.parametrize("exc", NEVER_SENT)
async def test_post_is_retried_when_it_never_reached_the_service(call: str, exc: type[httpx2.TransportError]) -> None:
    peer = Peer(_req_error(exc), _req_error(exc), _success(call))
    async with crew(peer) as c:
        await _call(c, call)
    assert len(peer.requests) == 3


@pytest.mark.parametrize("call", POSTS)
@pytest.mark.parametrize("exc", NEVER_SENT)
async def test_connect_failure_is_marked_not_sent(call: str, exc: type[httpx2.TransportError]) -> None:
    async with crew(Peer(_req_error(exc)), max_retries=0) as c:
        with pytest.raises(APIConnectionError) as info:
            await _call(c, call)
    assert info.value.sent is False
    assert isinstance(info.value, APITimeoutError) is (exc is not httpx2.ConnectError)


@pytest.mark.parametrize("call", POSTS)
@pytest.mark.parametrize("exc", MAYBE_SENT)
async def test_post_is_not_retried_after_it_may_have_arrived(call: str, exc: type[httpx2.TransportError]) -> None:
    peer = Peer(_req_error(exc), _success(call))
    async with crew(peer) as c:
        with pytest.raises(APIConnectionError) as info:
            await _call(c, call)
    assert info.value.sent is True
    assert isinstance(info.value, APITimeoutError) is issubclass(exc, httpx2.TimeoutException)
    assert len(peer.requests) == 1


@pytest.mark.parametrize("call", POSTS)
@pytest.mark.parametrize("status", [500, 502, 504])
async def test_post_is_not_retried_after_a_server_error(call: str, status: int) -> None:
    peer = Peer(ok({"error": "boom"}, status), _success(call))
    async with crew(peer) as c:
        with pytest.raises(InternalServerError):
            await _call(c, call)
    assert len(peer.requests) == 1


@pytest.mark.parametrize("call", POSTS)
@pytest.mark.parametrize("status", [408, 429, 503])
async def test_post_is_not_retried_after_a_429_or_503_a_gateway_may_send_after_forwarding(
    call: str, status: int
) -> None:
    peer = Peer(ok({}, status, **{"Retry-After": "1"}), _success(call))
    async with crew(peer) as c:
        with pytest.raises(APIStatusError) as info:
            await _call(c, call)
    assert (len(peer.requests), info.value.status_code, info.value.attempts) == (1, status, 1)
    assert may_have_acted(info.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_a_client_error_means_the_crew_did_not_act(status: int) -> None:
    exc = status_error(status, {}, crew="c", method="POST", path="/kickoff")
    assert not may_have_acted(exc)


def test_only_a_request_that_never_left_is_known_not_to_have_acted() -> None:
    assert not may_have_acted(APIConnectionError("refused", sent=False))
    assert may_have_acted(APIConnectionError("reset", sent=True))
    assert may_have_acted(APITimeoutError("read timeout"))
    assert may_have_acted(APIResponseValidationError("html", status_code=200))


@pytest.mark.parametrize("call", ["inputs", "status", "health"])
@pytest.mark.parametrize(
    "fault",
    [
        _req_error(httpx2.ConnectError),
        _req_error(httpx2.ReadTimeout),
        _req_error(httpx2.RemoteProtocolError),
        ok({}, 429),
        ok({}, 500),
        ok({}, 502),
        ok({}, 503),
        ok({}, 504),
    ],
    ids=lambda f: type(f).__name__ if isinstance(f, Exception) else f"http{f.status_code}",
)
async def test_get_is_retried_on_connection_errors_timeouts_429_and_5xx(
    call: str, fault: httpx2.Response | Exception
) -> None:
    peer = Peer(fault, fault, _success(call))
    async with crew(peer) as c:
        await _call(c, call)
    assert len(peer.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
async def test_get_is_not_retried_on_client_errors(status: int) -> None:
    peer = Peer(ok({}, status), ok({"inputs": []}))
    async with crew(peer) as c:
        with pytest.raises(APIStatusError):
            await c.inputs()
    assert len(peer.requests) == 1


async def test_retries_stop_after_max_retries_and_raise_the_last_error() -> None:
    peer = Peer(ok({"message": "down"}, 503))
    async with crew(peer, max_retries=2) as c:
        with pytest.raises(InternalServerError, match="down"):
            await c.inputs()
    assert len(peer.requests) == 3


async def test_default_max_retries_means_five_attempts() -> None:
    peer = Peer(ok({}, 500))
    async with crew(peer) as c:
        with pytest.raises(InternalServerError):
            await c.inputs()
    assert len(peer.requests) == DEFAULT_MAX_RETRIES + 1


async def test_total_timeout_bounds_the_whole_call_including_retries() -> None:
    async def slow(request: httpx2.Request) -> httpx2.Response:
        await anyio.sleep(0.03)
        return ok({}, 503)

    peer = Peer(slow)
    with anyio.fail_after(5):
        async with crew(peer, max_retries=100, timeouts=Timeouts(connect=1, read=1, write=1, total=0.2)) as c:
            with pytest.raises(APITimeoutError, match="in total") as info:
                await c.inputs()
    assert info.value.sent is True
    assert 2 <= len(peer.requests) < 100


# ------------------------------------------------------------------------------------- status paths


def by_path(routes: dict[str, httpx2.Response]) -> Handler:
    default = ok({"error": "Execution not found", "message": "No execution found"}, 404)

    def handle(request: httpx2.Request) -> httpx2.Response:
        return routes.get(request.url.path.removeprefix("/crew"), default)

    return handle


async def test_auto_mode_learns_the_other_path_after_a_404_and_never_probes_again() -> None:
    peer = Peer(by_path({"/k-1/status": ok({"state": "RUNNING"}), "/k-2/status": ok({"state": "SUCCESS"})}))
    async with crew(peer) as c:
        assert c.learned_status_path is None
        assert (await c.status("k-1")).state is ExecutionState.RUNNING
        assert c.learned_status_path == "/{kickoff_id}/status"
        assert peer.paths() == ["/status/k-1", "/k-1/status"]
        assert (await c.status("k-2")).state is ExecutionState.COMPLETED
        assert (await c.status("k-9")).state is ExecutionState.NOT_FOUND
    assert peer.paths()[2:] == ["/k-2/status", "/k-9/status"]


async def test_auto_mode_first_path_answering_200_is_learned_with_one_request() -> None:
    peer = Peer(by_path({"/status/k-1": ok({"status": "running"})}))
    async with crew(peer) as c:
        assert (await c.status("k-1")).state is ExecutionState.RUNNING
        assert c.learned_status_path == "/status/{kickoff_id}"
    assert peer.paths() == ["/status/k-1"]


async def test_json_404_on_both_paths_is_not_found_and_learns_nothing() -> None:
    peer = Peer(by_path({}))
    async with crew(peer) as c:
        status = await c.status("k-1")
        assert status.state is ExecutionState.NOT_FOUND
        assert status.raw["message"] == "No execution found"
        assert c.learned_status_path is None
    assert peer.paths() == ["/status/k-1", "/k-1/status"]


async def test_non_json_404_on_both_paths_raises_because_the_crew_url_is_wrong() -> None:
    peer = Peer(text("<html>Not Found</html>", 404))
    async with crew(peer) as c:
        with pytest.raises(NotFoundError):
            await c.status("k-1")
    assert len(peer.requests) == 2


async def test_concurrent_first_status_calls_probe_only_once() -> None:
    gate = anyio.Event()

    async def handle(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/status/k-1"):
            return ok({"error": "Execution not found"}, 404)
        await gate.wait()
        return ok({"state": "RUNNING"})

    peer = Peer(handle)
    with anyio.fail_after(5):
        async with crew(peer) as c, anyio.create_task_group() as tg:
            tg.start_soon(c.status, "k-1")
            tg.start_soon(c.status, "k-1")
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert peer.paths() == ["/status/k-1", "/k-1/status", "/k-1/status"]


@pytest.mark.parametrize("mode", ["/status/{kickoff_id}", "/{kickoff_id}/status"])
async def test_fixed_status_path_never_probes(mode: Any) -> None:
    peer = Peer(by_path({}))
    async with crew(peer, status_path=mode) as c:
        assert c.learned_status_path == mode
        assert (await c.status("k-1")).state is ExecutionState.NOT_FOUND
    assert peer.paths() == [mode.format(kickoff_id="k-1")]


async def test_200_not_found_state_is_not_found() -> None:
    async with crew(Peer(ok({"state": "NOT FOUND", "status": None}))) as c:
        assert (await c.status("k-1")).state is ExecutionState.NOT_FOUND


def test_unknown_status_path_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="status_path"):
        CrewClient(BASE, TOKEN, status_path="/x/{kickoff_id}")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ id validation

BAD_IDS = ["", ".", "..", "a/b", "../inputs", "a%2Fb", "a?b", "a#b", "a b", " a", "-a", "é", "a" * 129, "a\nb"]


@pytest.mark.parametrize("kickoff_id", BAD_IDS)
@pytest.mark.parametrize("call", ["status", "resume"])
async def test_malformed_kickoff_id_is_refused_before_any_request(kickoff_id: str, call: str) -> None:
    peer = Peer(ok({}))
    async with crew(peer) as c:
        call_with_id = (
            c.status(kickoff_id) if call == "status" else c.resume(kickoff_id, task_id="t", feedback="", approve=True)
        )
        with pytest.raises(InvalidInputError, match="kickoff_id"):
            await call_with_id
    assert peer.requests == []


@pytest.mark.parametrize("kickoff_id", ["a", "a" * 128, "3f2a-11ef:run.1_x", "A9", "0"])
async def test_well_formed_kickoff_ids_are_accepted(kickoff_id: str) -> None:
    peer = Peer(ok({"state": "RUNNING"}))
    async with crew(peer, status_path="/status/{kickoff_id}") as c:
        assert (await c.status(kickoff_id)).kickoff_id == kickoff_id
    assert peer.paths() == [f"/status/{kickoff_id}"]


# -------------------------------------------------------------------------------------------- logging


async def test_one_debug_line_per_request_with_method_path_status_and_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="crew_mcp.client")
    async with crew(Peer(ok({}, 503), ok({"inputs": []}))) as c:
        await c.inputs()
    lines = [r.getMessage() for r in caplog.records if r.name == "crew_mcp.client"]
    assert len(lines) == 2
    assert re.fullmatch(r"trip GET /inputs 503 \d+\.\dms", lines[0])
    assert re.fullmatch(r"trip GET /inputs 200 \d+\.\dms", lines[1])


# ----------------------------------------------------------------------------------------- no leaks


def _echo(status: int, content_type: str = "application/json") -> Handler:
    """A hostile or debugging proxy that echoes the request headers into its body."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        auth = request.headers.get("authorization", "")
        if content_type == "application/json":
            body = json.dumps({"error": auth, "message": f"you sent {auth}", "details": {"h": [auth]}})
        else:
            body = f"<html><pre>Authorization: {auth}</pre></html>"
        return httpx2.Response(status, text=body, headers={"content-type": content_type, "x-echo": auth})

    return handle


LEAK_FAULTS: list[Any] = [
    _req_error(httpx2.ConnectError),
    _req_error(httpx2.ConnectTimeout),
    _req_error(httpx2.PoolTimeout),
    _req_error(httpx2.ReadTimeout),
    httpx2.RemoteProtocolError(f"garbled header Bearer {TOKEN}"),
    _echo(200),
    _echo(200, "text/html"),
    *[_echo(s) for s in (400, 401, 403, 404, 409, 422, 429, 500, 502, 503)],
    _echo(502, "text/html"),
]


@pytest.mark.parametrize("call", ["inputs", "kickoff", "status", "resume", "health"])
async def test_token_never_appears_in_any_error_result_or_log_record(
    call: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    results: list[Any] = []
    with anyio.fail_after(5):
        for fault in LEAK_FAULTS:
            async with crew(Peer(fault), max_retries=1) as c:
                try:
                    results.append(await _call(c, call))
                except CrewMCPError as exc:
                    errors.append(exc)
        total = Timeouts(connect=1, read=1, write=1, total=0.05)
        async with crew(Peer(_slow_echo), timeouts=total) as c:
            with pytest.raises(APITimeoutError) as info:
                await _call(c, call)
            errors.append(info.value)
    assert len(errors) >= 10
    for err in errors:
        rendered = [str(err), repr(err), repr(err.args), repr(vars(err)), "".join(traceback.format_exception(err))]
        assert not any(TOKEN in r for r in rendered), f"token leaked by {err!r}"
    assert not any(TOKEN in repr(r) for r in results)
    assert caplog.records, "the client logs each request"
    assert not any(TOKEN in r.getMessage() or TOKEN in repr(r.args) for r in caplog.records)


async def _slow_echo(request: httpx2.Request) -> httpx2.Response:
    await anyio.sleep(1)
    return httpx2.Response(500, text=str(request.headers))


async def test_redaction_of_a_short_placeholder_token_does_not_corrupt_bodies() -> None:
    async with crew(Peer(ok({"inputs": ["topic", "t"]})), token="t") as c:
        assert await c.inputs() == ["topic", "t"]


@pytest.mark.parametrize("escaped", [False, True])
async def test_a_token_echoed_in_a_status_body_is_redacted_even_behind_json_escapes(escaped: bool) -> None:
    echoed = "".join(f"\\u{ord(c):04x}" for c in TOKEN) if escaped else TOKEN
    raw = '{"state": "RUNNING", "status": "auth ' + echoed + '", "source": "memory"}'

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=raw.encode(), headers={"content-type": "application/json"})

    async with CrewClient("https://crew.test", TOKEN, transport=httpx2.MockTransport(handler)) as crew:
        status = await crew.status("k-1")
    assert TOKEN not in json.dumps(status.raw)
    assert status.message is not None and "***" in status.message


@pytest.mark.parametrize("fragment", [TOKEN[:20], TOKEN[-12:], TOKEN[4:12]], ids=["prefix", "suffix", "middle-8"])
async def test_a_fragment_of_8_or_more_token_characters_echoed_by_the_crew_is_redacted(fragment: str) -> None:
    body = {"state": "RUNNING", "status": f"token {fragment}... was used", "progress": {"current": fragment}}
    async with crew(Peer(ok(body))) as c:
        status = await c.status("k-1")
    shown = json.dumps(status.model_dump(mode="json"))
    assert fragment not in shown
    assert status.message == "token ***... was used"


async def test_seven_token_characters_are_ordinary_text() -> None:
    async with crew(Peer(ok({"state": "RUNNING", "status": f"see {TOKEN[:7]}"}))) as c:
        status = await c.status("k-1")
    assert status.message == f"see {TOKEN[:7]}"


async def test_credentials_in_a_url_the_crew_echoes_are_redacted() -> None:
    body = {"state": "FAILED", "error": "could not fetch https://alice:hunter2hunter2@files.example/x"}
    async with crew(Peer(ok(body))) as c:
        status = await c.status("k-1")
    assert status.error == "could not fetch https://***@files.example/x"


async def test_credentials_in_the_crew_url_never_reach_a_log_record_or_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from crew_mcp.redact import Redactor, install_log_redaction

    caplog.set_level(logging.DEBUG)
    password = "pw-0123456789abcdef"
    peer = Peer(ok({"error": f"bad user alice:{password}"}, 500))
    remove = install_log_redaction(Redactor(password))
    try:
        async with CrewClient(
            f"https://alice:{password}@crew.test/c", None, transport=httpx2.MockTransport(peer), max_retries=0
        ) as c:
            with pytest.raises(InternalServerError) as info:
                await c.inputs()
    finally:
        remove()
    assert peer.requests[0].headers["authorization"].startswith("Basic ")  # the credentials still authenticate
    logged = [r.getMessage() for r in caplog.records]
    assert any("crew.test" in m for m in logged), logged  # httpx2 logged the request URL
    assert not any(password in m or password[:10] in m for m in logged)
    assert password not in str(info.value) and "pw-012345" not in str(info.value)


@pytest.mark.parametrize("kickoff_id", ["../../inputs", "", "a/b", "x" * 200, ".."])
async def test_an_unusable_kickoff_id_from_the_crew_is_an_unreadable_answer_never_a_run(kickoff_id: str) -> None:
    async with crew(Peer(ok({"kickoff_id": kickoff_id}))) as c:
        with pytest.raises(APIResponseValidationError, match=re.escape("no usable kickoff_id (request id r-1)")):
            await c.kickoff({}, request_id="r-1")


@pytest.mark.parametrize("body", [{"unexpected": "shape"}, {"kickoff_id": "k-1"}, {"state": 3, "status": None}])
async def test_a_200_status_without_any_state_is_not_understood_rather_than_still_working(body: Any) -> None:
    async with crew(Peer(ok(body))) as c:
        with pytest.raises(APIResponseValidationError, match="is not a run status"):
            await c.status("k-1")


async def test_an_unknown_state_word_is_kept_as_unknown() -> None:
    async with crew(Peer(ok({"state": "ARCHIVED"}))) as c:
        status = await c.status("k-1")
    assert (status.state, status.raw_state) == (ExecutionState.UNKNOWN, "ARCHIVED")


async def test_a_failure_says_how_many_attempts_there_were_and_whether_the_request_left() -> None:
    from crew_mcp.errors import UpstreamError

    async with crew(Peer(ok({}, 503)), max_retries=2) as c:
        with pytest.raises(InternalServerError) as many:
            await c.inputs()
    async with crew(Peer(_req_error(httpx2.ReadTimeout)), max_retries=0) as c:
        with pytest.raises(APITimeoutError) as once:
            await c.kickoff({})
    async with crew(Peer(_req_error(httpx2.ConnectError)), max_retries=1) as c:
        with pytest.raises(APIConnectionError) as never:
            await c.kickoff({})
    said = [str(UpstreamError.from_api(x.value, crew="c", action="do it")) for x in (many, once, never)]
    assert (many.value.attempts, once.value.attempts, never.value.attempts) == (3, 1, 2)
    assert said[0] == "crew 'c' failed to do it with HTTP 503 (3 attempts)."
    assert said[1] == "crew 'c' did not answer in time when asked to do it."
    assert said[2].startswith("crew 'c' could not be reached to do it (2 attempts): the connection was never made")
    assert not any("after retries" in s for s in said)


def test_webhook_url_secrets_are_masked_in_both_url_forms_and_the_request_id_is_kept() -> None:
    from crew_mcp.redact import Redactor, redact_urls

    request_id = "0123456789abcdef" * 2
    new = f"https://crew-mcp.example/webhooks/{request_id}/s3cr3t-Tok_en/task"
    old = "https://crew-mcp.example/webhooks/s3cr3t-Tok_en/crew"
    assert redact_urls(new) == f"https://crew-mcp.example/webhooks/{request_id}/***/task"
    assert redact_urls(old) == "https://crew-mcp.example/webhooks/***/crew"
    echoed = {"taskWebhookUrl": new, "note": f"called {old}"}  # a crew echoing its kickoff body back
    assert "s3cr3t" not in str(Redactor().redact(echoed))
