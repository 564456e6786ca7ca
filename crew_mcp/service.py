"""What crew-mcp does, independent of MCP: the MCP tools, the resources and the CLI all call this.

Errors leave as :class:`UsageError` (a sentence saying what to do) or are translated by :func:`explain`
from the client's and the ledger's exceptions, so every caller can show them as they are.
"""

from __future__ import annotations

import getpass
import json
import logging
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import anyio

from . import errors as e
from .client import validate_kickoff_id
from .crews import Crew, CrewRegistry, InputInfo
from .ledger import Decision, Ledger, RecordState, RunRecord, run_retention
from .models import ExecutionState, ExecutionStatus, Progress, WebhookUrls, encode_input_value
from .settings import Settings
from .views import (
    ApprovalList,
    ApprovalView,
    CrewInputs,
    CrewList,
    CrewSummary,
    ExecutionList,
    ResumeView,
    RunView,
    execution_uri,
)
from .watch import POLL_INITIAL, StatusHub

__all__ = ["Caller", "CrewService", "default_owner", "explain", "local_owner"]

log = logging.getLogger("crew_mcp.service")

OnUpdate = Callable[[ExecutionStatus], Awaitable[None]]
_T = TypeVar("_T")
DEFAULT_CONVERSATION = "default"
FINISHED_CACHE = 1024
"""How many finished records a service keeps in memory."""
REFRESH_RUNNING = 20
"""How many running runs ``list_pending_approvals`` re-reads upstream before listing."""


def default_owner(settings: Settings) -> str:
    """The owner of records made without an authenticated principal: ``CREW_MCP_OWNER``, else the OS user."""
    return settings.owner or local_owner()


