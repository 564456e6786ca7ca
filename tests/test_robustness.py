"""Faults that must never lose a billed run, crash the server or leak through as a bare tool error."""

from __future__ import annotations

from typing import Any

import anyio
import httpx2
import pytest
from hitl_support import OWNER, in_memory
from mcp import Client
from starlette.applications import Starlette

from crew_mcp.crews import Crew, CrewRegistry, _client, simulator_crews
from crew_mcp.errors import CrewMCPError, LedgerError
from crew_mcp.ledger import RecordState, open_ledger
from crew_mcp.ledger.memory import MemoryLedger
from crew_mcp.models import ExecutionState, normalize_status
from crew_mcp.server import Runtime, build_server
from crew_mcp.service import Caller, CrewService
from crew_mcp.settings import CrewConfig, InputConfig, Settings
from crew_mcp.simulator import Simulator
from crew_mcp.watch import StatusHub
from crew_mcp.webhooks import webhook_routes


class _FailStatus(httpx2.AsyncBaseTransport):
    """Forwards to the simulator but answers every status read with 401."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and "status" in request.url.path:
            return httpx2.Response(401, json={"error": "Unauthorized", "message": "nope"})
        return await self.inner.handle_async_request(request)


def _service(sim: Simulator, transport: httpx2.AsyncBaseTransport, ledger: Any = None) -> CrewService:
    registry = CrewRegistry([Crew(c, _client(c, transport)) for c in simulator_crews(sim)], simulator=sim)
    return CrewService(Settings(owner=OWNER), registry, ledger or open_ledger("memory://"), poll_initial=0.01)


async def test_a_kickoff_whose_status_read_fails_still_returns_its_kickoff_id() -> None:
    async with Simulator(clock="manual") as sim:
        service = _service(sim, _FailStatus(httpx2.ASGITransport(app=sim.app)))
        async with service:
            view = await service.kickoff("research", {"topic": "x"}, Caller(OWNER), wait_seconds=5)
    assert view.kickoff_id == sim.kickoff_ids("research")[0]
    assert "do not start it again" in view.next_step
    assert view.message is not None and "reading its status failed" in view.message


class _ConfirmFails(MemoryLedger):
    async def confirm(self, request_id: str, kickoff_id: str) -> Any:
        raise LedgerError("database is locked")


async def test_a_ledger_failing_to_confirm_still_hands_the_kickoff_id_to_the_caller() -> None:
    async with Simulator(clock="manual") as sim:
        service = _service(sim, httpx2.ASGITransport(app=sim.app), _ConfirmFails())
        async with service:
            with pytest.raises(CrewMCPError) as info:
                await service.kickoff("research", {"topic": "x"}, Caller(OWNER))
    kickoff_id = sim.kickoff_ids("research")[0]
    assert kickoff_id in str(info.value)
    assert "Do not start it again" in str(info.value)


async def test_a_kickoff_cancelled_after_the_post_left_is_still_confirmed_in_the_ledger() -> None:
    async with Simulator(clock="manual") as sim:
        ledger = open_ledger("memory://")
        service = _service(sim, httpx2.ASGITransport(app=sim.app), ledger)
        async with service:
            await service.list_inputs("research")  # cached, so the held request is the POST /kickoff
            sim.faults("research").delay_next(1, seconds=0.3, after_processing=True)
            with anyio.move_on_after(0.05):
                await service.kickoff("research", {"topic": "x"}, Caller(OWNER))
            runs = await ledger.list(owner=OWNER)
    assert [(r.kickoff_id, r.state) for r in runs] == [(sim.kickoff_ids("research")[0], RecordState.RUNNING)]


@pytest.mark.parametrize("progress", [{"completed": "²"}, {"completed": "9" * 5000}, {"total": [1]}, "oops"])
def test_odd_status_fields_never_crash_normalization(progress: Any) -> None:
    status = normalize_status("k", {"state": "RUNNING", "progress": progress})
    assert status.state in (ExecutionState.RUNNING, ExecutionState.UNKNOWN)


async def test_a_bug_in_one_poll_fails_that_wait_but_never_the_hub() -> None:
    calls = 0

    async def fetch(crew: str, kickoff_id: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")
        return normalize_status(kickoff_id, {"state": "SUCCESS", "result": "ok"})

    async with StatusHub(fetch, initial=0.01) as hub:
        with pytest.raises(CrewMCPError):
            await hub.wait("c", "k", timeout=2)
        done = await hub.wait("c", "k", timeout=2)
    assert done is not None and done.state is ExecutionState.COMPLETED


async def test_input_names_that_are_not_identifiers_cost_only_the_typed_tool() -> None:
    inputs = {"from": InputConfig(description="origin"), "start-date": InputConfig(description="when")}
    crews = [CrewConfig(name="trips", url="http://sim.invalid/trips", token="t", inputs=inputs)]
    mcp = build_server(Settings(crews=crews, ledger_url="memory://"))
    async with Client(mcp) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert "kickoff_crew" in names
    assert "run_trips" not in names


def test_a_public_url_with_a_trailing_slash_gives_single_slash_webhook_urls() -> None:
    assert Settings(public_url="https://hooks.example.com/").public_url == "https://hooks.example.com"


async def test_a_non_ascii_webhook_secret_is_a_404_not_a_server_error() -> None:
    async with Simulator(clock="manual") as sim:
        service = _service(sim, httpx2.ASGITransport(app=sim.app))
        service.webhook_base = "http://crew-mcp.test"
        runtime = Runtime(service=service)
        async with service:
            view = await service.kickoff("research", {"topic": "x"}, Caller(OWNER))
            app = Starlette(routes=webhook_routes(runtime))
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://h") as http:
                r = await http.post("/webhooks/%C3%A9/task", json={"kickoff_id": view.kickoff_id})
    assert r.status_code == 404


async def test_subscribers_hear_about_a_pause_found_by_polling_without_any_webhook() -> None:
    async with in_memory("auto") as env:
        kickoff_id = await env.kickoff("research")
        uri = f"crew://executions/{kickoff_id}"
        async with env.client.listen(resource_subscriptions=[uri]) as updates:
            await env.sim.advance(3600)
            await env.call("get_status", {"kickoff_id": kickoff_id})
            with anyio.fail_after(5):
                event = await updates.__anext__()
    assert getattr(event, "uri", None) == uri
