"""The :class:`Simulator`: an AMP-compatible ASGI app with a control API under ``/_sim/``."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal

import anyio
import httpx2
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..models import KickoffRequest, ResumeRequest
from .engine import Execution, Hooks, Outgoing
from .faults import FaultRequest, Faults, Shot, SimulatedDrop
from .specs import CrewSpec, builtin_crews

__all__ = ["DEFAULT_TOKEN", "SERVER_MARK", "Simulator", "WebhookDelivery"]

log = logging.getLogger("crew_mcp.simulator")

SERVER_MARK = "crew_mcp.simulator.server"
"""Scope key set by :func:`serve_simulator`: a drop can then end the response without raising."""

DEFAULT_TOKEN = "sim-token"  # noqa: S105 - the well-known token of a local test double, not a secret
TICK = 0.05
Handler = Callable[[], Awaitable[Response]]


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook delivery attempt: where, what, and how it went (``status_code`` None on a transport error)."""

    url: str
    kind: str
    payload: dict[str, Any]
    status_code: int | None
    error: str | None = None


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def _not_found() -> JSONResponse:
    return _error(404, "Not Found", "The requested resource was not found")


def _bad(message: str) -> JSONResponse:
    return _error(400, "Invalid Request", message)


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "body"
    return f"Invalid request body: {where}: {e['msg']}"


