"""What a webhook call may cost (issue 10, defect 15): the secret is checked from the URL before any body byte is
read, a body is read up to the cap and no further (declared or chunked), and the route exists only when crews
are given webhook URLs. The receiver is driven through ASGI with a body that counts what was pulled from it, and
over a real socket for the chunked case."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from hitl_support import HOOK_BASE, OWNER, loopback_socket, serve_on, service_opener
from mcp import Client
from starlette.applications import Starlette

from crew_mcp.app import build_app
from crew_mcp.identity import Caller
from crew_mcp.ledger import RunRecord, open_ledger
from crew_mcp.service import CrewService
from crew_mcp.settings import CrewConfig, Settings
from crew_mcp.simulator import Simulator
from crew_mcp.webhooks import MAX_BODY_BYTES, webhook_routes

CHUNK = 64 * 1024
FORGED_MB = 200


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[Starlette, CrewService, RunRecord]]:
    """The webhook routes over a running service, and the record of one run kicked off with webhook URLs."""
    sim = Simulator(clock="manual")
    async with sim, service_opener(sim)(Settings(owner=OWNER), webhook_base=HOOK_BASE) as service:
        view = await service.kickoff("research", {"topic": "x"}, Caller(owner=OWNER))
        record = await service.ledger.get(view.kickoff_id or "", owner=None)
        assert record is not None and record.webhook_secret
        yield Starlette(routes=webhook_routes(lambda: service)), service, record


async def post(
    app: Starlette, path: str, chunks: Iterator[bytes], headers: dict[str, str] | None = None
) -> tuple[int, int]:
    """POST a streamed body to ``app`` through ASGI; return the status and how many body bytes the app pulled."""
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {"content-type": "application/json"}).items()]
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "query_string": b"", "headers": raw}
    with anyio.fail_after(30):
        await app(scope, receive, send)
    return statuses[0], pulled


def forged(megabytes: int = FORGED_MB) -> Iterator[bytes]:
    """A body of ``megabytes`` MB, made chunk by chunk as the app asks for it (never held whole)."""
    return (b"x" * CHUNK for _ in range(megabytes * 1024 * 1024 // CHUNK))


async def test_a_forged_secret_is_refused_before_a_single_body_byte_is_read() -> None:
    async with receiver() as (app, _, record):
        wrong = "A" * len(record.webhook_secret or "")
        status, pulled = await post(app, f"/webhooks/{record.request_id}/{wrong}/task", forged())
        unknown, pulled_unknown = await post(app, f"/webhooks/{'f' * 32}/{record.webhook_secret}/task", forged())
    assert (status, pulled) == (404, 0)
    assert (unknown, pulled_unknown) == (404, 0)


async def test_a_body_over_the_cap_is_refused_without_reading_past_it() -> None:
    async with receiver() as (app, _, record):
        path = f"/webhooks/{record.request_id}/{record.webhook_secret}/task"
        chunked, pulled = await post(app, path, forged())
        declared = {"content-type": "application/json", "content-length": str(FORGED_MB * 1024 * 1024)}
        announced, pulled_announced = await post(app, path, forged(), declared)
    assert chunked == 413 and pulled <= MAX_BODY_BYTES + CHUNK
    assert (announced, pulled_announced) == (413, 0)


async def test_the_old_url_scheme_reads_no_more_than_the_cap_either() -> None:
    async with receiver() as (app, _, record):
        status, pulled = await post(app, f"/webhooks/{record.webhook_secret}/task", forged())
    assert status == 413 and pulled <= MAX_BODY_BYTES + CHUNK


async def test_a_chunked_body_over_the_cap_gets_413_over_a_real_socket(tmp_path: Path) -> None:
    sim = Simulator(clock="manual")
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    settings = Settings(owner=OWNER, ledger_url=ledger_url)
    sock = loopback_socket()
    port = sock.getsockname()[1]
    app = build_app(settings, host="127.0.0.1", port=port, opener=service_opener(sim, ledger_url=ledger_url))
    async with sim, serve_on(app, sock) as url, httpx2.AsyncClient(base_url=url, timeout=30) as http:
        # A run with webhook URLs: the simulated crews are local, so this server offers webhooks.
        async with Client(f"{url}/mcp") as client:
            run = await client.call_tool("kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
        ledger = open_ledger(ledger_url)
        record = await ledger.get((run.structured_content or {})["kickoff_id"], owner=None)
        await ledger.aclose()
        assert record is not None

        async def body() -> AsyncIterator[bytes]:
            for chunk in forged(16):
                yield chunk

        path = f"/webhooks/{record.request_id}/{record.webhook_secret}/task"
        answer = await http.post(path, content=body(), headers={"content-type": "application/json"})
        after = await http.get("/healthz")
    assert answer.status_code == 413 and after.status_code == 200


async def test_no_webhook_route_without_a_public_url_for_configured_crews() -> None:
    crews = [CrewConfig(name="trips", url="http://sim.invalid/trips", token="t")]

    async def served(settings: Settings) -> tuple[bool, bool]:
        """Whether each webhook route answered itself (its JSON 404), rather than the catch-all's plain 404."""
        app = build_app(settings)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
            new = await http.post("/webhooks/r/s/task", json={})
            old = await http.post("/webhooks/s/task", json={})
        return new.headers["content-type"] == "application/json", old.headers["content-type"] == "application/json"

    assert await served(Settings(owner=OWNER, crews=crews)) == (False, False)
    assert await served(Settings(owner=OWNER, crews=crews, public_url="http://x.test")) == (True, True)
