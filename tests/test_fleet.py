"""Many replicas, one fleet: three ``crew-mcp serve --http`` processes on one Redis behind HAProxy (Debian's, with the
shipped manifests/haproxy/haproxy.cfg), the simulator as a real server whose webhooks go through the balancer.

Select with ``pytest -m fleet``. Needs Redis (scripts/ensure-redis) and HAProxy (scripts/ensure-haproxy); both
fail rather than skip under CI. Latencies measured here are printed (``-s``), never asserted: bench/fleet.py
measures them properly for docs/benchmarks.md.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import require_redis
from fleet_support import Fleet, Replica, fleet, health, redis_server
from hitl_support import answering, eventually, ok
from mcp import Client, MCPError
from process_support import free_port

from crew_mcp.simulator import Simulator, serve_simulator

pytestmark = [pytest.mark.fleet, pytest.mark.redis, pytest.mark.slow]

TRIP = {"budget": "1000 USD", "interests": "food", "duration": "3 days", "age": 30}
CREWS = ["trip_planner", "research"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis URL with a key prefix for this module (deleted afterwards)."""
    port = require_redis()
    prefix = f"crew-mcp-test:{uuid.uuid4().hex}:"
    yield f"redis://127.0.0.1:{port}/0?prefix={prefix}"
    import redis

    with redis.Redis(host="127.0.0.1", port=port) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    simulator = Simulator(clock="manual")
    async with serve_simulator(simulator) as root:
        yield simulator, root
    await simulator.aclose()


