"""What crew-mcp does, independent of MCP: the facade the tools, the resources, the webhooks and the CLI call.

:func:`open_service` is the one place a service is assembled (crews, ledger, clock, poll loops, background
retention and the embedded simulator's clock). The work itself is split by concern: inputs are checked and
encoded once (:mod:`crew_mcp.inputs`), runs start in :mod:`crew_mcp.kickoff`, their status moves only
through :mod:`crew_mcp.runs`, and decisions go through :mod:`crew_mcp.approvals`. Errors leave as the
typed exceptions of :mod:`crew_mcp.errors`; each surface translates them once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx2

from . import errors as e
from .approvals import Approvals
from .clock import Clock, SystemClock
from .crews import Crew, CrewRegistry, build_registry
from .fleet import Fleet, build_fleet
from .identity import Caller
from .inputs import InputInfo, validate_inputs
from .kickoff import Launcher
from .ledger import Ledger, RunRecord, default_ledger_url, open_ledger, run_retention, sqlite_path
from .runs import OnChange, RunTracker, live
from .settings import Settings
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

if TYPE_CHECKING:
    from .simulator import Simulator

__all__ = ["CrewService", "open_service"]

logger = logging.getLogger(__name__)


class CrewService:
    """The operations behind every tool, resource and CLI command. Build it with :func:`open_service`."""

    def __init__(
        self,
        settings: Settings,
        registry: CrewRegistry,
        ledger: Ledger,
        clock: Clock,
        *,
        webhook_base: str | None = None,
        on_change: OnChange | None = None,
        poll_initial: float = POLL_INITIAL,
        fleet: Fleet | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.ledger = ledger
        self.clock = clock
        self.webhook_base = webhook_base
        wait = min(30, int(settings.wait_cap_seconds))
        self.guidance = Guidance(approval_policy=settings.approval_policy, wait_seconds=wait)
        self.runs = RunTracker(
            ledger,
            registry,
            clock,
            on_change=on_change,
            poll_initial=poll_initial,
            fleet=fleet,
            fresh_for=settings.status_fresh_seconds,
        )
        self.launcher = Launcher(ledger, clock, webhook_base=webhook_base, keep_input_values=settings.keep_input_values)
        self.approvals = Approvals(self.runs, settings, clock, self.guidance)

    def list_crews(self, typed_tools: Mapping[str, str] | None = None) -> CrewList:
        """The crews this server runs (saying when they are the built-in simulated ones)."""
        crews = [
            CrewSummary(
                name=c.name,
                description=c.config.description,
                simulated=c.config.simulated,
                inputs_uri=f"crew://{c.name}/inputs",
                typed_tool=(typed_tools or {}).get(c.name),
            )
            for c in self.registry.crews.values()
        ]
        note = ""
        if self.registry.simulated:
            note = (
                "No crew is configured: these are crew-mcp's built-in simulated crews (no CrewAI account needed). "
                "Configure real crews with CREW_MCP_CREW_URL/CREW_MCP_CREW_TOKEN or a config file."
            )
        return CrewList(crews=crews, simulated=self.registry.simulated, note=note)

    async def list_inputs(self, crew: str | None, *, refresh: bool = False) -> CrewInputs:
        """A crew's inputs (cached), with the kickoff call to make next.

        Raises:
            UnknownCrewError: no such crew.
            UpstreamError: the crew could not be asked.
        """
        c = self.registry.get(crew)
        infos = await self._catalogue(c, refresh=refresh)
        names = ", ".join(f"{i.name}=..." for i in infos if i.required and i.default is None)
        return CrewInputs(
            crew=c.name,
            inputs=infos,
            uri=f"crew://{c.name}/inputs",
            next_step=f"Ask the user for any value you do not know, then call kickoff_crew(crew={c.name!r}, "
            f"inputs={{{names}}}).",
        )

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

        Raises:
            UnknownCrewError, InvalidInputsError: before anything is recorded or sent.
            LedgerError: the run could not be recorded (nothing was sent).
            UpstreamError: the kickoff failed (``may_have_started`` says whether a run may exist).
        """
        c = self.registry.get(crew)
        infos = await self._catalogue(c)
        encoded = validate_inputs(c.name, infos, inputs, allow_extra=c.config.allow_extra_inputs)
        launch = await self.launcher.launch(c, encoded, caller)
        record = launch.record
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
            return await self._observe(record, wait_seconds, on_update)
        except Exception as exc:  # the run exists: whatever failed while waiting, hand over its kickoff_id
            logger.warning("run %s started, but reading its status failed: %s", record.kickoff_id, exc)
            view = RunView.of(record, guidance=self.guidance)
            view.message = f"The run started, but reading its status failed: {exc}"
            view.next_step = (
                f"The run {record.kickoff_id} was started; do not start it again. "
                f"Call get_status(kickoff_id={record.kickoff_id!r}) later to follow it."
            )
            return view

    async def status(
        self,
        kickoff_id: str | None,
        caller: Caller,
        *,
        wait_seconds: float = 0.0,
        on_update: OnUpdate | None = None,
    ) -> RunView:
        """The run's status: final ones from the ledger, others from the crew (waiting up to ``wait_seconds``).

        Raises:
            InvalidInputError, RunNotFoundError, UpstreamError, LedgerError.
        """
        record = await self.runs.find(kickoff_id, caller)
        if not live(record):
            return RunView.of(record, guidance=self.guidance, from_ledger=True)
        return await self._observe(record, wait_seconds, on_update)

    async def _observe(self, record: RunRecord, wait_seconds: float, on_update: OnUpdate | None) -> RunView:
        wait = min(max(wait_seconds, 0.0), self.settings.wait_cap_seconds)
        seen = await self.runs.observe(record, wait=wait, on_update=on_update)
        rejected = await self.approvals.expire(seen.record)
        if rejected is not None:
            return rejected.run
        return RunView.of(seen.record, seen.status, guidance=self.guidance)

    async def resume(
        self, kickoff_id: str, caller: Caller, *, approve: bool, feedback: str = "", task_id: str | None = None
    ) -> ResumeView:
        """Approve or reject the run's pending task (see :meth:`Approvals.resume`)."""
        return await self.approvals.resume(kickoff_id, caller, approve=approve, feedback=feedback, task_id=task_id)

    async def waiting_run(self, kickoff_id: str, caller: Caller, *, task_id: str | None = None) -> RunRecord:
        """The caller's run, checked to be waiting for review (see :meth:`Approvals.waiting`)."""
        return await self.approvals.waiting(kickoff_id, caller, task_id=task_id)

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

    async def pending_approvals(self, caller: Caller) -> ApprovalList:
        """The caller's runs waiting for review (see :meth:`Approvals.pending`)."""
        return await self.approvals.pending(caller)

    async def _catalogue(self, crew: Crew, *, refresh: bool = False) -> list[InputInfo]:
        try:
            return await crew.inputs(refresh=refresh)
        except e.CrewAPIError as exc:
            raise e.UpstreamError.from_api(exc, crew=crew.name, action="list its inputs") from None


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    simulator: Simulator | None = None,
    webhook_base: str | None = None,
    on_change: OnChange | None = None,
    poll_initial: float = POLL_INITIAL,
    fleet: Fleet | None = None,
) -> AsyncIterator[CrewService]:
    """Assemble a running service; everything it opened is closed on exit.

    Args:
        settings: the configuration.
        ledger: the ledger to use (default: the one ``settings.ledger_url`` names); the service closes it.
        clock: the time source of waits, polls, expiry and retention (default: the system clock).
        transport: replaces the network for every crew (tests).
        simulator: the embedded simulator to serve when no crew is configured (default: a new one).
        webhook_base: the URL under which this server receives AMP webhooks (HTTP only; None: no webhooks).
        on_change: told about every change subscribers should hear of.
        poll_initial: the poll loop's first interval.
        fleet: the replica's fleet pieces (default: built from the settings, see :func:`crew_mcp.fleet.build_fleet`;
            closed here only when built here).
    """
    clock = clock or SystemClock()
    url = settings.ledger_url or default_ledger_url()
    state = sqlite_path(url).parent / "simulator.db" if ledger is None and url.startswith("sqlite:") else None
    registry = build_registry(settings, transport=transport, simulator=simulator, simulator_state=state)
    store = ledger or open_ledger(url)
    own_fleet = fleet is None
    fleet = fleet or build_fleet(settings, url)
    service = CrewService(
        settings,
        registry,
        store,
        clock,
        webhook_base=webhook_base,
        on_change=on_change,
        poll_initial=poll_initial,
        fleet=fleet,
    )
    # Entered by hand and left with no exception: an error in the caller's block must reach the caller as
    # itself, not wrapped in the background task group's ExceptionGroup.
    background = anyio.create_task_group()
    try:
        await service.runs.hub.__aenter__()
        await background.__aenter__()
        background.start_soon(_retention, service)
        await background.start(fleet.fanout.run, service.runs.forget_live)
        sim = registry.simulator
        if sim is not None and sim.clock == "wall":
            background.start_soon(sim.run_clock)
        yield service
    finally:
        background.cancel_scope.cancel()
        await background.__aexit__(None, None, None)
        await service.runs.hub.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):  # connections and files are released even when cancelled
            await registry.aclose()
            await store.aclose()
            if own_fleet:
                await fleet.aclose()


async def _retention(service: CrewService) -> None:
    s = service.settings
    await run_retention(
        service.ledger,
        service.clock,
        interval=s.retention_interval_seconds,
        max_age=timedelta(days=s.retention_days),
        max_count=s.retention_max_records,
    )
