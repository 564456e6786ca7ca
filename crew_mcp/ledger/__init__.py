"""The run ledger: a persistent map from conversations to the AMP runs they started.

AMP has no "list my executions" endpoint, so a kickoff_id that a model forgets is a run lost. The
ledger keeps every run crew-mcp starts, across chats, restarts and replicas:

1. :meth:`Ledger.create` before ``POST /kickoff`` (state ``unconfirmed``, keyed by the client request id),
   so a crash between the request and its answer still leaves a visible record;
2. :meth:`Ledger.confirm` with the kickoff_id after it (state ``running``), or :meth:`Ledger.mark_failed`;
3. :meth:`Ledger.save_status`, :meth:`Ledger.set_pending` and :meth:`Ledger.add_decision` as the run moves.

Backends are picked by URL with :func:`open_ledger`: ``memory://``, ``sqlite:///abs/path.db`` (the default,
see :func:`default_ledger_url`) and ``redis://host:port/db?prefix=x``. All of them pass one contract test
suite, and every backend failure surfaces as :class:`~crew_mcp.errors.LedgerError`.

The pure ``apply_*`` helpers below hold the semantics of each update, so the backends only differ in how
they read and write a record atomically.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import anyio
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from crew_mcp.errors import LedgerError
from crew_mcp.models import ExecutionState, ExecutionStatus, PendingHumanInput, WebhookUrls

__all__ = [
    "Decision",
    "Ledger",
    "RecordState",
    "RunRecord",
    "default_ledger_url",
    "open_ledger",
    "run_retention",
    "utcnow",
]

logger = logging.getLogger(__name__)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UTCDateTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalized to UTC (naive datetimes are refused)."""


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class RecordState(StrEnum):
    """A record's state: every :class:`~crew_mcp.models.ExecutionState` plus the two kickoff-time states."""

    UNCONFIRMED = "unconfirmed"
    KICKOFF_FAILED = "kickoff_failed"
    RUNNING = "running"
    WAITING_FOR_HUMAN = "waiting_for_human"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


class Decision(BaseModel):
    """One answer to a human-input request: who approved or rejected which task, how and when."""

    task_id: str
    approve: bool
    feedback: str
    by: Literal["model", "human", "system"] = Field(description='"system": crew-mcp itself (approval expiry)')
    via: str = Field(description='"tool", "elicitation", "cli" or "expiry"')
    actor: str
    at: UTCDateTime = Field(default_factory=utcnow)


class RunRecord(BaseModel):
    """Everything the ledger knows about one run.

    ``request_id`` is the client's id (the key before AMP answers); ``kickoff_id`` is None until confirmed.
    ``inputs`` is ``{}`` when the configuration keeps only ``input_names``.
    """

    request_id: str
    kickoff_id: str | None = None
    crew: str
    conversation_id: str
    owner: str
    inputs: dict[str, str] = Field(default_factory=dict)
    input_names: builtins.list[str] = Field(default_factory=builtins.list)
    meta: dict[str, Any] = Field(default_factory=dict)
    webhooks: WebhookUrls | None = None
    webhook_secret: str | None = None
    created_at: UTCDateTime = Field(default_factory=utcnow)
    updated_at: UTCDateTime = Field(default_factory=utcnow)
    state: RecordState = RecordState.UNCONFIRMED
    status: ExecutionStatus | None = None
    status_fetched_at: UTCDateTime | None = None
    pending: PendingHumanInput | None = None
    decisions: builtins.list[Decision] = Field(default_factory=builtins.list)
    error: str | None = None


@runtime_checkable
class Ledger(Protocol):
    """The storage interface every backend implements (see the module docstring for the write order).

    Methods keyed by ``kickoff_id`` return None for an unknown kickoff_id. Methods keyed by ``request_id``
    raise :class:`LedgerError` for an unknown one. Every backend failure raises :class:`LedgerError`.
    """

    async def create(self, record: RunRecord) -> None:
        """Store a new record (before ``POST /kickoff``); a duplicate request_id raises LedgerError."""
        ...

    async def confirm(self, request_id: str, kickoff_id: str) -> RunRecord:
        """Attach the kickoff_id AMP returned and move the record to ``running``."""
        ...

    async def mark_failed(self, request_id: str, error: str) -> None:
        """Record that the kickoff itself failed (state ``kickoff_failed``)."""
        ...

    async def get(self, kickoff_id: str, *, owner: str | None) -> RunRecord | None:
        """The record of a run, or None; a record is visible only to its owner (None owner: internal access)."""
        ...

    async def save_status(self, kickoff_id: str, status: ExecutionStatus) -> RunRecord | None:
        """Store the last fetched status; state and pending follow it."""
        ...

    async def set_pending(self, kickoff_id: str, pending: PendingHumanInput | None) -> RunRecord | None:
        """Set (or clear, with None) the human input the run waits for."""
        ...

    async def add_decision(self, kickoff_id: str, decision: Decision) -> RunRecord | None:
        """Append a resume decision and clear the pending human input."""
        ...

    async def list(
        self,
        *,
        owner: str,
        conversation_id: str | None = None,
        crew: str | None = None,
        state: str | None = None,
        limit: int = 20,
    ) -> builtins.list[RunRecord]:
        """The owner's records, newest first (by ``created_at``), filtered."""
        ...

    async def latest(self, *, owner: str, conversation_id: str) -> RunRecord | None:
        """The newest record of one conversation."""
        ...

    async def pending_approvals(self, *, owner: str) -> builtins.list[RunRecord]:
        """Records waiting for a human decision (state ``waiting_for_human`` with a pending task), newest first."""
        ...

    async def prune(self, *, max_age: timedelta, max_count: int) -> int:
        """Delete records not updated within ``max_age`` and all but the newest ``max_count``; return how many."""
        ...

    async def aclose(self) -> None:
        """Release connections; the ledger is unusable afterwards."""
        ...