def local_owner() -> str:
    """The owner of records made without an authenticated principal: the local OS user."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "local:user"


@dataclass(frozen=True)
class Caller:
    """Who is asking: the record owner, the conversation, and whether a human or a model decides."""

    owner: str
    conversation_id: str = DEFAULT_CONVERSATION
    by: Literal["model", "human", "system"] = "model"
    via: str = "tool"


# ------------------------------------------------------------------------------------------ explanations


def explain(exc: Exception, *, crew: str | None = None, action: str = "call") -> str:
    """One actionable sentence for any error crew-mcp can meet; never contains a secret."""
    name = f"crew {crew!r}" if crew else "the crew"
    if isinstance(exc, e.UsageError | e.InvalidInputError | e.ConfigError):
        return str(exc)
    if isinstance(exc, e.LedgerError):
        return f"crew-mcp's run ledger is unavailable ({exc}). The crew itself is unaffected; ask the user to check it."
    if isinstance(exc, e.AuthenticationError | e.PermissionDeniedError):
        return (
            f"{name} refused crew-mcp's token (HTTP {exc.status_code}). This is a configuration problem you cannot fix "
            "from chat: ask the user to check the crew's token in the crew-mcp configuration (`crew-mcp doctor`)."
        )
    if isinstance(exc, e.UnprocessableEntityError) and exc.missing_inputs:
        return f"{name} says required inputs are missing: {', '.join(exc.missing_inputs)}. Call list_inputs."
    if isinstance(exc, e.RateLimitError):
        wait = f" about {int(exc.retry_after)} s" if exc.retry_after else " a minute"
        return f"{name} is rate limiting crew-mcp; wait{wait} and try again."
    if isinstance(exc, e.APIResponseValidationError):
        return (
            f"{name} answered with something that is not the CrewAI AMP API (HTTP {exc.status_code}). "
            "Ask the user to check the crew's URL in the crew-mcp configuration."
        )
    if isinstance(exc, e.APIConnectionError):
        kind = "timed out" if isinstance(exc, e.APITimeoutError) else "could not be reached"
        return f"{name} {kind} after retries while trying to {action}. Try again in a minute."
    if isinstance(exc, e.APIStatusError):
        said = exc.body.get("message") or exc.body.get("error") or ""
        said = f" ({said})" if said else ""
        return f"{name} failed to {action} with HTTP {exc.status_code}{said}."
    return f"crew-mcp could not {action}: {exc}"


def _kickoff_failure(exc: e.CrewAPIError, crew: str, request_id: str) -> str:
    """Explain a failed kickoff, saying whether the run might have started anyway."""
    uncertain = (isinstance(exc, e.APIConnectionError) and exc.sent) or (
        isinstance(exc, e.APIStatusError) and exc.status_code >= 500 and exc.status_code != 503
    )
    base = explain(exc, crew=crew, action="start the run")
    if uncertain:
        return (
            f"{base} The request may have reached the crew, so a run may have started; it was not retried to avoid "
            f"paying twice. It is recorded as request {request_id}: check list_executions before starting again."
        )
    return base + " No run was started."


# ----------------------------------------------------------------------------------------------- service


class CrewService:
    """The operations behind every tool, resource and CLI command. Use as an async context manager."""

    def __init__(
        self, settings: Settings, registry: CrewRegistry, ledger: Ledger, *, poll_initial: float = POLL_INITIAL
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.ledger = ledger
        self.hub = StatusHub(self._fetch, initial=poll_initial)
        self._finished: OrderedDict[str, RunRecord] = OrderedDict()
        self.on_change: Callable[[str], Awaitable[None]] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.webhook_base: str | None = None

    async def __aenter__(self) -> CrewService:
        await self.hub.__aenter__()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._retention)
        sim = self.registry.simulator
        if sim is not None and sim.clock == "wall":
            self._tg.start_soon(sim.run_clock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
        await self.hub.__aexit__(None, None, None)
        await self.registry.aclose()
        await self.ledger.aclose()

    async def _retention(self) -> None:
        await run_retention(
            self.ledger,
            interval=self.settings.retention_interval_seconds,
            max_age=timedelta(days=self.settings.retention_days),
            max_count=self.settings.retention_max_records,
        )

    # ------------------------------------------------------------------------------------------- crews

    def list_crews(self, typed_tools: Mapping[str, str] | None = None) -> CrewList:
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
        c = self.registry.get(crew)
        infos = await self._inputs(c, refresh=refresh)
        names = ", ".join(f"{i.name}=..." for i in infos if i.required and i.default is None)
        return CrewInputs(
            crew=c.name,
            inputs=infos,
            uri=f"crew://{c.name}/inputs",
            next_step=f"Ask the user for any value you do not know, then call kickoff_crew(crew={c.name!r}, "
            f"inputs={{{names}}}).",
        )

    async def _inputs(self, crew: Crew, *, refresh: bool = False) -> list[InputInfo]:
        try:
            return await crew.inputs(refresh=refresh)
        except e.CrewAPIError as exc:
            raise e.UsageError(explain(exc, crew=crew.name, action="list its inputs")) from None

    def validate_inputs(self, crew: Crew, infos: list[InputInfo], given: Mapping[str, Any]) -> dict[str, str]:
        """Check ``given`` against the crew's inputs and encode it for AMP.

        Raises:
            UsageError: missing, unknown, or ill-typed inputs, each named with what it should be.
        """
        known = {i.name: i for i in infos}
        values: dict[str, Any] = {i.name: i.default for i in infos if i.default is not None}
        values.update(given)
        problems: list[str] = []
        missing = [i for i in infos if i.required and i.name not in values]
        if missing:
            described = "; ".join(f"{i.name} ({i.description})" if i.description else i.name for i in missing)
            problems.append(f"Missing required inputs: {described}.")
        unknown = sorted(set(given) - set(known))
        if unknown and not crew.config.allow_extra_inputs:
            problems.append(
                f"Unknown inputs: {', '.join(unknown)}. Crew {crew.name!r} takes: {', '.join(known) or '(none)'}."
            )
        for name, value in values.items():
            info = known.get(name)
            if info is not None:
                problem = _check_value(info, value)
                if problem:
                    problems.append(problem)
        if problems:
            raise e.UsageError(" ".join([*problems, f"Call list_inputs(crew={crew.name!r}) for details."]))
        try:
            return {k: encode_input_value(k, v) for k, v in values.items()}
        except e.InvalidInputError as exc:
            raise e.UsageError(str(exc)) from None

    # ----------------------------------------------------------------------------------------- kickoff

    async def kickoff(
        self,
        crew: str | None,
        inputs: Mapping[str, Any],
        caller: Caller,
        *,
        wait_seconds: float = 0.0,
        on_update: OnUpdate | None = None,
    ) -> RunView:
        """Validate, record, kick off, confirm; optionally wait a bounded time for the run to settle."""
        c = self.registry.get(crew)
        encoded = self.validate_inputs(c, await self._inputs(c), inputs)
        request_id = uuid.uuid4().hex
        secret = secrets.token_urlsafe(24) if self.webhook_base else None
        webhooks = self._webhook_urls(secret) if secret else None
        now = datetime.now(UTC)
        record = RunRecord(
            request_id=request_id,
            kickoff_id=None,
            crew=c.name,
            conversation_id=caller.conversation_id,
            owner=caller.owner,
            inputs=encoded if self.settings.keep_input_values else {},
            input_names=sorted(encoded),
            meta={"crew_mcp_request_id": request_id},
            webhooks=webhooks,
            webhook_secret=secret,
            created_at=now,
            updated_at=now,
            state=RecordState.UNCONFIRMED,
            status=None,
            status_fetched_at=None,
            pending=None,
            decisions=[],
            error=None,
        )
        await self._ledger(self.ledger.create(record))
        # Shielded: once the POST may have reached the crew (a billed run), a cancelled tool call must not stop
        # crew-mcp from recording the kickoff_id. The client's total timeout still bounds this.
        with anyio.CancelScope(shield=True):
            try:
                result = await c.client.kickoff(encoded, webhooks=webhooks, request_id=request_id)
            except e.CrewAPIError as exc:
                message = _kickoff_failure(exc, c.name, request_id)
                await self._ledger(self.ledger.mark_failed(request_id, message))
                raise e.UsageError(message) from None
            record = await self._confirm(record, result.kickoff_id)
        log.info("kicked off %s on crew %s (request %s)", result.kickoff_id, c.name, request_id)
        if wait_seconds > 0:
            try:
                return await self.status(result.kickoff_id, caller, wait_seconds=wait_seconds, on_update=on_update)
            except e.UsageError as exc:
                view = self._view(record, None)
                view.message = f"The run started, but reading its status failed: {exc}"
                view.next_step = (
                    f"The run {result.kickoff_id} was started; do not start it again. "
                    f"Call get_status(kickoff_id={result.kickoff_id!r}) later to follow it."
                )
                return view
        return self._view(record, None)

    async def _confirm(self, record: RunRecord, kickoff_id: str) -> RunRecord:
        """Record the kickoff_id of a started run; if the ledger fails, still hand the id to the caller."""
        for attempt in range(2):
            try:
                return await self.ledger.confirm(record.request_id, kickoff_id)
            except e.LedgerError as exc:
                if attempt:
                    raise e.UsageError(
                        f"The run started on crew {record.crew!r} with kickoff_id {kickoff_id!r}, but crew-mcp's run "
                        f"ledger could not record it ({exc}). Do not start it again: follow it with "
                        f"get_status(kickoff_id={kickoff_id!r}) once the ledger works again."
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _webhook_urls(self, secret: str) -> WebhookUrls:
        base = f"{self.webhook_base}/webhooks/{secret}"
        return WebhookUrls(taskWebhookUrl=f"{base}/task", stepWebhookUrl=f"{base}/step", crewWebhookUrl=f"{base}/crew")

    # ------------------------------------------------------------------------------------------ status

    async def find(self, kickoff_id: str | None, caller: Caller) -> RunRecord:
        """The caller's record for ``kickoff_id``; with no id, the conversation's latest run.

        Raises:
            UsageError: nothing matches; the sentence says where to look.
        """
        if kickoff_id:
            try:
                validate_kickoff_id(kickoff_id)
            except e.InvalidInputError as exc:
                raise e.UsageError(str(exc)) from None
            record = self._finished.get(kickoff_id)
            if record is None or record.owner != caller.owner:
                record = await self._ledger(self.ledger.get(kickoff_id, owner=caller.owner))
                self._remember(record)
            if record is None:
                raise e.UsageError(
                    f"No run with kickoff_id {kickoff_id!r} is known to crew-mcp for you. "
                    "Call list_executions to see your runs (kickoff_ids are case-sensitive)."
                )
            return record
        record = await self._ledger(self.ledger.latest(owner=caller.owner, conversation_id=caller.conversation_id))
        if record is None:
            raise e.UsageError(
                f"This conversation ({caller.conversation_id}) has no runs yet. Call list_executions to find runs "
                "from other conversations and pass their kickoff_id, or kickoff_crew to start one."
            )
        return record

    async def status(
        self,
        kickoff_id: str | None,
        caller: Caller,
        *,
        wait_seconds: float = 0.0,
        on_update: OnUpdate | None = None,
    ) -> RunView:
        """The run's status: final ones from the ledger, others from the crew (waiting up to ``wait_seconds``)."""
        record = await self.find(kickoff_id, caller)
        if record.kickoff_id is None or record.state in (RecordState.UNCONFIRMED, RecordState.KICKOFF_FAILED):
            return self._view(record, None, from_ledger=True)
        if record.status is not None and record.status.terminal:
            return self._view(record, record.status, from_ledger=True)
        crew = self.registry.get(record.crew)
        wait = min(max(wait_seconds, 0.0), self.settings.wait_cap_seconds)
        try:
            if wait > 0:
                status = await self.hub.wait(crew.name, record.kickoff_id, timeout=wait, on_update=on_update)
                fresh = await self._ledger(self.ledger.get(record.kickoff_id, owner=None)) or record
                if status is None:
                    status, fresh = await self._refresh(crew, fresh)
            else:
                status, fresh = await self._refresh(crew, record)
        except e.CrewAPIError as exc:
            raise e.UsageError(explain(exc, crew=crew.name, action="read the run's status")) from None
        rejected = await self._reject_expired(fresh)
        if rejected is not None:
            return rejected.run
        return self._view(fresh, status)

    async def _fetch(self, crew_name: str, kickoff_id: str) -> ExecutionStatus:
        """One upstream status read for the shared poll loop (see :meth:`_refresh`)."""
        crew = self.registry.get(crew_name)
        record = await self._ledger(self.ledger.get(kickoff_id, owner=None))
        if record is None:
            return await crew.client.status(kickoff_id)
        status, _ = await self._refresh(crew, record)
        return status

    def _remember(self, record: RunRecord | None) -> None:
        """Keep finished records in memory: they never change, so reading them again needs no ledger round trip."""
        if record is None or record.kickoff_id is None or record.status is None or not record.status.terminal:
            return
        self._finished[record.kickoff_id] = record
        self._finished.move_to_end(record.kickoff_id)
        while len(self._finished) > FINISHED_CACHE:
            self._finished.popitem(last=False)

    async def _refresh(self, crew: Crew, record: RunRecord) -> tuple[ExecutionStatus, RunRecord]:
        """Read the run's status upstream, merge what webhooks told the ledger, and save it when it changed.

        An unchanged status is written again only after :data:`RESAVE_AFTER` seconds (to keep
        ``status_fetched_at`` honest), so polling a long run does not cost a ledger write per read.
        """
        assert record.kickoff_id is not None
        upstream = await crew.client.status(record.kickoff_id)
        if _changed(record, upstream):
            before = record
            saved = await self._ledger(self.ledger.save_status(record.kickoff_id, upstream))
            record = saved or record
            self._remember(record)
            if self.on_change is not None and _state_changed(before, upstream):
                await self.on_change(before.kickoff_id or "")
        return _merge_pending(upstream, record), record

    # ------------------------------------------------------------------------------------------ resume

    async def resume(
        self,
        kickoff_id: str,
        caller: Caller,
        *,
        approve: bool,
        feedback: str = "",
        task_id: str | None = None,
    ) -> ResumeView:
        """Approve or reject the pending task, re-sending the kickoff's webhook URLs, and record the decision."""
        record = await self.pending_record(kickoff_id, caller, task_id=task_id)
        assert record.kickoff_id is not None
        task = task_id or (record.pending.task_id if record.pending else None)
        if not task:
            raise e.UsageError(
                f"Run {kickoff_id} is {record.state.value} and crew-mcp does not know which task waits for review. "
                "If the crew's status API does not report pauses, pass task_id explicitly."
            )
        if self.settings.approval_policy == "human" and caller.by == "model":
            raise e.UsageError(human_only_message(kickoff_id))
        crew = self.registry.get(record.crew)
        try:
            answer = await crew.client.resume(
                record.kickoff_id, task_id=task, feedback=feedback, approve=approve, webhooks=record.webhooks
            )
        except e.BadRequestError as exc:
            said = exc.body.get("message") or "it is not in pending human input state"
            raise e.UsageError(f"Crew {crew.name!r} refused the decision for run {kickoff_id}: {said}.") from None
        except e.NotFoundError:
            raise e.UsageError(f"Crew {crew.name!r} knows no task {task!r} waiting in run {kickoff_id}.") from None
        except e.CrewAPIError as exc:
            raise e.UsageError(explain(exc, crew=crew.name, action="send the decision")) from None
        decision = Decision(
            task_id=task,
            approve=approve,
            feedback=feedback,
            by=caller.by,
            via=caller.via,
            actor=caller.owner,
            at=datetime.now(UTC),
        )
        updated = await self._ledger(self.ledger.add_decision(record.kickoff_id, decision)) or record
        self.hub.push(crew.name, record.kickoff_id)
        run = self._view(updated, None)
        run.state = ExecutionState.RUNNING.value
        run.pending = None
        run.next_step = self._next_step(run)
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
            next_step=f"The crew will {verdict}. Call get_status(kickoff_id={record.kickoff_id!r}, wait_seconds=30).",
        )

    async def pending_record(self, kickoff_id: str, caller: Caller, *, task_id: str | None = None) -> RunRecord:
        """The caller's run, checked to be waiting for a human (refreshing a stale ledger once).

        Raises:
            UsageError: the run is unknown, finished, or not waiting; no upstream call when the ledger knows.
        """
        record = await self.find(kickoff_id, caller)
        if record.kickoff_id is None:
            raise e.UsageError(f"Run {kickoff_id} never got a kickoff_id, so there is nothing to resume.")
        if record.status is not None and record.status.terminal:
            raise e.UsageError(
                f"Run {kickoff_id} has already {record.state.value}; there is nothing to approve. "
                "Call get_status to read its result."
            )
        if record.state is not RecordState.WAITING_FOR_HUMAN and task_id is None:
            await self.status(record.kickoff_id, caller)
            record = await self.find(record.kickoff_id, caller)
            if record.state is not RecordState.WAITING_FOR_HUMAN:
                raise e.UsageError(
                    f"Run {kickoff_id} is {record.state.value}, not waiting for human review. "
                    f"Call get_status(kickoff_id={kickoff_id!r}, wait_seconds=30) to wait until it asks."
                )
        return record

    # ---------------------------------------------------------------------------------------- listings

    async def executions(
        self,
        caller: Caller,
        *,
        conversation_id: str | None = None,
        crew: str | None = None,
        state: str | None = None,
        limit: int = 20,
    ) -> ExecutionList:
        records = await self._ledger(
            self.ledger.list(owner=caller.owner, conversation_id=conversation_id, crew=crew, state=state, limit=limit)
        )
        runs = [self._view(r, r.status, from_ledger=True) for r in records]
        hint = "Call get_status(kickoff_id=...) for the current status and output of one run."
        if not runs:
            hint = "No runs match. Call list_crews and kickoff_crew to start one."
        return ExecutionList(executions=runs, count=len(runs), next_step=hint)

    async def pending_approvals(self, caller: Caller) -> ApprovalList:
        await self._refresh_running(caller)
        records = await self._ledger(self.ledger.pending_approvals(owner=caller.owner))
        now = datetime.now(UTC)
        expiry = self.settings.approval_expiry_seconds
        approvals = []
        for r in records:
            if r.kickoff_id is None or r.pending is None:
                continue
            if await self._reject_expired(r) is not None:
                continue
            since = r.pending.since or r.updated_at
            waited = (now - since).total_seconds() if since else None
            approvals.append(
                ApprovalView(
                    kickoff_id=r.kickoff_id,
                    crew=r.crew,
                    conversation_id=r.conversation_id,
                    task_id=r.pending.task_id,
                    output=r.pending.output,
                    waiting_since=since,
                    waited_seconds=waited,
                    expired=bool(expiry and waited is not None and waited > expiry),
                    status_uri=execution_uri(r.kickoff_id),
                )
            )
        hint = "Show the user each output and ask for approve/reject with feedback; then call resume_with_feedback."
        if self.settings.approval_policy == "human":
            hint = "Only the user may decide: " + human_only_message("<kickoff_id>")
        return ApprovalList(approvals=approvals, next_step=hint)

    async def _refresh_running(self, caller: Caller) -> None:
        """Re-read the owner's newest running runs (at most :data:`REFRESH_RUNNING`) so pauses that happened
        since the last read are listed even with no webhooks (stdio); failures leave the ledger as it was."""
        running = await self._ledger(
            self.ledger.list(owner=caller.owner, state=RecordState.RUNNING.value, limit=REFRESH_RUNNING)
        )

        async def refresh(record: RunRecord) -> None:
            try:
                await self._refresh(self.registry.get(record.crew), record)
            except Exception as exc:  # one bad run must not hide the others' approvals
                log.info("could not refresh %s: %s", record.kickoff_id, exc)

        async with anyio.create_task_group() as tg:
            for record in running:
                if record.kickoff_id is not None:
                    tg.start_soon(refresh, record)

    async def _reject_expired(self, record: RunRecord) -> ResumeView | None:
        """Reject a pending task that waited longer than the approval expiry, when the expiry action is "reject".

        The rejection goes through :meth:`resume` (so webhook URLs are re-sent) with the reason as feedback, and is
        recorded as decided by "system". Returns None when nothing was due or the crew refused (logged).
        """
        expiry = self.settings.approval_expiry_seconds
        pending = record.pending
        if self.settings.approval_expiry_action != "reject" or not expiry or pending is None or not record.kickoff_id:
            return None
        since = pending.since or record.updated_at
        if (datetime.now(UTC) - since).total_seconds() <= expiry:
            return None
        caller = Caller(record.owner, record.conversation_id, by="system", via="expiry")
        feedback = f"Rejected automatically: no human decision within {expiry:g} s"
        try:
            view = await self.resume(
                record.kickoff_id, caller, approve=False, feedback=feedback, task_id=pending.task_id
            )
        except e.UsageError as exc:
            log.warning("could not reject the expired approval of run %s: %s", record.kickoff_id, exc)
            return None
        log.info("rejected the expired approval of run %s (task %s)", record.kickoff_id, pending.task_id)
        view.run.message = feedback
        return view

    # ----------------------------------------------------------------------------------------- helpers

    async def _ledger(self, op: Awaitable[_T]) -> _T:
        try:
            return await op
        except e.LedgerError as exc:
            raise e.UsageError(explain(exc)) from None

    def _view(self, record: RunRecord, status: ExecutionStatus | None, *, from_ledger: bool = False) -> RunView:
        st = status or record.status
        state = st.state.value if st is not None and record.kickoff_id else record.state.value
        waiting = state == ExecutionState.WAITING_FOR_HUMAN.value
        pending = (record.pending or (st.pending if st else None)) if waiting else None
        view = RunView(
            kickoff_id=record.kickoff_id,
            request_id=record.request_id,
            crew=record.crew,
            conversation_id=record.conversation_id,
            state=state,
            raw_state=st.raw_state if st else None,
            message=st.message if st else None,
            progress=st.progress if st else Progress(),
            pending=pending,
            output=st.output if st and st.state is ExecutionState.COMPLETED else None,
            error=(st.error if st else None) or record.error,
            usage=st.usage if st else None,
            created_at=record.created_at,
            updated_at=record.updated_at,
            status_uri=execution_uri(record.kickoff_id) if record.kickoff_id else None,
            from_ledger=from_ledger,
            decisions=record.decisions,
        )
        view.next_step = self._next_step(view)
        return view

    def _next_step(self, run: RunView) -> str:
        kid = run.kickoff_id
        match run.state:
            case "running" | "unknown":
                return (
                    f"The crew is still working. Call get_status(kickoff_id={kid!r}, wait_seconds=30) to wait for it."
                )
            case "waiting_for_human":
                if self.settings.approval_policy == "human":
                    return "The crew waits for the user's review. " + human_only_message(kid or "")
                return (
                    "The crew waits for human review. Show the user the output to review and ask whether to approve "
                    f"it or what to change; then call resume_with_feedback(kickoff_id={kid!r}, approve=true|false, "
                    "feedback=...). Do not decide on the user's behalf."
                )
            case "completed":
                return "The run finished; its final output is above. No further call is needed."
            case "failed":
                return "The run failed (see error). Fix the cause if it is in the inputs and start a new run."
            case "cancelled":
                return "The run was cancelled upstream. Start a new run if it is still wanted."
            case "unconfirmed":
                return (
                    "crew-mcp recorded this kickoff but never got its kickoff_id back (it stopped or lost the answer "
                    f"mid-request, request id {run.request_id}). A run may have started; check with the user before "
                    "starting another."
                )
            case "kickoff_failed":
                return "The kickoff failed (see error); nothing to follow up. Start a new run when the cause is fixed."
        return ""


