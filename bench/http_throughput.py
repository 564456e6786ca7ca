"""Figure 3: streamable HTTP throughput of ``get_status`` (running run) at 1, 8 and 32 concurrent clients.

crew-mcp (``crew-mcp serve --http``) and the bare-SDK floor (the same ``MCPServer`` served by uvicorn) run as
subprocesses; the load generator is this process, one SDK ``Client`` per concurrent client, each calling in a
loop for a fixed time. Runs alternate floor / crew-mcp for every (era, concurrency) cell and repeat; the figure
is the median calls/s over repetitions. The server's CPU time per call (from /proc) is reported too: on a
2-core machine the load generator competes for CPU, so calls/s understates a server's own cost difference.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import anyio
from mcp import Client

from .common import Figure, HttpServer, Section, Upstream, http_server, median, percentile, progress
from .latency import kickoff

CONCURRENCY = (1, 8, 32)
MODES = ("legacy", "auto")
DURATION = 1.5
REPS = 2


async def _load(server: HttpServer, mode: str, clients: int, kickoff_id: str, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    async with AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(Client(server.url, mode=mode)) for _ in range(clients)]
        for c in conns:  # one warm-up call each
            await c.call_tool("get_status", {"kickoff_id": kickoff_id})
        cpu0 = server.cpu_seconds()
        start = time.perf_counter()
        deadline = start + duration

        async def worker(c: Client) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                r = await c.call_tool("get_status", {"kickoff_id": kickoff_id})
                latencies.append(time.perf_counter() - t)
                errors += bool(r.is_error)

        async with anyio.create_task_group() as tg:
            for c in conns:
                tg.start_soon(worker, c)
        elapsed = time.perf_counter() - start
        cpu = server.cpu_seconds() - cpu0
    if errors:
        raise RuntimeError(f"{errors} get_status calls failed")
    return {
        "rate": len(latencies) / elapsed,
        "p99": percentile(latencies, 99),
        "cpu_per_call": cpu / len(latencies),
    }


async def run(up: Upstream, *, reps: int = REPS, duration: float = DURATION) -> Section:
    section = Section("Streamable HTTP throughput (figure 3)")
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    async with AsyncExitStack() as stack:
        progress("http: starting crew-mcp and the floor as streamable HTTP servers")
        crew = await stack.enter_async_context(
            http_server(["-m", "crew_mcp", "serve", "--http", "--port", "0"], up.crew_mcp_env())
        )
        floor = await stack.enter_async_context(
            http_server(["-m", "bench.baselines", "floor", "--http"], up.baseline_env())
        )
        async with Client(crew.url) as first:
            kickoff_id = await kickoff(first, "hold")
        servers = {"floor": floor, "crew-mcp": crew}
        for rep in range(reps):
            for mode in MODES:
                for n in CONCURRENCY:
                    order = ["floor", "crew-mcp"] if rep % 2 == 0 else ["crew-mcp", "floor"]
                    for name in order:
                        res = await _load(servers[name], mode, n, kickoff_id, duration)
                        results.setdefault((name, mode, n), []).append(res)
            progress(f"http: repetition {rep + 1}/{reps} done")

    rows = [
        "| era | clients | floor calls/s | crew-mcp calls/s | ratio | floor p99 (ms) | crew-mcp p99 (ms) "
        "| server CPU/call floor → crew-mcp (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = None
    figures = []
    for mode in MODES:
        for n in CONCURRENCY:
            f, c = results[("floor", mode, n)], results[("crew-mcp", mode, n)]
            ratio = median([x["rate"] / y["rate"] for x, y in zip(c, f, strict=True)])
            worst = ratio if worst is None else min(worst, ratio)
            era = "2025-11-25 (legacy)" if mode == "legacy" else "2026-07-28 (auto)"
            rate_f, rate_c = median([x["rate"] for x in f]), median([x["rate"] for x in c])
            p99_f, p99_c = median([x["p99"] for x in f]) * 1000, median([x["p99"] for x in c]) * 1000
            cpu_f = median([x["cpu_per_call"] for x in f]) * 1000
            cpu_c = median([x["cpu_per_call"] for x in c]) * 1000
            rows.append(
                f"| {era} | {n} | {rate_f:.0f} | {rate_c:.0f} | {ratio:.2f}× | {p99_f:.1f} | {p99_c:.1f} "
                f"| {cpu_f:.2f} → {cpu_c:.2f} |"
            )
            figures.append(
                Figure(
                    f"3. HTTP {mode}, {n} client{'s' if n > 1 else ''}",
                    f"{rate_c:.0f} calls/s (p99 {p99_c:.1f} ms)",
                    f"floor {rate_f:.0f} calls/s (p99 {p99_f:.1f} ms)",
                    f"{ratio:.2f}×",
                    "≥ 0.8× floor",
                    ratio >= 0.8,
                )
            )
    rows += [
        "",
        f"{reps} repetitions × {duration:g} s per cell, floor and crew-mcp alternating; each client is its own SDK "
        "`Client` (its own HTTP connection pool) calling `get_status` on a running run in a loop.",
    ]
    section.body = rows
    section.figures = figures
    section.raw = {"worst_ratio": worst, "results": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in results.items()}}
    return section
