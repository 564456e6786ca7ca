"""The fleet's pieces one by one (crew_mcp/fleet): change messages, the Redis fan-out and leases on a real Redis,
the record cache, the SSE event stores' per-session scoping, the hub following a lease holder, the settings."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
import pytest
import redis.asyncio
from hitl_support import OWNER, in_memory
from mcp.types import JSONRPCNotification, JSONRPCResponse
from process_support import free_port

from crew_mcp.errors import ConfigError
from crew_mcp.fleet import Fleet, build_fleet
from crew_mcp.fleet.cache import RecordCache
from crew_mcp.fleet.events import _SCOPE, MemoryEventStore, RedisEventStore, _Holder
from crew_mcp.fleet.fanout import Change, RedisFanout
from crew_mcp.fleet.leases import Leases, RedisLeases
from crew_mcp.ledger import RecordState, RunRecord
from crew_mcp.models import ExecutionState, ExecutionStatus
from crew_mcp.settings import Settings, load_settings
from crew_mcp.watch import Observation, StatusHub


def record(kickoff_id: str = "k-1", state: ExecutionState = ExecutionState.RUNNING) -> RunRecord:
    status = ExecutionStatus(kickoff_id=kickoff_id, state=state)
    return RunRecord(
        request_id=f"r-{kickoff_id}",
        kickoff_id=kickoff_id,
        crew="c",
        conversation_id="conv",
        owner="me",
        state=RecordState(state.value),
        status=status,
        status_fetched_at=datetime.now(UTC),
    )


@pytest.fixture
async def client(ledger_redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    async with redis.asyncio.Redis.from_url(ledger_redis_url.split("?", 1)[0], decode_responses=True) as r:
        yield r


def prefix_of(url: str) -> str:
    return url.split("prefix=", 1)[1]


def test_a_change_survives_its_wire_form() -> None:
    change = Change("k-1", record(), ExecutionStatus(kickoff_id="k-1", state=ExecutionState.RUNNING), poke=True)
    again = Change.loads(change.dumps())
    assert again == change
    assert Change.loads(Change("k-2", notify=False).dumps()) == Change("k-2", notify=False)


async def test_redis_fan_out_reaches_the_other_replica_once_and_this_one_without_a_round_trip(
    client: redis.asyncio.Redis, ledger_redis_url: str
) -> None:
    prefix = prefix_of(ledger_redis_url)
    a, b = RedisFanout(client, prefix=prefix, replica="a"), RedisFanout(client, prefix=prefix, replica="b")
    got: dict[str, list[Change]] = {"a": [], "b": []}
    arrived = anyio.Event()

    async def on_a(change: Change) -> None:
        got["a"].append(change)

    async def on_b(change: Change) -> None:
        got["b"].append(change)
        arrived.set()

    a.attach(on_a)
    b.attach(on_b)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(a.run, lambda: None)
            await tg.start(b.run, lambda: None)
            await a.connected.wait()
            await b.connected.wait()
            sent = record()
            await a.publish(Change("k-1", sent, notify=True))
            assert [c.kickoff_id for c in got["a"]] == ["k-1"]  # delivered here before the PUBLISH
            await arrived.wait()
            await anyio.sleep(0.1)  # an echo back to "a" would arrive by now
            tg.cancel_scope.cancel()
    assert [c.origin for c in got["b"]] == ["a"] and len(got["a"]) == 1
    assert got["b"][0].record == sent


async def test_a_redis_lease_has_one_holder_is_renewed_released_only_by_it_and_expires(
    client: redis.asyncio.Redis, ledger_redis_url: str
) -> None:
    prefix = prefix_of(ledger_redis_url)
    a = RedisLeases(client, prefix=prefix, replica="a", seconds=0.3)
    b = RedisLeases(client, prefix=prefix, replica="b", seconds=0.3)
    assert await a.acquire("k") and not await b.acquire("k")
    assert await a.acquire("k")  # renewal
    await b.release("k")  # not b's to release
    assert await a.holder("k") == "a"
    await a.release("k")
    assert await b.acquire("k") and await a.holder("k") == "b"
    with anyio.fail_after(5):  # b dies (stops renewing): its lease expires and a takes over
        while not await a.acquire("k"):  # noqa: ASYNC110 - the lease lives in Redis
            await anyio.sleep(0.05)
    assert await b.holder("k") == "a"


async def test_with_redis_away_a_lease_counts_as_held_and_a_change_still_reaches_this_replica() -> None:
    dead = build_fleet(load_settings(env={}), f"redis://127.0.0.1:{free_port()}/0")
    assert await dead.leases.acquire("k")  # poll rather than go blind
    await dead.leases.release("k")  # logged, never raised
    got: list[Change] = []

    async def keep(change: Change) -> None:
        got.append(change)

    dead.fanout.attach(keep)
    await dead.fanout.publish(Change("k"))
    assert [c.kickoff_id for c in got] == ["k"]
    await dead.aclose()


def test_the_record_cache_trusts_running_records_for_a_bounded_time_and_finished_ones_forever() -> None:
    cache = RecordCache(live_seconds=math.inf)
    running = record("k-1")
    cache.put(running)
    cache.put(record("k-2", ExecutionState.COMPLETED))
    assert cache.get("k-1") is running and cache.get("k-2") is not None
    older = running.model_copy(update={"updated_at": running.updated_at - timedelta(seconds=1)})
    cache.put(older)  # arrived late from another replica
    assert cache.get("k-1") is running
    cache.forget_live()
    assert cache.get("k-1") is None and cache.get("k-2") is not None
    cold = RecordCache(live_seconds=0)
    cold.put(record("k-1"))
    assert cold.get("k-1") is None  # not cached at all
    brief = RecordCache(live_seconds=1e-9)
    brief.put(record("k-1"))
    assert brief.get("k-1") is None  # past its time: read the ledger again


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_an_event_store_replays_only_the_same_session_s_events_after_the_given_id(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":
        url = request.getfixturevalue("ledger_redis_url")
        r = redis.asyncio.Redis.from_url(url.split("?", 1)[0], decode_responses=True)
        store: MemoryEventStore | RedisEventStore = RedisEventStore(r, prefix=prefix_of(url))
    else:
        store = MemoryEventStore()
    progress = JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"progress": 1})
    answer = JSONRPCResponse(jsonrpc="2.0", id=1, result={"ok": True})
    token = _SCOPE.set(_Holder("session-a"))
    try:
        priming = await store.store_event("1", None)
        await store.store_event("1", progress)
        await store.store_event("1", answer)
        replayed: list[str | None] = []

        async def send(event: object) -> None:
            replayed.append(getattr(event, "event_id", None))

        assert await store.replay_events_after(priming, send) == "1"
        assert len(replayed) == 2
    finally:
        _SCOPE.reset(token)
    other = _SCOPE.set(_Holder("session-b"))  # same request id "1" in another session: nothing of a's
    try:
        seen: list[object] = []

        async def keep(event: object) -> None:
            seen.append(event)

        assert await store.replay_events_after(priming, keep) is None
        assert seen == []
    finally:
        _SCOPE.reset(other)
        if backend == "redis":
            await r.aclose()


class _Refusing(Leases):
    async def acquire(self, kickoff_id: str) -> bool:
        return False


async def test_a_hub_without_the_lease_follows_pushes_and_never_polls_and_drain_ends_its_waits() -> None:
    polls = 0

    async def poll(r: RunRecord) -> Observation:
        nonlocal polls
        polls += 1
        return Observation(r.status or ExecutionStatus(kickoff_id="k-1", state=ExecutionState.RUNNING), r)

    running = record()
    async with StatusHub(poll, initial=0.01, leases=_Refusing(), follow=lambda r: Observation(r.status, r)) as hub:  # type: ignore[arg-type]
        seen: list[ExecutionState] = []

        async def on_update(status: ExecutionStatus) -> None:
            seen.append(status.state)

        async with anyio.create_task_group() as tg:
            result: list[Observation | None] = []

            async def wait() -> None:
                result.append(await hub.wait(running, timeout=30, on_update=on_update))

            tg.start_soon(wait)
            with anyio.fail_after(5):
                while hub.waiting == 0:  # noqa: ASYNC110 - joining is a task switch away
                    await anyio.sleep(0.01)
                await anyio.sleep(0.05)  # several intervals: a holder would have polled by now
                done = record(state=ExecutionState.WAITING_FOR_HUMAN)
                hub.push("k-1", Observation(done.status, done), poke=False)  # type: ignore[arg-type]
        assert result[0] is not None and result[0].status.state is ExecutionState.WAITING_FOR_HUMAN
        assert polls == 0 and seen == [ExecutionState.RUNNING, ExecutionState.WAITING_FOR_HUMAN]

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            with anyio.fail_after(5):
                while hub.waiting == 0:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                await hub.drain()
        assert result[1] is not None and result[1].status.state is ExecutionState.RUNNING
        assert await hub.wait(running, timeout=30) is None  # after draining, waits end at once


def test_fleet_settings_pick_redis_from_the_ledger_or_the_fleet_url_and_check_state_keys() -> None:
    local = build_fleet(load_settings(env={}), "sqlite:///tmp/x.db")
    assert not local.shared and local.live_seconds == 1.0
    shared = build_fleet(load_settings(env={}), "redis://127.0.0.1:6379/0?prefix=p:")
    assert shared.shared and isinstance(shared.leases, RedisLeases)
    apart = build_fleet(load_settings(env={"CREW_MCP_FLEET_URL": "redis://127.0.0.1:6379/1"}), "sqlite:///tmp/x.db")
    assert apart.shared
    assert not Fleet.local().shared
    keys = load_settings(env={"CREW_MCP_REQUEST_STATE_KEYS": f"{'a' * 32}, {'b' * 40}"}).request_state_keys
    assert [len(k.get_secret_value()) for k in keys] == [32, 40]
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_settings(env={"CREW_MCP_REQUEST_STATE_KEYS": "short"})
    with pytest.raises(ConfigError, match="lease_seconds"):
        load_settings(env={"CREW_MCP_LEASE_SECONDS": "0"})


async def test_a_no_wait_status_is_answered_from_memory_until_a_change_is_learned() -> None:
    settings = Settings(owner=OWNER, status_fresh_seconds=5)  # longer than the test
    async with in_memory("auto", settings, webhooks=True) as env:
        kickoff_id = await env.kickoff("research")
        first = await env.call("get_status", {"kickoff_id": kickoff_id})
        reads = env.sim.count("research", "GET", "/status")
        again = await env.call("get_status", {"kickoff_id": kickoff_id})
        assert again == first and env.sim.count("research", "GET", "/status") == reads  # no new read
        await env.sim.advance(3600)  # the crew pauses for review; its webhook drops what was in memory
        paused = await env.call("get_status", {"kickoff_id": kickoff_id})
        assert paused["state"] == "waiting_for_human"
    async with in_memory("auto", Settings(owner=OWNER, status_fresh_seconds=0)) as env:
        kickoff_id = await env.kickoff("research")
        await env.call("get_status", {"kickoff_id": kickoff_id})
        await env.call("get_status", {"kickoff_id": kickoff_id})
        assert env.sim.count("research", "GET", "/status") == 2  # 0: every call asks the crew
