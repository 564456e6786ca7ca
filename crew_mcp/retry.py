"""When a failed crew call may be sent again, and how long to wait: the AMP retry-safety rules in one place.

``GET`` calls are safe to repeat: they retry on connection errors, timeouts, 429 and 5xx. ``POST /kickoff``,
``/resume`` and ``/stop`` start or change paid work: they are sent again **only when the request provably never
left crew-mcp** (the connection was refused, the name did not resolve, the connect or pool timeout ran out).
A 429 or a 503 proves nothing: a gateway may answer so after it forwarded the request, so the work may have
started. :func:`may_have_acted` says, for a failed POST, whether the crew may have acted on it.
A ``Retry-After`` is honoured (capped) unless it would outlast the call's total budget.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import UTC, datetime

import anyio

from .errors import APIConnectionError, APIStatusError, CrewAPIError

__all__ = ["MAX_RETRY_AFTER", "RETRYABLE_READ", "may_have_acted", "parse_retry_after", "retry_hook"]

MAX_RETRY_AFTER = 30.0
"""A ``Retry-After`` above this many seconds is capped."""
RETRYABLE_READ = frozenset({408, 429})
"""Client-error statuses after which a read (never a POST) is tried again, besides every 5xx."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), capped at :data:`MAX_RETRY_AFTER`."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def may_have_acted(exc: CrewAPIError) -> bool:
    """True unless a failed POST provably left the crew untouched.

    It did not act when the request never left (``sent=False``), or when the crew itself refused it with a client
    error (400, 401, 403, 404, 409, 422, ...). Anything else may have started the work: 408, 429 and every 5xx
    (a gateway may answer them after forwarding), a timeout or a broken connection after sending, and a 2xx
    whose body could not be read.
    """
    if isinstance(exc, APIConnectionError):
        return exc.sent
    if isinstance(exc, APIStatusError):
        return not (400 <= exc.status_code < 500 and exc.status_code not in RETRYABLE_READ)
    return True


def retry_hook(*, safe: bool, deadline: float) -> Callable[[Exception], bool | float]:
    """A stamina ``on=`` hook: retry (True), wait exactly N s (a float), or give up (False).

    Args:
        safe: the call may be repeated after it reached the service (a GET).
        deadline: the call's total budget ends at this ``anyio.current_time()``.
    """

    def hook(exc: Exception) -> bool | float:
        if isinstance(exc, APIConnectionError):
            # A POST goes again only when it provably never left; a read whenever the connection failed.
            return safe or not exc.sent
        if not (safe and isinstance(exc, APIStatusError)):
            return False
        if not (exc.status_code in RETRYABLE_READ or exc.status_code >= 500):
            return False
        wait = exc.retry_after
        if wait is None:
            return True
        # A wait that outlasts the total budget would only turn a clear 429/503 into a timeout.
        return wait if anyio.current_time() + wait < deadline else False

    return hook
