"""Human approvals: who may decide, sending the decision to the crew, listing what waits, and expiry.

A run paused for review waits for one decision on one task. :class:`Approvals` checks the run is really
waiting (re-reading the crew once when the ledger is stale), applies the approval policy (``human``: a
model may not decide), sends ``POST /resume`` with the kickoff's webhook URLs again (AMP drops them on
resume), and records the decision through the run tracker. Approvals that waited past the expiry are
flagged, or rejected with the reason as feedback (recorded as decided by ``system``).
"""

from __future__ import annotations

import logging

import anyio

from . import errors as e
from .clock import Clock
from .identity import Caller
from .ledger import Decision, Ledger, RecordState, RunRecord
from .runs import RunTracker
from .settings import Settings
from .views import ApprovalList, ApprovalView, Guidance, ResumeView, RunView, execution_uri, human_only_message

__all__ = ["REFRESH_RUNNING", "Approvals"]

logger = logging.getLogger(__name__)

REFRESH_RUNNING = 20
"""How many running runs listing approvals re-reads upstream first, so pauses since the last read show up."""


class Approvals:
    """Decisions on paused runs (see the module docstring)."""

    def __init__(self, tracker: RunTracker, settings: Settings, clock: Clock, guidance: Guidance) -> None:
        self.tracker = tracker
        self.ledger: Ledger = tracker.ledger
        self.settings = settings
        self.clock = clock
        self.guidance = guidance

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
        record = await self.tracker.find(kickoff_id, caller)
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
            record = (await self.tracker.observe(record)).record
            if record.state is not RecordState.WAITING_FOR_HUMAN:
                raise e.RunNotWaitingError(
                    f"Run {kickoff_id} is {record.state.value}, not waiting for human review. "
                    f"Call get_status(kickoff_id={kickoff_id!r}, wait_seconds={self.guidance.wait_seconds}) to wait "
                    "until it asks."
                )
        return record

    async def resume(
        self, kickoff_id: str, caller: Caller, *, approve: bool, feedback: str = "", task_id: str | None = None
    ) -> ResumeView:
        """Approve or reject the pending task, re-sending the kickoff's webhook URLs, and record the decision.

        Raises:
            RunNotFoundError, RunNotWaitingError: see :meth:`waiting`; also when the crew refuses the decision.
            HumanOnlyError: the policy is ``human`` and a model decided.
            UpstreamError: the crew could not be reached.
        """
        record = await self.waiting(kickoff_id, caller, task_id=task_id)
        assert record.kickoff_id is not None
        task = task_id or (record.pending.task_id if record.pending else None)
        if not task:
            raise e.RunNotWaitingError(
                f"Run {kickoff_id} is {record.state.value} and crew-mcp does not know which task waits for review. "
                "If the crew's status API does not report pauses, pass task_id explicitly."
            )
        if self.settings.approval_policy == "human" and caller.by == "model":
            raise e.HumanOnlyError(human_only_message(kickoff_id))
        crew = self.tracker.registry.get(record.crew)
        try:
            answer = await crew.client.resume(
                record.kickoff_id, task_id=task, feedback=feedback, approve=approve, webhooks=record.webhooks
            )
        except e.BadRequestError as exc:
            said = exc.body.get("message") or "it is not in pending human input state"
            raise e.RunNotWaitingError(
                f"Crew {crew.name!r} refused the decision for run {kickoff_id}: {said}."
            ) from None
        except e.NotFoundError:
            raise e.RunNotWaitingError(
                f"Crew {crew.name!r} knows no task {task!r} waiting in run {kickoff_id}."
            ) from None
        except e.CrewAPIError as exc:
            raise e.UpstreamError.from_api(exc, crew=crew.name, action="send the decision") from None
        decision = Decision(
            task_id=task,
            approve=approve,
            feedback=feedback,
            by=caller.by,
            via=caller.via,
            actor=caller.owner,
            at=self.clock.now(),
        )
        updated = await self.tracker.decide(record.kickoff_id, decision) or record
        run = RunView.of(updated, guidance=self.guidance)
        run.state, run.pending = RecordState.RUNNING.value, None
        run.next_step = run.suggest(self.guidance)
        verdict = "continue with the next task" if approve else "re-run the task with the feedback, then ask again"
        return ResumeView(
            kickoff_id=record.kickoff_id,
            task_id=task,
            approve=approve,
            feedback=feedback,
            decided_by=f"{caller.by} via {caller.via}",
            upstream_status=answer.status,
            message=answer.message,
            run=run,
            next_step=f"The crew will {verdict}. "
            f"Call get_status(kickoff_id={record.kickoff_id!r}, wait_seconds={self.guidance.wait_seconds}).",
        )

    async def pending(self, caller: Caller) -> ApprovalList:
        """The runs waiting for a review the caller may give, newest first (expired ones rejected when the policy says
        so): its own, and for an approver everyone's."""
        await self._refresh_running(caller)
        now = self.clock.now()
        expiry = self.settings.approval_expiry_seconds
        approvals = []
        # An approver sees every run waiting for review; everyone else only their own (when they may decide).
        waiting = await self.ledger.pending_approvals(owner=None if caller.approver else caller.owner)
        for r in waiting:
            if r.kickoff_id is None or r.pending is None or not caller.may_decide(r.owner):
                continue
            if await self.expire(r) is not None:
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
        """Re-read the owner's newest running runs (at most :data:`REFRESH_RUNNING`) so pauses that happened since
        the last read are listed even with no webhooks (stdio); failures leave the ledger as it was."""
        running = await self.ledger.list(owner=caller.owner, state=RecordState.RUNNING.value, limit=REFRESH_RUNNING)

        async def refresh(record: RunRecord) -> None:
            try:
                await self.tracker.refresh(record)
            except Exception as exc:  # one bad run must not hide the others' approvals
                logger.info("could not refresh %s: %s", record.kickoff_id, exc)

        async with anyio.create_task_group() as tg:
            for record in running:
                if record.kickoff_id is not None:
                    tg.start_soon(refresh, record)
