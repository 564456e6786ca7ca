"""Bounded waits on long runs: caps, early returns, progress, cancellation, and one shared poll loop.

The simulator runs on a manual clock, so a run only moves when a test advances it; the service mostly does
too (``ManualClock``): a wait's cap and the poll schedule pass in no wall time, so nothing here is timed.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hitl_support import MODES, OWNER, Env, in_memory, instant_review_crew, until
from mcp import MCPError

from crew_mcp.clock import ManualClock
from crew_mcp.ledger import RunRecord
from crew_mcp.models import ExecutionState, ExecutionStatus
from crew_mcp.settings import Settings
from crew_mcp.simulator import builtin_crews
from crew_mcp.watch import Observation, StatusHub

TRIP = {"budget": "1000 USD", "interests": "food, hikes", "duration": "7 days", "age": 35}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _hub_idle(env: Env) -> None:
    await until(lambda: env.service.runs.hub.active == 0)


async def _call_waiting(env: Env, tool: str, args: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Call ``tool`` and, once its wait has begun, let ``seconds`` pass on the service's clock."""
    assert env.clock is not None
    out: dict[str, Any] = {}

    async def call() -> None:
        out.update(await env.call(tool, args))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await until(lambda: env.service.runs.hub.active > 0 or bool(out))
            await env.clock.advance(seconds)
    return out


async def test_a_600_s_wait_returns_at_the_server_cap_with_the_handle_and_a_next_step(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER), clock=ManualClock()) as env:  # the cap: 45 s
        args = {"crew": "trip_planner", "inputs": TRIP, "wait_seconds": 600}
        run = await _call_waiting(env, "kickoff_crew", args, 45)
        assert run["kickoff_id"] and run["state"] == "running"
        assert f"get_status(kickoff_id={run['kickoff_id']!r}, wait_seconds=30)" in run["next_step"]

        again = await _call_waiting(env, "get_status", {"kickoff_id": run["kickoff_id"], "wait_seconds": 600}, 45)
        assert again["kickoff_id"] == run["kickoff_id"] and again["state"] == "running"
        assert "get_status" in again["next_step"]
        await _hub_idle(env)


async def test_a_wait_that_outlasts_the_cap_never_returns_early(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER), clock=ManualClock()) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        done: list[dict[str, Any]] = []

        async def wait() -> None:
            done.append(await env.call("get_status", {"kickoff_id": kid, "wait_seconds": 600}))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await until(lambda: env.service.runs.hub.active > 0)
                assert env.clock is not None
                await env.clock.advance(44.9)
                assert done == []  # still waiting: the cap (45 s) has not passed
                await env.clock.advance(0.2)
        assert done[0]["state"] == "running"


async def test_a_wait_returns_before_its_cap_when_the_run_pauses(mode: str) -> None:
    crews = [*builtin_crews(), instant_review_crew()]
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=30), crews=crews, clock=ManualClock()) as env:
        with anyio.fail_after(5):  # the service's clock never moves: only the pause can end this wait
            run = await env.call("kickoff_crew", {"crew": "instant", "inputs": {}, "wait_seconds": 30})
        assert run["kickoff_id"] and run["state"] == "waiting_for_human"
        assert run["pending"]["task_id"] == "check"


async def test_get_status_wait_returns_as_soon_as_the_run_finishes(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=30), clock=ManualClock()) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        result: dict[str, Any] = {}

        async def wait() -> None:
            result.update(await env.call("get_status", {"kickoff_id": kid, "wait_seconds": 30}))

        assert env.clock is not None
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await until(lambda: env.service.runs.hub.active > 0)
                await env.sim.advance(3600)
                await env.clock.advance(1)  # the next poll, 29 s before the cap
        assert result["state"] == "completed" and result["output"]["text"]


@pytest.mark.parametrize("mode", ["legacy"])  # era-independent: one era
async def test_get_status_wait_returns_when_the_run_fails(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=30)) as env:
        kid = await env.kickoff("flaky", {"topic": "x"})
        await env.sim.advance(3600)
        with anyio.fail_after(5):
            out = await env.call("get_status", {"kickoff_id": kid, "wait_seconds": 30})
        assert out["state"] == "failed" and "simulated failure" in out["error"]


async def test_progress_notifications_carry_tasks_done_of_total_and_the_current_task_and_agent(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=0.2)) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        await env.sim.advance(2.1)  # the first of two tasks is done; the itinerary is being written
        seen: list[tuple[float, float | None, str | None]] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            seen.append((done, total, message))

        with anyio.fail_after(5):
            out = await env.call("get_status", {"kickoff_id": kid, "wait_seconds": 30}, progress_callback=progress)
        assert out["state"] == "running"
        assert seen, "no progress notification reached the client"
        done, total, message = seen[-1]
        assert (done, total) == (1.0, 2.0)
        task, agent = out["progress"]["current_task"], out["progress"]["current_agent"]
        assert task and agent
        assert message is not None and f"task {task}" in message and f"agent {agent}" in message


