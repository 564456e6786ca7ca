"""Starting a run: record it, send ``POST /kickoff``, confirm the kickoff_id — never losing a billed run.

The record is written before the request (state ``unconfirmed``, keyed by a client request id that AMP
echoes back in ``meta``), so a crash in between still leaves a visible trace; the kickoff_id is confirmed
after. Once the request may have reached the crew, nothing — a cancelled tool call, a bound on the call's
time, a failing ledger — may stop crew-mcp from recording the kickoff_id when it arrives: the POST runs
detached (:mod:`crew_mcp.detach`), and the caller is answered in time with what is known.

A kickoff that failed is one of two things, never confused (:func:`crew_mcp.retry.may_have_acted`):
``kickoff_failed`` when the crew refused it or it never left (no run started), ``may_have_started`` when the
crew may have received it and its answer was lost or unreadable (a run may exist; the user must check).
"""

from __future__ import annotations

import logging
import secrets
import uuid

import stamina

from . import errors as e
from .clock import Clock
from .crews import Crew
from .detach import Detacher
from .identity import Caller
from .ids import REQUEST_ID_META_KEY, webhook_path
from .ledger import Ledger, RecordState, RunRecord
from .models import WebhookUrls
from .retry import may_have_acted

__all__ = ["Launch", "Launcher"]

logger = logging.getLogger(__name__)

CONFIRM_ATTEMPTS = 2
"""How many times the kickoff_id of a started run is offered to the ledger before giving up on recording it."""


class Launch:
    """What a kickoff came to, as far as is known when the caller must be answered.

    Attributes:
        record: the run's record (confirmed, ``may_have_started``, or still ``unconfirmed`` while in flight).
        ledger_problem: the ledger failed to record a started run (the kickoff_id is in ``record`` all the same).
        uncertain: what is known of a kickoff that may have started (its answer was lost or unreadable).
        in_flight: the crew had not answered when the caller's time was up; the answer is recorded when it comes.
    """

    def __init__(
        self,
        record: RunRecord,
        *,
        ledger_problem: str | None = None,
        uncertain: str | None = None,
        in_flight: bool = False,
    ) -> None:
        self.record = record
        self.ledger_problem = ledger_problem
        self.uncertain = uncertain
        self.in_flight = in_flight


