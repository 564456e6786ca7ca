"""Receiver for AMP's task, step, crew and human-input webhooks.

AMP signs none of these, so each execution gets an unguessable secret at kickoff, and its webhook URLs are
``{base}/webhooks/{request_id}/{secret}/{kind}``: the request id (crew-mcp's own id for the kickoff, known before
AMP answers) names the ledger record, whose secret must match (constant-time compare). All of that is checked
from the URL alone, before a byte of the body is read: a forged call costs one ledger read and gets a 404 that
reveals nothing. Only then is the body read, at most :data:`MAX_BODY_BYTES` (a larger one, declared or chunked,
gets 413 and is not read further), and parsed defensively (not JSON, nested deeper than :data:`MAX_DEPTH`, or not
an object: 400). Accepted events go to the run tracker, the one writer of a run's status.

Runs recorded before this scheme carry ``{base}/webhooks/{secret}/{kind}`` URLs (AMP keeps them for the run's
life). That route stays for them: its record is found from the payload's kickoff_id, so its body is read first,
under the same size cap and parsing rules.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import CrewMCPError
from .intake import ClientDisconnect, TooLarge, read_capped
from .ledger import RunRecord
from .service import CrewService

__all__ = ["KINDS", "MAX_BODY_BYTES", "MAX_DEPTH", "webhook_routes"]

logger = logging.getLogger(__name__)

KINDS = frozenset({"task", "step", "crew", "human"})
MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest webhook body read (the MCP endpoint's own limit); AMP's payloads are a task's or run's output."""
MAX_DEPTH = 64
"""The deepest nesting of a webhook body accepted; AMP's payloads are a few levels deep."""
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


class _Refused(Exception):
    """A webhook answered without being applied: its HTTP status and what to say."""

    def __init__(self, status: int, error: str, message: str = "") -> None:
        super().__init__(error)
        self.response = JSONResponse({"error": error, **({"message": message} if message else {})}, status)


_NOT_FOUND = 404, "Not Found"


def webhook_routes(service: Callable[[], CrewService | None]) -> list[Route]:
    """Starlette routes serving the webhook URLs (both schemes) for the running service (``service()``)."""

    async def receive(request: Request) -> Response:
        """``/webhooks/{request_id}/{secret}/{kind}``: everything checked from the URL before the body is read."""
        params = request.path_params
        try:
            svc = _running(service, params["kind"])
            record = await _by_request(svc, params["request_id"], params["secret"], params["kind"])
            payload = await _payload(request)
            kickoff_id = payload.get("kickoff_id") or payload.get("execution_id")
            if record.kickoff_id is None and isinstance(kickoff_id, str):
                # A kickoff whose answer was lost or is still on its way: the crew's own webhook (this URL's secret
                # proves it) names the run, so the record is confirmed with that id.
                record = await svc.runs.confirm_by_webhook(record, kickoff_id) or record
            if record.kickoff_id is None:
                raise _Refused(503, "Unavailable", "the run is not recorded yet; try again")
            if kickoff_id not in (None, record.kickoff_id):
                raise _Refused(*_NOT_FOUND)  # a valid secret never reaches another run
            return await _apply(svc, record, params["kind"], payload)
        except _Refused as refused:
            return refused.response
        except CrewMCPError as exc:
            logger.error("a webhook could not be matched to its run: %s", exc)
            return JSONResponse({"error": "Unavailable", "message": "try again"}, status_code=503)

    async def receive_legacy(request: Request) -> Response:
        """``/webhooks/{secret}/{kind}`` of runs recorded before the request id was in the URL."""
        secret, kind = request.path_params["secret"], request.path_params["kind"]
        try:
            svc = _running(service, kind)
            payload = await _payload(request)
            kickoff_id = payload.get("kickoff_id") or payload.get("execution_id")
            record = None
            if isinstance(kickoff_id, str):
                record = await svc.ledger.get(kickoff_id, owner=None) or await svc.runs.claim(
                    kickoff_id, payload, secret
                )
            _check_secret(record, secret, kind)
            assert record is not None
            return await _apply(svc, record, kind, payload)
        except _Refused as refused:
            return refused.response
        except CrewMCPError as exc:
            logger.error("a webhook could not be matched to its run: %s", exc)
            return JSONResponse({"error": "Unavailable", "message": "try again"}, status_code=503)

    return [
        Route("/webhooks/{request_id}/{secret}/{kind}", receive, methods=["POST"]),
        Route("/webhooks/{secret}/{kind}", receive_legacy, methods=["POST"]),
    ]


def _running(service: Callable[[], CrewService | None], kind: str) -> CrewService:
    svc = service()
    if kind not in KINDS or svc is None:
        raise _Refused(*_NOT_FOUND)
    return svc


async def _by_request(svc: CrewService, request_id: str, secret: str, kind: str) -> RunRecord:
    """The record the URL names, if its secret matches (confirmed or not)."""
    if not _REQUEST_ID.match(request_id):
        raise _Refused(*_NOT_FOUND)
    try:
        record = await svc.ledger.get_request(request_id, owner=None)
    except CrewMCPError as exc:
        logger.error("webhook for request %s could not be looked up: %s", request_id, exc)
        raise _Refused(503, "Unavailable", "try again") from None
    _check_secret(record, secret, kind)
    assert record is not None
    return record


def _check_secret(record: RunRecord | None, secret: str, kind: str) -> None:
    expected = record.webhook_secret if record else None
    if not expected or not secrets.compare_digest(expected.encode(), secret.encode()):
        logger.warning("refused a %s webhook for an unknown execution or with a wrong secret", kind)
        raise _Refused(*_NOT_FOUND)


async def _payload(request: Request) -> dict[str, Any]:
    """The body as a JSON object, read up to :data:`MAX_BODY_BYTES` and parsed defensively.

    Raises:
        _Refused: 413 for a body over the cap (declared or streamed), 400 for anything but a JSON object.
    """
    try:
        body = await read_capped(request, MAX_BODY_BYTES)
    except TooLarge:
        raise _Refused(413, "Payload Too Large", f"webhook bodies are limited to {MAX_BODY_BYTES} bytes") from None
    except ClientDisconnect:
        raise _Refused(400, "Bad Request", "the body was cut off") from None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise _Refused(400, "Bad Request", "body must be JSON") from None
    if not isinstance(payload, dict) or _deeper_than(payload, MAX_DEPTH):
        raise _Refused(400, "Bad Request", f"body must be a JSON object nested at most {MAX_DEPTH} levels")
    return payload


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iteratively: any depth is safe to measure)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


async def _apply(svc: CrewService, record: RunRecord, kind: str, payload: dict[str, Any]) -> Response:
    try:
        await svc.runs.webhook(record, kind, payload)
    except CrewMCPError as exc:
        logger.error("webhook for %s could not be applied: %s", record.kickoff_id, exc)
        return JSONResponse({"error": "Unavailable", "message": "try again"}, status_code=503)
    return JSONResponse({"accepted": True}, status_code=202)
