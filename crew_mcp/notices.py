"""Reviewer notices: when a run pauses for review, tell the people who are not watching the chat.

The targets come from configuration only (``CREW_MCP_NOTIFY_*``), never from a model or a caller:

* a generic webhook: the :class:`ReviewNotice` as JSON, signed with HMAC-SHA256 over ``{timestamp}.{body}``
  (headers :data:`SIGNATURE_HEADER` and :data:`TIMESTAMP_HEADER`; :func:`verify` is what a receiver does);
* a Slack incoming webhook: the same notice as a Block Kit message (:func:`slack_message`), the worked example
  of a chat target. Its URL is its credential, so it is treated as a secret.

Each carries a link to the approvals inbox (``CREW_MCP_PUBLIC_URL`` + :data:`~crew_mcp.inbox.config.INBOX_PATH`).
The run tracker tells the :class:`Notifier` of every save that leaves a run waiting for review; the notifier only
queues it, so no tool call ever waits on a receiver. Its loop runs in the service's background task group: it claims
the pause in the ledger (``Ledger.claim_notice``: one notice per kickoff_id + task_id + attempt, whichever replica
or restart sees the pause), then posts to every target, retrying connection errors, timeouts, 429 and 5xx with
backoff (stamina, bounded), and checking before each attempt that the run still waits: a run decided meanwhile gets
nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import anyio
import httpx2
import stamina
from pydantic import BaseModel, Field

from . import __version__
from .clock import Clock
from .errors import ConfigError, LedgerError
from .inbox.config import INBOX_PATH
from .ledger import Ledger, RunRecord, pause_key
from .retry import parse_retry_after
from .settings import Settings
from .views import execution_uri

__all__ = [
    "NOTICE_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE",
    "Notifier",
    "ReviewNotice",
    "sign",
    "slack_message",
    "verify",
]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Crew-MCP-Signature"
"""``sha256=<hex>``: HMAC-SHA256 with the shared secret over ``{timestamp}.{raw body}``."""
TIMESTAMP_HEADER = "X-Crew-MCP-Timestamp"
"""Unix seconds when the attempt was signed; each retry is signed afresh."""
NOTICE_ID_HEADER = "X-Crew-MCP-Notice-Id"
"""The notice's ``id``, the same on every retry: receivers deduplicate on it."""
TOLERANCE = 300
"""Seconds a receiver should accept between a notice's timestamp and its own clock (replay window)."""

ATTEMPTS = 6
"""Deliveries tried per notice and target (the first and five retries, about a minute in all)."""
WAIT_INITIAL = 1.0
WAIT_MAX = 30.0
QUEUE_SIZE = 256
"""Pauses waiting to be handled; beyond that a pause is dropped (and logged) rather than block the tracker."""
SEEN = 4096
"""Pause keys this process remembers having handled, so a repeated save costs no ledger write."""
DRAIN_SECONDS = 10.0
"""How long a closing service waits for notices in flight (a CLI command that saw a pause, a server stopping)."""
_TIMEOUT = httpx2.Timeout(10.0, connect=5.0)


