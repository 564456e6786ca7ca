"""Shared status watching: one upstream poll loop per execution, however many callers wait on it.

A call that waits (``kickoff_crew``/``get_status`` with ``wait_seconds``) joins the execution's watch.
The first waiter starts a poll loop in the hub's task group; later waiters, from the same client or
others, read the same updates. The loop polls fast at first and slower later (capped), wakes early when
a webhook pushes news, and ends when nobody waits any more or the run stops needing polling (finished,
failed, cancelled, unknown, or paused for a human). Watchers therefore never multiply upstream requests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from .errors import CrewMCPError
from .models import ExecutionState, ExecutionStatus

__all__ = ["POLL_FACTOR", "POLL_INITIAL", "POLL_MAX", "StatusHub", "settled"]

log = logging.getLogger("crew_mcp.watch")

POLL_INITIAL = 0.5
POLL_FACTOR = 1.5
POLL_MAX = 5.0

Fetch = Callable[[str, str], Awaitable[ExecutionStatus]]
OnUpdate = Callable[[ExecutionStatus], Awaitable[None]]

_SETTLED = frozenset({ExecutionState.WAITING_FOR_HUMAN, ExecutionState.NOT_FOUND})


def settled(status: ExecutionStatus) -> bool:
    """True when waiting longer cannot change the answer without someone acting."""
    return status.terminal or status.state in _SETTLED


@dataclass
class _Watch:
    waiters: int = 0
    latest: ExecutionStatus | None = None
    error: CrewMCPError | None = None
    version: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)
    poke: anyio.Event = field(default_factory=anyio.Event)
    done: bool = False

    def publish(self, status: ExecutionStatus | None, error: CrewMCPError | None = None) -> None:
        if status is not None:
            self.latest = status
        self.error = error
        self.version += 1
        event, self.changed = self.changed, anyio.Event()
        event.set()


class StatusHub:
    """Runs shared poll loops. Enter it (``async with hub:``) to give it a task group."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        initial: float = POLL_INITIAL,
        factor: float = POLL_FACTOR,
        max_interval: float = POLL_MAX,
    ) -> None:
        self._fetch = fetch
        self._initial = initial
        self._factor = factor
        self._max = max_interval
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> StatusHub:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None

    @property
    def active(self) -> int:
        """How many executions are being polled right now."""
        return len(self._watches)

    def push(self, crew: str, kickoff_id: str, status: ExecutionStatus | None = None) -> None:
        """News from outside (a webhook): hand waiters ``status`` now, or make the loop poll at once."""
        watch = self._watches.get((crew, kickoff_id))
        if watch is None:
            return
        if status is not None:
            watch.publish(status)
        watch.poke.set()

    async def wait(
        self, crew: str, kickoff_id: str, *, timeout: float, on_update: OnUpdate | None = None
    ) -> ExecutionStatus | None:
        """Wait until the run settles or ``timeout`` seconds pass; return the newest status seen.

        ``on_update`` is awaited for each new status. Cancelling the caller stops its wait at once; the
        shared loop stops too when it was the last waiter.

        Raises:
            CrewMCPError: the upstream failed on the first poll and no status was ever seen.
        """
        key = (crew, kickoff_id)
        watch = self._watches.get(key)
        if watch is None:
            if self._tg is None:
                raise RuntimeError("StatusHub used outside 'async with'")
            watch = self._watches[key] = _Watch()
            self._tg.start_soon(self._loop, key, watch)
        watch.waiters += 1
        seen = 0
        try:
            with anyio.move_on_after(timeout):
                while True:
                    if watch.version > seen:
                        seen = watch.version
                        if watch.error is not None and watch.latest is None:
                            raise watch.error
                        if watch.latest is not None and watch.error is None:
                            if on_update is not None:
                                try:
                                    await on_update(watch.latest)
                                except Exception:  # progress is best-effort: a gone client must not fail the wait
                                    log.debug("progress callback failed", exc_info=True)
                            if settled(watch.latest):
                                break
                    if watch.done:
                        break
                    await watch.changed.wait()
            return watch.latest
        finally:
            watch.waiters -= 1
            if watch.waiters == 0:
                watch.poke.set()

    async def _loop(self, key: tuple[str, str], watch: _Watch) -> None:
        interval = self._initial
        try:
            while watch.waiters > 0:
                # Armed before the read, so a push (or the last waiter leaving) during the read is not lost.
                watch.poke = anyio.Event()
                try:
                    status = await self._fetch(*key)
                except CrewMCPError as exc:
                    log.warning("polling %s/%s failed: %s", key[0], key[1], exc)
                    watch.publish(None, exc)
                except Exception as exc:  # a bug must fail this watch, never the hub (it lives in the server lifespan)
                    log.exception("polling %s/%s failed unexpectedly", key[0], key[1])
                    watch.publish(None, CrewMCPError(f"reading the run's status failed unexpectedly ({exc})"))
                    break
                else:
                    watch.publish(status)
                    if settled(status):
                        break
                with anyio.move_on_after(interval):
                    await watch.poke.wait()
                interval = min(interval * self._factor, self._max)
        finally:
            watch.done = True
            self._watches.pop(key, None)
            watch.publish(None, watch.error)
