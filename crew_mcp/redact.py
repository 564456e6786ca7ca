"""Keeping a crew's token out of what crew-mcp shows: bodies, messages and logs built from what a crew sent.

A crew (or a proxy in front of it) may echo the request back, bearer token included. Everything crew-mcp
keeps or shows of a response passes through :class:`Redactor` first.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MIN_SECRET_CHARS", "Redactor"]

MIN_SECRET_CHARS = 8
"""Shorter "tokens" (test placeholders) would turn redaction into corruption of ordinary text."""
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9._~+=-]+")


class Redactor:
    """Replaces one secret with ``***`` wherever it appears in text or in parsed JSON."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret if secret and len(secret) >= MIN_SECRET_CHARS else None

    def redact(self, value: Any) -> Any:
        """``value`` (text, or JSON made of dicts and lists) with the secret replaced."""
        if self._secret is None:
            return value
        if isinstance(value, str):
            return value.replace(self._secret, "***")
        if isinstance(value, dict):
            return {self.redact(k): self.redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact(v) for v in value]
        return value

    def may_contain(self, raw: bytes) -> bool:
        """False only when the raw body provably does not contain the secret, so its parsed form needs no walk.

        A secret made of characters JSON never needs to escape can only hide behind a ``\\u`` escape; with no such
        escape in the body it appears verbatim when it appears at all. Any other secret is always looked for.
        """
        secret = self._secret
        if secret is None:
            return False
        if _PLAIN_TOKEN.fullmatch(secret):
            return secret.encode() in raw or b"\\u" in raw
        return True
