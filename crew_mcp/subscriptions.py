"""Resource-change notifications in both protocol eras.

2026-07-28 clients listen with ``subscriptions/listen``, served by mcp's own bus; 2025-11-25 clients use
``resources/subscribe``, which MCPServer does not serve, so :meth:`Subscriptions.middleware` does (and
advertises it). :meth:`Subscriptions.notify` reaches both.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from pydantic import BaseModel

from .views import execution_uri

__all__ = ["Subscriptions"]

logger = logging.getLogger(__name__)


class Subscriptions:
    """Who listens to which resource, in both eras, and how to tell them it changed."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
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
        """Serve ``resources/subscribe`` to 2025-era clients, which MCPServer does not do by itself."""
        if ctx.method in ("resources/subscribe", "resources/unsubscribe"):
            uri = str((ctx.params or {}).get("uri", ""))
            if ctx.method == "resources/subscribe":
                self._legacy.setdefault(uri, []).append(ctx.session)
            else:
                self._unsubscribe(uri, ctx.session)
            return {}
        result = await call_next(ctx)
        if ctx.method == "initialize":
            if isinstance(result, BaseModel):
                dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            else:
                dumped = dict(result or {})
            dumped.setdefault("capabilities", {}).setdefault("resources", {}).update(subscribe=True)
            return dumped
        return result

    def _unsubscribe(self, uri: str, session: Any) -> None:
        sessions = self._legacy.get(uri, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self._legacy.pop(uri, None)