class ReviewNotice(BaseModel):
    """The body of a reviewer notice: which run waits, on what, since when, and where to decide."""

    event: Literal["review_requested"] = Field(default="review_requested", description="What happened")
    id: str = Field(description="The pause: {kickoff_id}:{task_id}:{attempt}; the same on every retry")
    kickoff_id: str = Field(description="The waiting run")
    crew: str = Field(description="Its crew")
    task_id: str = Field(description="The task whose output waits for review")
    attempt: int = Field(description="1 for the task's first review, 2 after one rejection, ...")
    conversation_id: str = Field(description="The conversation the run is filed under")
    owner: str = Field(description="Whose run it is (the principal or local user)")
    output_excerpt: str = Field(description="The start of the output to review (CREW_MCP_NOTIFY_EXCERPT_CHARS)")
    output_truncated: bool = Field(description="True when the output is longer than the excerpt")
    waiting_since: datetime = Field(description="When the run paused")
    inbox_url: str | None = Field(default=None, description="The approvals inbox (needs CREW_MCP_PUBLIC_URL)")
    status_uri: str = Field(description="The run's MCP resource")

    @classmethod
    def of(cls, record: RunRecord, *, public_url: str | None, excerpt_chars: int) -> ReviewNotice | None:
        """The notice for the pause ``record`` waits in, or None when it waits for nothing."""
        key = pause_key(record)
        if key is None or record.kickoff_id is None or record.pending is None:
            return None
        output = record.pending.output or ""
        excerpt = output[:excerpt_chars]
        return cls(
            id=key,
            kickoff_id=record.kickoff_id,
            crew=record.crew,
            task_id=record.pending.task_id,
            attempt=int(key.rsplit(":", 1)[1]),
            conversation_id=record.conversation_id,
            owner=record.owner,
            output_excerpt=excerpt,
            output_truncated=len(output) > len(excerpt),
            waiting_since=record.pending.since or record.updated_at,
            inbox_url=public_url + INBOX_PATH if public_url else None,
            status_uri=execution_uri(record.kickoff_id),
        )


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The :data:`SIGNATURE_HEADER` value for ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, *, timestamp: str, body: bytes, signature: str, now: float, tolerance: int = TOLERANCE
) -> bool:
    """What a receiver checks: the signature matches (constant time) and the timestamp is within ``tolerance``."""
    try:
        age = abs(now - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


def slack_message(notice: ReviewNotice) -> dict[str, Any]:
    """A Slack incoming-webhook payload (Block Kit) for ``notice``, within Slack's length limits."""
    since = int(notice.waiting_since.timestamp())
    fields = [
        f"*Run*\n`{_esc(notice.kickoff_id)}`",
        f"*Task*\n{_esc(notice.task_id)} (review {notice.attempt})",
        f"*Waiting since*\n<!date^{since}^{{date_short_pretty}} {{time}}|{notice.waiting_since.isoformat()}>",
        f"*Conversation*\n{_esc(notice.conversation_id)}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(f"Review requested: {notice.crew}", 150)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _clip(f, 2000)} for f in fields]},
    ]
    if notice.output_excerpt:
        code = _esc(notice.output_excerpt).replace("```", "`\u200b``")
        if notice.output_truncated:
            code += "\n…"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "```" + _clip(code, 2990) + "```"}})
    if notice.inbox_url:
        button = {"type": "plain_text", "text": "Open the approvals inbox"}
        element = {"type": "button", "text": button, "url": notice.inbox_url, "style": "primary", "action_id": "inbox"}
        blocks.append({"type": "actions", "elements": [element]})
    how = f"Decide in the inbox, in chat, or with `crew-mcp resume {_esc(notice.kickoff_id)} --approve|--reject`."
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(how, 2000)}]})
    text = f"Crew {notice.crew}: run {notice.kickoff_id} waits for review of task {notice.task_id}"
    return {"text": _esc(text), "blocks": blocks}


@dataclass(frozen=True)
class _Target:
    """One configured receiver. ``url`` may itself be a credential (Slack): it is never logged or shown."""

    name: str
    url: str
    render: Callable[[ReviewNotice, str], tuple[bytes, dict[str, str]]]


class _HideURLs(logging.Filter):
    """Replaces the notice URLs in log records (of the logger it is added to) by their names."""

    def __init__(self, names: dict[str, str]) -> None:
        super().__init__()
        self._names = names

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(url in message for url in self._names):
            for url, name in self._names.items():
                message = message.replace(url, name)
            record.msg, record.args = message, None
        return True


