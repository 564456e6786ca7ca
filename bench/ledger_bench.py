"""Run-ledger benchmark: writes, reads and per-conversation listings at 100k records, for every backend.

Each backend is prefilled with ``n`` records through its bulk path (``create_many``), then a sample of each
operation is timed one after another (no concurrency, so the numbers are per-caller latency turned into
ops/s). The memory backend also reports the resident memory of the process holding the records.

    .venv/bin/python bench/ledger_bench.py [n]

Redis is measured when one answers at ``CREW_MCP_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); its
keys live under a unique prefix and are deleted afterwards.
"""

from __future__ import annotations

import gc
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from crew_mcp.errors import LedgerError
from crew_mcp.ledger import Ledger, RecordState, RunRecord, open_ledger

SAMPLE = 2000
OWNERS = 100
PER_CONVERSATION = 10
CHUNK = 5000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(i: int, prefix: str = "bulk", *, confirmed: bool = True) -> RunRecord:
    conversation = i // PER_CONVERSATION
    at = T0 + timedelta(seconds=i)
    return RunRecord(
        request_id=f"{prefix}-{i}",
        kickoff_id=f"k-{prefix}-{i}" if confirmed else None,
        crew=("trip_planner", "research", "content_pipeline")[i % 3],
        conversation_id=f"{prefix}-conv-{conversation}",
        owner=f"user-{conversation % OWNERS}",
        inputs={"destination": "Lisbon", "days": "4", "interests": "food, tiles"},
        input_names=["destination", "days", "interests"],
        meta={"crew_mcp_request_id": f"{prefix}-{i}"},
        created_at=at,
        updated_at=at,
        state=RecordState.RUNNING if confirmed else RecordState.UNCONFIRMED,
    )


def _chunks(n: int) -> Iterator[list[RunRecord]]:
    for start in range(0, n, CHUNK):
        yield [_record(i) for i in range(start, min(start + CHUNK, n))]


def _rss_mb() -> float:
    """Current resident set size (Linux ``VmRSS``), else the peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


async def _rate(count: int, op: Callable[[int], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for i in range(count):
        await op(i)
    return count / (time.perf_counter() - start)


async def _measure(ledger: Ledger, n: int, sample: int) -> dict[str, float]:
    start = time.perf_counter()
    for chunk in _chunks(n):
        await ledger.create_many(chunk)
    prefill = time.perf_counter() - start
    rng = random.Random(7)
    picks = [rng.randrange(n) for _ in range(sample)]

    async def write(i: int) -> None:
        record = _record(i, prefix="bench", confirmed=False)
        await ledger.create(record)
        await ledger.confirm(record.request_id, f"k-bench-{i}")

    async def read(i: int) -> None:
        j = picks[i]
        found = await ledger.get(f"k-bulk-{j}", owner=f"user-{(j // PER_CONVERSATION) % OWNERS}")
        assert found is not None

    async def listing(i: int) -> None:
        conversation = picks[i] // PER_CONVERSATION
        found = await ledger.list(owner=f"user-{conversation % OWNERS}", conversation_id=f"bulk-conv-{conversation}")
        assert len(found) == PER_CONVERSATION

    return {
        "prefill_s": prefill,
        "write_ops": await _rate(sample, write),
        "get_ops": await _rate(sample, read),
        "list_ops": await _rate(sample, listing),
    }


async def _redis_url() -> str | None:
    base = os.environ.get("CREW_MCP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    url = f"{base}?prefix=crew-mcp-bench:{uuid.uuid4().hex}:"
    probe = open_ledger(url)
    try:
        with anyio.fail_after(5):
            await probe.list(owner="nobody")
    except (LedgerError, TimeoutError):
        return None
    finally:
        await probe.aclose()
    return url


async def _run(n: int, sample: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}

    gc.collect()
    before = _rss_mb()
    memory = open_ledger("memory://")
    results["memory"] = await _measure(memory, n, sample)
    gc.collect()
    results["memory"]["rss_mb"] = _rss_mb()
    results["memory"]["rss_delta_mb"] = results["memory"]["rss_mb"] - before
    await memory.aclose()
    del memory

    with tempfile.TemporaryDirectory() as tmp:
        sqlite = open_ledger(f"sqlite:///{tmp}/ledger.db")
        try:
            results["sqlite"] = await _measure(sqlite, n, sample)
        finally:
            await sqlite.aclose()
        results["sqlite"]["file_mb"] = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20  # noqa: ASYNC240 - after the timing

    url = await _redis_url()
    if url is not None:
        redis = open_ledger(url)
        try:
            results["redis"] = await _measure(redis, n, sample)
        finally:
            await redis.prune(max_age=timedelta(0), max_count=0)
            await redis.aclose()
    return results


def run(n: int = 100_000, sample: int = SAMPLE) -> dict[str, dict[str, float]]:
    """Benchmark every available backend at ``n`` records; ``sample`` operations of each kind are timed.

    Returns ``{backend: {prefill_s, write_ops, get_ops, list_ops, ...}}``; ``write_ops`` counts create+confirm
    pairs per second, ``list_ops`` per-conversation listings (limit 20) per second. The memory backend adds
    ``rss_mb`` (the process's resident memory holding the records) and ``rss_delta_mb``; SQLite adds ``file_mb``.
    """
    return anyio.run(_run, n, sample)


def _table(results: dict[str, dict[str, float]], n: int) -> str:
    lines = [
        f"| backend ({n:,} records) | prefill (s) | create+confirm (ops/s) | get (ops/s) "
        "| list by conversation (ops/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['prefill_s']:.1f} | {r['write_ops']:,.0f} | {r['get_ops']:,.0f} | {r['list_ops']:,.0f} |"
        )
    if "memory" in results:
        m = results["memory"]
        lines.append(
            f"\nMemory backend: process RSS {m['rss_mb']:.0f} MB ({m['rss_delta_mb']:+.0f} MB for the records)."
        )
    if "sqlite" in results:
        lines.append(f"SQLite file (with WAL): {results['sqlite']['file_mb']:.0f} MB.")
    if "redis" not in results:
        lines.append("Redis: not measured (no Redis answered).")
    return "\n".join(lines)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    started = time.perf_counter()
    print(_table(run(count), count))
    print(f"\n(total {time.perf_counter() - started:.0f} s, {SAMPLE} timed operations of each kind)")
