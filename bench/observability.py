"""What the operator signals cost: per tool call with metrics (and traces) on, and cold start with traces configured.

Hooks alone: each seam's cost in a tight loop. Per call: the MCP server in this process (the SDK's in-memory
``Client``), its crews served by the simulator in-process (a run that stays ``running``), a memory ledger;
``get_status`` (a ledger read, one upstream ``GET``) and ``list_crews`` (no I/O) in interleaved batches, without
telemetry and with :class:`PrometheusTelemetry`. A tracer provider can be installed only once per process, so
traces on (the SDK, spans dropped by a no-op exporter) are measured afterwards, unpaired.

Cold start: spawn → first ``tools/list`` over stdio, interleaved, without ``OTEL_*`` and with an OTLP exporter
configured (which imports the SDK and the exporter).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from mcp import Client
from mcp.types import CallToolResult

from crew_mcp.assembly import open_service
from crew_mcp.calls import RequestScope
from crew_mcp.ledger import open_ledger
from crew_mcp.ledger.memory import MemoryLedger
from crew_mcp.metrics import MeteredLedger, PrometheusTelemetry
from crew_mcp.runtime import Runtime
from crew_mcp.server import build_server
from crew_mcp.service import CrewService
from crew_mcp.settings import Settings
from crew_mcp.simulator import CrewSpec, Simulator, TaskSpec
from crew_mcp.telemetry import NO_TELEMETRY, Telemetry
from crew_mcp.tracing import traced

from .common import Section, Upstream, crew_mcp_stdio, median, progress

ROUNDS = 15
CALLS = 300
SPAWNS = 7
HOLD = CrewSpec(
    name="hold", description="stays running", inputs=[], tasks=[TaskSpec(id="t", agent="Worker", duration=36000.0)]
)


@asynccontextmanager
async def _client(telemetry: Telemetry) -> AsyncIterator[tuple[Client, str]]:
    sim = Simulator([HOLD], clock="manual")

    @asynccontextmanager
    async def opener(settings: Settings, **kw: Any) -> AsyncIterator[CrewService]:
        async with open_service(settings, simulator=sim, ledger=open_ledger("memory://"), **kw) as service:
            yield service

    mcp = build_server(Settings(owner="bench"), runtime=Runtime(telemetry=telemetry), opener=opener)
    async with sim, Client(mcp) as client:
        run = await client.call_tool("kickoff_crew", {"crew": "hold"})
        assert run.structured_content is not None, run.content
        yield client, str(run.structured_content["kickoff_id"])


async def _per_call(client: Client, tool: str, args: dict[str, Any]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        r = await client.call_tool(tool, args)
        if r.is_error:
            raise RuntimeError(f"{tool} failed: {r.content}")
    return (time.perf_counter() - start) / CALLS


async def _compare(names: Sequence[str], telemetries: Sequence[Telemetry]) -> dict[str, dict[str, list[float]]]:
    """Seconds per call of each tool for each telemetry, one value per round (batches interleaved, paired by round)."""
    samples: dict[str, dict[str, list[float]]] = {n: {"get_status": [], "list_crews": []} for n in names}
    async with _client(telemetries[0]) as (a, kid_a), _client(telemetries[1]) as (b, kid_b):
        clients = {names[0]: (a, kid_a), names[1]: (b, kid_b)}
        for client, kid in clients.values():  # warm-up
            await _per_call(client, "get_status", {"kickoff_id": kid})
        for i in range(ROUNDS):
            order = list(clients) if i % 2 == 0 else list(reversed(clients))
            for name in order:
                client, kid = clients[name]
                samples[name]["get_status"].append(await _per_call(client, "get_status", {"kickoff_id": kid}))
                samples[name]["list_crews"].append(await _per_call(client, "list_crews", {}))
    return samples


def _best(fn: Callable[[], object], n: int = 20_000) -> float:
    """Seconds per call of ``fn``: the best of 5 loops of ``n`` calls."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


async def _best_async(fn: Callable[[], Awaitable[object]], n: int = 20_000) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


