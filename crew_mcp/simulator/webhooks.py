"""Webhook delivery: the deliveries runs cause wait in an outbox until the clock's owner flushes them.

Deliveries are never sent inside a crew request (AMP sends them from its workers, not from the API call), only
by :meth:`WebhookSender.flush`, which :meth:`Simulator.advance` and the wall-clock ticker call.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

from .engine import Outgoing

__all__ = ["WebhookDelivery", "WebhookSender"]

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 5.0
"""Seconds one delivery may take before it is recorded as failed."""


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook delivery attempt: where, what, and how it went (``status_code`` None on a transport error)."""

    url: str
    kind: str
    payload: dict[str, Any]
    status_code: int | None
    error: str | None = None


class WebhookSender:
    """The outbox of one simulator: queued deliveries are sent oldest first, one at a time, by one client.

    Every attempt is appended to :attr:`log`; a failure is logged and recorded, never raised.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.log: list[WebhookDelivery] = []
        self._outbox: list[Outgoing] = []
        self._transport = transport
        self._http: httpx2.AsyncClient | None = None
        self._lock: anyio.Lock | None = None

    def queue(self, items: Iterable[Outgoing]) -> None:
        """Add deliveries that became due; they are sent by the next :meth:`flush`."""
        self._outbox.extend(items)

    async def flush(self) -> None:
        """Deliver every queued webhook, oldest first (including those queued while flushing)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            while self._outbox:
                batch = sorted(self._outbox, key=lambda o: o.at)
                self._outbox.clear()
                for item in batch:
                    await self._deliver(item)

    async def aclose(self) -> None:
        """Close the HTTP client; a later flush opens a new one."""
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()

    async def _deliver(self, item: Outgoing) -> None:
        if self._http is None:
            self._http = httpx2.AsyncClient(transport=self._transport, timeout=httpx2.Timeout(WEBHOOK_TIMEOUT))
        try:
            response = await self._http.post(item.url, json=item.payload, headers=_auth_headers(item.auth))
        except Exception as exc:  # a webhook failure must never take the simulator down
            logger.warning("webhook %s to %s failed: %s", item.kind, item.url, exc)
            self.log.append(WebhookDelivery(item.url, item.kind, item.payload, None, f"{type(exc).__name__}"))
            return
        if response.status_code >= 400:
            logger.warning("webhook %s to %s answered HTTP %s", item.kind, item.url, response.status_code)
        self.log.append(WebhookDelivery(item.url, item.kind, item.payload, response.status_code))


def _auth_headers(auth: dict[str, Any] | None) -> dict[str, str]:
    auth = auth or {}
    if auth.get("strategy") == "bearer" and auth.get("token"):
        return {"Authorization": f"Bearer {auth['token']}"}
    if auth.get("strategy") == "basic":
        raw = f"{auth.get('username', '')}:{auth.get('password', '')}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    return {}