async def test_client_cancelling_the_call_stops_the_wait_and_the_shared_poll_loop(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=60), clock=ManualClock()) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        assert env.clock is not None
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(env.client.call_tool, "get_status", {"kickoff_id": kid, "wait_seconds": 60})
                await until(lambda: env.service.runs.hub.active > 0)
                tg.cancel_scope.cancel()  # the client gives up on the call
            await _hub_idle(env)
        polls = env.sim.count("trip_planner", "GET", "/status")
        await env.clock.advance(100)
        assert env.sim.count("trip_planner", "GET", "/status") == polls  # nobody polls any more
        # The server is still usable after the cancelled call.
        assert (await env.call("get_status", {"kickoff_id": kid}))["state"] == "running"


async def test_a_client_read_timeout_cancels_the_server_side_wait(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=60)) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        with anyio.fail_after(5), pytest.raises(MCPError) as info:
            await env.client.call_tool("get_status", {"kickoff_id": kid, "wait_seconds": 60}, read_timeout_seconds=0.3)
        assert info.value.error.code == -32001
        await _hub_idle(env)


@pytest.mark.parametrize("waiters", [1, 10])
async def test_concurrent_waiters_on_one_run_share_one_upstream_poll_loop(mode: str, waiters: int) -> None:
    """With a poll interval far beyond the cap, one loop polls exactly once; so must ten waiters' loop."""
    async with in_memory(mode, Settings(owner=OWNER), poll_initial=100.0, clock=ManualClock()) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        before = env.sim.count("trip_planner", "GET", "/status")
        states: list[str] = []

        async def wait() -> None:
            states.append((await env.call("get_status", {"kickoff_id": kid, "wait_seconds": 30}))["state"])

        assert env.clock is not None
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(waiters):
                    tg.start_soon(wait)
                await until(lambda: env.service.runs.hub.active > 0)
                await anyio.wait_all_tasks_blocked()  # every waiter has joined the watch
                await env.clock.advance(30)
        assert states == ["running"] * waiters
        assert env.sim.count("trip_planner", "GET", "/status") - before == 1
        await _hub_idle(env)


@pytest.mark.parametrize("mode", ["auto"])  # era-independent: one era
async def test_ten_waiters_poll_no_more_often_than_one_loops_schedule(mode: str) -> None:
    """With a fast schedule, ten waiters' upstream reads stay within what one loop can make in that time."""
    initial, factor, span = 0.5, 1.5, 20.0
    async with in_memory(mode, Settings(owner=OWNER), poll_initial=initial, clock=ManualClock()) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        before = env.sim.count("trip_planner", "GET", "/status")
        assert env.clock is not None
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(env.call, "get_status", {"kickoff_id": kid, "wait_seconds": span})
                await until(lambda: env.service.runs.hub.active > 0)
                await anyio.wait_all_tasks_blocked()
                await env.clock.advance(span)
        polls = env.sim.count("trip_planner", "GET", "/status") - before
        slots, t, interval = 1, 0.0, initial  # one loop's reads in ``span`` s: at 0, 0.5, 1.25, 2.375, ...
        while t + interval < span:
            t, interval, slots = t + interval, min(interval * factor, 5.0), slots + 1
        assert polls == slots, (polls, slots)


async def test_a_cancel_while_the_loop_is_polling_still_ends_the_loop_promptly(mode: str) -> None:
    """The last waiter leaving during a slow upstream read must not leave the loop asleep for a whole interval."""
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=60), poll_initial=100.0) as env:
        kid = await env.kickoff("trip_planner", TRIP)
        env.sim.faults("trip_planner").latency(0.3)
        with anyio.move_on_after(0.1):
            await env.client.call_tool("get_status", {"kickoff_id": kid, "wait_seconds": 60})
        await _hub_idle(env)


async def test_news_pushed_during_an_upstream_read_makes_the_loop_read_again_at_once() -> None:
    """A webhook arriving while a read is in flight must not wait out the poll interval (here 100 s)."""
    reads = 0
    gate = anyio.Event()

    record = RunRecord(request_id="r-1", kickoff_id="k-1", crew="crew", conversation_id="c", owner=OWNER)

    async def poll(record: RunRecord) -> Observation:
        nonlocal reads
        reads += 1
        if reads == 1:
            await gate.wait()
            return Observation(ExecutionStatus(kickoff_id="k-1", state=ExecutionState.RUNNING), record)
        return Observation(ExecutionStatus(kickoff_id="k-1", state=ExecutionState.WAITING_FOR_HUMAN), record)

    async with StatusHub(poll, initial=100.0) as hub:
        got: list[Observation | None] = []

        async def wait() -> None:
            got.append(await hub.wait(record, timeout=30))

        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await until(lambda: reads > 0)
                hub.push("k-1")  # e.g. a task webhook announcing the pause
                gate.set()
        assert reads == 2
        assert got[0] is not None and got[0].status.state is ExecutionState.WAITING_FOR_HUMAN
