"""The operator's HTTP routes: ``/readyz`` (readiness), ``/metrics`` (Prometheus), and webhook counting.

``/healthz`` (in :mod:`crew_mcp.app`) says the process runs; ``/readyz`` says it can serve: it answers 503 while
the service is starting or the run ledger (the SQLite file, or Redis) does not answer, so a balancer stops
sending traffic to this replica. The ledger probe is bounded (:data:`PROBE_TIMEOUT`) and its answer reused for
:data:`READY_TTL` seconds, so probes never hammer the ledger.

``/metrics`` is protected like the MCP endpoint: with authentication on, it takes a bearer token the server's
verifier accepts, or the scraper's own token (``CREW_MCP_METRICS_TOKEN``); with authentication off it is open
(the server then only binds loopback addresses) unless a metrics token is set. Whoever wires authentication into
the app passes its verifier to :func:`operator_routes`; without one, only the metrics token opens ``/metrics``.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio
from mcp.server.auth.provider import TokenVerifier
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__
from .errors import LedgerError
from .ledger import Ledger
from .runtime import Runtime
from .settings import Settings
from .telemetry import Telemetry
from .webhooks import KINDS

__all__ = ["PROBE_TIMEOUT", "READY_TTL", "Readiness", "counted_webhooks", "http_telemetry", "operator_routes"]

logger = logging.getLogger(__name__)

READY_TTL = 1.0
"""Seconds a readiness answer is reused (Kubernetes probes every few seconds; a burst of probes costs one)."""
PROBE_TIMEOUT = 2.0
"""Seconds the ledger has to answer a readiness probe (below the manifests' 3 s probe timeout)."""
_WEBHOOK_OUTCOMES = {202: "accepted", 400: "bad_request", 404: "refused", 413: "too_large", 503: "unavailable"}

Endpoint = Callable[[Request], Awaitable[Response]]


def http_telemetry() -> Telemetry:
    """Prometheus telemetry for an HTTP app, or the do-nothing base when prometheus-client is not installed."""
    try:
        from .metrics import PrometheusTelemetry
    except ModuleNotFoundError as exc:
        if exc.name != "prometheus_client":
            raise
        logger.info("no /metrics: prometheus-client is not installed (pip install 'crew-mcp[metrics]')")
        return Telemetry()
    return PrometheusTelemetry()


class Readiness:
    """Whether this server can serve: running, and its ledger answering (see the module docstring)."""

    def __init__(self, runtime: Runtime, *, ttl: float = READY_TTL, timeout: float = PROBE_TIMEOUT) -> None:
        self._runtime = runtime
        self._ttl = ttl
        self._timeout = timeout
        self._checked = -math.inf
        self._problem: str | None = None
        self._lock = anyio.Lock()

    async def problem(self) -> str | None:
        """None when ready, else why not (a sentence with no detail an anonymous caller should not see)."""
        service = self._runtime.service
        if service is None:
            return "starting"
        if self._runtime.draining:
            return "draining"
        async with self._lock:  # one probe in flight; the callers queued behind it reuse its answer
            if time.monotonic() - self._checked >= self._ttl:
                problem, detail = await self._probe(service.ledger)
                if problem != self._problem:  # transitions only: a failing ledger is not logged every probe
                    if problem is None:
                        logger.info("readiness: ready again")
                    else:
                        logger.warning("readiness: not ready: %s", detail)  # the detail (file, host) stays in the log
                self._problem, self._checked = problem, time.monotonic()
            return self._problem

    async def _probe(self, ledger: Ledger) -> tuple[str | None, str]:
        try:
            with anyio.fail_after(self._timeout):
                await ledger.ping()
        except TimeoutError:
            return "the run ledger does not answer", f"the run ledger did not answer within {self._timeout:g} s"
        except LedgerError as exc:
            return "the run ledger is unreachable", str(exc)
        return None, ""

    async def endpoint(self, _: Request) -> Response:
        """``GET /readyz``: 200 ``{"status": "ready"}``, or 503 with the reason."""
        problem = await self.problem()
        if problem is None:
            return JSONResponse({"status": "ready", "version": __version__})
        return JSONResponse({"status": "unavailable", "reason": problem, "version": __version__}, status_code=503)


def _presented(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def metrics_endpoint(
    settings: Settings, runtime: Runtime, telemetry: Telemetry, *, verifier: TokenVerifier | None = None
) -> Endpoint:
    """``GET /metrics``, protected as the module docstring says."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token is not None else None
    open_to_all = token is None and verifier is None and settings.auth.mode == "none"

    async def allowed(request: Request) -> bool:
        if open_to_all:
            return True
        presented = _presented(request)
        if not presented:
            return False
        if token is not None and hmac.compare_digest(presented.encode(), token.encode()):
            return True
        return verifier is not None and await verifier.verify_token(presented) is not None

    async def metrics(request: Request) -> Response:
        if not await allowed(request):
            return JSONResponse(
                {"error": "Unauthorized", "message": "/metrics needs a bearer token (CREW_MCP_METRICS_TOKEN)"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="crew-mcp metrics"'},
            )
        exposition = getattr(telemetry, "exposition", None)
        if exposition is None:
            return JSONResponse(
                {"error": "Not Implemented", "message": "install prometheus-client: pip install 'crew-mcp[metrics]'"},
                status_code=501,
            )
        body, content_type = await exposition(runtime.service, request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})

    return metrics


def operator_routes(settings: Settings, runtime: Runtime, *, verifier: TokenVerifier | None = None) -> list[Route]:
    """``/readyz`` and ``/metrics`` for the app of ``runtime`` (pass the auth verifier when authentication is on)."""
    return [
        Route("/readyz", Readiness(runtime).endpoint, methods=["GET"]),
        Route("/metrics", metrics_endpoint(settings, runtime, runtime.telemetry, verifier=verifier), methods=["GET"]),
    ]


def counted_webhooks(routes: list[Route], telemetry: Telemetry) -> list[Route]:
    """``routes`` (the webhook receiver's) with each delivery counted by kind and outcome."""

    def counted(endpoint: Endpoint) -> Endpoint:
        async def receive(request: Request) -> Response:
            kind = request.path_params.get("kind")
            outcome = "error"
            try:
                response = await endpoint(request)
                outcome = _WEBHOOK_OUTCOMES.get(response.status_code, "other")
                return response
            finally:
                telemetry.webhook(kind if kind in KINDS else "other", outcome)

        return receive

    return [Route(r.path, counted(r.endpoint), methods=list(r.methods or ())) for r in routes]
