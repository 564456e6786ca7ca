"""Human approvals: who may decide, sending the decision to the crew, listing what waits, and expiry.

A run paused for review waits for one decision on one task. :class:`Approvals` checks the run is really
waiting (re-reading the crew once when the ledger is stale), applies the approval policy (``human``: a
model may not decide), sends ``POST /resume`` with the kickoff's webhook URLs again (AMP drops them on
resume), and records the decision through the run tracker. Approvals that waited past the expiry are
flagged, or rejected with the reason as feedback (recorded as decided by ``system``).

A decision is sent once, never twice: the POST runs detached (it outlives a caller whose time is up), a second
decision on the same run is refused while one is on its way, and when the crew's answer is lost (a 5xx, a
timeout) the run's status is read afterwards: the decision is recorded as applied when the run moved on, as
``unknown`` otherwise, with what to do next.
"""

from __future__ import annotations

import logging

import anyio

from . import errors as e
from .clock import Clock
from .detach import Detacher
from .identity import Caller
from .ledger import Decision, Ledger, RecordState, RunRecord
from .models import ExecutionState, ExecutionStatus, ResumeResponse
from .retry import may_have_acted
from .runs import RunTracker
from .settings import Settings
from .views import ApprovalList, ApprovalView, Guidance, ResumeView, RunView, execution_uri, human_only_message

__all__ = ["REFRESH_RUNNING", "Approvals"]

logger = logging.getLogger(__name__)

REFRESH_RUNNING = 20
"""How many running runs listing approvals re-reads upstream first, so pauses since the last read show up."""


