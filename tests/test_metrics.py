"""``/metrics``: a scripted flow over real HTTP, then the exposition parsed with prometheus-client's parser.

crew-mcp's HTTP app runs under uvicorn on 127.0.0.1 (port 0); the simulator (manual clock) serves the crews
in-process and delivers its webhooks to the app over loopback. Expected counts come from the script itself
and, for polls and webhooks, from what the simulator counted on its side.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from hitl_support import OWNER, eventually, instant_review_crew, loopback_socket, serve_on, service_opener
from mcp import Client, MCPError
from obs_support import samples, total, value
from pydantic import SecretStr

from crew_mcp.app import build_app
from crew_mcp.auth.config import ApiKeyConfig
from crew_mcp.auth.keys import KeyVerifier, hash_key
from crew_mcp.ledger.memory import MemoryLedger
from crew_mcp.metrics import MAX_TOOL_LABELS, MeteredLedger, PrometheusTelemetry, backend_of
from crew_mcp.ops import metrics_endpoint
from crew_mcp.runtime import Runtime
from crew_mcp.service import CrewService
from crew_mcp.settings import Settings
from crew_mcp.simulator import Simulator, builtin_crews
from crew_mcp.telemetry import Telemetry, endpoint_of, status_class
from crew_mcp.webhooks import MAX_BODY_BYTES

Table = dict[str, dict[tuple[tuple[str, str], ...], float]]


@dataclass
class Served:
    url: str
    sim: Simulator
    client: Client
    http: httpx2.AsyncClient
    services: list[CrewService]

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        with anyio.fail_after(15):
            result = await self.client.call_tool(tool, args)
        assert not result.is_error, result.content
        assert isinstance(result.structured_content, dict)
        return result.structured_content

    async def scrape(self, **headers: str) -> Table:
        response = await self.http.get("/metrics", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return samples(response.text)


@asynccontextmanager
async def served(settings: Settings | None = None, **extra: Any) -> AsyncIterator[Served]:
    """crew-mcp's app under uvicorn, webhooks on (its own URL is the public URL), the simulator in-process."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    root = f"http://127.0.0.1:{port}"
    settings = settings or Settings(owner=OWNER, public_url=root, **extra)
    research = next(c for c in builtin_crews() if c.name == "research")
    services: list[CrewService] = []
    async with Simulator([instant_review_crew(), research], clock="manual") as sim:
        app = build_app(settings, host="127.0.0.1", port=port, opener=service_opener(sim, services))
        async with (
            serve_on(app, sock) as url,
            Client(f"{url}/mcp") as client,
            httpx2.AsyncClient(base_url=url, timeout=10) as http,
        ):
            yield Served(url, sim, client, http, services)