class Simulator:
    """Simulated CrewAI AMP deployments in one ASGI app; each crew's base URL is ``{root}/{crew.name}``.

    ``clock="manual"`` moves only on :meth:`advance` (deterministic tests); ``clock="wall"`` follows real
    time, advanced by a ticker the app's lifespan starts. State is also advanced on every request.
    Webhooks are delivered by :meth:`advance` and by the ticker, never inside a crew request.
    """

    def __init__(
        self,
        crews: Sequence[CrewSpec] | None = None,
        *,
        token: str | None = DEFAULT_TOKEN,
        clock: Literal["wall", "manual"] = "wall",
        time_scale: float = 1.0,
        webhook_transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        specs = list(crews) if crews is not None else builtin_crews()
        self.crews: dict[str, CrewSpec] = {c.name: c for c in specs}
        if len(self.crews) != len(specs):
            raise ValueError("crew names must be unique")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.token = token
        self.clock = clock
        self.time_scale = time_scale
        self.webhook_log: list[WebhookDelivery] = []
        self.resume_log: list[dict[str, Any]] = []
        self.executions: dict[str, Execution] = {}
        self.app: ASGIApp = self._asgi
        self._faults = {name: Faults() for name in self.crews}
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._offset = 0.0
        self._t0 = time.monotonic()
        self._epoch = datetime.now(UTC)
        self._outbox: list[Outgoing] = []
        self._webhook_transport = webhook_transport
        self._http: httpx2.AsyncClient | None = None
        self._flush_lock: anyio.Lock | None = None
        self._hangs: set[anyio.CancelScope] = set()

    # ------------------------------------------------------------------------------ public API

    def now(self) -> float:
        """Simulated seconds since the simulator was created."""
        if self.clock == "manual":
            return self._offset
        return time.monotonic() - self._t0 + self._offset

    async def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds``, run every transition due, and deliver the webhooks they caused.

        Works with both clocks (on the wall clock it jumps ahead); ``advance(0)`` just delivers what is queued.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._offset += seconds
        self._tick()
        await self.flush_webhooks()

    def count(self, crew: str, method: str, route: str) -> int:
        """How many requests ``method route`` (``"/kickoff"``, ``"/status"``, ``"/resume"``, ``"/inputs"``, ``"/"``)
        reached ``crew``, whatever they were answered with."""
        return self._counts[(crew, method.upper(), route)]

    def faults(self, crew: str) -> Faults:
        """The fault injector of ``crew`` (KeyError for an unknown crew)."""
        return self._faults[crew]

    def kickoff_ids(self, crew: str) -> list[str]:
        """The executions created for ``crew``, oldest first."""
        return [e.id for e in self.executions.values() if e.crew.name == crew]

    async def flush_webhooks(self) -> None:
        """Deliver every queued webhook, oldest first; failures are logged and recorded, never raised."""
        if self._flush_lock is None:
            self._flush_lock = anyio.Lock()
        async with self._flush_lock:
            while self._outbox:
                batch = sorted(self._outbox, key=lambda o: o.at)
                self._outbox.clear()
                for item in batch:
                    await self._deliver(item)

    async def aclose(self) -> None:
        """End held responses and close the webhook client; the simulator can still serve afterwards."""
        self.cancel_hangs()
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()

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

    # ------------------------------------------------------------------------------ time and webhooks

    def _tick(self) -> None:
        now = self.now()
        for ex in self.executions.values():
            if ex.state == "RUNNING":
                self._outbox.extend(ex.advance(now))

    async def run_clock(self) -> None:
        """Drive a wall-clock simulator from a host's task group when no ASGI lifespan runs (in-process use)."""
        if self.clock == "wall":
            await self._ticker()

    async def _ticker(self) -> None:
        while True:
            await anyio.sleep(TICK)
            self._tick()
            await self.flush_webhooks()

    async def _deliver(self, item: Outgoing) -> None:
        if self._http is None:
            self._http = httpx2.AsyncClient(transport=self._webhook_transport, timeout=httpx2.Timeout(5.0))
        headers: dict[str, str] = {}
        auth = item.auth or {}
        if auth.get("strategy") == "bearer" and auth.get("token"):
            headers["Authorization"] = f"Bearer {auth['token']}"
        elif auth.get("strategy") == "basic":
            raw = f"{auth.get('username', '')}:{auth.get('password', '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        try:
            response = await self._http.post(item.url, json=item.payload, headers=headers)
        except Exception as exc:  # a webhook failure must never take the simulator down
            log.warning("webhook %s to %s failed: %s", item.kind, item.url, exc)
            self.webhook_log.append(WebhookDelivery(item.url, item.kind, item.payload, None, f"{type(exc).__name__}"))
            return
        if response.status_code >= 400:
            log.warning("webhook %s to %s answered HTTP %s", item.kind, item.url, response.status_code)
        self.webhook_log.append(WebhookDelivery(item.url, item.kind, item.payload, response.status_code))

    # ------------------------------------------------------------------------------ ASGI

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self._handle(Request(scope, receive), send)
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

    def _route(self, crew: CrewSpec, request: Request, parts: list[str]) -> tuple[str, str, Handler] | None:
        """(route, allowed method, handler) for a path under a crew, or None when unrouted."""
        if not parts:
            return "/", "GET", self._health
        if parts == ["inputs"]:
            return "/inputs", "GET", lambda: self._inputs(crew)
        if parts == ["kickoff"]:
            return "/kickoff", "POST", lambda: self._kickoff(crew, request)
        if parts == ["resume"]:
            return "/resume", "POST", lambda: self._resume(crew, request)
        if len(parts) == 2 and parts[0] == "status" and crew.status_path in ("both", "/status/{kickoff_id}"):
            return "/status", "GET", lambda: self._status(crew, parts[1])
        if len(parts) == 2 and parts[1] == "status" and crew.status_path in ("both", "/{kickoff_id}/status"):
            return "/status", "GET", lambda: self._status(crew, parts[0])
        return None

    async def _handle(self, request: Request, send: Send) -> Response | None:
        parts = [p for p in request.url.path.split("/") if p]
        if parts and parts[0] == "_sim":
            if not self._authorized(request):
                return _error(401, "Unauthorized", "Invalid or missing bearer token")
            return await self._control(request, parts[1:])
        crew = self.crews.get(parts[0]) if parts else None
        found = self._route(crew, request, parts[1:]) if crew else None
        if crew is None or found is None:
            return _not_found()
        route, method, handler = found
        self._counts[(crew.name, request.method.upper(), route)] += 1
        faults = self._faults[crew.name]
        if faults.extra_latency:
            await anyio.sleep(faults.extra_latency)
        shot = faults.pop()
        if shot is not None and not shot.after_processing:
            if shot.kind != "delay":
                return await self._apply(shot, request, send, _not_found())
            await self._hold(shot.seconds)
            shot = None
        if not self._authorized(request):
            response: Response = _error(401, "Unauthorized", "Invalid or missing bearer token")
        elif request.method.upper() != method and not (method == "GET" and request.method.upper() == "HEAD"):
            response = _error(405, "Method Not Allowed", f"Use {method} for {route}")
            response.headers["Allow"] = method
        else:
            self._tick()
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

    # ------------------------------------------------------------------------------ crew routes

    async def _health(self) -> Response:
        return PlainTextResponse("Healthy")

    async def _inputs(self, crew: CrewSpec) -> Response:
        return JSONResponse({"inputs": [i.name for i in crew.inputs]})

    async def _body(self, request: Request) -> dict[str, Any] | JSONResponse:
        try:
            value = json.loads(await request.body() or b"null")
        except ValueError:
            return _bad("Request body is not valid JSON")
        if not isinstance(value, dict):
            return _bad("Request body must be a JSON object")
        return value

    @staticmethod
    def _hooks(model: KickoffRequest | ResumeRequest) -> Hooks | JSONResponse:
        hooks = Hooks(model.task_webhook_url, model.step_webhook_url, model.crew_webhook_url)
        human = (model.model_extra or {}).get("humanInputWebhook")
        if human is not None:
            if not isinstance(human, dict) or not isinstance(human.get("url"), str):
                return _bad("humanInputWebhook must be an object with a url")
            auth = human.get("authentication")
            if auth is not None and not isinstance(auth, dict):
                return _bad("humanInputWebhook.authentication must be an object")
            hooks.human_input, hooks.human_input_auth = human["url"], auth
        return hooks

    async def _kickoff(self, crew: CrewSpec, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            req = KickoffRequest.model_validate(body)
        except ValidationError as exc:
            return _bad(_first_error(exc))
        missing = [i.name for i in crew.inputs if i.required and i.name not in req.inputs]
        if missing:
            details = {"missing_inputs": missing}
            return _error(422, "Validation Error", "Missing required inputs", details=details)
        hooks = self._hooks(req)
        if isinstance(hooks, JSONResponse):
            return hooks
        now = self.now()
        ex = Execution(
            id=str(uuid.uuid4()),
            crew=crew,
            inputs=dict(req.inputs),
            meta=dict(req.meta or {}),
            hooks=hooks,
            created_at=now,
            epoch=self._epoch,
            time_scale=self.time_scale,
        )
        self.executions[ex.id] = ex
        self._outbox.extend(ex.start())
        self._outbox.extend(ex.advance(now))
        return JSONResponse({"kickoff_id": ex.id})

    def _find(self, crew: CrewSpec, kickoff_id: str) -> Execution | None:
        ex = self.executions.get(kickoff_id)
        return ex if ex is not None and ex.crew.name == crew.name else None

    async def _status(self, crew: CrewSpec, kickoff_id: str) -> Response:
        ex = self._find(crew, kickoff_id)
        if ex is None:
            return _error(404, "Execution not found", f"No execution found with ID: {kickoff_id}")
        now = self.now()
        return JSONResponse(ex.taskstatus(now) if crew.shape == "taskstatus" else ex.documented(now))

    async def _resume(self, crew: CrewSpec, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, JSONResponse):
            return body
        self.resume_log.append(body)
        try:
            req = ResumeRequest.model_validate(body)
        except ValidationError as exc:
            return _bad(_first_error(exc))
        ex = self._find(crew, req.kickoff_id)
        if ex is None:
            return _error(404, "Not Found", "Execution ID not found")
        if ex.state != "PAUSED":
            return _bad("Execution is not in pending human input state")
        if req.task_id != ex.task.id:
            return _error(404, "Not Found", f"Task ID not found: {req.task_id}")
        hooks = self._hooks(req)
        if isinstance(hooks, JSONResponse):
            return hooks
        word, out = ex.resume(self.now(), feedback=req.human_feedback, approve=req.is_approve, hooks=hooks)
        self._outbox.extend(out)
        messages = {
            "resumed": "Execution resumed successfully",
            "retrying": "Task will be retried with your feedback",
            "completed": "Execution completed",
        }
        return JSONResponse({"status": word, "message": messages[word]})

    # ------------------------------------------------------------------------------ control API

    async def _control(self, request: Request, parts: list[str]) -> Response:
        method = request.method.upper()
        if method == "POST" and parts == ["advance"]:
            body = await self._body(request)
            if isinstance(body, JSONResponse):
                return body
            seconds = body.get("seconds", 0)
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                return _bad("seconds must be a number >= 0")
            await self.advance(float(seconds))
            return JSONResponse({"now": self.now()})
        if method == "GET" and parts == ["counts"]:
            counts: dict[str, dict[str, int]] = {}
            for (crew, m, route), n in sorted(self._counts.items()):
                counts.setdefault(crew, {})[f"{m} {route}"] = n
            kickoffs = {name: self.kickoff_ids(name) for name in self.crews}
            return JSONResponse({"counts": counts, "executions": kickoffs})
        if method == "POST" and len(parts) == 2 and parts[0] == "faults":
            if parts[1] not in self._faults:
                return _error(404, "Not Found", f"No crew named {parts[1]!r}")
            body = await self._body(request)
            if isinstance(body, JSONResponse):
                return body
            try:
                FaultRequest.model_validate(body).apply(self._faults[parts[1]])
            except ValidationError as exc:
                return _bad(_first_error(exc))
            return JSONResponse({"ok": True, "queued": len(self._faults[parts[1]].queue)})
        if method == "GET" and parts == ["webhooks"]:
            return JSONResponse({"webhooks": [asdict(d) for d in self.webhook_log]})
        if method == "GET" and parts == ["resumes"]:
            return JSONResponse({"resumes": self.resume_log})
        return _not_found()
