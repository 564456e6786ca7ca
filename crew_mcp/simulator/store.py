"""Where a simulator keeps its runs and its clock: the :class:`Store` interface and the in-memory store.

Every request works on runs through one :class:`Session`, handed to a function by :meth:`Store.transact`. In
memory the function runs inline; the durable store (:mod:`.durable`) runs it in a worker thread inside one
SQLite write transaction, so the functions are plain synchronous code with no I/O, and may run more than once
(a busy file is retried): they change runs only through the session and return what the response needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal, Protocol, TypeVar

from .engine import Execution, Outgoing

__all__ = ["MemoryStore", "Session", "Store"]

T = TypeVar("T")
Clock = Literal["wall", "manual"]


class Session(Protocol):
    """One unit of work on the runs: what it reads, adds and changes is kept together (or not at all)."""

    now: float
    """Simulated seconds at which this unit of work happens."""
    epoch: datetime
    """The wall-clock moment simulated time 0 stands for (timestamps in status bodies)."""

    def get(self, kickoff_id: str) -> Execution | None:
        """The run, caught up to :attr:`now` (its due transitions run, their deliveries emitted), or None; changes
        made to it are kept when the unit of work ends."""

    def add(self, execution: Execution) -> None:
        """Keep a new run."""

    def emit(self, items: Iterable[Outgoing]) -> None:
        """Webhook deliveries the unit of work caused (delivered only if it is kept)."""


class Store(Protocol):
    """The runs and the clock of one simulator."""

    def now(self) -> float:
        """Simulated seconds since the store's epoch."""

    async def ready(self) -> None:
        """Make sure the runs can be reached (a durable store opens its file on first use); cheap once it did.

        Raises:
            SimulatorStateError: the durable store's file cannot be opened or is not a state file.
        """

    async def transact(self, op: Callable[[Session], T]) -> tuple[T, list[Outgoing]]:
        """Run ``op`` as one unit of work; return its result and the deliveries it caused."""

    async def tick(self) -> list[Outgoing]:
        """Run every transition due by now; return the deliveries they caused."""

    async def advance_clock(self, seconds: float) -> None:
        """Move simulated time forward by ``seconds`` (no transition runs here)."""

    def executions(self) -> Mapping[str, Execution]:
        """Every run by kickoff_id, oldest first (a snapshot for a durable store)."""

    def kickoff_ids(self, crew: str) -> list[str]:
        """The runs of ``crew``, oldest first."""

    async def aclose(self) -> None:
        """Release what the store holds."""


class _MemorySession:
    def __init__(self, store: MemoryStore) -> None:
        self.now = store.now()
        self.epoch = store.epoch
        self.outgoing: list[Outgoing] = []
        self._runs = store.runs

    def get(self, kickoff_id: str) -> Execution | None:
        ex = self._runs.get(kickoff_id)
        if ex is not None:
            # Catch up: the clock may have passed this run's next transition since the last tick.
            self.emit(ex.advance(self.now))
        return ex

    def add(self, execution: Execution) -> None:
        self._runs[execution.id] = execution

    def emit(self, items: Iterable[Outgoing]) -> None:
        self.outgoing.extend(items)


class MemoryStore:
    """Runs in a dict, gone with the process (the default).

    ``clock="manual"`` moves only on :meth:`advance_clock`; ``clock="wall"`` follows a monotonic clock too.
    """

    def __init__(self, clock: Clock = "wall") -> None:
        self._clock = clock
        self.runs: dict[str, Execution] = {}
        self.epoch = datetime.now(UTC)
        self._offset = 0.0
        self._t0 = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since the store was created."""
        if self._clock == "manual":
            return self._offset
        return time.monotonic() - self._t0 + self._offset

    async def ready(self) -> None:
        """Always ready."""

    async def transact(self, op: Callable[[Session], T]) -> tuple[T, list[Outgoing]]:
        """Run ``op`` inline: in one event-loop step, so no other request sees it half done."""
        session = _MemorySession(self)
        return op(session), session.outgoing

    async def tick(self) -> list[Outgoing]:
        """Advance every running run to now."""
        now, out = self.now(), []
        for ex in self.runs.values():
            if ex.state == "RUNNING":
                out.extend(ex.advance(now))
        return out

    async def advance_clock(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._offset += seconds

    def executions(self) -> Mapping[str, Execution]:
        """The live dict of runs."""
        return self.runs

    def kickoff_ids(self, crew: str) -> list[str]:
        """The runs of ``crew``, oldest first."""
        return [e.id for e in self.runs.values() if e.crew.name == crew]

    async def aclose(self) -> None:
        """Nothing to release."""
