"""Per-crew fault injection: one-shot failures, drops and delays, plus a standing latency."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FaultRequest", "Faults", "Shot", "SimulatedDrop"]


class SimulatedDrop(httpx2.RemoteProtocolError):
    """Raised inside the app (in-process only) so an ``httpx2.ASGITransport`` client sees a dropped connection."""


@dataclass(frozen=True)
class Shot:
    """One queued fault, consumed by the next request to its crew."""

    kind: Literal["fail", "drop", "delay"]
    after_processing: bool = False
    status: int = 500
    retry_after: float | None = None
    body: dict[str, Any] | None = None
    seconds: float = 0.0


class Faults:
    """The faults of one crew. Queued one-shot faults hit the next requests in the order they were added."""

    def __init__(self) -> None:
        self.queue: deque[Shot] = deque()
        self.extra_latency = 0.0

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
        *,
        after_processing: bool = False,
    ) -> Faults:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After`` when given).

        With ``after_processing=True`` the request is handled first (a kickoff IS created) and only the
        response is replaced, which is what a client must never retry after.
        """
        self.queue.extend([Shot("fail", after_processing, status, retry_after, body)] * n)
        return self

    def drop_next(self, n: int = 1, *, after_processing: bool = False) -> Faults:
        """Close the connection of the next ``n`` requests without a complete response."""
        self.queue.extend([Shot("drop", after_processing)] * n)
        return self

    def delay_next(self, n: int = 1, seconds: float = 60.0, *, after_processing: bool = True) -> Faults:
        """Hold the response of the next ``n`` requests for ``seconds`` (real time), by default after handling.

        Used to outlast a client's read timeout; the wait ends early when the simulator shuts down.
        """
        self.queue.extend([Shot("delay", after_processing, seconds=seconds)] * n)
        return self

    def latency(self, seconds: float) -> Faults:
        """Add ``seconds`` of real time to every response of this crew (0 turns it off)."""
        self.extra_latency = max(0.0, seconds)
        return self

    def clear(self) -> Faults:
        """Forget every queued fault and the latency."""
        self.queue.clear()
        self.extra_latency = 0.0
        return self

    def pop(self) -> Shot | None:
        """The fault for the request being handled, if any."""
        return self.queue.popleft() if self.queue else None


class FaultRequest(BaseModel):
    """Body of ``POST /_sim/faults/{crew}``; every part is optional and applied in the order listed."""

    model_config = ConfigDict(extra="forbid")

    clear: bool = False
    fail_next: int = Field(default=0, ge=0)
    status: int = Field(default=500, ge=100, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    body: dict[str, Any] | None = None
    after_processing: bool | None = None
    drop_next: int = Field(default=0, ge=0)
    delay_next: int = Field(default=0, ge=0)
    seconds: float = Field(default=60.0, ge=0)
    latency: float | None = Field(default=None, ge=0)

    def apply(self, faults: Faults) -> None:
        """Apply this request to ``faults``."""
        if self.clear:
            faults.clear()
        after = bool(self.after_processing)
        if self.fail_next:
            faults.fail_next(self.fail_next, self.status, self.retry_after, self.body, after_processing=after)
        if self.drop_next:
            faults.drop_next(self.drop_next, after_processing=after)
        if self.delay_next:
            keep = True if self.after_processing is None else self.after_processing
            faults.delay_next(self.delay_next, self.seconds, after_processing=keep)
        if self.latency is not None:
            faults.latency(self.latency)