class _Refused(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class Notifier:
    """Queues pauses and delivers their notices in the background (see the module docstring).

    Build it with :meth:`from_settings`; start :meth:`run` in a task group; :meth:`paused` is the run tracker's
    ``on_pause``; :meth:`drain` lets notices in flight finish when the service closes.
    """

    def __init__(
        self, targets: list[_Target], ledger: Ledger, clock: Clock, *, public_url: str | None, excerpt_chars: int
    ) -> None:
        self._targets = targets
        self._ledger = ledger
        self._clock = clock
        self._public_url = public_url
        self._excerpt = excerpt_chars
        self._send, self._receive = anyio.create_memory_object_stream[RunRecord](QUEUE_SIZE)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._done = anyio.Event()

    @classmethod
    def from_settings(cls, settings: Settings, ledger: Ledger, clock: Clock) -> Notifier | None:
        """The notifier the settings ask for, or None when no target is configured.

        Raises:
            ConfigError: a webhook URL without a usable signing secret.
        """
        problem = settings.notify_problem()
        if problem:
            raise ConfigError(problem)
        targets: list[_Target] = []
        if settings.notify_webhook_url and settings.notify_webhook_secret:
            secret = settings.notify_webhook_secret.get_secret_value().encode()
            targets.append(_Target("webhook", settings.notify_webhook_url, lambda n, ts: _signed(n, ts, secret)))
        if settings.notify_slack_url:
            targets.append(_Target("slack", settings.notify_slack_url.get_secret_value(), _slack))
        if not targets:
            return None
        return cls(targets, ledger, clock, public_url=settings.public_url, excerpt_chars=settings.notify_excerpt_chars)

    def paused(self, record: RunRecord) -> None:
        """Queue the pause ``record`` waits in; never blocks and never raises (the tracker calls it inline)."""
        try:
            self._send.send_nowait(record)
        except anyio.WouldBlock:
            logger.warning("reviewer notices are backed up; no notice for the pause of run %s", record.kickoff_id)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.info("the service is closing; no notice for the pause of run %s", record.kickoff_id)

    async def run(self) -> None:
        """Handle queued pauses until :meth:`drain` closes the queue (or the task is cancelled)."""
        # httpx2 logs every request's full URL at INFO. A Slack URL is a credential (settings.secrets() has it, so
        # log redaction masks it too); a webhook URL is not a configured secret, but some receivers take one in it.
        hide = _HideURLs({t.url: f"<the {t.name} notice URL>" for t in self._targets})
        http_log = logging.getLogger("httpx2")
        http_log.addFilter(hide)
        try:
            headers = {"User-Agent": f"crew-mcp/{__version__}"}
            async with (
                httpx2.AsyncClient(timeout=_TIMEOUT, headers=headers, follow_redirects=False) as http,
                anyio.create_task_group() as tg,
                self._receive,
            ):
                async for record in self._receive:
                    notice = await self._claim(record)
                    if notice is not None:
                        for target in self._targets:
                            tg.start_soon(self._deliver, http, target, notice)
        finally:
            http_log.removeFilter(hide)
            self._done.set()

    async def drain(self, seconds: float = DRAIN_SECONDS) -> None:
        """Take no more pauses, and wait up to ``seconds`` for the queued and in-flight notices."""
        self._send.close()
        with anyio.move_on_after(seconds):
            await self._done.wait()

    async def _claim(self, record: RunRecord) -> ReviewNotice | None:
        notice = ReviewNotice.of(record, public_url=self._public_url, excerpt_chars=self._excerpt)
        if notice is None or notice.id in self._seen:
            return None
        self._seen[notice.id] = None
        while len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        try:
            claimed = await self._ledger.claim_notice(notice.kickoff_id, notice.id)
        except LedgerError as exc:  # without the claim a second replica might send it too: skip, say why
            logger.warning("no reviewer notice for %s: the ledger could not record it (%s)", notice.id, exc)
            return None
        if not claimed:
            logger.debug("reviewer notice %s was already sent, or the run no longer waits", notice.id)
        return notice if claimed else None

    async def _deliver(self, http: httpx2.AsyncClient, target: _Target, notice: ReviewNotice) -> None:
        try:
            async for attempt in stamina.retry_context(
                on=_retry, attempts=ATTEMPTS, timeout=None, wait_initial=WAIT_INITIAL, wait_max=WAIT_MAX
            ):
                with attempt:
                    if not await self._still_waiting(notice):
                        logger.info("run %s was decided before its %s notice went out", notice.kickoff_id, target.name)
                        return
                    await self._post(http, target, notice)
        except (httpx2.HTTPError, _Refused) as exc:
            logger.warning("reviewer notice %s to the %s target failed: %s", notice.id, target.name, _why(exc))
        else:
            logger.info("reviewer notice %s delivered to the %s target", notice.id, target.name)

    async def _post(self, http: httpx2.AsyncClient, target: _Target, notice: ReviewNotice) -> None:
        body, headers = target.render(notice, str(int(self._clock.now().timestamp())))
        response = await http.post(target.url, content=body, headers={"Content-Type": "application/json", **headers})
        if response.status_code >= 300:
            raise _Refused(response.status_code, parse_retry_after(response.headers.get("retry-after")))

    async def _still_waiting(self, notice: ReviewNotice) -> bool:
        try:
            record = await self._ledger.get(notice.kickoff_id, owner=None)
        except LedgerError:
            return True  # the claim stands; a ledger hiccup is no reason to withhold the notice
        return record is not None and pause_key(record) == notice.id


def _signed(notice: ReviewNotice, timestamp: str, secret: bytes) -> tuple[bytes, dict[str, str]]:
    body = notice.model_dump_json().encode()
    headers = {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        NOTICE_ID_HEADER: notice.id,
    }
    return body, headers


def _slack(notice: ReviewNotice, _: str) -> tuple[bytes, dict[str, str]]:
    return json.dumps(slack_message(notice), ensure_ascii=False).encode(), {}


def _retry(exc: Exception) -> bool | float:
    """Retry what may pass next time: no answer, a timeout, 429 or 5xx (honouring a capped Retry-After)."""
    if isinstance(exc, _Refused):
        if exc.status != 429 and exc.status < 500:
            return False
        return exc.retry_after if exc.retry_after is not None else True
    return isinstance(exc, httpx2.TransportError)


def _why(exc: Exception) -> str:
    # httpx2's messages can quote the URL, which for Slack is the credential: name the failure only.
    return str(exc) if isinstance(exc, _Refused) else type(exc).__name__


def _esc(text: str) -> str:
    """Slack's escaping of the three control characters of its text formats."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
