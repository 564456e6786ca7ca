"""Starting a run: record it, send ``POST /kickoff``, confirm the kickoff_id — never losing a billed run.

The record is written before the request (state ``unconfirmed``, keyed by a client request id that AMP
echoes back in ``meta``), so a crash in between still leaves a visible trace; the kickoff_id is confirmed
after. Once the request may have reached the crew, nothing — a cancelled tool call, a failing ledger —
may stop crew-mcp from handing the kickoff_id to the caller.
"""

from __future__ import annotations

import logging
import secrets
import uuid

import anyio
import stamina

from . import errors as e
from .clock import Clock
from .crews import Crew
from .identity import Caller
from .ledger import Ledger, RecordState, RunRecord
from .models import WebhookUrls

__all__ = ["Launch", "Launcher"]

logger = logging.getLogger(__name__)

CONFIRM_ATTEMPTS = 2
"""How many times the kickoff_id of a started run is offered to the ledger before giving up on recording it."""


class Launch:
    """A started run: its confirmed record, or (when the ledger failed) the record in hand and what went wrong."""

    def __init__(self, record: RunRecord, *, ledger_problem: str | None = None) -> None:
        self.record = record
        self.ledger_problem = ledger_problem


class Launcher:
    """Record-then-kickoff for every crew.

    Args:
        ledger: where the run is recorded.
        clock: stamps.
        webhook_base: the URL under which this server receives AMP webhooks, or None (stdio: no webhooks).
        keep_input_values: store input values (True) or only their names.
    """

    def __init__(self, ledger: Ledger, clock: Clock, *, webhook_base: str | None, keep_input_values: bool) -> None:
        self.ledger = ledger
        self.clock = clock
        self.webhook_base = webhook_base
        self.keep_input_values = keep_input_values

    async def launch(self, crew: Crew, inputs: dict[str, str], caller: Caller) -> Launch:
        """Start a run of ``crew`` with already validated and encoded ``inputs``.

        Raises:
            LedgerError: the run could not be recorded (nothing was sent).
            UpstreamError: the crew refused or failed; ``may_have_started`` says whether a run may exist.
        """
        record = self._new_record(crew, inputs, caller)
        await self.ledger.create(record)
        # Shielded: once the POST may have reached the crew (a billed run), a cancelled tool call must not stop
        # crew-mcp from recording the kickoff_id. The client's total timeout still bounds this.
        with anyio.CancelScope(shield=True):
            try:
                result = await crew.client.kickoff(inputs, webhooks=record.webhooks, request_id=record.request_id)
            except e.CrewAPIError as exc:
                failure = _kickoff_failure(exc, crew.name, record.request_id)
                await self.ledger.mark_failed(record.request_id, str(failure))
                raise failure from None
            launch = await self._confirm(record, result.kickoff_id)
        logger.info("kicked off %s on crew %s (request %s)", result.kickoff_id, crew.name, record.request_id)
        return launch

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
            meta={"crew_mcp_request_id": request_id},
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
        base = f"{self.webhook_base}/webhooks/{request_id}/{secret}"
        return WebhookUrls(taskWebhookUrl=f"{base}/task", stepWebhookUrl=f"{base}/step", crewWebhookUrl=f"{base}/crew")


def _kickoff_failure(exc: e.CrewAPIError, crew: str, request_id: str) -> e.UpstreamError:
    """Explain a failed kickoff, saying whether the run might have started anyway."""
    uncertain = (isinstance(exc, e.APIConnectionError) and exc.sent) or (
        isinstance(exc, e.APIStatusError) and exc.status_code >= 500 and exc.status_code != 503
    )
    note = "No run was started."
    if uncertain:
        note = (
            "The request may have reached the crew, so a run may have started; it was not retried to avoid paying "
            f"twice. It is recorded as request {request_id}: check list_executions before starting again."
        )
    return e.UpstreamError.from_api(exc, crew=crew, action="start the run", note=note, may_have_started=uncertain)
