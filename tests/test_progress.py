"""Progress notifications: within one call each carries a larger value than the one before (the protocol's MUST),
and a finished run reports total of total (issue 10, defect 4). Checked with the SDK client's progress callback in
both protocol eras; the simulator and the service run on manual clocks, so nothing here is timed."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hitl_support import MODES, OWNER, Env, documented, in_memory, until

from crew_mcp.clock import ManualClock
from crew_mcp.settings import Settings
from crew_mcp.simulator import CrewSpec, InputSpec, TaskSpec

Seen = list[tuple[float, float | None, str | None]]


def three_tasks() -> CrewSpec:
    """Three one-second tasks, answering /status in the documented shape (no progress once completed)."""
    tasks = [TaskSpec(id=f"step_{i}", agent=f"Agent {i}", duration=1.0, output=f"Step {i}.") for i in (1, 2, 3)]
    spec = CrewSpec(name="steps", description="Three steps", inputs=[InputSpec(name="topic")], tasks=tasks)
    return documented(spec)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _call_while(env: Env, tool: str, args: dict[str, Any], step: Any) -> tuple[dict[str, Any], Seen]:
    """Call ``tool`` with a progress callback and run ``step()`` until the call returns."""
    seen: Seen = []
    out: dict[str, Any] = {}

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    async def call() -> None:
        out.update(await env.call(tool, args, progress_callback=on_progress))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await until(lambda: env.service.runs.hub.active > 0 or bool(out))
            while not out:
                await step()
                await anyio.lowlevel.checkpoint()
    return out, seen


def _increasing(seen: Seen) -> bool:
    return all(a[0] < b[0] for a, b in itertools.pairwise(seen))


async def test_a_documented_three_task_run_reports_strictly_increasing_progress_up_to_total(mode: str) -> None:
    clock = ManualClock()
    crews = [three_tasks()]
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=30), crews=crews, clock=clock) as env:

        async def step() -> None:  # the crew moves half a task, then the next poll (at most 5 s away) sees it
            await env.sim.advance(0.5)
            await clock.advance(5)

        kid = await env.kickoff("steps_doc", {"topic": "x"})
        calls: list[Seen] = []
        while True:
            out, seen = await _call_while(env, "get_status", {"kickoff_id": kid, "wait_seconds": 30}, step)
            calls.append(seen)
            if out["state"] != "running":
                break
    assert out["state"] == "completed"
    assert all(_increasing(seen) for seen in calls), calls
    values = [v for seen in calls for v, _, _ in seen]
    assert {1.0, 2.0} <= set(values), calls  # the tasks done were reported as they finished
    assert calls[-1][-1][:2] == (3.0, 3.0), calls  # completed: total of total, though the last body had no progress


async def test_a_long_wait_on_a_run_that_does_not_move_sends_one_notification(mode: str) -> None:
    clock = ManualClock()
    trip = {"budget": "1", "interests": "x", "duration": "1 day", "age": 30}
    async with in_memory(mode, Settings(owner=OWNER), clock=clock) as env:
        kid = await env.kickoff("trip_planner", trip)

        async def step() -> None:  # 45 s of polls that all see the same status
            await clock.advance(1)

        out, seen = await _call_while(env, "get_status", {"kickoff_id": kid, "wait_seconds": 45}, step)
    assert out["state"] == "running"
    assert len(seen) == 1 and seen[0][:2] == (0.0, 2.0), seen


async def test_a_pause_without_a_new_task_count_still_moves_the_value_below_the_next_whole_task(mode: str) -> None:
    clock = ManualClock()
    async with in_memory(mode, Settings(owner=OWNER, wait_cap_seconds=30), clock=clock) as env:
        kid = await env.kickoff("research", {"topic": "x"})

        async def step() -> None:
            await env.sim.advance(1.0)
            await clock.advance(5)

        out, seen = await _call_while(env, "get_status", {"kickoff_id": kid, "wait_seconds": 30}, step)
    assert out["state"] == "waiting_for_human"
    assert _increasing(seen), seen
    value, _, message = seen[-1]
    assert message is not None and message.startswith("waiting_for_human"), seen
    assert value != int(value) and int(value) == out["progress"]["completed"], seen