def human_only_message(kickoff_id: str) -> str:
    """How the person (not the model) can decide under the ``human`` approval policy."""
    return (
        "crew-mcp's approval policy is 'human': a model may not approve or reject. Ask the user to decide, either by "
        f'running `crew-mcp resume {kickoff_id} --approve` (or `--reject --feedback "..."`) in a terminal, or by '
        "calling resume_with_feedback without approve in a client that can show them a form."
    )


RESAVE_AFTER = 30.0
"""Seconds after which an unchanged status is saved again."""


def _changed(record: RunRecord, status: ExecutionStatus) -> bool:
    """True when ``status`` says something the ledger does not have yet (ignoring the raw body's timestamps)."""
    last = record.status
    if last is None or record.status_fetched_at is None or record.state.value != status.state.value:
        return True
    if (datetime.now(UTC) - record.status_fetched_at).total_seconds() > RESAVE_AFTER:
        return True
    return last.model_dump(exclude={"raw"}) != status.model_dump(exclude={"raw"})


def _state_changed(record: RunRecord, status: ExecutionStatus) -> bool:
    """True when subscribers should hear about it: the state, the progress or the pending task moved."""
    last = record.status
    if last is None:
        return True
    return (last.state, last.progress, last.pending) != (status.state, status.progress, status.pending)


