"""What crew-mcp does, independent of MCP: the facade the tools, the resources, the webhooks and the CLI call.

:func:`crew_mcp.assembly.open_service` is the one place a service is assembled. The work itself is split by
concern: inputs are checked and encoded once (:mod:`crew_mcp.inputs`), runs start in :mod:`crew_mcp.kickoff`,
their status moves only through :mod:`crew_mcp.runs`, and decisions go through :mod:`crew_mcp.approvals`. Errors
leave as the typed exceptions of :mod:`crew_mcp.errors`; each surface translates them once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio

from . import errors as e
from .approvals import Approvals
from .clock import Clock
from .crews import Crew, CrewRegistry
from .detach import Detacher
from .fleet import Fleet
from .identity import Caller
from .ids import is_kickoff_id
from .inputs import InputInfo, validate_inputs
from .kickoff import Launcher
from .ledger import Ledger, RecordState, RunRecord
from .models import ExecutionState
from .runs import NoAnswerYet, OnChange, OnPause, RunTracker
from .settings import Settings
from .statuses import live
from .stopping import Stopper, StopView
from .tracing import traced
from .views import (
    ApprovalList,
    CrewInputs,
    CrewList,
    CrewSummary,
    ExecutionList,
    Guidance,
    ResumeView,
    RunView,
)
from .watch import POLL_INITIAL, OnUpdate

__all__ = ["CrewService"]

logger = logging.getLogger(__name__)


class CrewService:
    """The operations behind every tool, resource and CLI command (built by :func:`crew_mcp.assembly.open_service`)."""

    def __init__(
        self,
        settings: Settings,
        registry: CrewRegistry,
        ledger: Ledger,
        clock: Clock,
        *,
        webhook_base: str | None = None,
        on_change: OnChange | None = None,
        on_pause: OnPause | None = None,
        poll_initial: float = POLL_INITIAL,
        fleet: Fleet | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.ledger = ledger
        self.clock = clock
        self.guidance = Guidance(approval_policy=settings.approval_policy, wait_seconds=settings.recommended_wait)
        self.detacher = Detacher()
        self.runs = RunTracker(
            ledger,
            registry,
            clock,
            on_change=on_change,
            on_pause=on_pause,
            poll_initial=poll_initial,
            adopt=settings.adopt_runs,
            fleet=fleet,
            fresh_for=settings.status_fresh_seconds,
        )
        self.launcher = Launcher(
            ledger, clock, self.detacher, webhook_base=webhook_base, keep_input_values=settings.keep_input_values
        )
        self.approvals = Approvals(self.runs, settings, clock, self.guidance, self.detacher)
        self.stopper = Stopper(self.runs, clock, self.guidance, self.detacher, settings.answer_margin_seconds)

    def list_crews(self, typed_tools: Mapping[str, str] | None = None, caller: Caller | None = None) -> CrewList:
        """The crews this server runs for ``caller`` (saying when they are the built-in simulated ones)."""
        crews = [
            CrewSummary(
                name=c.name,
                description=c.config.description,
                simulated=c.config.simulated,
                inputs_uri=f"crew://{c.name}/inputs",
                typed_tool=(typed_tools or {}).get(c.name),
            )
            for c in self.registry.crews.values()
            if caller is None or caller.may_use(c.name)
        ]
        note = ""
        if self.registry.simulated:
            note = (
                "No crew is configured: these are crew-mcp's built-in simulated crews (no CrewAI account needed). "
                "Configure real crews with CREW_MCP_CREW_URL/CREW_MCP_CREW_TOKEN or a config file."
            )
        return CrewList(crews=crews, simulated=self.registry.simulated, note=note)

    @traced("crew_mcp.list_inputs")
    async def list_inputs(self, crew: str | None, *, refresh: bool = False, caller: Caller | None = None) -> CrewInputs:
        """A crew's inputs (cached), with the kickoff call to make next; answers within the margin.

        Raises:
            UnknownCrewError: no such crew (for ``caller``).
            UpstreamError: the crew could not be asked, or did not answer in time.
        """
        c = self._crew(crew, caller)
        infos = await self._catalogue(c, refresh=refresh, within=self.settings.answer_margin_seconds)
        names = ", ".join(f"{i.name}=..." for i in infos if i.required and i.default is None)
        return CrewInputs(
            crew=c.name,
            inputs=infos,
            uri=f"crew://{c.name}/inputs",
            next_step=f"Ask the user for any value you do not know, then call kickoff_crew(crew={c.name!r}, "
            f"inputs={{{names}}}).",
        )

    @traced("crew_mcp.kickoff")
    async def kickoff(
        self,
        crew: str | None,
        inputs: Mapping[str, Any],
        caller: Caller,
        *,
        wait_seconds: float = 0.0,
        on_update: OnUpdate | None = None,
    ) -> RunView:
        """Validate, record, kick off, confirm; optionally wait a bounded time for the run to settle.

        Answers within ``settings.answer_bound(wait_seconds)`` whatever the crew does: a kickoff whose answer has
        not come by then is reported as possibly started, with its request id, and recorded when the answer comes.

        Raises:
            UnknownCrewError, InvalidInputsError: before anything is recorded or sent.
            LedgerError: the run could not be recorded (nothing was sent).
            UpstreamError: the crew refused the kickoff or it never left: no run was started.
        """
        start = anyio.current_time()
        deadline = start + self.settings.answer_bound(wait_seconds)
        margin = self.settings.answer_margin_seconds
        c = self._crew(crew, caller)
        infos = await self._catalogue(c, within=margin)
        encoded = validate_inputs(c.name, infos, inputs, allow_extra=c.config.allow_extra_inputs)
        left = max(start + margin - anyio.current_time(), 0.0)
        launch = await self.launcher.launch(c, encoded, caller, within=left)
        record = launch.record
        if launch.in_flight:
            return _in_flight(record, margin, self.guidance)
        if launch.uncertain is not None:
            view = RunView.of(record, guidance=self.guidance)
            problem = f" crew-mcp's run ledger could not record this ({launch.ledger_problem})." * bool(
                launch.ledger_problem
            )
            view.message = launch.uncertain + problem
            return view
        if launch.ledger_problem is not None:
            view = RunView.of(record, guidance=self.guidance)
            view.message = f"The run started, but crew-mcp's run ledger could not record it ({launch.ledger_problem})."
            view.next_step = (
                f"The run {record.kickoff_id} was started; do not start it again. Follow it with "
                f"get_status(kickoff_id={record.kickoff_id!r}) once the ledger works again."
            )
            return view
        if wait_seconds <= 0:
            return RunView.of(record, guidance=self.guidance)
        try:
            return await self._observe(record, wait_seconds, on_update, deadline)
        except Exception as exc:  # the run exists: whatever failed while waiting, hand over its kickoff_id
            logger.warning("run %s started, but reading its status failed: %s", record.kickoff_id, exc)
            view = RunView.of(record, guidance=self.guidance)
            view.message = f"The run started, but reading its status failed: {exc}"
            view.next_step = (
                f"The run {record.kickoff_id} was started; do not start it again. "
                f"Call get_status(kickoff_id={record.kickoff_id!r}) later to follow it."
            )
            return view

    @traced("crew_mcp.status")
    async def status(
        self,
        kickoff_id: str | None,
        caller: Caller,
        *,
        wait_seconds: float = 0.0,
        on_update: OnUpdate | None = None,
        crew: str | None = None,
    ) -> RunView:
        """The run's status: final ones from the ledger, others from the crew (waiting up to ``wait_seconds``).

        A kickoff_id the ledger does not know is looked up on the crew (``crew``, or each crew in turn) and adopted
        when the crew knows it (``settings.adopt_runs``). ``kickoff_id`` may also be the request id of a kickoff
        that never got a kickoff_id. Answers within ``settings.answer_bound(wait_seconds)``.

        Raises:
            InvalidInputError, RunNotFoundError (RunLostError: the crew no longer knows it), UpstreamError,
            LedgerError.
        """
        deadline = anyio.current_time() + self.settings.answer_bound(wait_seconds)
        if not kickoff_id:
            record = await self.runs.find(None, caller)
        else:
            margin = self.settings.answer_margin_seconds
            record, adopted = await self.runs.find_or_adopt(kickoff_id, caller, crew=crew, within=margin)
            if adopted and (wait_seconds <= 0 or not live(record)):
                return RunView.of(record, guidance=self.guidance)  # just read from the crew
        if not live(record):
            return RunView.of(record, guidance=self.guidance, from_ledger=True)
        return await self._observe(record, wait_seconds, on_update, deadline)

    async def _observe(
        self, record: RunRecord, wait_seconds: float, on_update: OnUpdate | None, deadline: float
    ) -> RunView:
        margin = self.settings.answer_margin_seconds
        room = deadline - anyio.current_time()
        wait = min(max(wait_seconds, 0.0), self.settings.wait_cap_seconds, max(room - margin, 0.0))
        with anyio.move_on_after(max(room, 0.0)) as bound:
            try:
                seen = await self.runs.observe(record, wait=wait, on_update=on_update)
            except NoAnswerYet:
                return _late(record, wait, self.guidance)
            if seen.status.state is ExecutionState.NOT_FOUND:
                raise self.runs.lost(seen.record)
            rejected = await self.approvals.expire(seen.record)
            if rejected is not None:
                return rejected.run
            return RunView.of(seen.record, seen.status, guidance=self.guidance)
        assert bound.cancelled_caught
        return _late(record, max(room, 0.0), self.guidance)

    async def record(self, kickoff_id: str, caller: Caller) -> RunRecord:
        """The ledger's record of the caller's run (no upstream call).

        Raises:
            InvalidInputError, RunNotFoundError, LedgerError.
        """
        return await self.runs.find(kickoff_id, caller)

    @traced("crew_mcp.resume")
    async def resume(
        self, kickoff_id: str, caller: Caller, *, approve: bool, feedback: str = "", task_id: str | None = None
    ) -> ResumeView:
        """Approve or reject the run's pending task (see :meth:`Approvals.resume`)."""
        return await self.approvals.resume(kickoff_id, caller, approve=approve, feedback=feedback, task_id=task_id)

    async def waiting_run(self, kickoff_id: str, caller: Caller, *, task_id: str | None = None) -> RunRecord:
        """The caller's run, checked to be waiting for review (see :meth:`Approvals.waiting`)."""
        return await self.approvals.waiting(kickoff_id, caller, task_id=task_id)

    async def stoppable(self, kickoff_id: str, caller: Caller) -> RunRecord:
        """The caller's run, checked to be one that may still be stopped (see :meth:`Stopper.stoppable`)."""
        return await self.stopper.stoppable(kickoff_id, caller)

    @traced("crew_mcp.cancel")
    async def cancel(self, kickoff_id: str, caller: Caller) -> StopView:
        """Stop the caller's run at its crew and record it (see :meth:`Stopper.stop`); confirm with a person first."""
        return await self.stopper.stop(kickoff_id, caller)

    @traced("crew_mcp.executions")
    async def executions(
        self,
        caller: Caller,
        *,
        conversation_id: str | None = None,
        crew: str | None = None,
        state: str | None = None,
        limit: int = 20,
    ) -> ExecutionList:
        """The caller's runs from the ledger, newest first, filtered."""
        records = await self.ledger.list(
            owner=caller.owner, conversation_id=conversation_id, crew=crew, state=state, limit=limit
        )
        return ExecutionList.of(records, self.guidance)

    async def owns(self, kickoff_id: str, caller: Caller) -> bool:
        """Whether ``kickoff_id`` names one of ``caller``'s own runs (what a caller may subscribe to).

        Raises:
            LedgerError: the ledger could not be read.
        """
        if not is_kickoff_id(kickoff_id):
            return False
        return await self.ledger.get(kickoff_id, owner=caller.owner) is not None

    @traced("crew_mcp.pending_approvals")
    async def pending_approvals(self, caller: Caller) -> ApprovalList:
        """The caller's runs waiting for review (see :meth:`Approvals.pending`)."""
        return await self.approvals.pending(caller)

    def _crew(self, name: str | None, caller: Caller | None) -> Crew:
        return self.registry.for_caller(name, caller)

    async def _catalogue(self, crew: Crew, *, within: float, refresh: bool = False) -> list[InputInfo]:
        try:
            with anyio.move_on_after(within):
                return await crew.inputs(refresh=refresh)
        except e.CrewAPIError as exc:
            raise e.UpstreamError.from_api(exc, crew=crew.name, action="list its inputs") from None
        raise e.UpstreamError(
            f"crew {crew.name!r} did not answer GET /inputs within {within:g} s. Nothing was started; try again in a "
            "minute.",
            crew=crew.name,
            may_have_started=False,
        )


