"""The fleet's part of ``crew-mcp serve --http``: the service opener, shared request-state keys, graceful shutdown.

Graceful shutdown (SIGTERM, or Ctrl-C): :class:`DrainingServer` first *drains* (``/readyz`` answers 503
``draining`` so balancers send traffic elsewhere while ``/healthz`` stays 200; every wait ends at once with the
run's handle and next step; the poll loops stop and release their leases so another replica takes over at its
next poll), then lets uvicorn stop accepting and wait for the open requests; whatever is still open after
``shutdown_grace_seconds`` (a 2025-era client's idle GET stream) is cut, so the process always exits within that
bound plus a moment.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn

from . import Fleet

if TYPE_CHECKING:
    from mcp.server.mcpserver import RequestStateSecurity

    from ..service import CrewService
    from ..settings import Settings

__all__ = ["DrainingServer", "request_state_security", "with_fleet"]

logger = logging.getLogger(__name__)

Opener = Callable[..., AbstractAsyncContextManager["CrewService"]]


def with_fleet(opener: Opener, fleet: Fleet) -> Opener:
    """``opener`` (``open_service`` or a test's) that assembles the service with ``fleet``."""

    @asynccontextmanager
    async def open_with_fleet(settings: Settings, **kw: Any) -> AsyncIterator[CrewService]:
        async with opener(settings, fleet=fleet, **kw) as service:
            yield service

    return open_with_fleet


def request_state_security(settings: Settings) -> RequestStateSecurity | None:
    """Sealed ``requestState`` keys shared by every replica (``CREW_MCP_REQUEST_STATE_KEYS``), so a multi-round-trip
    elicitation answered on another replica unseals there; None keeps mcp's per-process key."""
    if not settings.request_state_keys:
        return None
    from mcp.server.mcpserver import RequestStateSecurity

    return RequestStateSecurity(keys=[k.get_secret_value() for k in settings.request_state_keys])


class DrainingServer(uvicorn.Server):
    """uvicorn that drains (``drain()``, bounded by the grace period) before its own graceful shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]], grace: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._grace = grace

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain, then stop accepting and wait (at most the grace period) for open requests."""
        with anyio.move_on_after(max(self._grace, 0.1)):
            try:
                await self._drain()
            except Exception:  # draining is best effort: the shutdown must go on
                logger.exception("draining before shutdown failed")
        await super().shutdown(sockets)
