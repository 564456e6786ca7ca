"""What a running server shares between its lifespan, its tools and resources, and (over HTTP) the app's routes."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from mcp.server.mcpserver.exceptions import ToolError

from .auth.limits import Limiter
from .identity import Caller
from .runlog import LogLevels
from .service import CrewService
from .subscriptions import Subscriptions
from .telemetry import NO_TELEMETRY, Telemetry

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """What the server's lifespan shares with its tools, resources and (over HTTP) the app's own routes.

    ``limiter`` holds the per-principal limits when authentication is on (HTTP only).
    """

    subscriptions: Subscriptions = field(default_factory=Subscriptions)
    log_levels: LogLevels = field(default_factory=LogLevels)
    service: CrewService | None = None
    typed_tools: dict[str, str] = field(default_factory=dict)
    limiter: Limiter | None = None
    telemetry: Telemetry = NO_TELEMETRY
    draining: bool = False  # SIGTERM received: /readyz turns traffic away while waits end (docs/fleet.md)

    async def drain(self) -> None:
        """SIGTERM: turn traffic away (``/readyz``), end every wait at once with its handle, release poll leases."""
        self.draining = True
        if self.service is not None:
            await self.service.runs.hub.drain()  # returns once the loops have released their leases

    def require(self) -> CrewService:
        """The running service.

        Raises:
            ToolError: the server is still starting.
        """
        if self.service is None:
            raise ToolError("crew-mcp is still starting; try again in a moment.")
        return self.service

    @asynccontextmanager
    async def wait_slot(self, caller: Caller, seconds: float, *, starting: bool = False) -> AsyncIterator[None]:
        """Hold one of ``caller``'s concurrent waits while a call waits up to ``seconds`` (none when it does not wait).

        Raises:
            ToolError: the caller holds as many waits as it may; the sentence says when to retry (and, for a
                kickoff, that nothing was started).
        """
        if self.limiter is None or seconds <= 0:
            yield
            return
        if not self.limiter.acquire_wait(caller.owner).allowed:
            # Each held wait ends within the wait cap, so a slot is free again by then at the latest.
            cap = self.service.settings.wait_cap_seconds if self.service is not None else seconds
            held = self.limiter.waits(caller.owner)
            raise ToolError(
                f"You already have {held} calls waiting on runs, the most one user may have at once"
                + ("; no run was started" if starting else "")
                + f". Retry in {max(1, math.ceil(cap))} s, when one of them has returned, or call again with "
                "wait_seconds=0 to answer at once."
            )
        try:
            yield
        finally:
            self.limiter.release_wait(caller.owner)
