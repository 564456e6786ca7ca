"""Prometheus metrics for ``/metrics`` (``pip install 'crew-mcp[metrics]'``): one registry per app, never the global.

:class:`PrometheusTelemetry` counts what the core reports through :class:`~crew_mcp.telemetry.Telemetry`, wraps the
ledger so every operation is counted and timed (:class:`MeteredLedger`), and reads three gauges when scraped
(:meth:`PrometheusTelemetry.exposition`): waits in progress and watched runs from the service's status hub, and
pending approvals from the ledger (cached a few seconds, bounded in time).

Cardinality is bounded: no label holds a kickoff_id, a principal or a URL. ``tool`` holds a tool name (at most
:data:`MAX_TOOL_LABELS` distinct ones, then ``other``), ``crew`` a configured crew name, and the other labels come
from fixed sets (docs/operations.md lists them).
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from . import __version__
from .telemetry import Telemetry

if TYPE_CHECKING:
    from .ledger import Ledger
    from .service import CrewService

__all__ = ["MAX_TOOL_LABELS", "MeteredLedger", "PrometheusTelemetry", "backend_of"]

logger = logging.getLogger(__name__)

MAX_TOOL_LABELS = 64
"""Distinct tool names counted under their own name; later ones (a client inventing names) count as ``other``."""
PENDING_TTL = 5.0
"""Seconds a pending-approvals count is reused while this process writes nothing to the ledger, so scrapers
(several Prometheus replicas) never hammer it; a write here makes the next scrape count again."""
PENDING_TIMEOUT = 2.0
"""Seconds a scrape waits for the ledger's pending count before showing NaN."""

# Tool calls wait up to CREW_MCP_WAIT_CAP (45 s by default, at most 600 s).
_TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LEDGER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
# Ledger methods that change nothing: every other one may change what waits for a human.
_READS = frozenset({"get", "list", "latest", "pending_approvals", "pending_count", "ping"})


def backend_of(ledger: object) -> str:
    """The ``backend`` label of a ledger: ``sqlite``, ``redis``, ``memory`` (another class: its lower-cased name)."""
    name = type(ledger).__name__.lower()
    return name.removesuffix("ledger") or name


class _Bounded:
    """A label's values as given for the first ``limit`` well-formed ones, ``other`` after that."""

    def __init__(self, limit: int) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit or not _LABEL.fullmatch(value):
            return "other"
        self._seen.add(value)
        return value