async def test_metrics_after_a_scripted_flow_count_exactly_what_happened() -> None:
    async with served() as s:
        run = await s.call("kickoff_crew", {"crew": "instant"})
        kickoff_id = run["kickoff_id"]
        s.sim.faults("instant").fail_next(1, status=503, retry_after=0)  # one upstream failure, retried once
        paused = await s.call("get_status", {"kickoff_id": kickoff_id, "wait_seconds": 10})
        assert paused["state"] == "waiting_for_human"
        await s.sim.advance(0)  # the simulator delivers the webhooks the pause caused
        assert (await s.http.get("/readyz")).status_code == 200

        during = await s.scrape()
        assert value(during, "crew_mcp_pending_approvals") == 1
        assert value(during, "crew_mcp_waits_in_progress") == 0

        await s.call("resume_with_feedback", {"kickoff_id": kickoff_id, "approve": True, "feedback": "fine"})
        done = await s.call("get_status", {"kickoff_id": kickoff_id, "wait_seconds": 10})
        assert done["state"] == "completed"
        await s.sim.advance(0)

        unknown = await s.client.call_tool("kickoff_crew", {"crew": "no_such_crew"})  # a tool error
        assert unknown.is_error
        s.sim.faults("research").fail_next(1, status=401)  # the crew refuses the token: only the operator can fix it
        with pytest.raises(MCPError):
            await s.client.call_tool("kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
        refused = await s.http.post("/webhooks/not-the-secret/task", json={"kickoff_id": kickoff_id})
        assert refused.status_code == 404
        assert (await s.http.post("/webhooks/x/unknown_kind", json={"kickoff_id": kickoff_id})).status_code == 404
        oversized = b"{" + b" " * MAX_BODY_BYTES + b"}"  # the legacy route reads (at most the cap of) a body first
        assert (await s.http.post("/webhooks/not-the-secret/step", content=oversized)).status_code == 413

        m = await s.scrape()
        sim = s.sim

    tool_calls = {
        ("kickoff_crew", "ok"): 1,
        ("kickoff_crew", "tool_error"): 1,
        ("kickoff_crew", "protocol_error"): 1,
        ("get_status", "ok"): 2,
        ("resume_with_feedback", "ok"): 1,
    }
    assert {(dict(k)["tool"], dict(k)["outcome"]): v for k, v in m["crew_mcp_tool_calls_total"].items()} == tool_calls
    for tool in ("kickoff_crew", "get_status", "resume_with_feedback"):
        calls = sum(n for (t, _), n in tool_calls.items() if t == tool)
        assert value(m, "crew_mcp_tool_call_duration_seconds_count", tool=tool) == calls
        assert value(m, "crew_mcp_tool_call_duration_seconds_bucket", tool=tool, le="+Inf") == calls

    polls = sim.count("instant", "GET", "/status")
    assert polls >= 3  # the failed poll, its retry, the poll that saw the run complete
    upstream = {
        ("instant", "inputs", "2xx"): 1,
        ("instant", "kickoff", "2xx"): 1,
        ("instant", "status", "5xx"): 1,
        ("instant", "status", "2xx"): polls - 1,
        ("instant", "resume", "2xx"): 1,
        ("research", "inputs", "4xx"): 1,
    }
    assert {
        (dict(k)["crew"], dict(k)["endpoint"], dict(k)["status_class"]): v
        for k, v in m["crew_mcp_upstream_requests_total"].items()
    } == upstream
    assert sim.count("instant", "POST", "/kickoff") == 1 and sim.count("research", "GET", "/inputs") == 1
    assert value(m, "crew_mcp_upstream_request_duration_seconds_count", crew="instant", endpoint="status") == polls
    assert m["crew_mcp_upstream_retries_total"] == {(("crew", "instant"), ("endpoint", "status")): 1}

    delivered = Counter(d.kind for d in sim.webhook_log if d.status_code == 202)
    assert delivered and sum(delivered.values()) == len(sim.webhook_log)  # every delivery was accepted
    webhooks = {(dict(k)["kind"], dict(k)["outcome"]): v for k, v in m["crew_mcp_webhook_deliveries_total"].items()}
    assert webhooks == {
        **{(kind, "accepted"): n for kind, n in delivered.items()},
        ("task", "refused"): 1,
        ("other", "refused"): 1,
        ("step", "too_large"): 1,
    }

    ledger = {dict(k)["operation"]: v for k, v in m["crew_mcp_ledger_operations_total"].items()}
    assert {k: ledger[k] for k in ("create", "confirm", "add_decision", "ping")} == {
        "create": 1,
        "confirm": 1,
        "add_decision": 1,
        "ping": 1,
    }
    assert "mark_failed" not in ledger  # the refused kickoff failed at its inputs, before anything was recorded
    assert ledger["pending_count"] == 2  # one per scrape: the flow wrote to the ledger in between
    assert {dict(k)["backend"] for k in m["crew_mcp_ledger_operations_total"]} == {"memory"}
    assert total(m, "crew_mcp_ledger_errors_total") == 0
    for operation, n in ledger.items():
        assert value(m, "crew_mcp_ledger_operation_duration_seconds_count", operation=operation, backend="memory") == n

    assert value(m, "crew_mcp_pending_approvals") == 0
    assert value(m, "crew_mcp_waits_in_progress") == 0
    assert value(m, "crew_mcp_watched_runs") == 0
    assert value(m, "crew_mcp_build_info", version="0.1.0") == 1


async def test_waits_in_progress_and_watched_runs_show_a_wait_while_it_lasts() -> None:
    async with served() as s:
        run = await s.call("kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.call, "get_status", {"kickoff_id": run["kickoff_id"], "wait_seconds": 30})
            m = await eventually(s.scrape, lambda m: value(m, "crew_mcp_waits_in_progress") == 1, timeout=10)
            assert value(m, "crew_mcp_watched_runs") == 1
            await s.sim.advance(30)  # the research crew pauses for review: the wait ends
        after = await s.scrape()
        assert value(after, "crew_mcp_waits_in_progress") == 0
        assert value(after, "crew_mcp_pending_approvals") == 1


async def test_metrics_token_opens_metrics_and_nothing_else_does() -> None:
    token = "scrape-token-0123456789"
    async with served(metrics_token=SecretStr(token)) as s:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {token}"}):
            refused = await s.http.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert token not in refused.text
        m = await s.scrape(Authorization=f"Bearer {token}")
        assert value(m, "crew_mcp_build_info", version="0.1.0") == 1


async def test_metrics_with_authentication_on_take_a_token_the_servers_verifier_accepts() -> None:
    key = "crew-mcp-key-abcdefghijklmnop"
    settings = Settings.model_validate(
        {"auth": {"mode": "keys", "keys": [ApiKeyConfig(hash=hash_key(key), principal="ops").model_dump()]}}
    )
    runtime = Runtime(telemetry=PrometheusTelemetry())
    guarded = metrics_endpoint(settings, runtime, runtime.telemetry, verifier=KeyVerifier(settings.auth.keys))
    unguarded = metrics_endpoint(settings, runtime, runtime.telemetry)
    app = _app(("/guarded", guarded), ("/unguarded", unguarded))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://crew-mcp") as http:
        assert (await http.get("/guarded")).status_code == 401
        assert (await http.get("/guarded", headers={"Authorization": "Bearer not-a-key-0123456789"})).status_code == 401
        assert (await http.get("/guarded", headers={"Authorization": f"Bearer {key}"})).status_code == 200
        # Authentication on and no verifier handed over: closed, not open (only a metrics token would open it).
        assert (await http.get("/unguarded", headers={"Authorization": f"Bearer {key}"})).status_code == 401


async def test_metrics_without_prometheus_client_say_how_to_get_them() -> None:
    runtime = Runtime(telemetry=Telemetry())
    app = _app(("/metrics", metrics_endpoint(Settings(), runtime, runtime.telemetry)))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://crew-mcp") as http:
        response = await http.get("/metrics")
    assert response.status_code == 501
    assert "crew-mcp[metrics]" in response.json()["message"]


def _app(*routes: tuple[str, Any]) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route(path, endpoint) for path, endpoint in routes])


