"""The :class:`Simulator`: one ASGI app serving every simulated crew, its faults and the control API."""

from __future__ import annotations

import hmac
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal

import anyio
import httpx2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .control import control
from .durable import SimulatorStateError, SqliteStore
from .engine import Execution
from .faults import Faults, Shot, SimulatedDrop
from .routes import CrewAPI, error_response, not_found
from .specs import CrewSpec, builtin_crews
from .store import MemoryStore, Store
from .webhooks import WebhookDelivery, WebhookSender

__all__ = ["DEFAULT_TOKEN", "SERVER_MARK", "Simulator"]

logger = logging.getLogger(__name__)

SERVER_MARK = "crew_mcp.simulator.server"
"""Scope key set by :func:`serve_simulator`: a drop can then end the response without raising."""

DEFAULT_TOKEN = "sim-token"  # noqa: S105 - the well-known token of a local test double, not a secret
TICK = 0.05


def _unauthorized() -> JSONResponse:
    return error_response(401, "Unauthorized", "Invalid or missing bearer token")


class Simulator:
    """Simulated CrewAI AMP deployments in one ASGI app; each crew's base URL is ``{root}/{crew.name}``.

    ``clock="manual"`` moves only on :meth:`advance` (deterministic tests); ``clock="wall"`` follows real
    time, advanced by a ticker the app's lifespan starts (or :meth:`run_clock`). A request also catches up the
    run it reads, inside its own unit of work. Webhooks are delivered by :meth:`advance` and by the ticker, never
    inside a crew request.

    With ``state_path`` the runs live in that SQLite file instead of in memory (see :mod:`.durable`): every
    simulator that opens the same file, in this process or another, serves the same runs, and simulated time
    is the wall clock since the file was created, so a run keeps going while no process is running (each run
    keeps the ``time_scale`` it was started with). Webhooks that fell due before this simulator opened the file
    are not delivered. It needs ``clock="wall"``; call :meth:`aclose` when done. Request counts, fault queues
    and the webhook and resume logs stay per simulator.

    Raises:
        ValueError: duplicate crew names, a non-positive ``time_scale``, or ``state_path`` with a manual clock.
    """

    def __init__(
        self,
        crews: Sequence[CrewSpec] | None = None,
        *,
        token: str | None = DEFAULT_TOKEN,
        clock: Literal["wall", "manual"] = "wall",
        time_scale: float = 1.0,
        webhook_transport: httpx2.AsyncBaseTransport | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        specs = list(crews) if crews is not None else builtin_crews()
        self.crews: dict[str, CrewSpec] = {c.name: c for c in specs}
        if len(self.crews) != len(specs):
            raise ValueError("crew names must be unique")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if state_path is not None and clock != "wall":
            raise ValueError("a simulator with a state_path follows the wall clock; use clock='wall'")
        self.token = token
        self.clock = clock
        self.time_scale = time_scale
        self.resume_log: list[dict[str, Any]] = []
        self.app: ASGIApp = self._asgi
        self._store: Store = MemoryStore(clock) if state_path is None else SqliteStore(state_path)
        self._webhooks = WebhookSender(webhook_transport)
        self.webhook_log: list[WebhookDelivery] = self._webhooks.log
        self._api = CrewAPI(self._store, self._webhooks, time_scale=time_scale, resume_log=self.resume_log)
        self._faults = {name: Faults() for name in self.crews}
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._hangs: set[anyio.CancelScope] = set()

    @property
    def executions(self) -> Mapping[str, Execution]:
        """Every run by kickoff_id, oldest first (with a ``state_path``: a snapshot, read from the file now)."""
        return self._store.executions()

    def now(self) -> float:
        """Simulated seconds since the simulator (with a ``state_path``: its file) was created."""
        return self._store.now()

    async def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds``, run every transition due, and deliver the webhooks they caused.

        Works with both clocks (on the wall clock it jumps ahead); ``advance(0)`` just delivers what is queued.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        await self._store.advance_clock(seconds)
        await self._tick()
        await self.flush_webhooks()

    def count(self, crew: str, method: str, route: str) -> int:
        """How many requests ``method route`` (``"/kickoff"``, ``"/status"``, ``"/resume"``, ``"/stop"``,
        ``"/inputs"``, ``"/"``) reached ``crew``, whatever they were answered with."""
        return self._counts[(crew, method.upper(), route)]

    def request_counts(self) -> dict[str, dict[str, int]]:
        """Every count as ``{crew: {"METHOD /route": n}}``."""
        counts: dict[str, dict[str, int]] = {}
        for (crew, method, route), n in sorted(self._counts.items()):
            counts.setdefault(crew, {})[f"{method} {route}"] = n
        return counts

    def faults(self, crew: str) -> Faults:
        """The fault injector of ``crew`` (KeyError for an unknown crew)."""
        return self._faults[crew]

    def kickoff_ids(self, crew: str) -> list[str]:
        """The executions created for ``crew``, oldest first."""
        return self._store.kickoff_ids(crew)

    async def flush_webhooks(self) -> None:
        """Deliver every queued webhook, oldest first; failures are logged and recorded, never raised."""
        await self._webhooks.flush()

    async def aclose(self) -> None:
        """End held responses and close the webhook client; the simulator can still serve afterwards."""
        self.cancel_hangs()
        await self._webhooks.aclose()
        await self._store.aclose()

    def cancel_hangs(self) -> None:
        """End every response held by a ``delay_next`` fault now."""
        for scope in list(self._hangs):
            scope.cancel()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def run_clock(self) -> None:
        """Drive a wall-clock simulator from a host's task group when no ASGI lifespan runs (in-process use)."""
        if self.clock == "wall":
            await self._ticker()

    async def _tick(self) -> None:
        self._webhooks.queue(await self._store.tick())

    async def _ticker(self) -> None:
        while True:
            await anyio.sleep(TICK)
            try:
                await self._tick()
            except SimulatorStateError as exc:  # the host's task group must outlive a busy or broken file
                logger.warning("simulator clock: %s", exc)
            await self.flush_webhooks()

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            response = await self._handle(Request(scope, receive), send)
        except SimulatorStateError as exc:
            logger.warning("simulator request: %s", exc)
            response = error_response(500, "Internal Server Error", "The simulator could not read or write its runs")
        if response is not None:
            await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with anyio.create_task_group() as tg:
            if self.clock == "wall":
                tg.start_soon(self._ticker)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            tg.cancel_scope.cancel()
        await self.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    async def _handle(self, request: Request, send: Send) -> Response | None:
        parts = [p for p in request.url.path.split("/") if p]
        if parts and parts[0] == "_sim":
            if not self._authorized(request):
                return _unauthorized()
            return await control(self, request, parts[1:])
        crew = self.crews.get(parts[0]) if parts else None
        found = self._api.route(crew, request, parts[1:]) if crew else None
        if crew is None or found is None:
            return not_found()
        route, method, handler = found
        self._counts[(crew.name, request.method.upper(), route)] += 1
        faults = self._faults[crew.name]
        if faults.extra_latency:
            await anyio.sleep(faults.extra_latency)
        shot = faults.pop()
        if shot is not None and not shot.after_processing:
            if shot.kind != "delay":
                return await self._apply(shot, request, send, not_found())
            await self._hold(shot.seconds)
            shot = None
        if not self._authorized(request):
            response: Response = _unauthorized()
        elif request.method.upper() != method and not (method == "GET" and request.method.upper() == "HEAD"):
            response = error_response(405, "Method Not Allowed", f"Use {method} for {route}")
            response.headers["Allow"] = method
        else:
            await self._store.ready()
            response = await handler()
        if shot is not None:
            return await self._apply(shot, request, send, response)
        return response

    async def _hold(self, seconds: float) -> None:
        with anyio.CancelScope() as scope:
            self._hangs.add(scope)
            try:
                await anyio.sleep(seconds)
            finally:
                self._hangs.discard(scope)

    async def _apply(self, shot: Shot, request: Request, send: Send, response: Response) -> Response | None:
        if shot.kind == "drop":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            if request.scope.get(SERVER_MARK):
                return None  # uvicorn closes a connection whose response was started and not completed
            raise SimulatedDrop("simulated connection drop")
        if shot.kind == "delay":
            await self._hold(shot.seconds)
            return response
        try:
            phrase = HTTPStatus(shot.status).phrase
        except ValueError:
            phrase = "Error"
        body = shot.body if shot.body is not None else {"error": phrase, "message": "Simulated failure"}
        headers = {"Retry-After": f"{shot.retry_after:g}"} if shot.retry_after is not None else None
        return JSONResponse(body, status_code=shot.status, headers=headers)