def _merge_pending(status: ExecutionStatus, record: RunRecord) -> ExecutionStatus:
    """What to show: the ledger's pause (announced by webhook, which the documented status shape never reports)
    holds while the status API still says "running"; the ledger decides when it ends (see ``apply_status``)."""
    waiting = record.state is RecordState.WAITING_FOR_HUMAN and record.pending is not None
    if not waiting or status.state is not ExecutionState.RUNNING:
        return status
    return status.model_copy(update={"state": ExecutionState.WAITING_FOR_HUMAN, "pending": record.pending})


def _check_value(info: InputInfo, value: Any) -> str | None:
    if info.enum and str(value) not in info.enum:
        return f"Input {info.name!r} must be one of {', '.join(info.enum)} (got {value!r})."
    checks: dict[str, Callable[[Any], bool]] = {
        "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and _is_int(v)),
        "number": lambda v: (isinstance(v, int | float) and not isinstance(v, bool)) or _is_number(v),
        "boolean": lambda v: isinstance(v, bool) or (isinstance(v, str) and v.lower() in ("true", "false")),
        "object": lambda v: isinstance(v, dict) or _is_json(v, dict),
        "array": lambda v: isinstance(v, list) or _is_json(v, list),
    }
    check = checks.get(info.type)
    if check is not None and not check(value):
        return f"Input {info.name!r} must be of type {info.type} (got {value!r})."
    return None


def _is_int(v: str) -> bool:
    return v.strip().lstrip("-").isdigit()


def _is_number(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        float(v)
    except ValueError:
        return False
    return True


def _is_json(v: Any, kind: type) -> bool:
    if not isinstance(v, str):
        return False
    try:
        return isinstance(json.loads(v), kind)
    except ValueError:
        return False
