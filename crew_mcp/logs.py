"""Operator logs: text or JSON lines on stderr, each carrying its request's ids, none carrying a secret.

:func:`configure` installs one stderr handler on the root logger (``CREW_MCP_LOG_FORMAT=json|text``). Two
filters sit on that handler, so they see the records of every logger (crew-mcp's, the MCP SDK's, uvicorn's):

* the ids filter adds the ids bound to the current request with :func:`bound` (``mcp_request_id``,
  ``mcp_method``, ``tool``, ``kickoff_request_id``) and, while an OpenTelemetry span is active, its
  ``trace_id`` and ``span_id``;
* :class:`SecretScrubber` rewrites the message (and any traceback) so that no bearer token, ``Authorization``
  value, password in a URL, webhook secret in a webhook path, or configured secret (everything
  :meth:`~crew_mcp.settings.Settings.secrets` lists), whole or in part, reaches the stream.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

from .redact import RedactingFilter, Redactor

__all__ = [
    "ID_FIELDS",
    "JsonFormatter",
    "LogFormat",
    "SecretScrubber",
    "bound",
    "build_handler",
    "configure",
]

LogFormat = Literal["text", "json"]
ID_FIELDS = ("mcp_request_id", "mcp_method", "tool", "kickoff_request_id", "trace_id", "span_id")
"""The ids a record may carry, in the order they are written."""

_IDS: ContextVar[Mapping[str, str]] = ContextVar("crew_mcp_log_ids", default={})  # noqa: B039 - never mutated
_MASK = "***"
# Order matters: an Authorization value is masked whole (scheme included) before the bare "Bearer x" rule runs.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic)\s+)?[^\s'\",;}]+"), r"\1***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (
        re.compile(r"(?i)([?&](?:access_token|token|api_key|apikey|key|secret|client_secret|password)=)[^&\s'\"]+"),
        r"\1***",
    ),
)


@contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Attach ``ids`` (empty ones skipped) to every record logged inside the block, in this task and its children."""
    values = {k: v for k, v in ids.items() if v}
    if not values:
        yield
        return
    token = _IDS.set({**_IDS.get(), **values})
    try:
        yield
    finally:
        _IDS.reset(token)


class _Ids(logging.Filter):
    """Copies the bound ids, and the active span's trace and span ids, onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _IDS.get().items():
            setattr(record, key, value)
        # Only when OpenTelemetry is already loaded (the MCP SDK loads its API): a CLI command never imports it.
        trace = sys.modules.get("opentelemetry.trace")
        if trace is not None:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
                record.span_id = format(context.span_id, "016x")
        return True


class SecretScrubber(RedactingFilter):
    """Masks secrets in a record's message, traceback and stack: known ones, and the shapes secrets come in.

    Args:
        secrets: literal secrets to mask wherever they appear (shorter than 8 characters: ignored, as in
            :class:`~crew_mcp.redact.Redactor`, to keep ordinary text intact).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(Redactor(*secrets))

    def scrub(self, text: str) -> str:
        """``text`` with every known secret (and fragment of one), URL credential, webhook secret and every
        secret-shaped value masked."""
        text = super().scrub(text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ID_FIELDS:
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class _TextFormatter(logging.Formatter):
    """``LEVEL logger: message``, then the record's ids in brackets when it has any."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{k}={v}" for k in ID_FIELDS if (v := getattr(record, k, None)))
        if not ids:
            return text
        line, sep, rest = text.partition("\n")
        return f"{line} [{ids}]{sep}{rest}"


def build_handler(
    fmt: LogFormat = "text", *, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in ``fmt``, adding the ids and masking secrets."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(_Ids())
    handler.addFilter(SecretScrubber(secrets))
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter())
    return handler


def configure(level: str, fmt: LogFormat = "text", *, secrets: Iterable[str] = ()) -> None:
    """Log ``level`` and above to stderr through :func:`build_handler`.

    Like :func:`logging.basicConfig`, it changes nothing when the root logger already has handlers (an embedding
    application's, or pytest's).
    """
    logging.basicConfig(level=level, handlers=[build_handler(fmt, secrets=secrets)])