def _in_flight(record: RunRecord, seconds: float, guidance: Guidance) -> RunView:
    """The answer for a kickoff still in flight when the caller's time is up."""
    view = RunView.of(record, guidance=guidance)
    view.state = RecordState.MAY_HAVE_STARTED.value
    view.message = (
        f"The kickoff request was sent to crew {record.crew!r}, which has not answered within {seconds:g} s. So a run "
        f"may have started. crew-mcp keeps waiting for the answer and records the run's kickoff_id when it comes "
        f"(request id {record.request_id})."
    )
    view.next_step = (
        f"Do not start another run. In a minute, call get_status(kickoff_id={record.request_id!r}) (the request id "
        "works until the run has a kickoff_id) to see whether it started."
    )
    return view


def _late(record: RunRecord, seconds: float, guidance: Guidance) -> RunView:
    """The answer when the crew's status API did not answer in time: the last known status, and the handle."""
    view = RunView.of(record, guidance=guidance, from_ledger=True)
    read = record.status_fetched_at
    since = f" (read {read.isoformat(timespec='seconds')})" if read else ""
    view.message = (
        f"crew {record.crew!r} gave no usable answer to a status read within {round(seconds, 1):g} s (its status API "
        f"failed or did not answer); shown is the last status crew-mcp knows{since}."
    )
    view.next_step = (
        f"{view.message} Nothing is lost: the run is {record.kickoff_id}. Call {guidance.follow(record.kickoff_id)} "
        "again in a minute."
    )
    return view
