"""Per-principal limits: kickoffs per minute (a token bucket) and concurrent waits (a counter).

Pure bookkeeping with an injectable clock, no sleeping and no I/O, so the HTTP app and the tools can ask
"may this principal do it now, and if not, in how many seconds?" and answer with ``Retry-After``. The state
lives in one process: with several replicas each enforces its own share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import LimitsConfig

__all__ = ["Decision", "Limiter"]

_MAX_TRACKED = 10_000
"""Buckets tracked before full (idle) ones are forgotten: a forgotten full bucket is the same as a new one."""


@dataclass(frozen=True)
class Decision:
    """The answer to one request: allowed, or refused with the seconds to wait (None: when a slot frees)."""

    allowed: bool
    retry_after: float | None = None

    @property
    def retry_after_header(self) -> str | None:
        """``Retry-After`` as whole seconds (RFC 9110 wants an integer), rounded up so a retry then succeeds."""
        return None if self.retry_after is None else str(max(1, math.ceil(self.retry_after)))


class Limiter:
    """Kickoff rate and concurrent waits per principal (the ``[auth.limits]`` table)."""

    def __init__(self, config: LimitsConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # principal -> (tokens, at)
        self._waits: dict[str, int] = {}

    def kickoff(self, principal: str) -> Decision:
        """Take one kickoff from ``principal``'s bucket, or say how long until one is there.

        The bucket holds ``kickoffs_per_minute`` (the burst) and refills at that rate spread over the minute.
        """
        per_minute = self._config.kickoffs_per_minute
        if per_minute is None:
            return Decision(True)
        rate = per_minute / 60.0
        capacity = max(per_minute, 1.0)
        now = self._clock()
        tokens, at = self._buckets.get(principal, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._buckets[principal] = (tokens - 1.0, now)
            self._forget_idle(now, rate, capacity)
            return Decision(True)
        self._buckets[principal] = (tokens, now)
        return Decision(False, (1.0 - tokens) / rate)

    def acquire_wait(self, principal: str) -> Decision:
        """Hold one of ``principal``'s wait slots; release it with :meth:`release_wait` when the wait ends.

        A refusal carries no time: a slot frees when one of the caller's own waits ends.
        """
        limit = self._config.concurrent_waits
        held = self._waits.get(principal, 0)
        if limit is not None and held >= limit:
            return Decision(False)
        self._waits[principal] = held + 1
        return Decision(True)

    def release_wait(self, principal: str) -> None:
        """Give back a slot taken by a successful :meth:`acquire_wait`."""
        held = self._waits.get(principal, 0) - 1
        if held > 0:
            self._waits[principal] = held
        else:
            self._waits.pop(principal, None)

    def waits(self, principal: str) -> int:
        """How many waits ``principal`` holds now."""
        return self._waits.get(principal, 0)

    def _forget_idle(self, now: float, rate: float, capacity: float) -> None:
        if len(self._buckets) <= _MAX_TRACKED:
            return
        self._buckets = {p: (t, a) for p, (t, a) in self._buckets.items() if t + (now - a) * rate < capacity}