class PrometheusTelemetry(Telemetry):
    """Counts tool calls, upstream requests, retries, ledger operations and webhooks in its own registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.tool_calls = Counter("crew_mcp_tool_calls", "MCP tool calls by outcome", ["tool", "outcome"], registry=r)
        self.tool_seconds = Histogram(
            "crew_mcp_tool_call_duration_seconds", "MCP tool call duration", ["tool"], buckets=_TOOL_BUCKETS, registry=r
        )
        self.upstream_requests = Counter(
            "crew_mcp_upstream_requests",
            "HTTP requests to crews (each retry counts)",
            ["crew", "endpoint", "status_class"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "crew_mcp_upstream_request_duration_seconds",
            "HTTP request duration to crews",
            ["crew", "endpoint"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.upstream_retries = Counter(
            "crew_mcp_upstream_retries",
            "Requests to crews sent again after a failure",
            ["crew", "endpoint"],
            registry=r,
        )
        self.ledger_ops = Counter(
            "crew_mcp_ledger_operations", "Run ledger operations", ["operation", "backend"], registry=r
        )
        self.ledger_errors = Counter(
            "crew_mcp_ledger_errors", "Run ledger operations that failed", ["operation", "backend"], registry=r
        )
        self.ledger_seconds = Histogram(
            "crew_mcp_ledger_operation_duration_seconds",
            "Run ledger operation duration",
            ["operation", "backend"],
            buckets=_LEDGER_BUCKETS,
            registry=r,
        )
        self.webhooks = Counter(
            "crew_mcp_webhook_deliveries", "Webhook deliveries from crews by outcome", ["kind", "outcome"], registry=r
        )
        self.waits = Gauge("crew_mcp_waits_in_progress", "Tool calls waiting for a run to settle", registry=r)
        self.watched = Gauge("crew_mcp_watched_runs", "Runs polled by a shared watch right now", registry=r)
        self.pending = Gauge(
            "crew_mcp_pending_approvals", "Runs of every owner waiting for a human decision (ledger)", registry=r
        )
        Gauge("crew_mcp_build_info", "crew-mcp's version", ["version"], registry=r).labels(__version__).set(1)
        self._tools = _Bounded(MAX_TOOL_LABELS)
        self._writes = 0  # ledger writes made by this process so far
        self._pending_read: tuple[float, int] | None = None  # when the pending count was read, after how many writes
        self._pending_lock = anyio.Lock()

    def tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        """Count a tool call and observe its duration."""
        label = self._tools(tool)
        self.tool_calls.labels(label, outcome).inc()
        self.tool_seconds.labels(label).observe(seconds)

    def upstream(self, crew: str, endpoint: str, status: str, seconds: float) -> None:
        """Count an HTTP request to a crew and observe its duration."""
        self.upstream_requests.labels(crew, endpoint, status).inc()
        self.upstream_seconds.labels(crew, endpoint).observe(seconds)

    def retry(self, crew: str, endpoint: str) -> None:
        """Count a retry."""
        self.upstream_retries.labels(crew, endpoint).inc()

    def webhook(self, kind: str, outcome: str) -> None:
        """Count a webhook delivery."""
        self.webhooks.labels(kind, outcome).inc()

    def ledger(self, ledger: Ledger) -> Ledger:
        """``ledger`` with every operation counted and timed."""
        return cast("Ledger", MeteredLedger(ledger, self))

    def ledger_written(self) -> None:
        """This process changed the ledger: the next scrape counts pending approvals again."""
        self._writes += 1

    async def exposition(self, service: CrewService | None, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text, or OpenMetrics when ``accept`` asks for it) and its content type, after reading the
        gauges from the running ``service`` (None: still starting)."""
        if service is not None:
            self.waits.set(service.runs.hub.waiting)
            self.watched.set(service.runs.hub.active)
            await self._read_pending(service)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    async def _read_pending(self, service: CrewService) -> None:
        async with self._pending_lock:
            last = self._pending_read
            if last is not None and last[1] == self._writes and time.monotonic() - last[0] < PENDING_TTL:
                return
            writes = self._writes
            try:
                with anyio.fail_after(PENDING_TIMEOUT):
                    count: float = await service.ledger.pending_count()
            except Exception as exc:  # the gauge says "unknown"; the failure itself is counted as a ledger error
                logger.debug("pending approvals could not be counted: %s", exc)
                count = math.nan
            self.pending.set(count)
            self._pending_read = (time.monotonic(), writes)


class MeteredLedger:
    """A ledger whose every coroutine method is counted (errors too) and timed; anything else passes through.

    The ``operation`` label is the method's name, so a method a backend gains later is counted without a change
    here.
    """

    def __init__(self, inner: Ledger, telemetry: PrometheusTelemetry) -> None:
        self.inner = inner
        self._telemetry = telemetry
        self._backend = backend_of(inner)

    def __repr__(self) -> str:
        return f"MeteredLedger({self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        metered = self._meter(name, attr)
        setattr(self, name, metered)  # built once per method: later lookups never reach __getattr__
        return metered

    def _meter(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        t = self._telemetry
        ops = t.ledger_ops.labels(name, self._backend)
        errors = t.ledger_errors.labels(name, self._backend)
        seconds = t.ledger_seconds.labels(name, self._backend)
        writes = name not in _READS

        async def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            except Exception:
                errors.inc()
                raise
            finally:
                ops.inc()
                seconds.observe(time.perf_counter() - started)
                if writes:
                    t.ledger_written()

        return call
