"""Reviewer notices: a real receiver on 127.0.0.1 gets one signed notice per pause, verified as a receiver would.

The receiver is a Starlette app under uvicorn on port 0 that records every request (headers and raw body) and
answers from a script (e.g. 503 then 200), optionally holding a request until the test lets it go. Retries run
under ``stamina.set_testing`` (no backoff sleeps); the service's own time is a :class:`ManualClock`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import sim_support
import stamina
from hitl_support import OWNER, documented, in_memory, until
from slack_sdk.models.blocks import Block
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crew_mcp.assembly import open_service
from crew_mcp.clock import ManualClock
from crew_mcp.errors import ConfigError
from crew_mcp.identity import Caller
from crew_mcp.ledger import RunRecord, open_ledger
from crew_mcp.models import PendingHumanInput
from crew_mcp.notices import ReviewNotice, slack_message, verify
from crew_mcp.service import CrewService
from crew_mcp.settings import Settings, load_settings
from crew_mcp.simulator import Simulator, builtin_crews, serve_app

SECRET = "notice-secret-0123456789abcdef"
PUBLIC = "https://crew.example.com"
SLACK_TOKEN_PATH = "/services/T000/B000/slack-url-credential-xyz"
CALLER = Caller(OWNER, "conv-1", by="human", via="cli")


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every POST; answers with ``script`` (popped per request; 200 when empty)."""

    script: list[int] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    hold: anyio.Event | None = None
    accepted: list[Seen] = field(default_factory=list)

    async def handle(self, request: Request) -> JSONResponse:
        seen = Seen(request.url.path, {k.lower(): v for k, v in request.headers.items()}, await request.body())
        self.requests.append(seen)
        if self.hold is not None:
            await self.hold.wait()
        status = self.script.pop(0) if self.script else 200
        if status < 300:
            self.accepted.append(seen)
        return JSONResponse({"ok": status < 300}, status_code=status)

    def at(self, path: str) -> list[Seen]:
        return [s for s in self.accepted if s.path == path]


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rx = Receiver()
    app = Starlette(routes=[Route("/{path:path}", rx.handle, methods=["POST"])])
    async with serve_app(app) as root:
        yield rx, root


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):  # the configured attempts, without the sleeps
        yield


def settings_for(root: str, **extra: Any) -> Settings:
    return Settings(
        owner=OWNER,
        public_url=PUBLIC,
        notify_webhook_url=f"{root}/hook",
        notify_webhook_secret=SECRET,
        **extra,
    )


