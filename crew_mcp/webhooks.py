"""Receiver for AMP's task, step, crew and human-input webhooks.

AMP signs none of these, so each execution gets an unguessable secret at kickoff and its webhook URLs
are ``{base}/webhooks/{secret}/{kind}``. A call is accepted only when the payload's kickoff_id names a
ledger record whose secret matches (constant-time compare); anything else gets a 404 that reveals
nothing. Accepted events update the ledger (pending task, final result) and wake status waiters.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import CrewMCPError
from .models import ExecutionState, PendingHumanInput, normalize_status
from .server import Runtime

__all__ = ["webhook_routes"]

log = logging.getLogger("crew_mcp.webhooks")

KINDS = frozenset({"task", "step", "crew", "human"})
_PENDING_WORDS = ("pending_human_input", "pending human input", "awaiting_human_input", "paused")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _is_human_request(kind: str, payload: dict[str, Any]) -> bool:
    if kind == "human":
        return True
    status = str(payload.get("status") or payload.get("event") or "").lower()
    return kind == "task" and any(w in status for w in _PENDING_WORDS)


def webhook_routes(runtime: Runtime) -> list[Route]:
    """Starlette routes serving ``/webhooks/{secret}/{kind}`` for the running service."""

    async def receive(request: Request) -> Response:
        secret = request.path_params["secret"]
        kind = request.path_params["kind"]
        service = runtime.service
        if kind not in KINDS or service is None:
            return JSONResponse({"error": "Not Found"}, status_code=404)
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"error": "Bad Request", "message": "body must be JSON"}, status_code=400)
        kickoff_id = payload.get("kickoff_id") or payload.get("execution_id") if isinstance(payload, dict) else None
        if not isinstance(kickoff_id, str):
            return JSONResponse({"error": "Not Found"}, status_code=404)
        try:
            record = await service.ledger.get(kickoff_id, owner=None)
            expected = record.webhook_secret if record else None
            if record is None or not expected or not secrets.compare_digest(expected.encode(), secret.encode()):
                log.warning("refused a %s webhook for an unknown execution or with a wrong secret", kind)
                return JSONResponse({"error": "Not Found"}, status_code=404)
            await _apply(runtime, record.crew, kickoff_id, kind, payload)
        except CrewMCPError as exc:
            log.error("webhook for %s could not be applied: %s", kickoff_id, exc)
            return JSONResponse({"error": "Unavailable", "message": "try again"}, status_code=503)
        return JSONResponse({"accepted": True}, status_code=202)

    return [Route("/webhooks/{secret}/{kind}", receive, methods=["POST"])]


async def _apply(runtime: Runtime, crew: str, kickoff_id: str, kind: str, payload: dict[str, Any]) -> None:
    service = runtime.require()
    if _is_human_request(kind, payload):
        task_id = _text(payload.get("task_id") or payload.get("name")) or "unknown"
        pending = PendingHumanInput(task_id=task_id, output=_text(payload.get("output")), since=datetime.now(UTC))
        await service.ledger.set_pending(kickoff_id, pending)
        service.hub.push(crew, kickoff_id)
    elif kind == "crew":
        state = str(payload.get("status") or "SUCCESS")
        body = {key: payload.get(key) for key in ("result", "result_json", "error", "token_usage")}
        body["state"] = state
        status = normalize_status(kickoff_id, body)
        if status.state is ExecutionState.UNKNOWN:
            status = normalize_status(kickoff_id, {**body, "state": "SUCCESS"})
        await service.ledger.save_status(kickoff_id, status)
        service.hub.push(crew, kickoff_id, status)
    elif kind == "task":
        service.hub.push(crew, kickoff_id)
    await runtime.notify(kickoff_id)
