"""Faults that must never lose a billed run, crash the server or leak through as a bare tool error."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx2
import pytest
from hitl_support import OWNER, in_memory
from mcp import Client
from starlette.applications import Starlette

from crew_mcp.assembly import open_service
from crew_mcp.errors import CrewMCPError, LedgerError
from crew_mcp.identity import Caller
from crew_mcp.ledger import Ledger, RecordState, RunRecord, open_ledger
from crew_mcp.ledger.memory import MemoryLedger
from crew_mcp.models import ExecutionState
from crew_mcp.normalize import normalize_status
from crew_mcp.server import build_server
from crew_mcp.service import CrewService
from crew_mcp.settings import CrewConfig, InputConfig, Settings
from crew_mcp.simulator import Simulator
from crew_mcp.watch import Observation, StatusHub
from crew_mcp.webhooks import webhook_routes


class _FailStatus(httpx2.AsyncBaseTransport):
    """Forwards to the simulator but answers every status read with 401."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and "status" in request.url.path:
            return httpx2.Response(401, json={"error": "Unauthorized", "message": "nope"})
        return await self.inner.handle_async_request(request)


def _service(
    sim: Simulator, transport: httpx2.AsyncBaseTransport | None = None, ledger: Ledger | None = None, **kw: Any
) -> AbstractAsyncContextManager[CrewService]:
    return open_service(
        Settings(owner=OWNER), simulator=sim, transport=transport, ledger=ledger or open_ledger("memory://"), **kw
    )


async def test_a_kickoff_whose_status_read_fails_still_returns_its_kickoff_id() -> None:
    async with (
        Simulator(clock="manual") as sim,
        _service(sim, _FailStatus(httpx2.ASGITransport(app=sim.app)), poll_initial=0.01) as service,
    ):
        view = await service.kickoff("research", {"topic": "x"}, Caller(OWNER), wait_seconds=5)
    assert view.kickoff_id == sim.kickoff_ids("research")[0]
    assert "do not start it again" in view.next_step
    assert view.message is not None and "reading its status failed" in view.message


class _KeepOpen(MemoryLedger):
    """Delegates to a memory ledger that outlives the service, so a test can read it afterwards."""

    def __init__(self, inner: MemoryLedger) -> None:
        super().__init__()
        self.inner = inner

    async def create_many(self, records: Any) -> None:
        await self.inner.create_many(records)

    async def confirm(self, request_id: str, kickoff_id: str) -> RunRecord:
        return await self.inner.confirm(request_id, kickoff_id)

    async def list(self, **kw: Any) -> list[RunRecord]:
        return await self.inner.list(**kw)


class _ConfirmFails(MemoryLedger):
    async def confirm(self, request_id: str, kickoff_id: str) -> Any:
        raise LedgerError("database is locked")


async def test_a_ledger_failing_to_confirm_still_hands_the_kickoff_id_to_the_caller() -> None:
    async with Simulator(clock="manual") as sim, _service(sim, ledger=_ConfirmFails()) as service:
        view = await service.kickoff("research", {"topic": "x"}, Caller(OWNER))
    assert view.kickoff_id == sim.kickoff_ids("research")[0]
    assert "do not start it again" in view.next_step
    assert view.message is not None and "could not record it (database is locked)" in view.message


async def test_a_kickoff_cancelled_after_the_post_left_is_still_confirmed_in_the_ledger() -> None:
    async with Simulator(clock="manual") as sim:
        ledger = MemoryLedger()
        async with _service(sim, ledger=_KeepOpen(ledger)) as service:
            await service.list_inputs("research")  # cached, so the held request is the POST /kickoff
            sim.faults("research").delay_next(1, seconds=0.3, after_processing=True)
            with anyio.move_on_after(0.05):
                await service.kickoff("research", {"topic": "x"}, Caller(OWNER))
        # The POST goes on after its caller left; closing the service waits for it (it is never abandoned).
        runs = await ledger.list(owner=OWNER)
    assert [(r.kickoff_id, r.state) for r in runs] == [(sim.kickoff_ids("research")[0], RecordState.RUNNING)]


@pytest.mark.parametrize("progress", [{"completed": "²"}, {"completed": "9" * 5000}, {"total": [1]}, "oops"])
def test_odd_status_fields_never_crash_normalization(progress: Any) -> None:
    status = normalize_status("k", {"state": "RUNNING", "progress": progress})
    assert status.state in (ExecutionState.RUNNING, ExecutionState.UNKNOWN)


async def test_a_bug_in_one_poll_fails_that_wait_but_never_the_hub() -> None:
    calls = 0

    record = RunRecord(request_id="r", kickoff_id="k", crew="c", conversation_id="default", owner=OWNER)

    async def poll(record: RunRecord) -> Observation:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")
        return Observation(normalize_status("k", {"state": "SUCCESS", "result": "ok"}), record)

    async with StatusHub(poll, initial=0.01) as hub:
        with pytest.raises(CrewMCPError):
            await hub.wait(record, timeout=2)
        done = await hub.wait(record, timeout=2)
    assert done is not None and done.status.state is ExecutionState.COMPLETED


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
    async with Simulator(clock="manual") as sim, _service(sim, webhook_base="http://crew-mcp.test") as service:
        view = await service.kickoff("research", {"topic": "x"}, Caller(OWNER))
        app = Starlette(routes=webhook_routes(lambda: service))
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
