"""Keeping secrets out of what crew-mcp shows: bodies, messages, the ledger and logs.

A crew (or a proxy in front of it) may echo the request back, bearer token included, whole or in part; a URL
may carry credentials (``https://user:password@host``). Everything crew-mcp keeps or shows of a response passes
through :class:`Redactor` first, and :class:`RedactingFilter` does the same for log records (httpx2 logs every
request URL at INFO). What is removed:

* any run of 8 or more characters that also occurs in a secret (a prefix, a suffix or a middle of a token);
* the user and password part of any URL (``scheme://***@host``);
* the per-execution secret of a webhook URL (``/webhooks/{request_id}/***/``, or ``/webhooks/***/`` in the older
  form).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

__all__ = ["MASK", "MIN_SECRET_CHARS", "RedactingFilter", "Redactor", "install_log_redaction", "redact_urls"]

MIN_SECRET_CHARS = 8
"""Secrets shorter than this (test placeholders) are not looked for, and fragments shorter than this are kept:
shorter runs would turn redaction into corruption of ordinary text."""
MASK = "***"

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@\"'<>]*@")
# /webhooks/{request_id}/{secret}/{kind} (a request id is 32 hex digits), and the older /webhooks/{secret}/{kind}.
_WEBHOOK_SECRET = re.compile(r"(/webhooks/(?:[0-9a-f]{32}/)?)[^/\s\"'<>?#]+")


def redact_urls(text: str) -> str:
    """``text`` with the credentials of every URL and the secret of every webhook URL replaced by ``***``."""
    if "://" in text and "@" in text:
        text = _URL_CREDENTIALS.sub(rf"\1{MASK}@", text)
    if "/webhooks/" in text:
        text = _WEBHOOK_SECRET.sub(rf"\1{MASK}", text)
    return text


class Redactor:
    """Replaces secrets, and every fragment of 8 or more characters of them, with ``***`` in text or parsed JSON.

    Args:
        secrets: the secrets to look for (None and shorter ones are ignored).
    """

    def __init__(self, *secrets: str | None) -> None:
        kept = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS})
        n = MIN_SECRET_CHARS
        self._grams = frozenset(s[i : i + n] for s in kept for i in range(len(s) - n + 1))
        self._byte_grams = frozenset(g.encode("utf-8", "surrogatepass") for g in self._grams)
        chars = {c for s in kept for c in s}
        # Only runs of secret characters at least a fragment long can hold one: a cheap prefilter in C.
        cls = "".join(sorted(re.escape(c) for c in chars))
        self._runs = re.compile(f"[{cls}]{{{n},}}") if kept else None
        self._byte_runs = re.compile(f"[{cls}]{{{n},}}".encode("utf-8", "surrogatepass")) if kept else None

    def covers(self, other: Redactor) -> bool:
        """True when this redactor masks everything ``other`` masks (every secret of ``other`` is one of its own)."""
        return other._grams <= self._grams

    def text(self, value: str) -> str:
        """``value`` with every secret fragment and URL credential replaced."""
        value = redact_urls(value)
        if self._runs is None:
            return value
        spans: list[tuple[int, int]] = []
        for run in self._runs.finditer(value):
            spans += self._covered(run.group(), run.start())
        if not spans:
            return value
        out: list[str] = []
        last = 0
        for start, end in spans:
            out += [value[last:start], MASK]
            last = end
        out.append(value[last:])
        return "".join(out)

    def redact(self, value: Any) -> Any:
        """``value`` (text, or JSON made of dicts and lists) with secrets replaced."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.redact(k): self.redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact(v) for v in value]
        return value

    def may_contain(self, raw: bytes) -> bool:
        """False only when ``raw`` provably holds no secret fragment and no URL credential, so its parsed form needs
        no walk. A ``\\u`` escape can hide anything, so a body with one is always walked."""
        if b"\\u" in raw or (b"://" in raw and b"@" in raw) or b"/webhooks/" in raw:
            return True
        if self._byte_runs is None:
            return False
        n = MIN_SECRET_CHARS
        grams = self._byte_grams
        for run in self._byte_runs.finditer(raw):
            piece = run.group()
            if any(piece[i : i + n] in grams for i in range(len(piece) - n + 1)):
                return True
        return False

    def _covered(self, run: str, offset: int) -> list[tuple[int, int]]:
        """The spans of ``run`` (at ``offset`` in the text) made of secret fragments, overlapping ones merged."""
        n = MIN_SECRET_CHARS
        grams = self._grams
        spans: list[tuple[int, int]] = []
        for i in range(len(run) - n + 1):
            if run[i : i + n] in grams:
                start, end = offset + i, offset + i + n
                if spans and start <= spans[-1][1]:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((start, end))
        return spans


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message, traceback and stack through :meth:`scrub` (a
    :class:`Redactor`'s :meth:`~Redactor.text`; :class:`crew_mcp.logs.SecretScrubber` adds the shapes secrets come
    in)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def scrub(self, text: str) -> str:
        """``text`` with every secret fragment and URL credential masked."""
        return self.redactor.text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call must still be logged (without its arguments, which may be secrets)
            message = f"{record.msg!s} (unformattable arguments)"
        record.msg, record.args = self.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


_LOGGERS = ("httpx2", "httpcore", "uvicorn", "uvicorn.error", "mcp")
"""Loggers whose own records are filtered even when they do not reach the root handlers (httpx2 logs URLs)."""


def install_log_redaction(redactor: Redactor) -> Callable[[], None]:
    """Filter every record through ``redactor``: on the root logger's handlers and on the loggers of the libraries
    that log URLs. Returns the function that removes the filters again.

    A handler that already redacts these secrets (crew-mcp's own, whose :class:`~crew_mcp.logs.SecretScrubber`
    :func:`crew_mcp.logs.configure` gave the settings' secrets) is left alone: one pass per record is enough.
    """
    filt = RedactingFilter(redactor)
    handlers = [h for h in logging.getLogger().handlers if not _redacts(h, redactor)]
    targets: list[logging.Filterer] = [*handlers, *map(logging.getLogger, _LOGGERS)]
    for target in targets:
        target.addFilter(filt)

    def remove() -> None:
        for target in targets:
            target.removeFilter(filt)

    return remove


def _redacts(handler: logging.Handler, redactor: Redactor) -> bool:
    return any(isinstance(f, RedactingFilter) and f.redactor.covers(redactor) for f in handler.filters)