def receiver_accepts(seen: Seen, *, now: float) -> bool:
    """A receiver's own check, written from the docs: HMAC-SHA256 over "{timestamp}.{raw body}", 5 minutes."""
    timestamp = seen.headers["x-crew-mcp-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + seen.body, hashlib.sha256).hexdigest()
    fresh = abs(now - int(timestamp)) <= 300
    return fresh and hmac.compare_digest(expected, seen.headers["x-crew-mcp-signature"])


# ------------------------------------------------------------------------------------ through MCP tools


async def test_one_signed_notice_per_pause_and_a_new_one_when_a_rejected_task_pauses_again() -> None:
    clock = ManualClock()
    async with receiver() as (rx, root), in_memory("auto", settings_for(root), clock=clock) as env:
        kid = await env.kickoff("research")
        await env.sim.advance(3600)
        for _ in range(3):  # the pause is seen again and again: still one notice
            assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "waiting_for_human"
        await env.call("list_pending_approvals")
        await until(lambda: len(rx.accepted) == 1)

        await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": False, "feedback": "Shorter."})
        await env.sim.advance(3600)
        await env.call("get_status", {"kickoff_id": kid})
        await until(lambda: len(rx.accepted) == 2)
        await env.call("get_status", {"kickoff_id": kid})
        # The service has closed (its notifier drained): nothing else is on its way.

    first, second = rx.accepted
    assert len(rx.requests) == 2
    assert [s.json()["id"] for s in rx.accepted] == [f"{kid}:write_task:1", f"{kid}:write_task:2"]
    for seen in rx.accepted:
        assert receiver_accepts(seen, now=clock.now().timestamp())
        assert not receiver_accepts(seen, now=clock.now().timestamp() + 301)  # a replay later is refused
        assert seen.headers["content-type"] == "application/json"
        assert seen.headers["x-crew-mcp-notice-id"] == seen.json()["id"]
    body = first.json()
    assert body["event"] == "review_requested"
    assert (body["kickoff_id"], body["crew"], body["task_id"], body["attempt"]) == (kid, "research", "write_task", 1)
    assert body["output_excerpt"] == "Report on tides." and body["output_truncated"] is False
    assert body["inbox_url"] == f"{PUBLIC}/approvals"
    assert body["status_uri"] == f"crew://executions/{kid}" and body["owner"] == OWNER
    assert datetime.fromisoformat(body["waiting_since"]) <= clock.now()
    assert second.json()["attempt"] == 2 and "Shorter." in second.json()["output_excerpt"]


async def test_a_run_started_outside_and_found_waiting_when_adopted_gets_its_notice() -> None:
    async with receiver() as (rx, root), in_memory("auto", settings_for(root), clock=ManualClock()) as env:
        async with sim_support.sim_http(env.sim) as dashboard:
            kid = await sim_support.kickoff(dashboard, "research", {"topic": "tides"})  # as the AMP dashboard would
        await env.sim.advance(3600)
        run = await env.call("get_status", {"kickoff_id": kid})  # the first crew-mcp hears of it: adopted, waiting
        assert (run["started_outside"], run["state"]) == (True, "waiting_for_human")
        await until(lambda: len(rx.accepted) == 1)
    (seen,) = rx.accepted
    assert (seen.json()["kickoff_id"], seen.json()["task_id"]) == (kid, "write_task")
    assert receiver_accepts(seen, now=int(seen.headers["x-crew-mcp-timestamp"]))


async def test_a_signature_does_not_survive_a_changed_body_or_a_wrong_secret() -> None:
    async with receiver() as (rx, root), in_memory("legacy", settings_for(root), clock=ManualClock()) as env:
        kid = await env.kickoff("research")
        await env.sim.advance(3600)
        await env.call("get_status", {"kickoff_id": kid})
        await until(lambda: len(rx.accepted) == 1)
    (seen,) = rx.accepted
    ts, sig = seen.headers["x-crew-mcp-timestamp"], seen.headers["x-crew-mcp-signature"]
    now = int(ts)
    assert verify(SECRET.encode(), timestamp=ts, body=seen.body, signature=sig, now=now)
    tampered = seen.body.replace(b"write_task", b"other_task")
    assert not verify(SECRET.encode(), timestamp=ts, body=tampered, signature=sig, now=now)
    assert not verify(b"another-secret-0123456789", timestamp=ts, body=seen.body, signature=sig, now=now)
    assert not verify(SECRET.encode(), timestamp=str(now + 1), body=seen.body, signature=sig, now=now)


def docs_receiver() -> Callable[..., dict[str, Any]]:
    """``verified_notice`` from docs/notices.md, exactly as printed there."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "notices.md").read_text()
    start = text.index("<!-- receiver-example")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "docs/notices.md", "exec"), namespace)
    verified: Callable[..., dict[str, Any]] = namespace["verified_notice"]
    return verified


async def test_the_docs_receiver_example_accepts_real_notices_and_refuses_forgeries() -> None:
    verified_notice = docs_receiver()
    clock = ManualClock()
    async with receiver() as (rx, root), in_memory("auto", settings_for(root), clock=clock) as env:
        kid = await env.kickoff("research")
        await env.sim.advance(3600)
        await env.call("get_status", {"kickoff_id": kid})
        await until(lambda: len(rx.accepted) == 1)
    (seen,) = rx.accepted
    now = clock.now().timestamp()
    assert verified_notice(SECRET.encode(), seen.headers, seen.body, now)["kickoff_id"] == kid
    assert verified_notice(SECRET.encode(), seen.headers, seen.body)["id"] == f"{kid}:write_task:1"  # wall clock
    forgeries = [
        (b"not-the-secret-0123456789", seen.headers, seen.body, now),
        (SECRET.encode(), seen.headers, seen.body.replace(b"research", b"hijack"), now),
        (SECRET.encode(), {**seen.headers, "x-crew-mcp-signature": ""}, seen.body, now),
        (SECRET.encode(), seen.headers, seen.body, now + 301),
    ]
    for secret, headers, body, when in forgeries:
        with pytest.raises(ValueError, match=r"bad signature|stale"):
            verified_notice(secret, headers, body, when)


async def test_a_5xx_is_retried_with_the_same_notice_each_attempt_signed_afresh() -> None:
    clock = ManualClock()
    async with receiver() as (rx, root):
        rx.script = [503, 500, 502]
        async with in_memory("auto", settings_for(root), clock=clock) as env:
            kid = await env.kickoff("research")
            await env.sim.advance(3600)
            await env.call("get_status", {"kickoff_id": kid})
            await until(lambda: len(rx.accepted) == 1)
    assert len(rx.requests) == 4
    assert {s.json()["id"] for s in rx.requests} == {f"{kid}:write_task:1"}
    assert all(receiver_accepts(s, now=clock.now().timestamp()) for s in rx.requests)


async def test_a_receiver_that_keeps_failing_is_given_up_on_and_a_4xx_is_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with receiver() as (rx, root):
        rx.script = [500] * 20
        async with in_memory("auto", settings_for(root), clock=ManualClock()) as env:
            kid = await env.kickoff("research")
            await env.sim.advance(3600)
            assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "waiting_for_human"
        assert len(rx.requests) == 6 and rx.accepted == []  # bounded: the first attempt and five retries

        rx.requests.clear()
        rx.script = [400, 200]
        async with in_memory("auto", settings_for(root), clock=ManualClock()) as env:
            kid = await env.kickoff("research")
            await env.sim.advance(3600)
            await env.call("get_status", {"kickoff_id": kid})
        assert len(rx.requests) == 1 and rx.accepted == []
    assert "failed: HTTP 500" in caplog.text and "failed: HTTP 400" in caplog.text


async def test_no_notice_goes_out_for_a_run_decided_while_the_receiver_was_failing() -> None:
    async with receiver() as (rx, root):
        rx.hold, rx.script = anyio.Event(), [503]
        async with in_memory("auto", settings_for(root), clock=ManualClock()) as env:
            kid = await env.kickoff("research")
            await env.sim.advance(3600)
            await env.call("get_status", {"kickoff_id": kid})
            await until(lambda: len(rx.requests) == 1)  # the first attempt is in the receiver's hands
            await env.call("resume_with_feedback", {"kickoff_id": kid, "approve": True})
            rx.hold.set()  # ... which now answers 503; the retry finds the run decided
    assert len(rx.requests) == 1 and rx.accepted == []


async def test_a_pause_announced_by_webhook_gets_one_notice_however_often_the_webhook_comes() -> None:
    research_doc = documented(next(c for c in builtin_crews() if c.name == "research"))
    async with (
        receiver() as (rx, root),
        in_memory("auto", settings_for(root), crews=[research_doc], webhooks=True) as env,
    ):
        kid = await env.kickoff(research_doc.name)
        await env.sim.advance(3600)  # the pause arrives only as a task webhook (documented shape)
        record = await env.service.ledger.get(kid, owner=None)
        assert record is not None and record.pending is not None
        again = {"kickoff_id": kid, "task_id": "write_task", "output": "Report on tides."}
        await env.service.runs.webhook(record, "human", again)  # AMP delivering it again
        await until(lambda: len(rx.accepted) == 1)
    assert len(rx.requests) == 1 and rx.accepted[0].json()["task_id"] == "write_task"


# -------------------------------------------------------------------------- restarts and several replicas


@asynccontextmanager
async def service(sim: Simulator, settings: Settings, url: str, clock: ManualClock) -> AsyncIterator[CrewService]:
    async with open_service(settings, simulator=sim, ledger=open_ledger(url), clock=clock, poll_initial=0.01) as svc:
        yield svc


async def test_no_notice_is_sent_again_after_a_restart_on_the_sqlite_ledger(tmp_path: Path) -> None:
    url, clock = f"sqlite:///{tmp_path}/ledger.db", ManualClock()
    async with receiver() as (rx, root), Simulator(clock="manual") as sim:
        settings = settings_for(root)
        async with service(sim, settings, url, clock) as first:
            kid = (await first.kickoff("research", {"topic": "tides"}, CALLER)).kickoff_id
            assert kid is not None
            await sim.advance(3600)
            assert (await first.status(kid, CALLER)).state == "waiting_for_human"
        assert len(rx.accepted) == 1  # the first service drained its notice on the way out

        async with service(sim, settings, url, clock) as restarted:
            record = await restarted.ledger.get(kid, owner=None)
            assert record is not None
            payload = {"kickoff_id": kid, "task_id": "write_task", "output": "Report on tides."}
            await restarted.runs.webhook(record, "human", payload)  # the same pause announced again after restart
            await restarted.status(kid, CALLER)
    assert len(rx.requests) == 1
    stored = await _stored(url, kid)
    assert stored.notified == [f"{kid}:write_task:1"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_two_replicas_that_both_learn_a_pause_send_one_notice(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db" if backend == "sqlite" else request.getfixturevalue("ledger_redis_url")
    clock = ManualClock()
    async with receiver() as (rx, root), Simulator(clock="manual") as sim:
        settings = settings_for(root)
        async with service(sim, settings, url, clock) as one, service(sim, settings, url, clock) as two:
            kid = (await one.kickoff("research", {"topic": "tides"}, CALLER)).kickoff_id
            assert kid is not None
            stale = await two.runs.find(kid, CALLER)  # replica two holds the run as running ...
            await sim.advance(3600)
            await one.status(kid, CALLER)  # ... replica one learns the pause ...
            seen = await two.runs.refresh(stale)  # ... and so does replica two, from the record it held
            assert seen.record.pending is not None
    assert len(rx.requests) == 1


async def _stored(url: str, kickoff_id: str) -> RunRecord:
    ledger = open_ledger(url)
    try:
        record = await ledger.get(kickoff_id, owner=None)
    finally:
        await ledger.aclose()
    assert record is not None
    return record


# ------------------------------------------------------------------------------------------------ Slack


async def test_slack_gets_a_block_kit_message_with_the_excerpt_and_a_link_to_the_inbox() -> None:
    async with receiver() as (rx, root):
        settings = Settings(owner=OWNER, public_url=PUBLIC, notify_slack_url=f"{root}{SLACK_TOKEN_PATH}")
        async with in_memory("auto", settings) as env:
            kid = await env.kickoff("research")
            await env.sim.advance(3600)
            await env.call("get_status", {"kickoff_id": kid})
            await until(lambda: len(rx.accepted) == 1)
    (seen,) = rx.accepted
    assert seen.path == SLACK_TOKEN_PATH and "x-crew-mcp-signature" not in seen.headers
    message = seen.json()
    assert kid in message["text"] and "write_task" in message["text"]
    blocks = _valid_blocks(message)
    assert blocks[0]["type"] == "header" and "research" in blocks[0]["text"]["text"]
    assert any(b["type"] == "section" and b["text"]["text"] == "```Report on tides.```" for b in blocks if "text" in b)
    (actions,) = [b for b in blocks if b["type"] == "actions"]
    assert actions["elements"][0]["url"] == f"{PUBLIC}/approvals"


def test_a_long_output_with_markup_fits_slack_limits_and_stays_literal() -> None:
    output = "<script>&amp;``` fenced ```</script>\n" + "x" * 5000
    record = _paused_record(output)
    notice = ReviewNotice.of(record, public_url=None, excerpt_chars=2800)
    assert notice is not None and notice.output_truncated and len(notice.output_excerpt) == 2800
    message = slack_message(notice)
    blocks = _valid_blocks(message)
    code = next(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)
    assert code.startswith("```&lt;script&gt;&amp;amp;`\u200b`` fenced") and code.endswith("```")
    assert code.count("```") == 2 and len(code) <= 3000
    assert not [b for b in blocks if b["type"] == "actions"]  # no public URL: no inbox link to offer


def test_an_excerpt_of_zero_characters_sends_no_output() -> None:
    notice = ReviewNotice.of(_paused_record("secret plans"), public_url=PUBLIC, excerpt_chars=0)
    assert notice is not None and notice.output_excerpt == "" and notice.output_truncated
    assert "secret plans" not in json.dumps(slack_message(notice))


def _paused_record(output: str) -> RunRecord:
    return RunRecord(
        request_id="r-1",
        kickoff_id="k-1",
        crew="research",
        conversation_id="c",
        owner=OWNER,
        state="waiting_for_human",
        pending=PendingHumanInput(
            task_id="write_task", output=output, since=datetime.fromisoformat("2026-01-05T09:00Z")
        ),
    )


def _valid_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message's blocks, each parsed and length-checked by Slack's own SDK."""
    blocks: list[dict[str, Any]] = message["blocks"]
    for raw in blocks:
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()
        assert block.to_dict() == raw
    return blocks


# ------------------------------------------------------------------------------------ configuration


def test_a_webhook_url_without_a_long_enough_secret_is_refused_at_start() -> None:
    env = {"CREW_MCP_NOTIFY_WEBHOOK_URL": "https://hooks.example.com/x", "CREW_MCP_NOTIFY_WEBHOOK_SECRET": "short"}
    with pytest.raises(ConfigError, match="CREW_MCP_NOTIFY_WEBHOOK_SECRET, at least 16") as info:
        load_settings(env)
    assert "short" not in str(info.value)
    loaded = load_settings({**env, "CREW_MCP_NOTIFY_WEBHOOK_SECRET": SECRET, "CREW_MCP_NOTIFY_EXCERPT_CHARS": "80"})
    assert loaded.notify_webhook_url == "https://hooks.example.com/x" and loaded.notify_excerpt_chars == 80
    assert SECRET not in repr(loaded)


def test_a_slack_url_must_be_https_and_is_never_repeated_in_the_error() -> None:
    with pytest.raises(ConfigError, match="notify_slack_url") as info:
        load_settings({"CREW_MCP_NOTIFY_SLACK_URL": "http://hooks.slack.example/services/T/B/credential"})
    assert "credential" not in str(info.value)


async def test_the_webhook_notice_url_is_named_not_shown_in_the_request_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The webhook URL is not one of the settings' secrets, yet some receivers take a credential in its path."""
    caplog.set_level(logging.DEBUG)
    async with receiver() as (rx, root):
        settings = settings_for(root).model_copy(update={"notify_webhook_url": f"{root}/hook/path-credential-xyz"})
        async with in_memory("auto", settings) as env:
            kid = await env.kickoff("research")
            await env.sim.advance(3600)
            await env.call("get_status", {"kickoff_id": kid})
            await until(lambda: len(rx.accepted) == 1)
    assert "<the webhook notice URL>" in caplog.text  # httpx2 logged the request
    assert "path-credential" not in caplog.text


async def test_the_slack_url_never_reaches_the_logs_when_slack_fails(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with receiver() as (rx, root):
        rx.script = [500] * 6
        settings = Settings(owner=OWNER, notify_slack_url=f"{root}{SLACK_TOKEN_PATH}")
        async with in_memory("auto", settings) as env:
            kid = await env.kickoff("research")
            await env.sim.advance(3600)
            await env.call("get_status", {"kickoff_id": kid})
    assert len(rx.requests) == 6
    assert "to the slack target failed: HTTP 500" in caplog.text
    assert "slack-url-credential" not in caplog.text
