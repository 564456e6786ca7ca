"""Helpers of the operator-signal tests (metrics, traces, logs, readiness).

* :func:`spans`: the OpenTelemetry SDK with an in-memory exporter, installed once per test process (a tracer
  provider can be set only once) and emptied for each test;
* :class:`HeaderLog`: an ASGI wrapper in front of the simulator that records the ``traceparent`` of each request;
* :func:`samples`: a ``/metrics`` exposition parsed by prometheus-client's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Receive, Scope, Send

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


def spans() -> InMemorySpanExporter:
    """The in-memory exporter of this process's tracer provider (installed on first use), emptied."""
    if trace.get_tracer_provider() is not _PROVIDER:
        trace.set_tracer_provider(_PROVIDER)
        assert trace.get_tracer_provider() is _PROVIDER, "another tracer provider was installed first"
    _EXPORTER.clear()
    return _EXPORTER


@dataclass
class HeaderLog:
    """Wraps an ASGI app; ``seen`` holds (method, path, traceparent or None) of each HTTP request, in order."""

    app: ASGIApp
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            parent = headers.get(b"traceparent")
            self.seen.append((scope["method"], scope["path"], parent.decode() if parent else None))
        await self.app(scope, receive, send)


Labels = tuple[tuple[str, str], ...]


def samples(exposition: str) -> dict[str, dict[Labels, float]]:
    """Every sample of an exposition: ``{sample name: {sorted label pairs: value}}``."""
    found: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(table: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet: an unused label set is not exposed)."""
    return table.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def total(table: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for key, v in table.get(name, {}).items() if wanted <= set(key))
