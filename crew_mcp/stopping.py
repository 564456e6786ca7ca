"""Stopping a run: ``POST /stop/{kickoff_id}`` on its crew, and what the ledger keeps of it.

``/stop`` is a newer AMP endpoint. It answers ``{"status": "stopped", "kickoffId": ...}``, or 400 with
``{"detail": "Cannot stop execution. Current state: ..."}`` when the run has already ended; a deployment without
it answers 404 ``Not Found`` (not the ``Execution not found`` body of an unknown run) or 405. Every answer is
recorded on the run (who asked, how, when, the result) through the run tracker; a carried-out stop makes the run
``cancelled`` at once. The surfaces (the ``cancel_run`` tool, ``crew-mcp cancel``, the approvals inbox) confirm with
a person first; this module does what they decided.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from pydantic import BaseModel, Field

from . import errors as e
from .clock import Clock
from .detach import Detacher
from .identity import Caller
from .ledger import RecordState, RunRecord, Stop
from .ledger.records import StopResult
from .retry import may_have_acted
from .runs import RunTracker, not_found
from .statuses import live
from .views import Guidance, RunView

__all__ = ["StopView", "Stopper", "human_only_stop_message"]

logger = logging.getLogger(__name__)

_STATE_RE = re.compile(r"current state:\s*([A-Za-z_ ]+)", re.I)


def human_only_stop_message(kickoff_id: str) -> str:
    """How the person (not the model) stops a run under the ``human`` approval policy."""
    return (
        "crew-mcp's approval policy is 'human': a model may not stop a run on its own say-so. Ask the user to run "
        f"`crew-mcp cancel {kickoff_id}` in a terminal, or call cancel_run in a client that can show them a "
        "confirmation form."
    )


class StopView(BaseModel):
    """A stop sent to a run's crew, and the run as it stands after it."""

    kickoff_id: str = Field(description="The run")
    crew: str = Field(description="Its crew")
    stopped: bool = Field(description="True when the run is stopped now (by this call, or already before it)")
    result: Literal["stopped", "already_stopped", "sent"] = Field(
        description='What the crew answered; "sent": no answer yet in the time a call may take (it is recorded when it'
        " comes)"
    )
    stopped_by: str = Field(description="Who asked and how (human via elicitation, model via tool, human via cli)")
    run: RunView = Field(description="The run after the stop")
    next_step: str = Field(default="", description="What to do next")

    def text(self) -> str:
        said = {"stopped": "Stopped", "already_stopped": "Already stopped:", "sent": "Stop sent (no answer yet) for"}[
            self.result
        ]
        return f"{said} run {self.kickoff_id} of crew {self.crew}.\n{self.run.text()}"


