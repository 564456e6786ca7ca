"""Time, injectable: what the poll loops, waits, approval expiry and retention read and sleep on.

:class:`SystemClock` is the real one. :class:`ManualClock` moves only when told (``advance``), so tests of
waits, back-off and expiry run in no wall time and never depend on the machine's speed.
"""

from __future__ import annotations

import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """The time source of a service."""

    def now(self) -> datetime:
        """The current wall time, timezone-aware UTC (stamps, ages, expiry)."""
        ...

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        """A cancel scope that ends its block quietly after ``seconds`` of this clock's time."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        return anyio.move_on_after(seconds)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class ManualClock:
    """A clock that moves only on :meth:`advance`; sleepers and timeouts fire when their time is passed.

    Args:
        start: the initial wall time (default: now).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime.now(UTC)
        self._elapsed = 0.0
        self._order = itertools.count()
        self._due: list[tuple[float, int, anyio.CancelScope]] = []

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        if seconds <= 0:
            scope.cancel()
        else:
            heapq.heappush(self._due, (self._elapsed + seconds, next(self._order), scope))
        return scope

    async def sleep(self, seconds: float) -> None:
        with self.move_on_after(seconds):
            await anyio.sleep_forever()

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing every timeout that falls due, in order, letting each woken task run."""
        target = self._elapsed + seconds
        while self._due and self._due[0][0] <= target:
            when, _, scope = heapq.heappop(self._due)
            self._elapsed = max(self._elapsed, when)
            scope.cancel()
            await _settle()
        self._elapsed = target
        await _settle()


_SETTLE_TURNS = 100
"""Scheduler turns given to the tasks a timeout woke (an in-process poll takes a few dozen)."""


async def _settle() -> None:
    """Let the tasks a timeout woke run until they block again (``anyio.wait_all_tasks_blocked`` would too, but
    it sleeps 0.1 s whenever any task is busy, which a test moving time in small steps pays again and again)."""
    for _ in range(_SETTLE_TURNS):
        await anyio.lowlevel.checkpoint()
