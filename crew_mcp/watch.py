"""Shared status watching: one upstream poll loop per execution, however many callers wait on it.

A call that waits (``kickoff_crew``/``get_status`` with ``wait_seconds``) joins the execution's watch,
bringing the ledger record it already holds. The first waiter starts a poll loop in the hub's task group;
later waiters, from the same client or others, read the same observations. The loop polls fast at first
and slower later (capped), wakes early when a webhook pushes news, and ends when nobody waits any more or
the run stops needing polling (finished, failed, cancelled, not found, or paused for a human). Watchers
therefore never multiply upstream requests, and a poll hands its record to the next one, so polling reads
the ledger only through the writes that a change makes.

Across replicas (docs/fleet.md), a loop polls only while it holds the execution's lease (``leases``); without
it the loop follows: its waiters start from the record in hand (``follow``) and hear the holder's findings
through the fan-out, which calls :meth:`StatusHub.push`. :meth:`StatusHub.drain` ends every wait at once
(graceful shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from .clock import Clock, SystemClock
from .errors import CrewMCPError
from .fleet.leases import Leases
from .ledger import RunRecord
from .models import ExecutionState, ExecutionStatus

__all__ = ["POLL_FACTOR", "POLL_INITIAL", "POLL_MAX", "Observation", "StatusHub", "settled"]

logger = logging.getLogger(__name__)

POLL_INITIAL = 0.5
POLL_FACTOR = 1.5
POLL_MAX = 5.0

_SETTLED = frozenset({ExecutionState.WAITING_FOR_HUMAN, ExecutionState.NOT_FOUND})


@dataclass(frozen=True)
class Observation:
    """What one look at a run found: the status to show and the ledger record after saving what changed."""

    status: ExecutionStatus
    record: RunRecord


Poll = Callable[[RunRecord], Awaitable[Observation]]
Follow = Callable[[RunRecord], Observation]
OnUpdate = Callable[[ExecutionStatus], Awaitable[None]]


def settled(status: ExecutionStatus) -> bool:
    """True when waiting longer cannot change the answer without someone acting."""
    return status.terminal or status.state in _SETTLED


@dataclass
class _Watch:
    record: RunRecord
    waiters: int = 0
    latest: Observation | None = None
    error: CrewMCPError | None = None
    version: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)
    poke: anyio.Event = field(default_factory=anyio.Event)
    done: bool = False

    def publish(self, observation: Observation | None, error: CrewMCPError | None = None) -> None:
        if observation is not None and error is None and self.error is None and _same(self.latest, observation):
            return  # already handed out (the fan-out delivered it before the poll that found it returned)
        if observation is not None:
            self.latest = observation
            self.record = observation.record
        self.error = error
        self.version += 1
        event, self.changed = self.changed, anyio.Event()
        event.set()


class StatusHub:
    """Runs shared poll loops. Enter it (``async with hub:``) to give it a task group.

    Args:
        poll: one look at a run, given the record in hand.
        clock: the time the intervals and the waits are measured in.
    """

    def __init__(
        self,
        poll: Poll,
        clock: Clock | None = None,
        *,
        initial: float = POLL_INITIAL,
        factor: float = POLL_FACTOR,
        max_interval: float = POLL_MAX,
        leases: Leases | None = None,
        follow: Follow | None = None,
    ) -> None:
        self._poll = poll
        self._clock = clock or SystemClock()
        self._initial = initial
        self._factor = factor
        self._max = max_interval
        self._watches: dict[str, _Watch] = {}
        self._tg: TaskGroup | None = None
        # fleet hooks (crew_mcp/fleet): poll only under the execution's lease; followers start from the record
        self._leases = leases
        self._follow = follow
        self._draining = False
        self._idle = anyio.Event()

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

    @property
    def waiting(self) -> int:
        """How many callers wait right now (on all executions)."""
        return sum(w.waiters for w in self._watches.values())

    def push(self, kickoff_id: str, observation: Observation | None = None, *, poke: bool = True) -> None:
        """News from outside (a webhook, a decision, another replica's poll): hand waiters ``observation`` now,
        and (``poke``) make the loop poll."""
        watch = self._watches.get(kickoff_id)
        if watch is None:
            return
        if observation is not None:
            watch.publish(observation)
        if poke:
            watch.poke.set()

    async def drain(self) -> None:
        """End every wait now with what it has seen, stop polling, and return once every loop has released its
        lease (graceful shutdown). Waits that start afterwards return at once."""
        self._draining = True
        self._idle = anyio.Event()
        for watch in list(self._watches.values()):
            watch.done = True
            watch.publish(None, watch.error)
            watch.poke.set()
        if self._watches:
            await self._idle.wait()

    async def wait(self, record: RunRecord, *, timeout: float, on_update: OnUpdate | None = None) -> Observation | None:
        """Wait until the run of ``record`` settles or ``timeout`` seconds pass; return the newest observation.

        ``on_update`` is awaited for each new observation. Cancelling the caller stops its wait at once; the
        shared loop stops too when it was the last waiter.

        Raises:
            CrewMCPError: the upstream failed on the first poll and nothing was ever observed.
        """
        assert record.kickoff_id is not None
        if self._draining:
            return None
        watch = self._watches.get(record.kickoff_id)
        if watch is None:
            if self._tg is None:
                raise RuntimeError("StatusHub used outside 'async with'")
            watch = self._watches[record.kickoff_id] = _Watch(record)
            self._tg.start_soon(self._loop, record.kickoff_id, watch)
        watch.waiters += 1
        seen = 0
        try:
            with self._clock.move_on_after(timeout):
                while True:
                    if watch.version > seen:
                        seen = watch.version
                        if watch.error is not None and watch.latest is None:
                            raise watch.error
                        if watch.latest is not None and watch.error is None:
                            await _report(on_update, watch.latest.status)
                            if settled(watch.latest.status):
                                break
                    if watch.done:
                        break
                    await watch.changed.wait()
            return watch.latest
        finally:
            watch.waiters -= 1
            if watch.waiters == 0:
                watch.poke.set()

    async def _loop(self, kickoff_id: str, watch: _Watch) -> None:
        interval = self._initial
        holding = False
        try:
            while watch.waiters > 0 and not self._draining:
                # Armed before the read, so a push (or the last waiter leaving) during the read is not lost.
                watch.poke = anyio.Event()
                holding = self._leases is None or await self._leases.acquire(kickoff_id)
                if holding:
                    try:
                        observation = await self._poll(watch.record)
                    except CrewMCPError as exc:
                        logger.warning("polling %s failed: %s", kickoff_id, exc)
                        watch.publish(None, exc)
                    except Exception as exc:  # a bug must fail this watch, never the hub (it lives in the lifespan)
                        logger.exception("polling %s failed unexpectedly", kickoff_id)
                        watch.publish(None, CrewMCPError(f"reading the run's status failed unexpectedly ({exc})"))
                        break
                    else:
                        watch.publish(observation)
                        if settled(observation.status):
                            break
                elif watch.latest is None and self._follow is not None:
                    watch.publish(self._follow(watch.record))  # another replica polls; its news comes by push
                await self._pause(kickoff_id, watch, interval, holding)
                interval = min(interval * self._factor, self._max)
        finally:
            watch.done = True
            self._watches.pop(kickoff_id, None)
            watch.publish(None, watch.error)
            if holding and self._leases is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await self._leases.release(kickoff_id)
            if not self._watches:
                self._idle.set()

    async def _pause(self, kickoff_id: str, watch: _Watch, interval: float, holding: bool) -> None:
        """Wait ``interval`` or until poked; a lease holder renews its lease at least thrice per lease period."""
        leases = self._leases
        step = leases.seconds / 3 if holding and leases is not None and leases.shared else interval
        remaining = interval
        while True:
            with self._clock.move_on_after(min(step, remaining)):
                await watch.poke.wait()
            remaining -= step
            if remaining <= 0 or watch.poke.is_set() or leases is None:
                return
            await leases.acquire(kickoff_id)


def _same(a: Observation | None, b: Observation) -> bool:
    return a is not None and (a is b or (a.status == b.status and a.record == b.record))


async def _report(on_update: OnUpdate | None, status: ExecutionStatus) -> None:
    if on_update is None:
        return
    try:
        await on_update(status)
    except Exception:  # progress is best-effort: a gone client must not fail the wait
        logger.debug("progress callback failed", exc_info=True)
