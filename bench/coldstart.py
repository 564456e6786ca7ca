"""Figure 4: cold start, from spawning the server to the first ``tools/list`` response, over stdio.

Measured with the SDK ``Client(StdioServerParameters(...))``: the clock starts before ``__aenter__`` (which spawns
the process and does the handshake) and stops when ``list_tools()`` returns. crew-mcp (configured crews, its SQLite
ledger) and the bare-SDK floor alternate; the figure is the median of the runs. crew-mcp with no configuration
(the built-in simulated crews, ``make demo``'s path) is reported alongside.
"""

from __future__ import annotations

import time

from mcp import Client

from .common import Figure, Section, Upstream, base_env, baseline_stdio, crew_mcp_stdio, median, progress

RUNS = 7


async def _once(params: object) -> float:
    start = time.perf_counter()
    async with Client(params) as c:  # type: ignore[arg-type]
        await c.list_tools()
        return time.perf_counter() - start


async def run(up: Upstream, *, runs: int = RUNS) -> Section:
    section = Section("Cold start over stdio (figure 4)")
    cases = {
        "floor (bare MCPServer)": baseline_stdio("floor", up.baseline_env()),
        "crew-mcp (configured crews)": crew_mcp_stdio(up.crew_mcp_env()),
        "crew-mcp (no config: simulated crews)": crew_mcp_stdio(
            {**base_env(), "CREW_MCP_LEDGER_URL": f"sqlite:///{up.workdir}/coldstart-sim.db"}
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for params in cases.values():  # warm the page cache and .pyc files
        await _once(params)
    for i in range(runs):
        order = list(cases) if i % 2 == 0 else list(reversed(cases))
        for name in order:
            times[name].append(await _once(cases[name]))
    progress(f"coldstart: {runs} runs of each done")
    floor = "floor (bare MCPServer)"
    rows = ["| server | median (ms) | min (ms) | ratio to floor (median of paired runs) |", "|---|---:|---:|---:|"]
    ratios = {}
    for name, values in times.items():
        ratios[name] = median([x / y for x, y in zip(values, times[floor], strict=True)])
        rows.append(f"| {name} | {median(values) * 1000:.0f} | {min(values) * 1000:.0f} | {ratios[name]:.2f}× |")
    rows += ["", f"{runs} interleaved runs each after one warm-up run; spawn → first `tools/list` response."]
    section.body = rows
    crew = "crew-mcp (configured crews)"
    section.figures = [
        Figure(
            "4. cold start (spawn → tools/list)",
            f"{median(times[crew]) * 1000:.0f} ms (simulated default: "
            f"{median(times['crew-mcp (no config: simulated crews)']) * 1000:.0f} ms)",
            f"floor {median(times[floor]) * 1000:.0f} ms",
            f"{ratios[crew]:.2f}× (default {ratios['crew-mcp (no config: simulated crews)']:.2f}×)",
            "≤ 1.15× floor",
            ratios[crew] <= 1.15,
        )
    ]
    section.raw = {"times": times}
    return section
