"""Figures 1 and 2: ``get_status`` per-call latency over stdio, against the bare-SDK floor and the naive bridge.

Each server is a real stdio subprocess driven by the SDK ``Client``. All clients stay connected while batches
alternate between them (round 1: A B C ..., round 2: A B C ...), so drift hits every server alike; each round's
p50/p99 is computed per server and the reported figure is the median over rounds; ratios are the median of the
per-round ratios (paired by round).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from mcp import Client

from .common import (
    Figure,
    Section,
    Upstream,
    baseline_stdio,
    crew_mcp_stdio,
    median,
    ms,
    percentile,
    progress,
    verdict,
)

ROUNDS = 5
CALLS = 200
WARMUP = 30


async def kickoff(client: Client, crew: str) -> str:
    r = await client.call_tool("kickoff_crew", {"crew": crew, "inputs": {"topic": "bench"}})
    if r.is_error or r.structured_content is None:
        raise RuntimeError(f"kickoff on {crew} failed: {r.content}")
    return str(r.structured_content["kickoff_id"])


async def batch(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


def _checked(client: Client, tool: str, args: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        r = await client.call_tool(tool, args)
        if r.is_error:
            raise RuntimeError(f"{tool} failed: {r.content}")
        return r

    return call


async def run(up: Upstream, *, rounds: int = ROUNDS, calls: int = CALLS) -> Section:
    section = Section("get_status latency over stdio (figures 1 and 2)")
    async with AsyncExitStack() as stack:
        progress("latency: starting crew-mcp, the bare-SDK floor and the naive bridge over stdio")
        crew = await stack.enter_async_context(Client(crew_mcp_stdio(up.crew_mcp_env())))
        floor = await stack.enter_async_context(Client(baseline_stdio("floor", up.baseline_env())))
        naive = await stack.enter_async_context(Client(baseline_stdio("naive", up.baseline_env())))

        running_id = await kickoff(crew, "hold")
        finished_id = await kickoff(crew, "instant")
        for _ in range(50):  # the first read after completion fetches once and files the final status
            r = await crew.call_tool("get_status", {"kickoff_id": finished_id})
            if r.structured_content and r.structured_content.get("state") == "completed":
                break
        else:
            raise RuntimeError("the instant run never completed")

        cases: dict[str, Callable[[], Awaitable[Any]]] = {
            "crew-mcp running": _checked(crew, "get_status", {"kickoff_id": running_id}),
            "floor get_status": _checked(floor, "get_status", {"kickoff_id": running_id}),
            "naive bridge": _checked(naive, "get_status", {"kickoff_id": running_id}),
            "crew-mcp finished": _checked(crew, "get_status", {"kickoff_id": finished_id}),
            "floor echo": _checked(floor, "echo", {"text": finished_id}),
        }
        for call in cases.values():
            await batch(call, WARMUP)

        p50: dict[str, list[float]] = {k: [] for k in cases}
        p99: dict[str, list[float]] = {k: [] for k in cases}
        instant_before = await up.status_requests("instant")
        hold_before = await up.status_requests("hold")
        for i in range(rounds):
            order = list(cases) if i % 2 == 0 else list(reversed(cases))
            for name in order:
                sample = await batch(cases[name], calls)
                p50[name].append(percentile(sample, 50))
                p99[name].append(percentile(sample, 99))
            progress(f"latency: round {i + 1}/{rounds} done")
        instant_upstream = await up.status_requests("instant") - instant_before
        hold_upstream = await up.status_requests("hold") - hold_before

    def ratio(a: str, b: str, pct: dict[str, list[float]]) -> float:
        return median([x / y for x, y in zip(pct[a], pct[b], strict=True)])

    rows = [
        "| server / case | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|",
        *(f"| {k} | {ms(median(p50[k]))} | {ms(median(p99[k]))} |" for k in cases),
    ]
    r_floor50 = ratio("crew-mcp running", "floor get_status", p50)
    r_floor99 = ratio("crew-mcp running", "floor get_status", p99)
    r_naive50 = ratio("crew-mcp running", "naive bridge", p50)
    r_naive99 = ratio("crew-mcp running", "naive bridge", p99)
    r_echo50 = ratio("crew-mcp finished", "floor echo", p50)
    r_echo99 = ratio("crew-mcp finished", "floor echo", p99)
    naive_over_floor = ratio("naive bridge", "floor get_status", p50)
    rows += [
        "",
        f"{rounds} interleaved rounds × {calls} sequential calls per server per round (after {WARMUP} warm-up calls); "
        "values are medians over rounds of each round's percentile.",
        f"Upstream requests during the timed rounds: {hold_upstream} `GET /status` for the running run "
        f"({rounds * calls} calls each to crew-mcp, the floor and the naive bridge; the two baselines make one per "
        f"call, so crew-mcp made {hold_upstream - 2 * rounds * calls}: with `CREW_MCP_STATUS_FRESH` at its default, 0, "
        f"every no-wait call asks the crew), **{instant_upstream}** for the finished run ({rounds * calls} calls).",
        f"The naive bridge's per-call HTTP client costs {naive_over_floor:.2f}× the floor at p50 "
        f"(≈{(median(p50['naive bridge']) - median(p50['floor get_status'])) * 1000:.1f} ms per call).",
    ]
    section.body = rows
    running = f"p50 {ms(median(p50['crew-mcp running']))} ms, p99 {ms(median(p99['crew-mcp running']))} ms"
    section.figures = [
        Figure(
            "1a. get_status, running run, vs floor",
            running,
            f"floor p50 {ms(median(p50['floor get_status']))} / p99 {ms(median(p99['floor get_status']))} ms",
            f"p50 {r_floor50:.2f}×, p99 {r_floor99:.2f}×",
            "≤ 1.15× floor",
            r_floor50 <= 1.15 and r_floor99 <= 1.15,
        ),
        Figure(
            "1b. get_status, running run, vs naive bridge",
            running,
            f"naive p50 {ms(median(p50['naive bridge']))} / p99 {ms(median(p99['naive bridge']))} ms",
            f"p50 {r_naive50:.2f}×, p99 {r_naive99:.2f}×",
            "≤ 0.2× naive",
            r_naive50 <= 0.2 and r_naive99 <= 0.2,
        ),
        Figure(
            "2. get_status, finished run (ledger), vs echo",
            f"p50 {ms(median(p50['crew-mcp finished']))} ms, p99 {ms(median(p99['crew-mcp finished']))} ms; "
            f"{instant_upstream} upstream requests",
            f"echo p50 {ms(median(p50['floor echo']))} / p99 {ms(median(p99['floor echo']))} ms",
            f"p50 {r_echo50:.2f}×, p99 {r_echo99:.2f}×",
            "≤ 1.2× echo, 0 upstream",
            r_echo50 <= 1.2 and r_echo99 <= 1.2 and instant_upstream == 0,
        ),
    ]
    section.raw = {"p50": p50, "p99": p99, "instant_upstream": instant_upstream, "hold_upstream": hold_upstream}
    return section


def describe(section: Section) -> str:
    return "\n".join(
        f"- {f.name}: {f.value} vs {f.baseline} → {f.ratio} ({verdict(bool(f.met))})" for f in section.figures
    )
