"""Operator logs: JSON lines that parse one by one, carry the request's ids, and never a secret.

In-process, the handler ``crew_mcp.logs`` builds is attached to the root logger for one test; end to end,
``crew-mcp serve --http`` runs as a real process with ``CREW_MCP_LOG_FORMAT=json`` at DEBUG, against the
simulator served on 127.0.0.1, and its whole stderr is parsed and scanned.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from hitl_support import OWNER, service_opener
from mcp import Client
from obs_support import spans
from process_support import announced_url, reap, tail
from sim_support import kickoff, sim_http
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from crew_mcp.logs import ID_FIELDS, SecretScrubber, bound, build_handler
from crew_mcp.redact import RedactingFilter, Redactor, install_log_redaction
from crew_mcp.server import build_server
from crew_mcp.settings import Settings
from crew_mcp.simulator import Simulator, serve_simulator

ROOT = Path(__file__).resolve().parents[1]
CREW_TOKEN = "crew-token-5f0c1e9a7b3d"
METRICS_TOKEN = "metrics-token-8e2d4c6a0b1f"


@contextmanager
def captured(fmt: str = "json", *, secrets: tuple[str, ...] = ()) -> Iterator[io.StringIO]:
    """Everything logged at DEBUG and above during the block, through crew-mcp's handler."""
    out = io.StringIO()
    handler = build_handler("json" if fmt == "json" else "text", secrets=secrets, stream=out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    """Every line as JSON (a line that does not parse fails the test)."""
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_the_scrubber_masks_known_secrets_and_every_secret_shape() -> None:
    scrub = SecretScrubber([CREW_TOKEN, "short"]).scrub
    cases = {
        f"crew answered {CREW_TOKEN!r}": "crew answered '***'",
        "headers {'authorization': 'Bearer abc.def-ghi'}": "headers {'authorization': '***'}",
        "Authorization: Basic dXNlcjpwYXNz": "Authorization: ***",
        "sent with Bearer eyJhbGciOi.x.y to the crew": "sent with Bearer *** to the crew",
        "POST http://h:8000/webhooks/Zq9-xY_secret123/task failed": "POST http://h:8000/webhooks/***/task failed",
        f"POST http://h:8000/webhooks/{'ab12' * 8}/Zq9-xY_secret123/task failed": (
            f"POST http://h:8000/webhooks/{'ab12' * 8}/***/task failed"  # the request id stays, the secret goes
        ),
        "ledger redis://:hunter2hunter2@redis:6379/0 down": "ledger redis://***@redis:6379/0 down",
        "ledger redis://ops:pw-pw-pw-pw@redis:6379/0 down": "ledger redis://***@redis:6379/0 down",
        "GET /cb?state=1&access_token=abc123&x=2": "GET /cb?state=1&access_token=***&x=2",
        "a short word stays, and so does ordinary text: http://host/path": "a short word stays, and so does "
        "ordinary text: http://host/path",
    }
    for raw, masked in cases.items():
        assert scrub(raw) == masked, raw


def test_a_record_is_scrubbed_in_its_arguments_and_its_traceback() -> None:
    log = logging.getLogger("crew_mcp.test_logs")
    with captured(secrets=(CREW_TOKEN,)) as out:
        try:
            raise RuntimeError(f"upstream echoed Authorization: Bearer {CREW_TOKEN}")
        except RuntimeError:
            log.exception("call to %s failed", f"http://u:{CREW_TOKEN}@crew/kickoff")
    (entry,) = lines(out)
    assert entry["level"] == "ERROR" and entry["logger"] == "crew_mcp.test_logs"
    assert entry["message"] == "call to http://***@crew/kickoff failed"
    assert "RuntimeError" in entry["exception"] and CREW_TOKEN not in json.dumps(entry)


def test_service_log_redaction_skips_a_handler_that_already_masks_the_same_secrets() -> None:
    covered, out = build_handler(secrets=(CREW_TOKEN, METRICS_TOKEN), stream=io.StringIO()), io.StringIO()
    partial = build_handler("text", secrets=(METRICS_TOKEN,), stream=out)
    root = logging.getLogger()
    for handler in (covered, partial):
        root.addHandler(handler)
    try:
        remove = install_log_redaction(Redactor(CREW_TOKEN))
        assert not any(type(f) is RedactingFilter for f in covered.filters)  # one pass per record is enough
        assert any(type(f) is RedactingFilter for f in partial.filters)  # its own would miss CREW_TOKEN
        partial.handle(logging.makeLogRecord({"name": "crew_mcp.x", "levelname": "WARNING", "msg": CREW_TOKEN}))
        remove()
    finally:
        for handler in (covered, partial):
            root.removeHandler(handler)
    assert out.getvalue() == "WARNING crew_mcp.x: ***\n"
    assert not any(type(f) is RedactingFilter for f in partial.filters)  # removed again


def test_text_lines_keep_their_shape_and_add_the_ids_they_have() -> None:
    log = logging.getLogger("crew_mcp.test_logs")
    with captured("text") as out:
        log.info("plain")
        with bound(mcp_request_id="7", tool="get_status", kickoff_request_id=None):
            log.info("inside")
    assert out.getvalue().splitlines() == [
        "INFO crew_mcp.test_logs: plain",
        "INFO crew_mcp.test_logs: inside [mcp_request_id=7 tool=get_status]",
    ]


def test_settings_list_every_secret_the_configuration_holds() -> None:
    key = "k" * 32
    settings = Settings.model_validate(
        {
            "crews": [{"name": "a", "url": "https://a.example", "token": CREW_TOKEN}, {"name": "b", "url": "http://b"}],
            "metrics_token": METRICS_TOKEN,
            "ledger_url": "redis://:ledger-pass-123@redis:6379/0",
            "fleet_url": "redis://:fleet-pass-456@redis:6379/1",
            "auth": {"client_secret": "oauth-client-secret-1"},
            "notify_webhook_url": "https://hooks.example/n",
            "notify_webhook_secret": "notice-signing-secret",
            "notify_slack_url": "https://hooks.slack.com/services/T0/B0/xyz",
            "request_state_keys": [key],
        }
    )
    assert sorted(settings.secrets()) == sorted(
        [
            CREW_TOKEN,
            METRICS_TOKEN,
            "ledger-pass-123",
            "fleet-pass-456",
            "oauth-client-secret-1",
            "notice-signing-secret",
            "https://hooks.slack.com/services/T0/B0/xyz",
            key,
        ]
    )


async def test_a_tool_calls_log_lines_carry_its_request_id_tool_kickoff_request_id_and_trace_id() -> None:
    exporter = spans()
    sim = Simulator(clock="manual")
    async with sim, Client(build_server(Settings(owner=OWNER), opener=service_opener(sim))) as client:
        with captured() as out:
            result = await client.call_tool("kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
        assert not result.is_error
    entries = lines(out)
    (post,) = [e for e in entries if e["logger"] == "crew_mcp.client" and "POST /kickoff" in e["message"]]
    (started,) = [e for e in entries if e["logger"] == "crew_mcp.kickoff"]
    (call,) = [s for s in exporter.get_finished_spans() if s.name == "tools/call kickoff_crew"]
    assert call.context is not None
    request_id = started["message"].rsplit("(request ", 1)[1].rstrip(")")
    assert post["kickoff_request_id"] == request_id  # the id AMP echoes back in meta
    for entry in (post, started):
        assert entry["mcp_method"] == "tools/call" and entry["tool"] == "kickoff_crew"
        assert entry["mcp_request_id"].isdigit()
        assert entry["trace_id"] == f"{call.context.trace_id:032x}"
    assert "kickoff_request_id" not in started  # bound only around the request itself
    assert set(post) <= {"time", "level", "logger", "message", *ID_FIELDS}


async def test_the_simulators_webhook_failures_are_logged_without_the_webhook_secret() -> None:
    secret = "Zq9xY-webhook-secret-42"

    async def broken(_: Any) -> JSONResponse:
        return JSONResponse({"error": "down"}, status_code=500)

    receiver = Starlette(routes=[Route("/webhooks/{secret}/{kind}", broken, methods=["POST"])])
    async with (
        Simulator(clock="manual", webhook_transport=httpx2.ASGITransport(app=receiver)) as sim,
        sim_http(sim) as http,
    ):
        base = f"http://crew-mcp.test/webhooks/{secret}"
        await kickoff(http, "research", {"topic": "tides"}, stepWebhookUrl=f"{base}/step")
        with captured() as out:
            await sim.advance(5)
    entries = lines(out)
    failures = [e for e in entries if "answered HTTP 500" in e["message"]]
    assert failures and sim.webhook_log and all(d.status_code == 500 for d in sim.webhook_log)
    assert all("/webhooks/***/step" in e["message"] for e in failures)
    assert secret not in out.getvalue()


@pytest.mark.slow
async def test_a_served_process_writes_json_lines_with_ids_and_no_secret(tmp_path: Path) -> None:
    sim = Simulator(clock="manual", token=CREW_TOKEN)
    async with serve_simulator(sim) as sim_root:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp_path),
            "CREW_MCP_CREW_URL": f"{sim_root}/research",
            "CREW_MCP_CREW_NAME": "research",
            "CREW_MCP_CREW_TOKEN": CREW_TOKEN,
            "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db",
            "CREW_MCP_LOG_FORMAT": "json",
            "CREW_MCP_LOG_LEVEL": "DEBUG",
            "CREW_MCP_METRICS_TOKEN": METRICS_TOKEN,
            "OTEL_TRACES_EXPORTER": "none",  # spans and trace ids, nothing exported
        }
        argv = [sys.executable, "-m", "crew_mcp", "serve", "--http", "--host", "127.0.0.1", "--port", "0"]
        stderr = tmp_path / "stderr.txt"
        with stderr.open("wb") as err:
            process = await anyio.open_process(argv, env=env, stdin=subprocess.DEVNULL, stderr=err)
        try:
            with anyio.fail_after(30):
                url = await announced_url(process, stderr)
            root = url.removesuffix("/mcp")
            async with Client(url) as client, httpx2.AsyncClient(base_url=root) as http:
                with anyio.fail_after(20):
                    run = await client.call_tool("kickoff_crew", {"inputs": {"topic": "tides"}})
                    assert not run.is_error, run.content
                    kickoff_id = (run.structured_content or {})["kickoff_id"]
                    # A crew (or a proxy) echoing the token in an error: not retried, logged, never shown.
                    sim.faults("research").fail_next(1, status=400, body={"message": f"bad Bearer {CREW_TOKEN}"})
                    failed = await client.call_tool("get_status", {"kickoff_id": kickoff_id})
                    assert failed.is_error
                    assert (await http.get("/metrics")).status_code == 401
                    assert (await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).is_success
        finally:
            await reap(process, stop=signal.SIGINT, grace=15)  # a graceful stop: uvicorn logs its shutdown too

    text = stderr.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
    assert CREW_TOKEN not in text and METRICS_TOKEN not in text, tail(stderr)
    loggers = {e["logger"] for e in entries}
    assert {"crew_mcp.client", "crew_mcp.kickoff", "uvicorn.error"} <= loggers, loggers
    in_calls = [e for e in entries if e.get("tool") == "kickoff_crew"]
    assert in_calls and all(e.get("mcp_request_id") and len(e.get("trace_id", "")) == 32 for e in in_calls)
    assert any(e.get("kickoff_request_id") for e in in_calls)
    assert any(e.get("tool") == "get_status" and e["level"] in ("WARNING", "INFO") for e in entries)
