"""The control API under ``/_sim/`` (same bearer token as the crews), for tests that run the simulator out of process.

``POST /_sim/advance {"seconds"}`` moves the clock; ``GET /_sim/counts`` reads request counts and kickoff_ids;
``POST /_sim/faults/{crew}`` queues faults (a :class:`~.faults.FaultRequest`); ``GET /_sim/webhooks`` and
``GET /_sim/resumes`` read what was sent and received.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .faults import FaultRequest
from .routes import bad_request, error_response, first_error, not_found, read_object

if TYPE_CHECKING:
    from .app import Simulator

__all__ = ["control"]


async def control(sim: Simulator, request: Request, parts: list[str]) -> Response:
    """Answer one authorized control request; ``parts`` is the path after ``/_sim``."""
    method = request.method.upper()
    if method == "POST" and parts == ["advance"]:
        return await _advance(sim, request)
    if method == "GET" and parts == ["counts"]:
        kickoffs = {name: sim.kickoff_ids(name) for name in sim.crews}
        return JSONResponse({"counts": sim.request_counts(), "executions": kickoffs})
    if method == "POST" and len(parts) == 2 and parts[0] == "faults":
        return await _faults(sim, request, parts[1])
    if method == "GET" and parts == ["webhooks"]:
        return JSONResponse({"webhooks": [asdict(d) for d in sim.webhook_log]})
    if method == "GET" and parts == ["resumes"]:
        return JSONResponse({"resumes": sim.resume_log})
    return not_found()


async def _advance(sim: Simulator, request: Request) -> Response:
    body = await read_object(request)
    if isinstance(body, JSONResponse):
        return body
    seconds = body.get("seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return bad_request("seconds must be a number >= 0")
    await sim.advance(float(seconds))
    return JSONResponse({"now": sim.now()})


async def _faults(sim: Simulator, request: Request, crew: str) -> Response:
    if crew not in sim.crews:
        return error_response(404, "Not Found", f"No crew named {crew!r}")
    body = await read_object(request)
    if isinstance(body, JSONResponse):
        return body
    faults = sim.faults(crew)
    try:
        FaultRequest.model_validate(body).apply(faults)
    except ValidationError as exc:
        return bad_request(first_error(exc))
    return JSONResponse({"ok": True, "queued": len(faults.queue)})
