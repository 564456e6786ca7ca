"""Receiver for AMP's task, step, crew and human-input webhooks.

AMP signs none of these, so each execution gets an unguessable secret at kickoff and its webhook URLs
are ``{base}/webhooks/{secret}/{kind}``. A call is accepted only when the payload's kickoff_id names a
ledger record whose secret matches (constant-time compare); anything else gets a 404 that reveals
nothing. Accepted events go to the run tracker, the one writer of a run's status.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import CrewMCPError
from .service import CrewService

__all__ = ["KINDS", "webhook_routes"]

logger = logging.getLogger(__name__)

KINDS = frozenset({"task", "step", "crew", "human"})


def webhook_routes(service: Callable[[], CrewService | None]) -> list[Route]:
    """Starlette routes serving ``/webhooks/{secret}/{kind}`` for the running service (``service()``)."""

    async def receive(request: Request) -> Response:
        secret = request.path_params["secret"]
        kind = request.path_params["kind"]
        svc = service()
        if kind not in KINDS or svc is None:
            return JSONResponse({"error": "Not Found"}, status_code=404)
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"error": "Bad Request", "message": "body must be JSON"}, status_code=400)
        kickoff_id = payload.get("kickoff_id") or payload.get("execution_id") if isinstance(payload, dict) else None
        if not isinstance(kickoff_id, str):
            return JSONResponse({"error": "Not Found"}, status_code=404)
        try:
            record = await svc.ledger.get(kickoff_id, owner=None) or await svc.runs.claim(kickoff_id, payload, secret)
            expected = record.webhook_secret if record else None
            if record is None or not expected or not secrets.compare_digest(expected.encode(), secret.encode()):
                logger.warning("refused a %s webhook for an unknown execution or with a wrong secret", kind)
                return JSONResponse({"error": "Not Found"}, status_code=404)
            await svc.runs.webhook(record, kind, payload)
        except CrewMCPError as exc:
            logger.error("webhook for %s could not be applied: %s", kickoff_id, exc)
            return JSONResponse({"error": "Unavailable", "message": "try again"}, status_code=503)
        return JSONResponse({"accepted": True}, status_code=202)

    return [Route("/webhooks/{secret}/{kind}", receive, methods=["POST"])]