# ------------------------------------------------------------------------------------- update semantics


class KickoffUpdates:
    """The per-execution updates every backend shares; a backend supplies one read-modify-write primitive."""

    async def _update_kickoff(self, kickoff_id: str, change: Callable[[RunRecord], RunRecord]) -> RunRecord | None:
        raise NotImplementedError

    async def save_status(self, kickoff_id: str, status: ExecutionStatus) -> RunRecord | None:
        """Store the last fetched status (see :func:`apply_status`)."""
        return await self._update_kickoff(kickoff_id, lambda r: apply_status(r, status, utcnow()))

    async def set_pending(self, kickoff_id: str, pending: PendingHumanInput | None) -> RunRecord | None:
        """Set or clear the pending human input."""
        return await self._update_kickoff(kickoff_id, lambda r: apply_pending(r, pending, utcnow()))

    async def add_decision(self, kickoff_id: str, decision: Decision) -> RunRecord | None:
        """Append a decision and clear the pending human input."""
        return await self._update_kickoff(kickoff_id, lambda r: apply_decision(r, decision, utcnow()))


def apply_confirm(record: RunRecord, kickoff_id: str, now: datetime) -> RunRecord:
    """The record confirmed with ``kickoff_id``; confirming again with the same id changes nothing.

    Raises:
        LedgerError: the record is already confirmed with another kickoff_id.
    """
    if record.kickoff_id == kickoff_id:
        return record
    if record.kickoff_id is not None:
        raise LedgerError(
            f"Run request {record.request_id!r} is already confirmed as kickoff {record.kickoff_id!r}, "
            f"not {kickoff_id!r}."
        )
    return record.model_copy(
        update={"kickoff_id": kickoff_id, "state": RecordState.RUNNING, "error": None, "updated_at": now}
    )


def apply_failed(record: RunRecord, error: str, now: datetime) -> RunRecord:
    """The record marked ``kickoff_failed`` with ``error``."""
    return record.model_copy(update={"state": RecordState.KICKOFF_FAILED, "error": error, "updated_at": now})


def apply_status(record: RunRecord, status: ExecutionStatus, now: datetime) -> RunRecord:
    """The record with a freshly fetched status: state follows it, pending is kept only while waiting.

    A pending task that was already known keeps its ``since``; a new one gets ``now`` when it has none.
    """
    pending = record.pending
    state = RecordState(status.state.value)
    if _webhook_pause_holds(record, status):
        # ``record.status`` is the status API's own last word: when it never reported this pause (documented
        # shape), the pause came from a webhook and "running" does not end it; a decision or a final state does.
        state = RecordState.WAITING_FOR_HUMAN
    elif status.state is ExecutionState.WAITING_FOR_HUMAN:
        if status.pending is not None:
            pending = _stamped(status.pending, record.pending, now)
    else:
        pending = None
    return record.model_copy(
        update={"status": status, "status_fetched_at": now, "state": state, "pending": pending, "updated_at": now}
    )


def _webhook_pause_holds(record: RunRecord, status: ExecutionStatus) -> bool:
    api_reported_pause = record.status is not None and record.status.state is ExecutionState.WAITING_FOR_HUMAN
    return (
        status.state is ExecutionState.RUNNING
        and record.pending is not None
        and record.state is RecordState.WAITING_FOR_HUMAN
        and not api_reported_pause
    )


def apply_pending(record: RunRecord, pending: PendingHumanInput | None, now: datetime) -> RunRecord:
    """The record with ``pending`` set; a pending task on a run that has not finished makes it ``waiting_for_human``."""
    update: dict[str, Any] = {"pending": None, "updated_at": now}
    if pending is not None:
        update["pending"] = _stamped(pending, record.pending, now)
        if record.state not in _FINAL_STATES:
            update["state"] = RecordState.WAITING_FOR_HUMAN
    return record.model_copy(update=update)