class Launcher:
    """Record-then-kickoff for every crew.

    Args:
        ledger: where the run is recorded.
        clock: stamps.
        detacher: runs the POST so that it outlives a caller who stops waiting.
        webhook_base: the URL under which this server receives AMP webhooks, or None (stdio: no webhooks).
        keep_input_values: store input values (True) or only their names.
    """

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        detacher: Detacher,
        *,
        webhook_base: str | None,
        keep_input_values: bool,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.detacher = detacher
        self.webhook_base = webhook_base
        self.keep_input_values = keep_input_values

    async def launch(self, crew: Crew, inputs: dict[str, str], caller: Caller, *, within: float) -> Launch:
        """Start a run of ``crew`` with already validated and encoded ``inputs``, answering within ``within`` s.

        Raises:
            LedgerError: the run could not be recorded (nothing was sent).
            UpstreamError: the crew refused the kickoff or it never left (``may_have_started`` is False).
        """
        record = self._new_record(crew, inputs, caller)
        await self.ledger.create(record)
        sent = await self.detacher.run(
            f"kickoff {record.request_id} on crew {crew.name}", lambda: self._post(crew, inputs, record), within=within
        )
        if not sent.done.is_set():
            logger.warning("kickoff %s on crew %s: no answer within %g s", record.request_id, crew.name, within)
            return Launch(record, in_flight=True)
        return sent.result()

    async def _post(self, crew: Crew, inputs: dict[str, str], record: RunRecord) -> Launch:
        try:
            result = await crew.client.kickoff(inputs, webhooks=record.webhooks, request_id=record.request_id)
        except e.CrewAPIError as exc:
            return await self._failed(exc, crew.name, record)
        launch = await self._confirm(record, result.kickoff_id)
        logger.info("kicked off %s on crew %s (request %s)", result.kickoff_id, crew.name, record.request_id)
        return launch

    async def _failed(self, exc: e.CrewAPIError, crew: str, record: RunRecord) -> Launch:
        """Record a failed kickoff as what it is; raise for a refusal, hand back the record for an uncertain one."""
        maybe = may_have_acted(exc)
        refusal = e.UpstreamError.from_api(
            exc, crew=crew, action="start the run", note=_NOT_STARTED, may_have_started=False
        )
        message = _uncertain(exc, crew, record.request_id) if maybe else str(refusal)
        problem = None
        try:
            await self.ledger.mark_failed(record.request_id, message, may_have_started=maybe)
        except e.LedgerError as ledger_exc:
            logger.error("kickoff %s failed and could not be recorded: %s", record.request_id, ledger_exc)
            problem = str(ledger_exc)
        if not maybe:
            raise refusal
        logger.warning("kickoff %s on crew %s may have started: %s", record.request_id, crew, exc)
        state = RecordState.MAY_HAVE_STARTED
        marked = record.model_copy(update={"state": state, "error": message, "updated_at": self.clock.now()})
        return Launch(marked, ledger_problem=problem, uncertain=message)

    def _new_record(self, crew: Crew, inputs: dict[str, str], caller: Caller) -> RunRecord:
        request_id = uuid.uuid4().hex
        secret = secrets.token_urlsafe(24) if self.webhook_base else None
        now = self.clock.now()
        return RunRecord(
            request_id=request_id,
            kickoff_id=None,
            crew=crew.name,
            conversation_id=caller.conversation_id,
            owner=caller.owner,
            inputs=inputs if self.keep_input_values else {},
            input_names=sorted(inputs),
            meta={REQUEST_ID_META_KEY: request_id},
            webhooks=self._webhook_urls(request_id, secret) if secret else None,
            webhook_secret=secret,
            created_at=now,
            updated_at=now,
            state=RecordState.UNCONFIRMED,
        )

    async def _confirm(self, record: RunRecord, kickoff_id: str) -> Launch:
        """Record the kickoff_id of a started run; if the ledger fails, still hand the id to the caller."""
        try:
            async for attempt in stamina.retry_context(
                on=e.LedgerError, attempts=CONFIRM_ATTEMPTS, timeout=None, wait_initial=0.05, wait_jitter=0.05
            ):
                with attempt:
                    return Launch(await self.ledger.confirm(record.request_id, kickoff_id))
        except e.LedgerError as exc:
            logger.error("run %s started but could not be recorded: %s", kickoff_id, exc)
            confirmed = record.model_copy(update={"kickoff_id": kickoff_id, "state": RecordState.RUNNING})
            return Launch(confirmed, ledger_problem=str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _webhook_urls(self, request_id: str, secret: str) -> WebhookUrls:
        # The request id lets the receiver check the secret before it reads a body (see webhooks.py).
        base = f"{self.webhook_base}{webhook_path(request_id, secret)}"
        return WebhookUrls(taskWebhookUrl=f"{base}/task", stepWebhookUrl=f"{base}/step", crewWebhookUrl=f"{base}/crew")


_NOT_STARTED = "No run was started."


def _uncertain(exc: e.CrewAPIError, crew: str, request_id: str) -> str:
    """Exactly what is known of a kickoff that may have started, and what the user can do."""
    name = f"crew {crew!r}"
    if isinstance(exc, e.APIResponseValidationError):
        known = (
            f"{name} received the kickoff request and answered HTTP {exc.status_code}, but its answer could not be "
            f"read (it is not a kickoff answer: {exc.body_excerpt[:80]!r})"
        )
    elif isinstance(exc, e.APITimeoutError):
        known = f"the kickoff request was sent to {name}, but no answer came in time"
    elif isinstance(exc, e.APIConnectionError):
        known = f"the kickoff request was sent to {name}, but the connection broke before the answer arrived"
    elif isinstance(exc, e.APIStatusError):
        said = exc.body.get("message") or exc.body.get("error") or ""
        known = (
            f"{name} answered the kickoff request with HTTP {exc.status_code}{f' ({said})' if said else ''}, which "
            "a gateway may send after it has forwarded the request"
        )
    else:
        known = f"the kickoff request to {name} failed: {exc}"
    return (
        f"{known[0].upper()}{known[1:]}. So a run may have started, and crew-mcp does not know its kickoff_id. It was "
        f"not sent again (a second kickoff would be a second paid run). It is recorded as request {request_id} "
        "(state may_have_started)."
    )
