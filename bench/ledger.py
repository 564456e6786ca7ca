"""Figure 6: the run ledger at 100k records (bench/ledger_bench.py) and crew-mcp's resident memory.

Ledger throughput comes from :func:`bench.ledger_bench.run` (another engineer's benchmark, reused as is). Memory
is the VmRSS of the crew-mcp stdio server process, read from /proc: once idle (configured crews, empty ledger)
and once with a SQLite ledger prefilled with 100k records before the server starts (after ``list_executions``
has read from it). The bare-SDK floor's RSS is the baseline.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from crew_mcp.ledger import open_ledger

from . import ledger_bench
from .common import Figure, Section, Upstream, baseline_stdio, children, crew_mcp_stdio, median, progress, rss_mb

RECORDS = 100_000
SAMPLES = 3


async def _prefill(path: Path, n: int) -> float:
    start = time.perf_counter()
    ledger = open_ledger(f"sqlite:///{path}")
    try:
        for chunk in ledger_bench._chunks(n):
            await ledger.create_many(chunk)
    finally:
        await ledger.aclose()
    return time.perf_counter() - start


async def _rss(params: StdioServerParameters, calls: list[tuple[str, dict[str, Any]]]) -> float:
    before = children()
    async with Client(params) as c:
        await c.list_tools()
        for tool, args in calls:
            r = await c.call_tool(tool, args)
            if r.is_error:
                raise RuntimeError(f"{tool} failed: {r.content}")
        await anyio.sleep(0.5)  # let start-up work (retention prune) settle
        (pid,) = children() - before
        return rss_mb(pid)


async def run(up: Upstream, *, records: int = RECORDS) -> Section:
    section = Section("Run ledger and memory (figure 6)")
    progress(f"ledger: running bench/ledger_bench.py at {records:,} records (memory, SQLite, Redis)")
    results = await anyio.to_thread.run_sync(ledger_bench.run, records)
    table = ledger_bench._table(results, records)

    progress("ledger: measuring crew-mcp's resident memory")
    with tempfile.TemporaryDirectory(dir=up.workdir) as tmp:
        full = Path(tmp) / "full.db"
        prefill = await _prefill(full, records)
        keep = {"CREW_MCP_RETENTION_DAYS": "36500"}  # the prefilled records are dated 2026-01-01
        idle_env = {**up.crew_mcp_env(Path(tmp) / "empty.db"), **keep}
        full_env = {**up.crew_mcp_env(full), **keep, "CREW_MCP_OWNER": "user-0"}
        listing = [("list_executions", {"limit": 200}), ("list_pending_approvals", {})]
        rss: dict[str, list[float]] = {"floor": [], "idle": [], "full": []}
        for _ in range(SAMPLES):
            rss["floor"].append(await _rss(baseline_stdio("floor", up.baseline_env()), []))
            rss["idle"].append(await _rss(crew_mcp_stdio(idle_env), []))
            rss["full"].append(await _rss(crew_mcp_stdio(full_env), listing))
    floor, idle, full_mb = median(rss["floor"]), median(rss["idle"]), median(rss["full"])
    section.body = [
        table,
        "",
        "| process | VmRSS (MB) | vs floor |",
        "|---|---:|---:|",
        f"| bare-SDK floor server, idle | {floor:.1f} | 1.00× |",
        f"| crew-mcp server, idle (empty SQLite ledger) | {idle:.1f} | {idle / floor:.2f}× |",
        f"| crew-mcp server, {records:,} records in its SQLite ledger | {full_mb:.1f} | {full_mb / floor:.2f}× |",
        "",
        f"Ledger throughput: `bench/ledger_bench.py` `run({records})` (sequential operations, "
        f"{ledger_bench.SAMPLE} of each kind). RSS: median of {SAMPLES} server starts; the {records:,}-record file was "
        f"prefilled in {prefill:.1f} s before the server started, and the server answered `list_executions(limit=200)` "
        "and `list_pending_approvals` before its RSS was read.",
    ]
    sqlite, redis = results.get("sqlite", {}), results.get("redis", {})

    def ops(r: dict[str, float]) -> str:
        if not r:
            return "not measured"
        return f"create+confirm {r['write_ops']:,.0f}/s, get {r['get_ops']:,.0f}/s, list {r['list_ops']:,.0f}/s"

    section.figures = [
        Figure(f"6a. SQLite ledger at {records:,}", ops(sqlite), "—", "—", "report", None),
        Figure(f"6b. Redis ledger at {records:,}", ops(redis), "—", "—", "report", None),
        Figure(
            "6c. server RSS, idle / 100k records",
            f"{idle:.0f} MB / {full_mb:.0f} MB",
            f"floor {floor:.0f} MB",
            f"{idle / floor:.2f}× / {full_mb / floor:.2f}×",
            "report",
            None,
        ),
    ]
    section.raw = {"ledger": results, "rss": rss}
    return section