async def _hooks(prefix: str) -> dict[str, float]:
    """Each hook alone, in tight loops: what it adds to one tool call, one upstream request, one ledger operation."""
    prom = PrometheusTelemetry()
    result = CallToolResult(content=[])
    ctx = SimpleNamespace(method="tools/call", params={"name": "get_status"}, request_id=7)

    async def call_next(_: object) -> CallToolResult:
        return result

    async def nothing() -> None:
        return None

    scope_off, scope_on = RequestScope(NO_TELEMETRY), RequestScope(prom)
    raw, metered = MemoryLedger(), MeteredLedger(MemoryLedger(), prom)
    costs = {
        "tool call: bare handler": await _best_async(lambda: call_next(ctx)),
        "tool call: middleware, no metrics": await _best_async(lambda: scope_off(ctx, call_next)),  # type: ignore[arg-type]
        "tool call: middleware, metrics": await _best_async(lambda: scope_on(ctx, call_next)),  # type: ignore[arg-type]
        "upstream request: no metrics": _best(lambda: NO_TELEMETRY.upstream_call("c", "GET", "/status/k").end("200")),
        "upstream request: metrics": _best(lambda: prom.upstream_call("c", "GET", "/status/k").end("200")),
        "ledger op: raw (memory ping)": await _best_async(raw.ping),
        "ledger op: metered": await _best_async(metered.ping),
        "service op: coroutine": await _best_async(nothing),
        "service op: traced": await _best_async(traced("bench")(nothing)),
    }
    return {f"{prefix}{k}": v for k, v in costs.items()}


def _install_tracing() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)


async def _spawn_to_tools(env: dict[str, str]) -> float:
    start = time.perf_counter()
    async with Client(crew_mcp_stdio(env)) as client:
        await client.list_tools()
        return time.perf_counter() - start  # before the exit, which flushes spans to the (absent) collector


async def _coldstart(up: Upstream) -> dict[str, float]:
    plain = up.crew_mcp_env()
    otlp = {**plain, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    cases: dict[str, dict[str, str]] = {"no OTEL_*": plain, "OTLP exporter configured": otlp}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for env in cases.values():
        await _spawn_to_tools(env)
    for i in range(SPAWNS):
        for name in list(cases) if i % 2 == 0 else list(reversed(cases)):
            times[name].append(await _spawn_to_tools(cases[name]))
    return {k: median(v) for k, v in times.items()}


def _row(name: str, base: dict[str, list[float]], other: dict[str, list[float]], tool: str) -> str:
    """Medians of each side, and the median of the per-round differences (paired by round)."""
    before, after = base[tool], other[tool]
    delta = median([b - a for a, b in zip(before, after, strict=True)])
    return (
        f"| {name} | `{tool}` | {median(before) * 1e6:.0f} µs | {median(after) * 1e6:.0f} µs | "
        f"{delta * 1e6:+.0f} µs ({delta / median(before):+.1%}) |"
    )


async def run(up: Upstream) -> Section:
    section = Section("Operator signals: metrics and traces")
    hooks = await _hooks("")
    metrics = await _compare(["off", "metrics"], [NO_TELEMETRY, PrometheusTelemetry()])
    progress("observability: metrics on/off done")
    _install_tracing()
    hooks.update(await _hooks("traces on: "))
    with_traces = await _compare(["metrics", "again"], [PrometheusTelemetry(), PrometheusTelemetry()])
    progress("observability: traces done")
    cold = await _coldstart(up)
    progress("observability: cold start done")
    rows = ["| comparison | tool | before | after | cost per call (paired) |", "|---|---|---:|---:|---:|"]
    for tool in ("get_status", "list_crews"):
        rows.append(_row("metrics off → on", metrics["off"], metrics["metrics"], tool))
    for tool in ("get_status", "list_crews"):
        before, after = (
            median(metrics["metrics"][tool]),
            median(with_traces["metrics"][tool] + with_traces["again"][tool]),
        )
        rows.append(
            f"| metrics → metrics + traces (not paired) | `{tool}` | {before * 1e6:.0f} µs | {after * 1e6:.0f} µs | "
            f"{(after - before) * 1e6:+.0f} µs ({after / before - 1:+.1%}) |"
        )
    plain, otlp = cold["no OTEL_*"], cold["OTLP exporter configured"]
    section.body = [
        "| hook, alone (best of 5 loops of 20 000) | µs per call |",
        "|---|---:|",
        *[f"| {name} | {seconds * 1e6:.2f} |" for name, seconds in hooks.items()],
        "",
        *rows,
        "",
        f"{ROUNDS} interleaved rounds of {CALLS} calls each (in-memory client, in-process simulator, memory ledger); "
        "medians. Traces: the SDK with a span processor that drops every span. A tracer provider cannot be removed "
        "once installed, so the traced rounds run after the untraced ones and are compared unpaired (drift of several "
        "percent between phases is normal here); the hook costs above are the steadier figure.",
        "",
        f"Cold start over stdio (spawn → `tools/list`, median of {SPAWNS}): {plain * 1000:.0f} ms without `OTEL_*`, "
        f"{otlp * 1000:.0f} ms with an OTLP exporter configured ({(otlp - plain) * 1000:+.0f} ms).",
    ]
    section.raw = {"hooks": hooks, "metrics": metrics, "traced": with_traces, "coldstart": cold}
    return section
