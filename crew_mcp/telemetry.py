"""The hooks the core calls to tell operators what happens, and the base that records nothing.

A few seams call a :class:`Telemetry`: the MCP middleware when a tool call ends (:mod:`crew_mcp.calls`), the
crew client around every HTTP request and retry, the ledger (through :meth:`Telemetry.ledger`, applied once in
``open_service``) and the webhook routes. This base keeps no count, so a stdio server and the CLI pay only a
function call; :class:`crew_mcp.metrics.PrometheusTelemetry` counts for ``/metrics``. Every upstream request
also gets a trace span when tracing is on (:mod:`crew_mcp.tracing`).

Label values are bounded by construction: :func:`endpoint_of` and :func:`status_class` map to fixed sets, and
crew names come from the configuration.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import tracing

if TYPE_CHECKING:
    from .crews import CrewRegistry
    from .ledger import Ledger

__all__ = ["ENDPOINTS", "NO_TELEMETRY", "Telemetry", "UpstreamCall", "endpoint_of", "status_class"]

ENDPOINTS = ("inputs", "kickoff", "status", "resume", "stop", "health", "other")
"""The ``endpoint`` label of upstream requests: the AMP route, whatever ids its path holds."""
_ROUTES = frozenset(ENDPOINTS) - {"health", "other"}


def endpoint_of(path: str) -> str:
    """The AMP endpoint a request path goes to (``/status/{id}`` and ``/{id}/status`` are both ``status``)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "health"
    if parts[0] in _ROUTES:
        return parts[0]
    return "status" if parts[-1] == "status" else "other"


def status_class(outcome: str) -> str:
    """``2xx``, ``4xx``, ``5xx`` (...) for an HTTP status code, ``error`` when no answer came."""
    return f"{outcome[0]}xx" if len(outcome) == 3 and outcome.isdigit() else "error"


class Telemetry:
    """Receives what operators count; this base records nothing (see the module docstring)."""

    def tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        """A tool call ended: ``ok``, ``tool_error``, ``protocol_error``, ``input_required`` or ``cancelled``."""

    def upstream(self, crew: str, endpoint: str, status: str, seconds: float) -> None:
        """One HTTP request to a crew ended with ``status`` (:func:`status_class`)."""

    def retry(self, crew: str, endpoint: str) -> None:
        """A failed request to a crew is being sent again."""

    def webhook(self, kind: str, outcome: str) -> None:
        """A webhook delivery ended: ``accepted``, ``refused``, ``bad_request``, ``too_large``, ``unavailable``,
        ``other`` (any other status) or ``error`` (the receiver raised)."""

    def ledger(self, ledger: Ledger) -> Ledger:
        """``ledger``, instrumented when this telemetry counts ledger operations (here: unchanged)."""
        return ledger

    def attach(self, registry: CrewRegistry) -> None:
        """Make every crew client of ``registry`` report its requests here."""
        for crew in registry.crews.values():
            crew.client.telemetry = self

    def upstream_call(self, crew: str | None, method: str, path: str) -> UpstreamCall:
        """Start timing (and tracing) one HTTP request to a crew; end it with :meth:`UpstreamCall.end`."""
        return UpstreamCall(self, crew, method, path)


class UpstreamCall:
    """One HTTP request to a crew in flight: its trace headers to send, and :meth:`end` to record it."""

    __slots__ = ("_crew", "_endpoint", "_span", "_started", "_telemetry", "headers")

    def __init__(self, telemetry: Telemetry, crew: str | None, method: str, path: str) -> None:
        self._telemetry = telemetry
        self._crew = crew or "-"
        self._endpoint = endpoint_of(path)
        self._span = tracing.start_upstream(crew, method, path, self._endpoint)
        self.headers = tracing.upstream_headers(self._span)
        self._started = time.perf_counter()

    def end(self, outcome: str) -> None:
        """Record the outcome: the HTTP status code as text, or ``"error"`` when no answer came."""
        tracing.end_upstream(self._span, outcome)
        self._telemetry.upstream(self._crew, self._endpoint, status_class(outcome), time.perf_counter() - self._started)


NO_TELEMETRY = Telemetry()
"""The shared do-nothing telemetry (stdio servers, the CLI, tests that do not count)."""