class Stopper:
    """Stops runs for callers (see the module docstring)."""

    def __init__(
        self, tracker: RunTracker, clock: Clock, guidance: Guidance, detacher: Detacher, margin: float
    ) -> None:
        self.tracker = tracker
        self.clock = clock
        self.guidance = guidance
        self.detacher = detacher
        self.margin = margin

    async def stoppable(self, kickoff_id: str, caller: Caller) -> RunRecord:
        """The caller's run, checked to be one that may still be stopped (the ledger alone decides; no upstream call).

        Raises:
            InvalidInputError, RunNotFoundError: no such run for the caller.
            UsageError: the run never started or has already ended.
        """
        if not kickoff_id:
            raise e.UsageError("Stopping a run needs its kickoff_id; call list_executions to find it.")
        record = await self.tracker.find(kickoff_id, caller)
        if record.owner != caller.owner:  # approvers may read others' waiting runs; only the owner may stop one
            raise not_found(kickoff_id)
        if record.kickoff_id is None:
            raise e.UsageError(
                f"Run {kickoff_id} never got a kickoff_id from its crew ({record.state.value}), so there is nothing to "
                "stop."
            )
        if not live(record):
            raise e.UsageError(
                f"Run {kickoff_id} has already {_ended(record)}; there is nothing to stop. Call get_status to read it."
            )
        return record

    async def stop(self, kickoff_id: str, caller: Caller) -> StopView:
        """Send ``POST /stop`` for the caller's run and record the answer.

        Raises:
            InvalidInputError, RunNotFoundError: no such run for the caller.
            UsageError: the run never started, has already ended (also when the crew says so), or the crew
                refused to stop it.
            HumanOnlyError: the approval policy is ``human`` and a model asked.
            UpstreamError: the crew has no stop endpoint, or could not be reached.
            LedgerError: the answer could not be recorded.
        """
        record = await self.stoppable(kickoff_id, caller)
        kid = record.kickoff_id
        assert kid is not None
        if self.guidance.approval_policy == "human" and caller.by == "model":
            raise e.HumanOnlyError(human_only_stop_message(kid))
        # Detached: the POST runs to its end (and is recorded) even when the caller's time is up.
        sent = await self.detacher.run(f"stop of run {kid}", lambda: self._send(record, caller), within=self.margin)
        if not sent.done.is_set():
            view = self._view(record, caller, "sent")
            view.next_step = view.run.next_step = (
                f"Crew {record.crew!r} has not answered the stop within {self.margin:g} s; it was sent, and its answer "
                f"is recorded when it comes. Call get_status(kickoff_id={kid!r}) in a little while to see whether the "
                "run ended; do not send the stop again before that."
            )
            return view
        return sent.result()

    async def _send(self, record: RunRecord, caller: Caller) -> StopView:
        """POST the stop and record the answer (detached: it runs to its end even when nobody waits)."""
        kid = record.kickoff_id
        assert kid is not None
        crew = self.tracker.registry.get(record.crew)
        try:
            await crew.client.stop(kid)
        except e.BadRequestError as exc:
            return await self._not_running(record, caller, _detail(exc))
        except e.APIStatusError as exc:
            if exc.status_code == 404 and _unknown_run(exc):
                raise e.UsageError(
                    f"Crew {crew.name!r} does not know run {kid} any more, so it cannot be stopped. Call get_status "
                    "to see what the crew reports."
                ) from None
            if exc.status_code not in (404, 405):
                raise _stop_failed(exc, crew.name, kid) from None
            await self._record(kid, caller, "unsupported", f"HTTP {exc.status_code}")
            raise e.UpstreamError(
                f"Crew {crew.name!r} cannot stop runs: its deployment has no stop endpoint (POST /stop answered "
                f"HTTP {exc.status_code}), so run {kid} goes on. Stop it in the CrewAI AMP dashboard, or let it "
                "finish; redeploying the crew on a current CrewAI AMP adds the endpoint.",
                crew=crew.name,
            ) from None
        except e.CrewAPIError as exc:
            raise _stop_failed(exc, crew.name, kid) from None
        saved = await self._record(kid, caller, "stopped")
        logger.info("run %s of crew %s stopped by %s via %s", kid, crew.name, caller.by, caller.via)
        return self._view(saved or record, caller, "stopped")

    async def _not_running(self, record: RunRecord, caller: Caller, detail: str) -> StopView:
        """The crew says the run is not running: learn its state, record the attempt, and say what it means."""
        kid = record.kickoff_id
        assert kid is not None
        try:
            record = (await self.tracker.observe(record)).record
        except e.UpstreamError as exc:
            logger.info("could not re-read run %s after its crew refused to stop it: %s", kid, exc)
        if record.state is RecordState.CANCELLED:
            saved = await self._record(kid, caller, "already_ended", detail)
            return self._view(saved or record, caller, "already_stopped")
        if not live(record) or _said_ended(detail):
            await self._record(kid, caller, "already_ended", detail)
            raise e.UsageError(
                f"Run {kid} had already {_ended(record, detail)} before the stop reached its crew; nothing was "
                "stopped. Call get_status to read its result."
            )
        await self._record(kid, caller, "refused", detail)
        raise e.UsageError(f"Crew {record.crew!r} refused to stop run {kid}: {detail or 'no reason given'}.")

    async def _record(self, kickoff_id: str, caller: Caller, result: StopResult, detail: str = "") -> RunRecord | None:
        stop = Stop(result=result, detail=detail, by=caller.by, via=caller.via, actor=caller.owner, at=self.clock.now())
        return await self.tracker.stopped(kickoff_id, stop)

    def _view(
        self, record: RunRecord, caller: Caller, result: Literal["stopped", "already_stopped", "sent"]
    ) -> StopView:
        run = RunView.of(record, guidance=self.guidance, from_ledger=True)
        run.next_step = "The run is stopped for good; start a new run if the work is still wanted."
        return StopView(
            kickoff_id=record.kickoff_id or "",
            crew=record.crew,
            stopped=result != "sent",
            result=result,
            stopped_by=f"{caller.by} via {caller.via}",
            run=run,
            next_step=run.next_step,
        )


def _detail(exc: e.APIStatusError) -> str:
    body = exc.body
    for key in ("detail", "message", "error"):
        if isinstance(body.get(key), str) and body[key]:
            return str(body[key])[:300]
    return ""


def _unknown_run(exc: e.APIStatusError) -> bool:
    """A 404 about the run (AMP's ``Execution not found`` body), not about the route (``Not Found``)."""
    said = " ".join(str(exc.body.get(k) or "") for k in ("error", "message", "detail")).lower()
    return "execution not found" in said or "no execution found" in said


def _said_ended(detail: str) -> bool:
    match = _STATE_RE.search(detail)
    return match is not None and match.group(1).strip().upper() in {"SUCCESS", "FAILED", "FAILURE", "REVOKED"}


def _ended(record: RunRecord, detail: str = "") -> str:
    if not live(record):
        return "been stopped" if record.state is RecordState.CANCELLED else record.state.value
    match = _STATE_RE.search(detail)
    return f"ended ({match.group(1).strip()})" if match else "ended"


def _stop_failed(exc: e.CrewAPIError, crew: str, kickoff_id: str) -> e.UpstreamError:
    """The failed stop, saying whether the crew may have acted on it (the retry-safety rule of :mod:`.retry`)."""
    note = ""
    if may_have_acted(exc):
        note = (
            f"The stop may have reached the crew: call get_status(kickoff_id={kickoff_id!r}) to see whether the run "
            "ended before trying again."
        )
    return e.UpstreamError.from_api(exc, crew=crew, action="stop the run", note=note)
