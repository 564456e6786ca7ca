"""The inbox page's API: its data, and the two things a person does there (decide, stop).

```text
GET  /approvals/api/state    InboxState (crew_mcp/inbox/state.py); 401 without a session
POST /approvals/api/decide   {"kickoff_id", "task_id", "approve", "feedback", "fingerprint"} → {"notice", ...}
POST /approvals/api/stop     {"kickoff_id"} → {"notice", ...}
```

Every POST passes, in order: the session (401), the Origin (403), the session's CSRF token in ``X-CSRF-Token``
(403), a JSON body of at most 64 KiB (415/413/400), the scope (403: crew:approve to decide, crew:run to stop). Only
then is anything read from the ledger or sent to a crew. A decision names the output it was made on
(``fingerprint``): when the output changed since the page showed it, nothing is sent. Decisions and stops go
through the service (``CrewService.resume`` / ``CrewService.cancel``) as ``by="human", via="inbox"``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import errors as e
from ..auth.config import SCOPE_APPROVE, SCOPE_RUN
from ..identity import Caller
from ..service import CrewService
from ..views import decision_notice
from .context import InboxContext, json_error, read_body
from .security import WebGuard
from .sessions import Session
from .state import build_state, fingerprint

__all__ = ["MAX_BODY", "MAX_FEEDBACK", "InboxAPI"]

log = logging.getLogger("crew_mcp.inbox")

MAX_BODY = 64 * 1024
MAX_FEEDBACK = 10_000
REFRESH_SECONDS = 10.0
"""How often one person's polls (in any number of tabs) re-read their running runs from the crews; the polls in
between read the ledger only. A decision or a stop makes the next poll re-read at once."""
_STARTING = "crew-mcp is still starting; try again in a moment."


def _ok(body: dict[str, Any]) -> Response:
    return WebGuard.protect(JSONResponse(body))


def _status_of(exc: e.CrewMCPError) -> int:
    if isinstance(exc, e.RunNotFoundError | e.InvalidInputError):
        return 404
    if isinstance(exc, e.ApprovalDeniedError | e.HumanOnlyError):
        return 403
    if isinstance(exc, e.UsageError):
        return 409
    return 502 if isinstance(exc, e.UpstreamError | e.CrewAPIError) else 503


class InboxAPI:
    """The handlers of the page's API (see the module docstring)."""

    def __init__(self, ctx: InboxContext) -> None:
        self.ctx = ctx
        self._refreshed: dict[str, float] = {}

    def _due(self, owner: str) -> bool:
        """Whether ``owner``'s runs should be re-read from the crews now (see :data:`REFRESH_SECONDS`)."""
        now = time.monotonic()
        if now - self._refreshed.get(owner, -REFRESH_SECONDS) < REFRESH_SECONDS:
            return False
        if len(self._refreshed) > 10_000:  # forget people who stopped polling long ago
            self._refreshed = {k: v for k, v in self._refreshed.items() if now - v < REFRESH_SECONDS}
        self._refreshed[owner] = now
        return True

    async def state(self, request: Request) -> Response:
        """``GET /approvals/api/state``: everything the page shows."""
        ctx = self.ctx
        _, session = await ctx.session(request)
        if session is None:
            return json_error(401, "Your session has ended; sign in again.", signin=True)
        if not ctx.may_read(session):
            return json_error(403, "Your account may not read runs here.")
        service = ctx.service
        if service is None:
            return json_error(503, _STARTING)
        caller = ctx.caller(session)
        try:
            view = await build_state(
                service,
                caller,
                ctx.viewer(session),
                poll_seconds=ctx.settings.inbox.poll_seconds,
                refresh=self._due(caller.owner),
            )
        except e.CrewMCPError as exc:
            return json_error(_status_of(exc), e.describe(exc))
        return _ok(view.model_dump(mode="json"))

    async def decide(self, request: Request) -> Response:
        """``POST /approvals/api/decide``: approve, or reject with feedback, the output the page showed."""
        checked = await self._checked(request, SCOPE_APPROVE, "decide on runs")
        if isinstance(checked, Response):
            return checked
        session, body, service = checked
        kickoff_id, task_id = body.get("kickoff_id"), body.get("task_id")
        approve, feedback, shown = body.get("approve"), body.get("feedback", ""), body.get("fingerprint")
        if not (isinstance(kickoff_id, str) and isinstance(task_id, str) and isinstance(approve, bool)):
            return json_error(400, "A decision names the run, the task and whether it is approved.")
        if not isinstance(feedback, str) or len(feedback) > MAX_FEEDBACK:
            return json_error(400, f"Feedback is text of at most {MAX_FEEDBACK} characters.")
        feedback = feedback.strip()
        if not approve and not feedback:
            return json_error(400, "Say what should change: rejecting sends your feedback to the crew.")
        caller = self.ctx.caller(session)
        try:
            record = await service.waiting_run(kickoff_id, caller, task_id=task_id)
            pending = record.pending
            if pending is None or pending.task_id != task_id or fingerprint(pending.output) != shown:
                return json_error(
                    409,
                    "The output changed since the page showed it (the crew revised it, or someone decided); nothing "
                    "was sent. Review the output shown now.",
                    stale=True,
                )
            resumed = await service.resume(kickoff_id, caller, approve=approve, feedback=feedback, task_id=task_id)
        except e.CrewMCPError as exc:
            return json_error(_status_of(exc), e.describe(exc))
        self._refreshed.pop(caller.owner, None)  # the next poll shows what the crew does with it
        log.info(
            "inbox: %s %s task %s of run %s", caller.owner, "approved" if approve else "rejected", task_id, kickoff_id
        )
        notice = decision_notice(task_id, approve, resumed.outcome)
        return _ok({"notice": notice, "outcome": resumed.outcome, "state": resumed.run.state})

    async def stop(self, request: Request) -> Response:
        """``POST /approvals/api/stop``: stop one of the person's runs at its crew."""
        checked = await self._checked(request, SCOPE_RUN, "stop runs")
        if isinstance(checked, Response):
            return checked
        session, body, service = checked
        kickoff_id = body.get("kickoff_id")
        if not isinstance(kickoff_id, str):
            return json_error(400, "Stopping names the run to stop.")
        caller: Caller = self.ctx.caller(session)
        try:
            stopped = await service.cancel(kickoff_id, caller)
        except e.CrewMCPError as exc:
            return json_error(_status_of(exc), e.describe(exc))
        self._refreshed.pop(caller.owner, None)
        log.info("inbox: %s stopped run %s", caller.owner, kickoff_id)
        said = "Stopped" if stopped.result == "stopped" else "Already stopped:"
        return _ok({"notice": f"{said} run {kickoff_id} of crew {stopped.crew}.", "state": stopped.run.state})

    async def _checked(
        self, request: Request, scope: str, doing: str
    ) -> Response | tuple[Session, dict[str, Any], CrewService]:
        """The session, the JSON body and the service of a POST that passed every check, or the refusal."""
        ctx = self.ctx
        _, session = await ctx.session(request)
        if session is None:
            return json_error(401, "Your session has ended; sign in again. Nothing was sent.", signin=True)
        if not ctx.guard.origin_ok(request):
            log.warning(
                "inbox: refused a cross-site POST to %s (Origin %r)", request.url.path, request.headers.get("origin")
            )
            return json_error(403, "Refused: this request did not come from the inbox page. Nothing was sent.")
        if not WebGuard.csrf_ok(session.csrf, request):
            log.warning("inbox: refused a POST to %s without the page's CSRF token", request.url.path)
            return json_error(
                403, "Refused: the request lacks the page's CSRF token; reload the page. Nothing was sent."
            )
        if not request.headers.get("content-type", "").startswith("application/json"):
            return json_error(415, "Send JSON.")
        raw = await read_body(request, MAX_BODY)
        if raw is None:
            return json_error(413, "The request is too large.")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return json_error(400, "Send a JSON object.")
        missing = ctx.lacks(session, scope)
        if missing is not None:
            return json_error(403, f"Your account may not {doing} here (it lacks the {missing} scope).")
        service = ctx.service
        if service is None:
            return json_error(503, _STARTING)
        return session, body, service