def apply_decision(record: RunRecord, decision: Decision, now: datetime) -> RunRecord:
    """The record with ``decision`` appended and the pending human input cleared.

    A run that was waiting for that decision goes back to ``running``: the crew acts on it next.
    """
    update: dict[str, Any] = {"decisions": [*record.decisions, decision], "pending": None, "updated_at": now}
    if record.state is RecordState.WAITING_FOR_HUMAN:
        update["state"] = RecordState.RUNNING
    return record.model_copy(update=update)


def is_pending_approval(record: RunRecord) -> bool:
    """True when the run waits for a human decision that has not been given yet."""
    return record.state is RecordState.WAITING_FOR_HUMAN and record.pending is not None


def matches(record: RunRecord, *, owner: str, conversation_id: str | None, crew: str | None, state: str | None) -> bool:
    """True when ``record`` passes the :meth:`Ledger.list` filters."""
    return (
        record.owner == owner
        and (conversation_id is None or record.conversation_id == conversation_id)
        and (crew is None or record.crew == crew)
        and (state is None or record.state.value == str(state))
    )


def newest_first_key(record: RunRecord) -> tuple[datetime, str]:
    """The sort key of listings (newest first when reversed); request_id breaks ties the same way everywhere."""
    return record.created_at, record.request_id


def check_prune_args(max_age: timedelta, max_count: int) -> None:
    """Refuse nonsensical retention settings.

    Raises:
        ValueError: ``max_age`` is negative or ``max_count`` is below zero.
    """
    if max_age < timedelta(0) or max_count < 0:
        raise ValueError(f"prune needs max_age >= 0 and max_count >= 0, got {max_age} and {max_count}")


def micros(value: datetime) -> int:
    """Microseconds since the epoch: an exact, orderable integer for indexes and sorted-set scores."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FINAL_STATES = frozenset(
    {RecordState.COMPLETED, RecordState.FAILED, RecordState.CANCELLED, RecordState.KICKOFF_FAILED}
)


def _stamped(pending: PendingHumanInput, previous: PendingHumanInput | None, now: datetime) -> PendingHumanInput:
    if pending.since is not None:
        return pending
    since = previous.since if previous is not None and previous.task_id == pending.task_id else None
    return pending.model_copy(update={"since": since or now})


# -------------------------------------------------------------------------------------------- opening


def default_ledger_url() -> str:
    """The default ledger: a SQLite file ``ledger.db`` in the user's data directory for crew-mcp."""
    import platformdirs

    return "sqlite:///" + str(Path(platformdirs.user_data_dir("crew-mcp")) / "ledger.db").lstrip("/")


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:`` URL names.

    ``sqlite:///abs/path.db`` (and ``sqlite:////abs/path.db``) is absolute, ``sqlite:///~/x.db`` is in the
    home directory, and ``sqlite:///./x.db``, ``sqlite://x.db`` or ``sqlite:x.db`` are relative to the
    working directory.

    Raises:
        LedgerError: the URL names no file.
    """
    rest = url.split("?", 1)[0].removeprefix("sqlite:").removeprefix("//")
    if rest.startswith(("/~", "/./", "/../")):
        rest = rest[1:]
    elif rest.startswith("//"):
        rest = "/" + rest.lstrip("/")
    if rest in ("", "/"):
        raise LedgerError(f"The ledger URL {url!r} names no file; use sqlite:///absolute/path/ledger.db.")
    return Path(rest).expanduser()


def open_ledger(url: str) -> Ledger:
    """Open the ledger a URL names: ``memory://``, ``sqlite:///path.db`` or ``redis://host:port/db?prefix=x``.

    Nothing is connected yet: the SQLite file is opened (and migrated) and Redis is contacted on first use,
    in a worker thread or asynchronously, so opening never blocks an event loop. Close it with ``aclose()``.

    Raises:
        LedgerError: the URL's scheme is not one of the three.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        from crew_mcp.ledger.memory import MemoryLedger

        return MemoryLedger()
    if scheme == "sqlite":
        from crew_mcp.ledger.sqlite import SqliteLedger

        return SqliteLedger(sqlite_path(url))
    if scheme in ("redis", "rediss", "unix"):
        from crew_mcp.ledger.redis import RedisLedger

        return RedisLedger.from_url(url)
    shown = url.split("://", 1)[0] + "://…" if "://" in url else "(no scheme)"
    raise LedgerError(
        f"Unsupported ledger URL {shown}: use memory://, sqlite:///path/ledger.db or redis://host:6379/0."
    )


async def run_retention(ledger: Ledger, *, interval: float, max_age: timedelta, max_count: int) -> None:
    """Prune ``ledger`` now and then every ``interval`` seconds, forever (cancel it to stop).

    Meant for the server's task group: each prune runs in the backend's own worker thread or connection, so
    tool calls never wait for it, and a failure is logged and retried at the next interval, never raised.
    """
    check_prune_args(max_age, max_count)
    while True:
        try:
            removed = await ledger.prune(max_age=max_age, max_count=max_count)
        except Exception:
            logger.exception("Ledger retention failed; retrying in %s s", interval)
        else:
            if removed:
                logger.info("Ledger retention removed %d run record(s)", removed)
        await anyio.sleep(interval)