class Approvals:
    """Decisions on paused runs (see the module docstring)."""

    def __init__(
        self, tracker: RunTracker, settings: Settings, clock: Clock, guidance: Guidance, detacher: Detacher
    ) -> None:
        self.tracker = tracker
        self.ledger: Ledger = tracker.ledger
        self.settings = settings
        self.clock = clock
        self.guidance = guidance
        self.detacher = detacher
        self._sending: set[str] = set()

    async def waiting(self, kickoff_id: str, caller: Caller, *, task_id: str | None = None) -> RunRecord:
        """The caller's run, checked to be waiting for a human (re-reading the crew once if the ledger is stale).

        Raises:
            RunNotFoundError: the caller has no such run.
            ApprovalDeniedError: the run is the caller's, but only approvers may decide on it.
            RunNotWaitingError: the run never started, has finished, or is not waiting; no upstream call when the
                ledger knows.
            UpstreamError: the crew could not be asked.
        """
        if not kickoff_id:
            raise e.RunNotWaitingError(
                "A decision needs the kickoff_id of the run it is about; nothing was sent. Call "
                "list_pending_approvals to see the runs waiting for review."
            )
        record, _ = await self.tracker.find_or_adopt(kickoff_id, caller, within=self.settings.answer_margin_seconds)
        if not caller.may_decide(record.owner):
            raise e.ApprovalDeniedError(
                f"Run {kickoff_id} is yours, but the approval rules let only the approvers decide on it: ask one of "
                "them to review it (they see it in list_pending_approvals). Nothing was sent."
            )
        if record.kickoff_id is None:
            raise e.RunNotWaitingError(f"Run {kickoff_id} never got a kickoff_id, so there is nothing to resume.")
        if record.status is not None and record.status.terminal:
            raise e.RunNotWaitingError(
                f"Run {kickoff_id} has already {record.state.value}; there is nothing to approve. "
                "Call get_status to read its result."
            )
        if record.state is not RecordState.WAITING_FOR_HUMAN and task_id is None:
            # One re-read, within the margin: a crew that does not answer leaves the ledger's word standing.
            with anyio.move_on_after(self.settings.answer_margin_seconds):
                record = (await self.tracker.observe(record)).record
            if record.state is not RecordState.WAITING_FOR_HUMAN:
                raise e.RunNotWaitingError(
                    f"Run {kickoff_id} is {record.state.value}, not waiting for human review. "
                    f"Call {self.guidance.follow(kickoff_id)} to wait until it asks."
                )
        return record

    async def resume(
        self,
        kickoff_id: str,
        caller: Caller,
        *,
        approve: bool,
        feedback: str = "",
        task_id: str | None = None,
    ) -> ResumeView:
        """Approve or reject the pending task, re-sending the kickoff's webhook URLs, and record the decision.

        Answers within the settings' margin: a decision the crew has not answered by then is recorded when the
        answer comes.

        Raises:
            RunNotFoundError, RunNotWaitingError: see :meth:`waiting`; also when the crew refuses the decision, and
                while another decision on the run is on its way.
            HumanOnlyError: the policy is ``human`` and a model decided.
            UpstreamError: the decision provably did not reach the crew.
        """
        margin = self.settings.answer_margin_seconds
        start = anyio.current_time()
        with anyio.move_on_after(margin) as bound:
            record = await self.waiting(kickoff_id, caller, task_id=task_id)
        if bound.cancelled_caught:
            raise e.UpstreamError(
                f"crew-mcp could not check within {margin:g} s that run {kickoff_id} waits for review (the crew did "
                "not answer). Nothing was sent; try again in a minute."
            )
        assert record.kickoff_id is not None
        task = task_id or (record.pending.task_id if record.pending else None)
        if not task:
            raise e.RunNotWaitingError(
                f"Run {kickoff_id} is {record.state.value} and crew-mcp does not know which task waits for review. "
                "If the crew's status API does not report pauses, pass task_id explicitly."
            )
        if self.settings.approval_policy == "human" and caller.by == "model":
            raise e.HumanOnlyError(human_only_message(kickoff_id))
        if record.kickoff_id in self._sending:
            raise e.RunNotWaitingError(
                f"A decision on run {kickoff_id} is already on its way to the crew; it is never sent twice. Call "
                f"get_status(kickoff_id={kickoff_id!r}) to see the run move on."
            )
        decision = Decision(
            task_id=task,
            approve=approve,
            feedback=feedback,
            by=caller.by,
            via=caller.via,
            actor=caller.owner,
            at=self.clock.now(),
        )
        self._sending.add(record.kickoff_id)
        left = max(start + margin - anyio.current_time(), 0.0)
        sent = await self.detacher.run(
            f"decision on run {record.kickoff_id}", lambda: self._send(record, decision), within=left
        )
        if not sent.done.is_set():
            return self._view(record, decision, outcome="sent", note=_no_answer_yet(record.crew, margin))
        return sent.result()

    async def _send(self, record: RunRecord, decision: Decision) -> ResumeView:
        """POST the decision and record it (detached: it runs to its end even when nobody waits)."""
        assert record.kickoff_id is not None
        try:
            return await self._deliver(record, decision)
        finally:  # only once the decision is recorded (or refused) may another be sent
            self._sending.discard(record.kickoff_id)

    async def _deliver(self, record: RunRecord, decision: Decision) -> ResumeView:
        assert record.kickoff_id is not None
        kickoff_id = record.kickoff_id
        crew = self.tracker.registry.get(record.crew)
        try:
            answer = await crew.client.resume(
                kickoff_id,
                task_id=decision.task_id,
                feedback=decision.feedback,
                approve=decision.approve,
                webhooks=record.webhooks,
            )
        except e.BadRequestError as exc:
            said = exc.body.get("message") or "it is not in pending human input state"
            raise e.RunNotWaitingError(
                f"Crew {crew.name!r} refused the decision for run {kickoff_id}: {said}."
            ) from None
        except e.NotFoundError:
            raise e.RunNotWaitingError(
                f"Crew {crew.name!r} knows no task {decision.task_id!r} waiting in run {kickoff_id}."
            ) from None
        except e.CrewAPIError as exc:
            if not may_have_acted(exc):
                note = "The decision was not applied; the run still waits for it."
                raise e.UpstreamError.from_api(exc, crew=crew.name, action="send the decision", note=note) from None
            return await self._unsure(record, decision, exc)
        updated = await self.tracker.decide(kickoff_id, decision) or record
        return self._view(updated, decision, outcome="applied", answer=answer)

    async def _unsure(self, record: RunRecord, decision: Decision, exc: e.CrewAPIError) -> ResumeView:
        """The crew may have acted on a decision whose answer was lost: read the run's status to find out."""
        assert record.kickoff_id is not None
        lost = str(e.UpstreamError.from_api(exc, crew=record.crew, action="answer the decision"))
        try:
            seen = (await self.tracker.refresh(record)).status
        except e.CrewMCPError as read_exc:
            logger.warning("after a lost resume answer, reading run %s failed: %s", record.kickoff_id, read_exc)
            seen = None
        applied = seen is not None and _moved_on(record, seen)
        decision = decision.model_copy(update={"outcome": "applied" if applied else "unknown"})
        updated = await self.tracker.decide(record.kickoff_id, decision) or record
        if applied:
            note = f"{lost} The run has moved on since, so the crew applied the decision."
            return self._view(updated, decision, outcome="applied", note=note)
        now = f"it still waits for review of task {decision.task_id}" if seen is not None else "its status is unknown"
        note = (
            f"{lost} crew-mcp cannot tell whether the crew applied the decision ({now}); it was not sent again. It is "
            "recorded with outcome 'unknown'."
        )
        return self._view(updated, decision, outcome="unknown", note=note, seen=seen)

    def _view(
        self,
        record: RunRecord,
        decision: Decision,
        *,
        outcome: str,
        note: str | None = None,
        answer: ResumeResponse | None = None,
        seen: ExecutionStatus | None = None,
    ) -> ResumeView:
        assert record.kickoff_id is not None
        kid = record.kickoff_id
        run = RunView.of(record, seen, guidance=self.guidance)
        if seen is None and outcome != "sent":
            run.state, run.pending = RecordState.RUNNING.value, None
        run.next_step = run.suggest(self.guidance)
        follow = self.guidance.follow(kid)
        if outcome == "applied":
            verdict = (
                "continue with the next task"
                if decision.approve
                else "re-run the task with the feedback, then ask again"
            )
            next_step = f"The crew will {verdict}. Call {follow}."
        elif outcome == "sent":
            next_step = f"Do not send the decision again. Call {follow} to see whether the run moves on."
        else:
            next_step = (
                f"Do not send the decision again yet. Call {follow}: if the run moves on, the decision was applied; if "
                f"it still waits for review of task {decision.task_id} after that, ask the user whether to send the "
                "decision again."
            )
        return ResumeView(
            kickoff_id=kid,
            task_id=decision.task_id,
            approve=decision.approve,
            feedback=decision.feedback,
            decided_by=f"{decision.by} via {decision.via}",
            outcome=outcome,
            upstream_status=answer.status if answer else None,
            message=note or (answer.message if answer else None),
            run=run,
            next_step=next_step,
        )

    async def pending(self, caller: Caller) -> ApprovalList:
        """The runs waiting for a review the caller may give, newest first (expired ones rejected when the policy says
        so): its own, and for an approver everyone's.

        Running runs are re-read first, and expired approvals rejected next, all within the settings' margin; what
        the crews did not answer by then is listed as the ledger has it.
        """
        # One margin for the whole listing: the re-reads, then the expiry rejections in what is left of it.
        deadline = anyio.current_time() + self.settings.answer_margin_seconds
        with anyio.CancelScope(deadline=deadline):
            await self._refresh_running(caller)
        now = self.clock.now()
        expiry = self.settings.approval_expiry_seconds
        approvals = []
        # An approver sees every run waiting for review; everyone else only their own (when they may decide).
        waiting = await self.ledger.pending_approvals(owner=None if caller.approver else caller.owner)
        mine = [r for r in waiting if r.kickoff_id is not None and r.pending is not None and caller.may_decide(r.owner)]
        rejected: set[str] = set()

        async def reject_if_expired(record: RunRecord) -> None:
            if await self.expire(record) is not None and record.kickoff_id is not None:
                rejected.add(record.kickoff_id)

        # Expiry rejections go out together (each runs to its end detached if the crew is slow); one not started by
        # the deadline is sent at the next listing, and the run is listed as expired meanwhile.
        with anyio.CancelScope(deadline=deadline):
            async with anyio.create_task_group() as tg:
                for r in mine:
                    tg.start_soon(reject_if_expired, r)
        for r in mine:
            if r.kickoff_id in rejected or r.kickoff_id is None or r.pending is None:
                continue
            since = r.pending.since or r.updated_at
            waited = (now - since).total_seconds()
            approvals.append(
                ApprovalView(
                    kickoff_id=r.kickoff_id,
                    crew=r.crew,
                    conversation_id=r.conversation_id,
                    task_id=r.pending.task_id,
                    output=r.pending.output,
                    waiting_since=since,
                    waited_seconds=waited,
                    expired=bool(expiry and waited > expiry),
                    status_uri=execution_uri(r.kickoff_id),
                )
            )
        hint = "Show the user each output and ask for approve/reject with feedback; then call resume_with_feedback."
        if self.settings.approval_policy == "human":
            hint = "Only the user may decide: " + human_only_message("<kickoff_id>")
        return ApprovalList(approvals=approvals, next_step=hint)

    async def expire(self, record: RunRecord) -> ResumeView | None:
        """Reject a pending task that waited longer than the approval expiry, when the expiry action is "reject".

        The rejection goes through :meth:`resume` (so webhook URLs are re-sent) with the reason as feedback, and is
        recorded as decided by "system". Returns None when nothing was due or the crew refused (logged).
        """
        expiry = self.settings.approval_expiry_seconds
        pending = record.pending
        if self.settings.approval_expiry_action != "reject" or not expiry or pending is None or not record.kickoff_id:
            return None
        since = pending.since or record.updated_at
        if (self.clock.now() - since).total_seconds() <= expiry:
            return None
        system = Caller(record.owner, record.conversation_id, by="system", via="expiry")
        feedback = f"Rejected automatically: no human decision within {expiry:g} s"
        try:
            view = await self.resume(
                record.kickoff_id, system, approve=False, feedback=feedback, task_id=pending.task_id
            )
        except (e.UsageError, e.UpstreamError) as exc:
            logger.warning("could not reject the expired approval of run %s: %s", record.kickoff_id, exc)
            return None
        logger.info("rejected the expired approval of run %s (task %s)", record.kickoff_id, pending.task_id)
        view.run.message = feedback
        return view

    async def _refresh_running(self, caller: Caller) -> None:
        """Re-read the newest running runs the caller may review (its own; for an approver, anyone's; at most
        :data:`REFRESH_RUNNING`) so pauses that happened since the last read are listed even with no webhooks (stdio,
        or a reviewer who was never in the chat); failures leave the ledger as it was."""
        owner = None if caller.approver else caller.owner
        running = await self.ledger.list(owner=owner, state=RecordState.RUNNING.value, limit=REFRESH_RUNNING)

        async def refresh(record: RunRecord) -> None:
            try:
                await self.tracker.refresh(record)
            except Exception as exc:  # one bad run must not hide the others' approvals
                logger.info("could not refresh %s: %s", record.kickoff_id, exc)

        async with anyio.create_task_group() as tg:
            for record in running:
                if record.kickoff_id is not None:
                    tg.start_soon(refresh, record)


def _no_answer_yet(crew: str, seconds: float) -> str:
    return (
        f"crew-mcp sent the decision to crew {crew!r}, which has not answered within {seconds:g} s. It is never sent "
        "twice: crew-mcp records it when the answer comes."
    )


def _moved_on(record: RunRecord, seen: ExecutionStatus) -> bool:
    """True when the run's status shows the crew acted on a decision about the task it waited on.

    A finished run moved on. "Running" counts only when the crew's status API reports pauses (it said "waiting"
    before): in the documented shape a paused run reads "running" too. A pause on another task, or on the same
    task with a new output (a rejected task re-run), moved on as well.
    """
    if seen.terminal:
        return True
    before = record.pending
    if seen.state is ExecutionState.RUNNING:
        return record.status is not None and record.status.state is ExecutionState.WAITING_FOR_HUMAN
    if seen.state is ExecutionState.WAITING_FOR_HUMAN and seen.pending is not None and before is not None:
        return (seen.pending.task_id, seen.pending.output) != (before.task_id, before.output)
    return False
