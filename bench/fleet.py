"""Figures 7 and 8: a fleet of three ``crew-mcp serve --http`` replicas sharing the Redis on 127.0.0.1:6379.

* 7: webhook → ``notifications/resources/updated`` latency. A client listens (``subscriptions/listen``, 2026-07-28)
  to a running run's resource on replica A or on replica B; the bench then POSTs the run's task webhook (with its
  per-execution secret, read from the ledger, exactly as AMP would) to replica A, and times the POST's start to
  the notification's arrival. Same replica: A hears its own webhook; across replicas: B hears it through the
  Redis fan-out. Samples alternate between the two cases.
* 8: upstream ``GET /status`` per poll interval when N clients (1, 10, 100) spread over the three replicas wait
  on one running run (``hold``) with ``get_status(wait_seconds=5)``: the poll lease lets one replica poll; the
  others follow through the fan-out. The baseline is what one poll loop makes in the same time.

No balancer here (the fleet test covers HAProxy): each client talks to its replica directly.
"""

from __future__ import annotations

import time
import uuid
from contextlib import AsyncExitStack

import anyio
import httpx2
from mcp import Client

from crew_mcp.ledger import open_ledger

from .common import Figure, Section, Upstream, http_server, median, ms, percentile, progress
from .latency import kickoff
from .polling import schedule_polls

REDIS = "redis://127.0.0.1:6379/0"
SAMPLES = 200
WATCHERS = (1, 10, 100)
WAIT = 5.0
TARGET_P50 = 0.020
LABELS = {"same": "same replica", "across": "across replicas"}


async def _latency(replicas: list[str], ledger_url: str, samples: int) -> dict[str, list[float]]:
    """Webhook (POST to replica 0) → resources/updated on replica 0 ("same") or replica 1 ("across")."""
    async with Client(f"{replicas[0]}/mcp") as c0:
        kickoff_id = await kickoff(c0, "hold")
    ledger = open_ledger(ledger_url)
    try:
        record = await ledger.get(kickoff_id, owner=None)
    finally:
        await ledger.aclose()
    assert record is not None
    assert record.webhook_secret
    hook = f"{replicas[0]}/webhooks/{record.webhook_secret}/task"
    uri = f"crew://executions/{kickoff_id}"
    out: dict[str, list[float]] = {"same": [], "across": []}
    async with AsyncExitStack() as stack, httpx2.AsyncClient() as http:
        subs = {}
        for case, root in (("same", replicas[0]), ("across", replicas[1])):
            client = await stack.enter_async_context(Client(f"{root}/mcp"))
            subs[case] = await stack.enter_async_context(client.listen(resource_subscriptions=[uri]))
        payload = {"kickoff_id": kickoff_id, "task_id": "long_task", "status": "completed", "output": "x"}
        for _ in range(10):  # warm-up: connections, the first fan-out message
            await http.post(hook, json=payload)
            for sub in subs.values():
                await sub.__anext__()
        for i in range(samples):
            order = ("same", "across") if i % 2 == 0 else ("across", "same")
            for case in order:
                t = time.perf_counter()
                r = await http.post(hook, json=payload)
                r.raise_for_status()
                with anyio.fail_after(10):
                    while True:
                        event = await subs[case].__anext__()
                        if getattr(event, "uri", None) == uri:
                            break
                out[case].append(time.perf_counter() - t)
                other = "across" if case == "same" else "same"
                with anyio.fail_after(10):  # the other subscriber heard it too: drain it before the next sample
                    await subs[other].__anext__()
    return out


async def _watchers(up: Upstream, replicas: list[str], n: int) -> tuple[int, float]:
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(f"{root}/mcp")) for root in replicas]
        kickoff_id = await kickoff(clients[0], "hold")
        before = await up.status_requests("hold")
        start = time.perf_counter()

        async def one(i: int) -> None:
            r = await clients[i % len(clients)].call_tool(
                "get_status", {"kickoff_id": kickoff_id, "wait_seconds": WAIT}
            )
            if r.is_error:
                raise RuntimeError(f"get_status failed: {r.content}")

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
        return await up.status_requests("hold") - before, time.perf_counter() - start


async def run(up: Upstream, *, samples: int = SAMPLES) -> Section:
    section = Section("A fleet of three replicas on one Redis (figures 7 and 8)")
    prefix = f"crew-mcp-bench:{uuid.uuid4().hex}:"
    ledger_url = f"{REDIS}?prefix={prefix}"
    env = {
        **up.crew_mcp_env(),
        "CREW_MCP_LEDGER_URL": ledger_url,
        "CREW_MCP_PUBLIC_URL": "http://127.0.0.1:9",  # webhook routes on; the bench posts the webhooks itself
    }
    args = ["-m", "crew_mcp", "serve", "--http", "--port", "0"]
    try:
        async with AsyncExitStack() as stack:
            servers = [await stack.enter_async_context(http_server(args, env)) for _ in range(3)]
            replicas = [s.url.removesuffix("/mcp") for s in servers]
            progress("fleet: three replicas up")
            lat = await _latency(replicas, ledger_url, samples)
            progress("fleet: webhook latency done")
            counts: dict[int, tuple[int, float]] = {}
            for n in WATCHERS:
                counts[n] = await _watchers(up, replicas, n)
                progress(f"fleet: {n} watcher(s) done")
    finally:
        await _cleanup(prefix)

    rows = [
        "| webhook → resources/updated | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|",
        *(f"| {LABELS[case]} | {ms(percentile(v, 50))} | {ms(percentile(v, 99))} |" for case, v in lat.items()),
        "",
        f"{samples} samples per case, alternating; each is one webhook POST to replica A, timed until the listening "
        "client (on A, or on B through the Redis fan-out) receives the notification.",
        "",
        "| watchers over 3 replicas | upstream `GET /status` | window (s) | one loop's polls in the window | per poll "
        "interval |",
        "|---:|---:|---:|---:|---:|",
    ]
    figures = []
    for case, label in LABELS.items():
        p50, p99 = percentile(lat[case], 50), percentile(lat[case], 99)
        figures.append(
            Figure(
                f"7. webhook → resources/updated, {label}",
                f"p50 {ms(p50)} ms, p99 {ms(p99)} ms",
                "—",
                "—",
                "p50 ≤ 20 ms",
                p50 <= TARGET_P50,
            )
        )
    for n, (count, window) in counts.items():
        polls = schedule_polls(window)
        rows.append(f"| {n} | {count} | {window:.2f} | {polls} | {count / polls:.2f} |")
        figures.append(
            Figure(
                f"8. fleet upstream requests per poll interval, N={n} over 3 replicas",
                f"{count} requests in {window:.1f} s",
                f"one poll loop: {polls} polls",
                f"{count / polls:.2f}×",
                "1 request per poll interval for any N",
                count <= polls,
            )
        )
    section.body = rows
    section.figures = figures
    section.raw = {"latency": {k: median(v) for k, v in lat.items()}, "counts": counts}
    return section


async def _cleanup(prefix: str) -> None:
    import redis.asyncio

    async with redis.asyncio.Redis.from_url(REDIS) as r:
        keys = [k async for k in r.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await r.delete(*keys)
