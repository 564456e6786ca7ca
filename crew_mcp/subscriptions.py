"""Resource-change notifications in both protocol eras.

2026-07-28 clients listen with ``subscriptions/listen``, served by mcp's own bus; 2025-11-25 clients use
``resources/subscribe``, which MCPServer does not serve, so :meth:`Subscriptions.middleware` does (and
advertises it). :meth:`Subscriptions.notify` reaches both.

With authentication on, :attr:`Subscriptions.guard` decides which URIs a caller may watch: a 2025-era subscribe
to a run the caller does not own is refused exactly like one to an unknown run, and a 2026 listen honors (and
acknowledges) only the URIs the caller may watch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.types import INVALID_PARAMS

from .calls import as_dict
from .views import execution_uri

__all__ = ["Guard", "Subscriptions"]

logger = logging.getLogger(__name__)

Guard = Callable[[str], Awaitable[bool]]
"""Whether the caller of the current request may watch a resource URI."""

_URI_KEYS = ("resourceSubscriptions", "resource_subscriptions")


class Subscriptions:
    """Who listens to which resource, in both eras, and how to tell them it changed."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.guard: Guard | None = None
        self._legacy: dict[str, list[Any]] = {}

    async def notify(self, kickoff_id: str) -> None:
        """Tell subscribers of ``crew://executions/{kickoff_id}`` (both protocol eras) that it changed."""
        uri = execution_uri(kickoff_id)
        await self.bus.publish(ResourceUpdated(uri=uri))
        for session in list(self._legacy.get(uri, [])):
            try:
                await session.send_resource_updated(uri)
            except Exception:  # a gone session: forget it
                logger.debug("dropping a 2025-era subscriber of %s", uri, exc_info=True)
                self._unsubscribe(uri, session)

    async def middleware(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        """Serve ``resources/subscribe`` to 2025-era clients, which MCPServer does not do by itself, and keep both
        eras' subscriptions to what the caller may watch."""
        if ctx.method in ("resources/subscribe", "resources/unsubscribe"):
            uri = str((ctx.params or {}).get("uri", ""))
            if ctx.method == "resources/subscribe":
                if self.guard is not None and not await self.guard(uri):
                    # The same answer as for a run that does not exist: nothing tells another's run apart.
                    raise MCPError(INVALID_PARAMS, f"Unknown resource: {uri}", data={"uri": uri})
                self._legacy.setdefault(uri, []).append(ctx.session)
            else:
                self._unsubscribe(uri, ctx.session)
            return {}
        if ctx.method == "subscriptions/listen" and self.guard is not None:
            ctx = replace(ctx, params=await self._watchable(ctx.params or {}))
        result = await call_next(ctx)
        if ctx.method == "initialize":
            dumped = as_dict(result)
            dumped.setdefault("capabilities", {}).setdefault("resources", {}).update(subscribe=True)
            return dumped
        return result

    async def _watchable(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``subscriptions/listen`` params with only the URIs the caller may watch (the ack shows which)."""
        assert self.guard is not None
        notifications = params.get("notifications")
        if not isinstance(notifications, Mapping):
            return dict(params)
        kept = dict(notifications)
        for key in _URI_KEYS:
            uris = kept.get(key)
            if isinstance(uris, list):
                kept[key] = [u for u in uris if isinstance(u, str) and await self.guard(u)]
        return {**params, "notifications": kept}

    def _unsubscribe(self, uri: str, session: Any) -> None:
        sessions = self._legacy.get(uri, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self._legacy.pop(uri, None)
