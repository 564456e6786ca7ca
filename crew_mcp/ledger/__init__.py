"""The run ledger: a persistent map from conversations to the AMP runs they started.

AMP has no "list my executions" endpoint, so a kickoff_id that a model forgets is a run lost. The
ledger keeps every run crew-mcp starts, across chats, restarts and replicas:

1. :meth:`Ledger.create` before ``POST /kickoff`` (state ``unconfirmed``, keyed by the client request id),
   so a crash between the request and its answer still leaves a visible record;
2. :meth:`Ledger.confirm` with the kickoff_id after it (state ``running``), or :meth:`Ledger.mark_failed`;
3. :meth:`Ledger.save_status`, :meth:`Ledger.set_pending` and :meth:`Ledger.add_decision` as the run moves.

Backends are picked by URL with :func:`open_ledger`: ``memory://``, ``sqlite:///abs/path.db`` (the default,
see :func:`default_ledger_url`) and ``redis://host:port/db?prefix=x``. All of them pass one contract test
suite, and every backend failure surfaces as :class:`~crew_mcp.errors.LedgerError`. The records and the
rules of each update are in :mod:`crew_mcp.ledger.records`; the interface in :mod:`crew_mcp.ledger.base`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from crew_mcp.errors import LedgerError
from crew_mcp.ledger.base import Ledger, LedgerBase
from crew_mcp.ledger.records import Decision, RecordState, RunRecord, Stop, check_prune_args, pause_key, utcnow

if TYPE_CHECKING:
    from crew_mcp.clock import Clock

__all__ = [
    "Decision",
    "Ledger",
    "LedgerBase",
    "RecordState",
    "RunRecord",
    "Stop",
    "default_ledger_url",
    "open_ledger",
    "pause_key",
    "run_retention",
    "sqlite_path",
    "utcnow",
]

logger = logging.getLogger(__name__)


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


async def run_retention(ledger: Ledger, clock: Clock, *, interval: float, max_age: timedelta, max_count: int) -> None:
    """Prune ``ledger`` now and then every ``interval`` seconds of ``clock``, forever (cancel it to stop).

    Meant for the server's task group: each prune runs in the backend's own worker thread or connection, so
    tool calls never wait for it, and a failure is logged and retried at the next interval, never raised.
    """
    check_prune_args(max_age, max_count)
    while True:
        try:
            removed = await ledger.prune(max_age=max_age, max_count=max_count, now=clock.now())
        except Exception:
            logger.exception("Ledger retention failed; retrying in %s s", interval)
        else:
            if removed:
                logger.info("Ledger retention removed %d run record(s)", removed)
        await clock.sleep(interval)
