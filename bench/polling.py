"""Figure 5: upstream status requests per completed run when clients wait with ``get_status(wait_seconds=30)``.

One crew-mcp streamable HTTP server; a run of the ``short`` crew (two 1.5 s tasks) is kicked off, then N clients
(1, 10, 100; each its own SDK ``Client``) call ``get_status(kickoff_id, wait_seconds=30)`` in a loop until the run
is completed. The simulator counts the ``GET /status`` requests it received. crew-mcp's shared poll loop
(:mod:`crew_mcp.watch`) polls at 0.5 s, then 1.5 times longer each poll up to 5 s; "poll intervals" below is how many
polls that schedule makes between the first wait and the moment the clients saw completion.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import anyio
from mcp import Client

from crew_mcp.watch import POLL_FACTOR, POLL_INITIAL, POLL_MAX

from .common import Figure, Section, Upstream, http_server, progress
from .latency import kickoff

WATCHERS = (1, 10, 100)
WAIT = 30.0


def schedule_polls(seconds: float) -> int:
    """How many polls the hub's schedule makes in ``[0, seconds]`` (the first poll is at 0)."""
    t, interval, polls = 0.0, POLL_INITIAL, 0
    while t <= seconds:
        polls += 1
        t += interval
        interval = min(interval * POLL_FACTOR, POLL_MAX)
    return polls


async def _watch(client: Client, kickoff_id: str) -> tuple[int, float]:
    calls = 0
    while True:
        calls += 1
        r = await client.call_tool("get_status", {"kickoff_id": kickoff_id, "wait_seconds": WAIT})
        if r.is_error or r.structured_content is None:
            raise RuntimeError(f"get_status failed: {r.content}")
        if r.structured_content["state"] == "completed":
            return calls, time.perf_counter()
        if r.structured_content["state"] not in ("running", "unknown"):
            raise RuntimeError(f"unexpected state {r.structured_content['state']}")


async def run(up: Upstream) -> Section:
    section = Section("Upstream requests per completed run, shared polling (figure 5)")
    rows = [
        "| watching clients | upstream `GET /status` | poll intervals (schedule) | requests per poll interval "
        "| tool calls made | run seen completed after (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    per_interval: dict[int, float] = {}
    requests: dict[int, int] = {}
    async with http_server(["-m", "crew_mcp", "serve", "--http", "--port", "0"], up.crew_mcp_env()) as server:
        for n in WATCHERS:
            async with AsyncExitStack() as stack:
                clients = [await stack.enter_async_context(Client(server.url)) for _ in range(n)]
                kickoff_id = await kickoff(clients[0], "short")
                before = await up.status_requests("short")
                start = time.perf_counter()
                outcomes: list[tuple[int, float]] = []

                async def one(c: Client) -> None:
                    outcomes.append(await _watch(c, kickoff_id))  # noqa: B023 - awaited inside this iteration

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for c in clients:
                            tg.start_soon(one, c)
                count = await up.status_requests("short") - before
                seen = min(t for _, t in outcomes) - start
                intervals = schedule_polls(seen)
                requests[n] = count
                per_interval[n] = count / intervals
                calls = sum(c for c, _ in outcomes)
                rows.append(f"| {n} | {count} | {intervals} | {per_interval[n]:.2f} | {calls} | {seen:.2f} |")
            progress(f"polling: {n} watcher(s) done")
    rows += [
        "",
        "A run of the `short` crew takes 3 s (two 1.5 s tasks); clients start waiting right after the kickoff, which "
        "itself makes no status request. The requests include the poll that first sees `completed` (saved to the "
        "ledger; later reads are served from it).",
    ]
    section.body = rows
    section.figures = [
        Figure(
            f"5. upstream requests per poll interval, N={n}",
            f"{requests[n]} requests for the run ({per_interval[n]:.2f} per poll interval)",
            f"N=1: {requests[1]} requests",
            f"{requests[n] / requests[1]:.2f}× N=1",
            "1 request per poll interval for any N",
            per_interval[n] <= 1.0 + 1e-9,
        )
        for n in WATCHERS
    ]
    section.raw = {"requests": requests, "per_interval": per_interval}
    return section