@pytest.fixture(scope="module")
async def fl(
    sim: tuple[Simulator, str], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    async with fleet(tmp_path_factory.mktemp("fleet"), redis_url, sim[1], crews=CREWS) as f:
        yield f


async def kickoff(url: str, crew: str, inputs: dict[str, Any]) -> str:
    async with Client(url) as client:
        run = await ok(client, "kickoff_crew", {"crew": crew, "inputs": inputs})
    kickoff_id = run["kickoff_id"]
    assert isinstance(kickoff_id, str) and run["state"] == "running"
    return kickoff_id


async def watching(replicas: list[Replica], waiters: int = 1) -> None:
    """Until at least ``waiters`` callers wait on each replica."""
    async with httpx2.AsyncClient(timeout=5) as http:

        async def fewest() -> int:
            counts: list[int] = [(await health(http, r.root)).get("waiters", 0) for r in replicas]
            return min(counts)

        await eventually(fewest, lambda n: n >= waiters, timeout=20)


def polls_within(seconds: float, initial: float = 0.5, factor: float = 1.5, cap: float = 5.0) -> int:
    """How many polls one loop makes in ``seconds`` at most (it polls at once, then after each interval)."""
    polls, elapsed, interval = 1, 0.0, initial
    while elapsed + interval <= seconds:
        elapsed += interval
        polls += 1
        interval = min(interval * factor, cap)
    return polls


async def test_a_webhook_landing_on_one_replica_wakes_waiters_on_every_replica(
    fl: Fleet, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    kickoff_id = await kickoff(fl.mcp, "research", {"topic": "tides"})
    results: dict[str, dict[str, Any]] = {}
    done_at: dict[str, float] = {}

    told: dict[str, list[str]] = {}

    async def wait_on(replica: Replica, mode: str) -> None:
        key = f"{replica.name}/{mode}"
        said = told[key] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            said.append(message or "")

        async with Client(replica.mcp, mode=mode) as client:
            args = {"kickoff_id": kickoff_id, "wait_seconds": 30}
            r = await client.call_tool("get_status", args, progress_callback=on_progress)
            assert isinstance(r.structured_content, dict)
            results[key] = r.structured_content
            done_at[key] = time.monotonic()

    with anyio.fail_after(45):
        async with anyio.create_task_group() as tg:
            for replica in fl.replicas:
                for mode in ("auto", "legacy"):
                    tg.start_soon(wait_on, replica, mode)
            await watching(fl.replicas)
            holder = await fl.lease_holder(kickoff_id)
            t0 = time.monotonic()
            await simulator.advance(10)  # research pauses for review; its webhooks go through the balancer
    # Only the lease holder polls: the other replicas' waiters heard it through the fan-out, long before their
    # 30 s waits would have ended on their own.
    assert holder in {r.replica_id for r in fl.replicas}
    assert {k: v["state"] for k, v in results.items()} == dict.fromkeys(results, "waiting_for_human")
    assert len(results) == 6
    # and each waiter was told along the way (progress), the last time with the pause
    assert all(said and said[-1].startswith("waiting_for_human") for said in told.values()), told
    print(f"\nwebhook → waiters woken on 3 replicas: {max(done_at.values()) - t0:.3f} s (slowest of 6)")


async def test_subscribers_on_every_replica_hear_resources_updated_in_both_eras(
    fl: Fleet, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    kickoff_id = await kickoff(fl.mcp, "research", {"topic": "reefs"})
    uri = f"crew://executions/{kickoff_id}"
    heard: dict[str, anyio.Event] = {}

    async def modern(replica: Replica, ready: anyio.Event) -> None:
        got = heard[f"{replica.name}/auto"] = anyio.Event()
        async with Client(replica.mcp) as client, client.listen(resource_subscriptions=[uri]) as updates:
            ready.set()
            async for event in updates:
                if getattr(event, "uri", None) == uri:
                    got.set()
                    return

    async def legacy(replica: Replica, ready: anyio.Event) -> None:
        got = heard[f"{replica.name}/legacy"] = anyio.Event()

        async def on_message(message: Any) -> None:
            root = getattr(message, "root", message)
            params = getattr(root, "params", None)
            if getattr(root, "method", "") == "notifications/resources/updated" and str(params.uri) == uri:  # type: ignore[union-attr]
                got.set()

        async with Client(replica.mcp, mode="legacy", message_handler=on_message) as client:
            await client.subscribe_resource(uri)
            ready.set()
            await got.wait()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for replica in fl.replicas:
                for fn in (modern, legacy):
                    ready = anyio.Event()
                    tg.start_soon(fn, replica, ready)
                    await ready.wait()
            await simulator.advance(10)
    assert sorted(k for k, e in heard.items() if e.is_set()) == sorted(
        f"{r.name}/{m}" for r in fl.replicas for m in ("auto", "legacy")
    )


@pytest.mark.parametrize("watchers", [1, 10, 100])
async def test_any_number_of_watchers_on_three_replicas_make_one_upstream_request_per_poll_interval(
    fl: Fleet, sim: tuple[Simulator, str], watchers: int
) -> None:
    simulator, _ = sim
    kickoff_id = await kickoff(fl.mcp, "trip_planner", TRIP)  # the manual clock never moves: it stays running
    before = simulator.count("trip_planner", "GET", "/status")
    holders: set[str | None] = set()

    async def watch(client: Client) -> None:
        seen = await ok(client, "get_status", {"kickoff_id": kickoff_id, "wait_seconds": 3})
        assert seen["state"] == "running"

    t0 = time.monotonic()
    with anyio.fail_after(60):
        async with (
            Client(fl.replicas[0].mcp) as c0,
            Client(fl.replicas[1].mcp) as c1,
            Client(fl.replicas[2].mcp) as c2,
            anyio.create_task_group() as tg,
        ):
            clients = [c0, c1, c2]
            for i in range(watchers):
                tg.start_soon(watch, clients[i % 3])
            await watching(fl.replicas[: min(watchers, 3)])
            holders.add(await fl.lease_holder(kickoff_id))
    elapsed = time.monotonic() - t0
    upstream = simulator.count("trip_planner", "GET", "/status") - before
    # One loop in the whole fleet polls: at most the polls one loop makes in the window, plus a hand-over as the
    # holder's watchers leave a moment before the others'. Three independent pollers would make three times as many.
    bound = polls_within(elapsed) + 1
    print(f"\nN={watchers}: {upstream} upstream GET /status in {elapsed:.2f} s (one loop: ≤ {bound - 1})")
    assert 1 <= upstream <= bound
    assert len(holders) == 1 and None not in holders


async def test_the_balancer_keeps_a_2025_session_on_its_replica(fl: Fleet) -> None:
    async with Client(fl.mcp, mode="legacy") as client:
        for _ in range(6):  # round robin would send 4 of these to replicas that do not know the session (404)
            crews = await ok(client, "list_crews", {})
            assert [c["name"] for c in crews["crews"]] == CREWS


async def test_an_approval_form_answered_through_the_balancer_unseals_on_the_next_replica(
    fl: Fleet, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    kickoff_id = await kickoff(fl.mcp, "research", {"topic": "eels"})
    await simulator.advance(10)  # the report waits for review
    forms: list[str] = []
    answer = answering("accept", {"approve": True, "feedback": "Fine."}, forms)
    async with Client(fl.mcp, elicitation_callback=answer) as client:
        await client.list_tools()
        # 2026-07-28: the call returns the form with a sealed requestState; the SDK retries with the answer, and the
        # balancer's round robin sends the retry to the next replica, which unseals it with the shared keys (without
        # CREW_MCP_REQUEST_STATE_KEYS this fails: "Invalid or expired requestState").
        out = await ok(client, "resume_with_feedback", {"kickoff_id": kickoff_id})
    assert forms and out["approve"] is True and out["decided_by"] == "human via elicitation"


async def test_kill_9_mid_wait_clients_retry_through_the_balancer_and_another_replica_takes_the_lease(
    sim: tuple[Simulator, str], redis_url: str, tmp_path: Path
) -> None:
    simulator, sim_root = sim
    async with fleet(tmp_path, redis_url, sim_root, crews=CREWS) as f:
        kickoff_id = await kickoff(f.mcp, "trip_planner", TRIP)
        finished: list[dict[str, Any]] = []
        retries = 0

        async def follow() -> None:
            nonlocal retries
            while True:  # 2026-07-28: any replica serves any call, so a new connection through the balancer will do
                try:
                    async with Client(f.mcp) as client:
                        seen = await ok(
                            client, "get_status", {"kickoff_id": kickoff_id, "wait_seconds": 20}, timeout=None
                        )
                except Exception:  # the replica died under the call: ask again, the balancer picks a live one
                    retries += 1
                    await anyio.sleep(0.2)
                    continue
                if seen["state"] == "completed":
                    finished.append(seen)
                    return

        with anyio.fail_after(50):
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(follow)
                await watching(f.replicas)
                holder = await f.lease_holder(kickoff_id)
                assert holder is not None
                victim = f.by_id(holder)
                victim.process.kill()  # SIGKILL: no drain, no lease release
                await victim.process.wait()
                survivors = [r for r in f.replicas if r is not victim]
                t_dead = time.monotonic()
                while (taken := await f.lease_holder(kickoff_id)) in (None, holder):  # noqa: ASYNC110 - Redis
                    await anyio.sleep(0.05)
                takeover = time.monotonic() - t_dead
                assert taken in {r.replica_id for r in survivors}

                # Graceful: SIGTERM on a survivor ends its waits at once with the handle and the next step.
                stopping = survivors[0]
                direct: list[dict[str, Any]] = []

                async def wait_direct(mode: str) -> None:
                    result: dict[str, Any] | None = None
                    try:
                        async with Client(stopping.mcp, mode=mode) as client:
                            await client.list_tools()  # as hosts do; the result's schema check needs no new request
                            args = {"kickoff_id": kickoff_id, "wait_seconds": 30}
                            result = await ok(client, "get_status", args, timeout=None)
                    except Exception:
                        if result is None:
                            raise  # the wait itself failed; only closing the session may (the replica is gone)
                    direct.append(result)

                async with httpx2.AsyncClient() as http:
                    already = (await health(http, stopping.root))["waiters"]
                async with anyio.create_task_group() as inner:
                    inner.start_soon(wait_direct, "auto")
                    inner.start_soon(wait_direct, "legacy")
                    await watching([stopping], waiters=already + 2)
                    t_term = time.monotonic()
                    stopping.process.terminate()
                ended = time.monotonic() - t_term
                await stopping.process.wait()
                exited = time.monotonic() - t_term
                assert [d["state"] for d in direct] == ["running", "running"]
                assert all(d["kickoff_id"] == kickoff_id and "get_status" in d["next_step"] for d in direct)
                # uvicorn re-raises the signal once its graceful shutdown is over, so the exit status says SIGTERM
                assert stopping.process.returncode in (0, -signal.SIGTERM)
                assert await f.lease_holder(kickoff_id) != stopping.replica_id

                await simulator.advance(10)  # the run completes; the crew webhook reaches the last replica
        assert len(finished) == 6 and retries >= 1
        async with Client(f.mcp) as client:
            assert (await ok(client, "get_status", {"kickoff_id": kickoff_id}))["state"] == "completed"
        print(
            f"\nkill -9: lease taken over after {takeover:.2f} s (lease 2 s), {retries} client retries; "
            f"SIGTERM: waits ended after {ended:.2f} s, process exited after {exited:.2f} s (grace 3 s)"
        )


async def test_a_2025_wait_the_balancer_cuts_resumes_with_last_event_id_and_gets_the_rest(
    sim: tuple[Simulator, str], redis_url: str, tmp_path: Path
) -> None:
    import redis.asyncio

    simulator, sim_root = sim
    # The balancer cuts any response silent for 1 s: a wait on an unchanged run is silent after its priming event.
    async with fleet(tmp_path, redis_url, sim_root, replicas=2, crews=CREWS, timeouts={"server": "1s"}) as f:
        kickoff_id = await kickoff(f.mcp, "trip_planner", TRIP)
        async with Client(f.mcp, mode="legacy") as client, anyio.create_task_group() as tg:
            await client.list_tools()
            result: dict[str, Any] = {}

            async def wait() -> None:
                result.update(
                    await ok(client, "get_status", {"kickoff_id": kickoff_id, "wait_seconds": 20}, timeout=None)
                )

            with anyio.fail_after(30):
                tg.start_soon(wait)
                await anyio.sleep(2.5)  # at least one cut and one resume (retry 1 s) while nothing happens
                await simulator.advance(10)  # completes while the client may be between connections
        assert result["state"] == "completed"
        async with redis.asyncio.Redis.from_url(redis_url.split("?", 1)[0], decode_responses=True) as r:
            keys = [k async for k in r.scan_iter(match=f"{f.prefix}fleet:sse:*")]
            primings = 0
            for key in keys:
                rows: list[Any] = list(await r.xrange(key) or [])
                primings += sum(1 for _, fields in rows if (fields or {}).get("m") == "")
    # Every POST stream starts with a priming event, and so does every resumed one (Last-Event-ID): more priming
    # events than POSTs means the wait was cut and resumed.
    posts = 3  # initialize, tools/list, tools/call
    assert primings > posts, primings


async def test_redis_going_away_and_coming_back_as_measured(sim: tuple[Simulator, str], tmp_path: Path) -> None:
    simulator, sim_root = sim
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0?prefix=outage:"
    report: list[str] = []
    async with AsyncExitStack() as stack:
        redis_proc = await stack.enter_async_context(redis_server(port, tmp_path, persistent=True))
        f = await stack.enter_async_context(fleet(tmp_path, url, sim_root, replicas=2, crews=CREWS))
        kickoff_id = await kickoff(f.mcp, "trip_planner", TRIP)
        completed: dict[str, float] = {}

        async def follow(replica: Replica) -> None:
            while True:
                try:
                    async with Client(replica.mcp) as client:
                        seen = await ok(
                            client, "get_status", {"kickoff_id": kickoff_id, "wait_seconds": 20}, timeout=None
                        )
                except Exception:
                    await anyio.sleep(0.2)
                    continue
                if seen["state"] == "completed":
                    completed[replica.name] = time.monotonic()
                    return

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg, Client(f.replicas[0].mcp) as r1:
                await ok(r1, "get_status", {"kickoff_id": kickoff_id})  # r1 now holds the running record
                for replica in f.replicas:
                    tg.start_soon(follow, replica)
                await watching(f.replicas)

                redis_proc.terminate()  # Redis goes away (it saves its append-only file first)
                await redis_proc.wait()
                t_down = time.monotonic()
                # A running run this replica holds in memory is still answered (the crew is read; nothing to save).
                during = await ok(r1, "get_status", {"kickoff_id": kickoff_id})
                assert during["state"] == "running"
                # Starting a run needs the ledger: refused with a clear error, never a traceback.
                with pytest.raises(MCPError) as refused:
                    await r1.call_tool("kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})
                text = str(refused.value)
                assert "run ledger is unavailable" in text and "Traceback" not in text
                report.append(f"kickoff during the outage: {text[:70]!r}…")
                await simulator.advance(10)  # the run completes upstream; its webhook finds no ledger
                hooks = [d for d in simulator.webhook_log if d.payload.get("kickoff_id") == kickoff_id]
                assert hooks and {d.status_code for d in hooks} == {503}, hooks  # "try again", nothing applied
                await anyio.sleep(1.0)
                assert completed == {}  # nobody is told "completed" before it is saved

                restarted = await stack.enter_async_context(redis_server(port, tmp_path, persistent=True))
                t_up = time.monotonic()
                report.append(f"outage {t_up - t_down:.2f} s")
            # every waiter finishes once Redis is back, with no restart of any replica
            for name, at in sorted(completed.items()):
                report.append(f"{name}: completed {at - t_up:.2f} s after Redis came back")
        assert sorted(completed) == [r.name for r in f.replicas]
        async with Client(f.mcp) as client:
            again = await ok(client, "kickoff_crew", {"crew": "trip_planner", "inputs": TRIP})
            assert again["state"] == "running"
            assert (await ok(client, "get_status", {"kickoff_id": kickoff_id}))["state"] == "completed"
        assert restarted.returncode is None
    print("\nRedis outage: " + "; ".join(report))
