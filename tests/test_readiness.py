"""``/readyz``: 503 while starting or while the run ledger does not answer, 200 again once it does.

The ledgers are real: a SQLite file moved away from under the server (an unmounted volume) and back, and a
private ``redis-server`` on a free port stopped and started again, with crew-mcp's app under uvicorn.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from fleet_support import redis_server
from hitl_support import OWNER, eventually, loopback_socket, serve_on
from process_support import free_port

from crew_mcp.app import build_app
from crew_mcp.assembly import open_service
from crew_mcp.ledger import open_ledger
from crew_mcp.ledger.memory import MemoryLedger
from crew_mcp.ops import Readiness
from crew_mcp.runtime import Runtime
from crew_mcp.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def app_at(ledger_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    """crew-mcp's HTTP app (built-in simulated crews) under uvicorn, with its ledger at ``ledger_url``."""
    sock = loopback_socket()
    app = build_app(Settings(owner=OWNER, ledger_url=ledger_url), host="127.0.0.1", port=sock.getsockname()[1])
    async with serve_on(app, sock) as url, httpx2.AsyncClient(base_url=url, timeout=10) as http:
        yield http


async def readyz_until(http: httpx2.AsyncClient, status: int) -> dict[str, Any]:
    """Ask ``/readyz`` until it answers ``status`` (answers are reused for a second); its body."""
    response = await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == status, timeout=15)
    body: dict[str, Any] = response.json()
    return body


async def test_readyz_is_unavailable_until_the_service_runs() -> None:
    app = build_app(Settings(owner=OWNER, ledger_url="memory://"), port=0)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://crew-mcp") as http:
        response = await http.get("/readyz")  # no lifespan under ASGITransport: the service never started
        health = await http.get("/healthz")
    assert (response.status_code, response.json()["status"], response.json()["reason"]) == (
        503,
        "unavailable",
        "starting",
    )
    assert health.status_code == 503


async def test_draining_turns_readiness_away_while_liveness_stays_up() -> None:
    sock = loopback_socket()
    app = build_app(Settings(owner=OWNER, ledger_url="memory://"), host="127.0.0.1", port=sock.getsockname()[1])
    async with serve_on(app, sock) as url, httpx2.AsyncClient(base_url=url, timeout=10) as http:
        await readyz_until(http, 200)
        await app.drain()  # what SIGTERM does first (crew_mcp/fleet/http.py)
        draining = await http.get("/readyz")  # not the cached "ready": draining is checked on every probe
        health = await http.get("/healthz")
    assert (draining.status_code, draining.json()["reason"]) == (503, "draining")
    assert (health.status_code, health.json()["status"]) == (200, "draining")  # alive: a restart would not help


async def test_readyz_fails_while_the_sqlite_file_is_gone_and_recovers_when_it_is_back(tmp_path: Path) -> None:
    db = tmp_path / "data" / "ledger.db"
    async with app_at(f"sqlite:///{db}") as http:
        assert (await readyz_until(http, 200))["status"] == "ready"
        assert (await http.get("/healthz")).status_code == 200
        aside = tmp_path / "ledger.db.aside"
        db.rename(aside)  # what an unmounted or replaced volume looks like to a running server

        down = await readyz_until(http, 503)
        assert down == {"status": "unavailable", "reason": "the run ledger is unreachable", "version": "0.1.0"}
        assert str(tmp_path) not in str(down)  # the detail goes to the log, not to anonymous callers
        assert (await http.get("/healthz")).status_code == 200  # liveness is unaffected: restarting would not help

        aside.rename(db)
        assert (await readyz_until(http, 200))["status"] == "ready"


@pytest.mark.redis
async def test_readyz_fails_while_redis_is_down_and_recovers_when_it_is_back(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (scripts/ensure-redis installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    port = free_port()
    async with app_at(f"redis://127.0.0.1:{port}/0?prefix=crew-mcp-readyz:") as http:
        async with redis_server(port, tmp_path):
            assert (await readyz_until(http, 200))["status"] == "ready"
        down = await readyz_until(http, 503)
        assert down["reason"] == "the run ledger is unreachable"
        assert (await http.get("/healthz")).status_code == 200
        async with redis_server(port, tmp_path):
            assert (await readyz_until(http, 200))["status"] == "ready"


async def test_a_ledger_that_never_answers_fails_the_probe_within_its_bound() -> None:
    async def silent(stream: Any) -> None:
        async with stream:
            await anyio.sleep_forever()  # accepts the connection, never answers: a hung Redis

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent)
        runtime = Runtime()
        ledger = open_ledger(f"redis://127.0.0.1:{port}/0")
        async with open_service(Settings(owner=OWNER), ledger=ledger) as service:
            runtime.service = service
            with anyio.fail_after(5):
                problem = await Readiness(runtime, timeout=0.2).problem()
        assert problem == "the run ledger does not answer"
        tg.cancel_scope.cancel()


class CountingLedger(MemoryLedger):
    """A memory ledger that counts its pings."""

    pings = 0

    async def ping(self) -> None:
        self.pings += 1
        await super().ping()


async def test_readiness_answers_are_reused_for_their_time_to_live() -> None:
    ledger = CountingLedger()
    runtime = Runtime()
    async with open_service(Settings(owner=OWNER), ledger=ledger) as service:
        runtime.service = service
        cached, uncached = Readiness(runtime, ttl=math.inf), Readiness(runtime, ttl=0)
        async with anyio.create_task_group() as tg:  # a burst of probes at once
            for _ in range(5):
                tg.start_soon(cached.problem)
        assert ledger.pings == 1
        for _ in range(3):
            assert await uncached.problem() is None
        assert ledger.pings == 4


async def test_the_kubernetes_probes_point_at_routes_the_app_serves_within_their_timeouts() -> None:
    import yaml

    from crew_mcp.ops import PROBE_TIMEOUT

    deployment = yaml.safe_load((ROOT / "manifests" / "kubernetes" / "base" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    app = build_app(Settings(owner=OWNER, ledger_url="memory://"), port=0)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        # Before the lifespan runs: each route answers for itself (503 starting), an unserved path is a 404.
        served = {path for path in ("/healthz", "/readyz", "/metrics") if (await http.get(path)).status_code != 404}
    probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: p["httpGet"]["path"] for kind, p in probes.items()} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert {"/healthz", "/readyz", "/metrics"} <= served
    assert probes["readinessProbe"]["timeoutSeconds"] > PROBE_TIMEOUT  # the probe's own bound answers first
