"""The ledger-read budget of one status path (issue 9): what a get_status and the poll loop cost the ledger.

A get_status of a running run reads the ledger at most once when the record is not in hand (a fresh server on the
same SQLite file), and a poll that finds nothing new costs no ledger operation at all, however many polls a wait
makes. The ledger is a real SQLite file behind a wrapper that counts every call by method; the simulator's clock
and the service's clock are manual, so a run stays unchanged until the test moves it and each poll is a step.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
from hitl_support import OWNER, Env, service_opener, until
from mcp import Client

from crew_mcp.clock import ManualClock
from crew_mcp.ledger import Ledger
from crew_mcp.runtime import Runtime
from crew_mcp.server import build_server
from crew_mcp.service import CrewService
from crew_mcp.settings import Settings
from crew_mcp.simulator import Simulator

READS = frozenset({"get", "get_request", "list", "latest", "pending_approvals", "pending_count"})
"""The ledger methods that read records (the rest write, or check the store)."""


class CountingLedger:
    """A real ledger whose every coroutine method is counted by name; everything else passes through."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        method = cast(Callable[..., Awaitable[Any]], attr)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted

    def reads(self) -> int:
        """How many record reads were made."""
        return sum(n for name, n in self.calls.items() if name in READS)

    def used(self) -> dict[str, int]:
        """Every call so far by method, but retention's prunes (they run on their own schedule)."""
        return {name: n for name, n in self.calls.items() if name != "prune"}


@asynccontextmanager
async def served(sim: Simulator, ledger_url: str, clock: ManualClock) -> AsyncIterator[tuple[Env, CountingLedger]]:
    """A fresh MCP server (a new process, as far as the ledger is concerned) on ``ledger_url``, its ledger counted."""
    counters: list[CountingLedger] = []

    def counting(ledger: Ledger) -> Ledger:
        counters.append(CountingLedger(ledger))
        return cast(Ledger, counters[-1])

    settings = Settings(owner=OWNER)
    services: list[CrewService] = []
    opener = service_opener(sim, services, ledger_url=ledger_url, wrap=counting, clock=clock)
    mcp = build_server(settings, opener=opener, runtime=Runtime())
    async with Client(mcp, mode="auto") as client:
        env = Env(client, sim, settings, services, clock)
        await until(lambda: bool(counters))
        yield env, counters[-1]


async def started(sim: Simulator, ledger_url: str) -> str:
    """A research run kicked off through one server, which then stops: its record is only in the ledger now."""
    async with served(sim, ledger_url, ManualClock()) as (env, _):
        return await env.kickoff("research")


async def test_get_status_of_a_running_run_reads_the_ledger_once_when_the_record_is_not_in_hand(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    async with Simulator(clock="manual") as sim:
        kid = await started(sim, url)
        async with served(sim, url, ManualClock()) as (env, ledger):  # a restart: nothing of the run in memory
            cold = await env.call("get_status", {"kickoff_id": kid})
            assert ledger.reads() == 1, ledger.calls
            before = ledger.used()
            warm = await env.call("get_status", {"kickoff_id": kid})  # in hand now, and the crew says the same
            assert ledger.used() == before, ledger.calls
            await sim.advance(2.5)  # the first task is done: the next read is news, saved once, with no read
            moved = await env.call("get_status", {"kickoff_id": kid})
    assert cold["state"] == warm["state"] == moved["state"] == "running" and cold["kickoff_id"] == kid
    assert moved["progress"] != warm["progress"]
    assert ledger.reads() == 1 and ledger.calls["save_status"] == 2, ledger.calls


async def test_a_wait_whose_polls_find_nothing_new_costs_no_ledger_operation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    async with Simulator(clock="manual") as sim:
        kid = await started(sim, url)
        clock = ManualClock()
        async with served(sim, url, clock) as (env, ledger):
            await env.call("get_status", {"kickoff_id": kid})  # the record in hand, the crew's answer saved
            before, polls = ledger.used(), sim.count("research", "GET", "/status")
            out: dict[str, Any] = {}

            async def wait() -> None:
                out.update(await env.call("get_status", {"kickoff_id": kid, "wait_seconds": 20}))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    await until(lambda: env.service.runs.hub.active > 0)
                    for _ in range(25):  # one second at a time: the loop polls (at most every 5 s) until the cap
                        await clock.advance(1)
            assert out["state"] == "running"
            assert sim.count("research", "GET", "/status") - polls >= 10  # many polls, all finding the same
            assert ledger.used() == before, ledger.calls