def test_tool_names_are_bounded_so_invented_ones_cannot_grow_the_series() -> None:
    telemetry = PrometheusTelemetry()
    for i in range(MAX_TOOL_LABELS + 10):
        telemetry.tool_call(f"tool_{i}", "tool_error", 0.001)
    telemetry.tool_call("kickoff_crew", "ok", 0.001)
    telemetry.tool_call("bad name with spaces", "tool_error", 0.001)
    telemetry.tool_call("tool_0", "ok", 0.001)

    exposed = samples(_text(telemetry))["crew_mcp_tool_calls_total"]

    names = {dict(k)["tool"] for k in exposed}
    assert len(names) == MAX_TOOL_LABELS + 1
    assert value({"t": exposed}, "t", tool="other", outcome="tool_error") == 11
    assert value({"t": exposed}, "t", tool="other", outcome="ok") == 1  # kickoff_crew came after the limit
    assert value({"t": exposed}, "t", tool="tool_0", outcome="ok") == 1


def test_label_values_come_from_fixed_sets() -> None:
    assert [
        endpoint_of(p)
        for p in ("", "/", "/inputs", "/kickoff", "/status/k-1", "/k-1/status", "/resume", "/stop/k-1", "/x/y")
    ] == ["health", "health", "inputs", "kickoff", "status", "status", "resume", "stop", "other"]
    assert [status_class(o) for o in ("200", "202", "404", "503", "error", "99", "3000")] == [
        "2xx",
        "2xx",
        "4xx",
        "5xx",
        "error",
        "error",
        "error",
    ]
    assert [backend_of(x) for x in (MemoryLedger(), object())] == ["memory", "object"]


async def test_the_metered_ledger_counts_errors_and_passes_everything_else_through() -> None:
    telemetry = PrometheusTelemetry()
    inner = MemoryLedger()
    ledger = MeteredLedger(inner, telemetry)
    assert await ledger.pending_count() == 0
    assert ledger.create_many_sync == inner.create_many_sync  # not a coroutine: handed over as it is
    await inner.aclose()
    with pytest.raises(Exception, match="closed"):
        await ledger.list(owner="x")

    m = samples(_text(telemetry))

    assert value(m, "crew_mcp_ledger_operations_total", operation="pending_count", backend="memory") == 1
    assert value(m, "crew_mcp_ledger_operations_total", operation="list", backend="memory") == 1
    assert value(m, "crew_mcp_ledger_errors_total", operation="list", backend="memory") == 1
    assert value(m, "crew_mcp_ledger_errors_total", operation="pending_count", backend="memory") == 0


async def test_pending_approvals_show_nan_when_the_ledger_cannot_count() -> None:
    async with served() as s:
        assert value(await s.scrape(), "crew_mcp_pending_approvals") == 0
        (service,) = s.services
        metered = service.ledger
        assert isinstance(metered, MeteredLedger)
        await s.call("kickoff_crew", {"crew": "instant"})  # a write: the next scrape counts again
        await metered.inner.aclose()  # the ledger breaks under the running server

        m = await s.scrape()

        assert math.isnan(value(m, "crew_mcp_pending_approvals"))
        assert value(m, "crew_mcp_ledger_errors_total", operation="pending_count", backend="memory") == 1


def _text(telemetry: PrometheusTelemetry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(telemetry.registry).decode()


def test_without_prometheus_client_the_app_counts_nothing_and_still_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from crew_mcp.ops import http_telemetry

    assert isinstance(http_telemetry(), PrometheusTelemetry)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what an installation without the extra sees
    monkeypatch.delitem(sys.modules, "crew_mcp.metrics")

    telemetry = http_telemetry()

    assert type(telemetry) is Telemetry
    ledger = MemoryLedger()
    assert telemetry.ledger(ledger) is ledger
