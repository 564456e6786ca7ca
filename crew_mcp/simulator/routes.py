"""The AMP API of each simulated crew: ``GET /``, ``/inputs``, ``/kickoff``, ``/status``, ``/resume``, ``/stop``.

:class:`CrewAPI` resolves a path under a crew to a handler; handlers answer with AMP's documented bodies,
errors included. Runs change only inside :meth:`~.store.Store.transact`, so the same handlers serve the
in-memory and the durable store.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..models import KickoffRequest, ResumeRequest
from .engine import Execution, Hooks
from .specs import CrewSpec
from .store import Session, Store
from .webhooks import WebhookSender

__all__ = ["CrewAPI", "Handler", "bad_request", "error_response", "first_error", "not_found", "read_object"]

Handler = Callable[[], Awaitable[Response]]
T = TypeVar("T")

_RESUMED = {
    "resumed": "Execution resumed successfully",
    "retrying": "Task will be retried with your feedback",
    "completed": "Execution completed",
}


def error_response(
    status: int, error: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """AMP's error body ``{"error", "message", ...}``."""
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status, headers=headers)


def not_found() -> JSONResponse:
    """AMP's 404 for a path nothing serves."""
    return error_response(404, "Not Found", "The requested resource was not found")


def bad_request(message: str) -> JSONResponse:
    """AMP's 400 ``Invalid Request``."""
    return error_response(400, "Invalid Request", message)


def first_error(exc: ValidationError) -> str:
    """The first validation error as one sentence naming the field."""
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "body"
    return f"Invalid request body: {where}: {e['msg']}"


async def read_object(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's JSON object body, or the 400 to answer."""
    try:
        value = json.loads(await request.body() or b"null")
    except ValueError:
        return bad_request("Request body is not valid JSON")
    if not isinstance(value, dict):
        return bad_request("Request body must be a JSON object")
    return value


def _hooks(model: KickoffRequest | ResumeRequest) -> Hooks | JSONResponse:
    hooks = Hooks(model.task_webhook_url, model.step_webhook_url, model.crew_webhook_url)
    human = (model.model_extra or {}).get("humanInputWebhook")
    if human is not None:
        if not isinstance(human, dict) or not isinstance(human.get("url"), str):
            return bad_request("humanInputWebhook must be an object with a url")
        auth = human.get("authentication")
        if auth is not None and not isinstance(auth, dict):
            return bad_request("humanInputWebhook.authentication must be an object")
        hooks.human_input, hooks.human_input_auth = human["url"], auth
    return hooks


def _owned(session: Session, crew: CrewSpec, kickoff_id: str) -> Execution | None:
    ex = session.get(kickoff_id)
    return ex if ex is not None and ex.crew.name == crew.name else None


class CrewAPI:
    """The crew routes of one simulator, over its store and webhook outbox.

    Args:
        store: where runs live.
        webhooks: the outbox the deliveries runs cause go to.
        time_scale: multiplies every task's duration, fixed per run at kickoff.
        resume_log: every ``/resume`` body received is appended here (for tests).
    """

    def __init__(self, store: Store, webhooks: WebhookSender, *, time_scale: float, resume_log: list[Any]) -> None:
        self._store = store
        self._webhooks = webhooks
        self._time_scale = time_scale
        self._resume_log = resume_log

    def route(self, crew: CrewSpec, request: Request, parts: list[str]) -> tuple[str, str, Handler] | None:
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
        if len(parts) == 2 and parts[0] == "stop":
            # Without the endpoint every method gets the old deployment's answer, never "use POST".
            method = "POST" if crew.stop_endpoint == "supported" else request.method.upper()
            return "/stop", method, lambda: self._stop(crew, parts[1])
        return None

    async def _run(self, op: Callable[[Session], T]) -> T:
        result, outgoing = await self._store.transact(op)
        self._webhooks.queue(outgoing)
        return result

    async def _health(self) -> Response:
        return PlainTextResponse("Healthy")

    async def _inputs(self, crew: CrewSpec) -> Response:
        return JSONResponse({"inputs": [i.name for i in crew.inputs]})

    async def _kickoff(self, crew: CrewSpec, request: Request) -> Response:
        body = await read_object(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            req = KickoffRequest.model_validate(body)
        except ValidationError as exc:
            return bad_request(first_error(exc))
        missing = [i.name for i in crew.inputs if i.required and i.name not in req.inputs]
        if missing:
            details = {"missing_inputs": missing}
            return error_response(422, "Validation Error", "Missing required inputs", details=details)
        hooks = _hooks(req)
        if isinstance(hooks, JSONResponse):
            return hooks

        def start(s: Session) -> str:
            ex = Execution(
                id=str(uuid.uuid4()),
                crew=crew,
                inputs=dict(req.inputs),
                meta=dict(req.meta or {}),
                hooks=hooks,
                created_at=s.now,
                epoch=s.epoch,
                time_scale=self._time_scale,
            )
            s.add(ex)
            s.emit(ex.start())
            s.emit(ex.advance(s.now))
            return ex.id

        return JSONResponse({"kickoff_id": await self._run(start)})

    async def _status(self, crew: CrewSpec, kickoff_id: str) -> Response:
        def look(s: Session) -> dict[str, Any] | None:
            ex = _owned(s, crew, kickoff_id)
            if ex is None:
                return None
            return ex.taskstatus(s.now) if crew.shape == "taskstatus" else ex.documented(s.now)

        body = await self._run(look)
        if body is None:
            return error_response(404, "Execution not found", f"No execution found with ID: {kickoff_id}")
        return JSONResponse(body)

    async def _resume(self, crew: CrewSpec, request: Request) -> Response:
        body = await read_object(request)
        if isinstance(body, JSONResponse):
            return body
        self._resume_log.append(body)
        try:
            req = ResumeRequest.model_validate(body)
        except ValidationError as exc:
            return bad_request(first_error(exc))
        hooks = _hooks(req)

        def decide(s: Session) -> Response:
            ex = _owned(s, crew, req.kickoff_id)
            if ex is None:
                return error_response(404, "Not Found", "Execution ID not found")
            if ex.state != "PAUSED":
                return bad_request("Execution is not in pending human input state")
            if req.task_id != ex.task.id:
                return error_response(404, "Not Found", f"Task ID not found: {req.task_id}")
            if isinstance(hooks, JSONResponse):
                return hooks
            word, out = ex.resume(s.now, feedback=req.human_feedback, approve=req.is_approve, hooks=hooks)
            s.emit(out)
            return JSONResponse({"status": word, "message": _RESUMED[word]})

        return await self._run(decide)

    async def _stop(self, crew: CrewSpec, kickoff_id: str) -> Response:
        if crew.stop_endpoint == "404":
            return not_found()
        if crew.stop_endpoint == "405":
            return error_response(405, "Method Not Allowed", "Method Not Allowed", headers={"Allow": "GET"})

        def halt(s: Session) -> Response:
            ex = _owned(s, crew, kickoff_id)
            if ex is None:
                return error_response(404, "Execution not found", f"No execution found with ID: {kickoff_id}")
            if ex.state not in ("RUNNING", "PAUSED"):
                # The documented body of this one error is FastAPI's {"detail"}, not {"error", "message"}.
                return JSONResponse({"detail": f"Cannot stop execution. Current state: {ex.state}"}, status_code=400)
            s.emit(ex.stop(s.now))
            return JSONResponse({"status": "stopped", "kickoffId": kickoff_id})

        return await self._run(halt)
