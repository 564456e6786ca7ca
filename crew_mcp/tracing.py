"""OpenTelemetry traces: a span per service operation and per upstream request, with W3C trace context sent to AMP.

The MCP SDK already wraps every inbound message in a SERVER span (``tools/call kickoff_crew``); crew-mcp adds,
under it, one INTERNAL span per service operation (:func:`traced`: ``crew_mcp.kickoff``, ``crew_mcp.status``,
``crew_mcp.resume``, the listings) and one CLIENT span per HTTP request to a crew (:func:`start_upstream`), whose
context goes to the crew in the ``traceparent`` header. A shared poll loop (waits) runs in the task of the call
that started it, so its requests are children of that call.

Everything here uses the OpenTelemetry API, which the MCP SDK loads anyway; this module imports it only once it
is loaded (a CLI command never pays for it). Until a tracer provider is installed, each helper returns at once:
no span is built, no header is added. :func:`configure` installs the SDK (``pip install 'crew-mcp[otel]'``) only
when the standard ``OTEL_*`` variables ask for an exporter.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from . import __version__
from .errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["TRACER_NAME", "active", "configure", "end_upstream", "start_upstream", "traced", "upstream_headers"]

TRACER_NAME = "crew_mcp"

_P = ParamSpec("_P")
_R = TypeVar("_R")
_EXPORTER_GROUP = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http", "http/json": "otlp_proto_http"}


def active() -> bool:
    """True once a tracer provider is installed (by :func:`configure`, ``opentelemetry-instrument`` or a test)."""
    trace = sys.modules.get("opentelemetry.trace")  # not loaded: nothing can have installed a provider
    return trace is not None and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _tracer() -> Tracer:
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME, __version__)


def traced(name: str) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R]]]:
    """Decorate a service coroutine so each call is an INTERNAL span ``name`` (errors mark it failed)."""

    def decorate(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        @functools.wraps(fn)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if not active():
                return await fn(*args, **kwargs)
            from opentelemetry.trace import StatusCode

            with _tracer().start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span:
                try:
                    return await fn(*args, **kwargs)
                except Exception as exc:
                    # crew-mcp's messages carry no secret (errors.py), so the sentence is safe to export.
                    span.set_attribute("error.type", type(exc).__qualname__)
                    span.set_status(StatusCode.ERROR, str(exc)[:500])
                    raise

        return wrapper

    return decorate


def start_upstream(crew: str | None, method: str, path: str, endpoint: str) -> Span | None:
    """A started CLIENT span for one HTTP request to a crew, or None when tracing is off; end it with
    :func:`end_upstream`."""
    if not active():
        return None
    from opentelemetry.trace import SpanKind

    route = "/" if endpoint == "health" else f"/{endpoint}"
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": path or "/",
        "crew_mcp.endpoint": endpoint,
    }
    if crew:
        attributes["crew_mcp.crew"] = crew
    return _tracer().start_span(f"{method} {route}", kind=SpanKind.CLIENT, attributes=attributes)


def upstream_headers(span: Span | None) -> dict[str, str] | None:
    """The W3C trace context headers (``traceparent``, ``tracestate``) naming ``span`` as the crew's parent."""
    if span is None:
        return None
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def end_upstream(span: Span | None, outcome: str) -> None:
    """End an upstream span with its outcome: the HTTP status code, or ``"error"`` when no answer came."""
    if span is None:
        return
    from opentelemetry.trace import StatusCode

    if outcome.isdigit():
        code = int(outcome)
        span.set_attribute("http.response.status_code", code)
        if code >= 400:
            span.set_attribute("error.type", outcome)
            span.set_status(StatusCode.ERROR)
    else:
        span.set_attribute("error.type", outcome)
        span.set_status(StatusCode.ERROR)
    span.end()


def configure(env: Mapping[str, str]) -> str | None:
    """Install the OpenTelemetry SDK when the ``OTEL_*`` variables ask for traces; return what was installed.

    Traces are on when ``OTEL_TRACES_EXPORTER`` names exporters (``otlp``, ``console``, any installed one; ``none``
    keeps spans and propagation but exports nothing) or an OTLP endpoint is set (``otlp`` then). Unlike the SDK's
    own default, nothing is exported when neither is set. ``OTEL_SDK_DISABLED=true`` wins; a provider installed
    before (``opentelemetry-instrument``) is left alone. The SDK reads the rest itself: endpoint, headers,
    protocol, service name and resource attributes, sampler.

    Raises:
        ConfigError: traces are asked for but the SDK or a named exporter is not installed.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ["otlp"]
    if not names:
        return None
    if active():
        return "an OpenTelemetry tracer provider installed before crew-mcp started"
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "OTEL_TRACES_EXPORTER (or an OTLP endpoint) is set, but the OpenTelemetry SDK is not installed: "
            "pip install 'crew-mcp[otel]'."
        ) from None
    exporters = [_exporter(name, env) for name in names if name.lower() != "none"]
    # crew-mcp's name and version unless OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say otherwise.
    resource = Resource.create({"service.name": "crew-mcp", "service.version": __version__}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return "OpenTelemetry traces to " + (", ".join(n for n in names if n.lower() != "none") or "no exporter")


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    """An instance of the exporter ``name`` from the installed entry points (``otlp``: by protocol)."""
    from importlib.metadata import entry_points

    wanted = name
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        ).strip()
        installed = {ep.name for ep in entry_points(group=_EXPORTER_GROUP)}
        wanted = _OTLP_BY_PROTOCOL.get(protocol) or (
            "otlp_proto_grpc" if "otlp_proto_grpc" in installed else "otlp_proto_http"
        )
    if wanted == "console":  # to stderr: stdout is the MCP channel of a stdio server
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)
    found = entry_points(group=_EXPORTER_GROUP, name=wanted)
    if not found:
        known = ", ".join(sorted({ep.name for ep in entry_points(group=_EXPORTER_GROUP)} | {"otlp"})) or "none"
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed (installed: {known}); "
            "pip install 'crew-mcp[otel]' provides otlp (HTTP) and console."
        )
    return next(iter(found)).load()()
