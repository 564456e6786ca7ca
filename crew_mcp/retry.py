"""When a failed crew call may be sent again, and how long to wait: the AMP retry-safety rules in one place.

``GET`` calls are safe to repeat: they retry on connection errors, timeouts, 429 and 5xx. ``POST /kickoff``
and ``POST /resume`` start or change paid work: they retry only when the request provably never reached the
service, or the service refused it before acting (429, 503). A ``Retry-After`` is honoured (capped) unless
it would outlast the call's total budget.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import UTC, datetime

import anyio

from .errors import APIConnectionError, APIStatusError

__all__ = ["MAX_RETRY_AFTER", "REFUSED", "parse_retry_after", "retry_hook"]

MAX_RETRY_AFTER = 30.0
"""A ``Retry-After`` above this many seconds is capped."""
REFUSED = frozenset({429, 503})
"""Statuses that mean "refused before acting", so even a POST may be sent again."""


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


def retry_hook(*, safe: bool, deadline: float) -> Callable[[Exception], bool | float]:
    """A stamina ``on=`` hook: retry (True), wait exactly N s (a float), or give up (False).

    Args:
        safe: the call may be repeated after it reached the service (a GET).
        deadline: the call's total budget ends at this ``anyio.current_time()``.
    """

    def hook(exc: Exception) -> bool | float:
        if isinstance(exc, APIStatusError):
            if not (exc.status_code in REFUSED or (safe and exc.status_code >= 500)):
                return False
            wait = exc.retry_after
        elif isinstance(exc, APIConnectionError):
            if not safe and exc.sent:
                return False
            wait = None
        else:
            return False
        if wait is None:
            return True
        # A wait that outlasts the total budget would only turn a clear 429/503 into a timeout.
        return wait if anyio.current_time() + wait < deadline else False

    return hook
