"""Run events as MCP log messages (``notifications/message``), at the level each client asks for.

What a call that waits on a run sees happen (a task finished, the run paused for review, completed, failed) is
also sent as a log message, for hosts that show a server's log. The protocol's logging is deprecated at
2026-07-28 but still served in both eras, as far as the SDK allows:

- 2025-11-25 and earlier: ``logging/setLevel`` (served here, with the ``logging`` capability) sets the minimum
  level per connection; until a client sets one, :data:`DEFAULT_LEVEL` applies.
- 2026-07-28: each request opts in with ``_meta["io.modelcontextprotocol/logLevel"]``; the SDK drops the rest.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, get_args

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import INVALID_PARAMS, LoggingLevel
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .calls import as_dict
from .models import ExecutionState, ExecutionStatus

__all__ = ["DEFAULT_LEVEL", "LOGGER", "LogLevels", "run_events"]

LEVELS: tuple[LoggingLevel, ...] = get_args(LoggingLevel)
DEFAULT_LEVEL: LoggingLevel = "notice"
"""What a 2025-era client that never called ``logging/setLevel`` is sent: pauses, endings and failures."""
LOGGER = "crew-mcp"
_CONNECTIONS_KEPT = 1024

_EVENT_LEVELS: dict[ExecutionState, LoggingLevel] = {
    ExecutionState.RUNNING: "info",
    ExecutionState.WAITING_FOR_HUMAN: "notice",
    ExecutionState.COMPLETED: "notice",
    ExecutionState.FAILED: "error",
    ExecutionState.CANCELLED: "warning",
    ExecutionState.NOT_FOUND: "warning",
    ExecutionState.UNKNOWN: "warning",
}


def _connection(ctx: ServerRequestContext[Any, Any]) -> str:
    """What identifies a 2025-era connection: its HTTP session (``Mcp-Session-Id``, or the SSE ``session_id``);
    stdio and in-memory serve one connection per server."""
    request = ctx.request
    headers = getattr(request, "headers", None) or {}
    query = getattr(request, "query_params", None) or {}
    return str(headers.get("mcp-session-id") or query.get("session_id") or "")


class LogLevels:
    """The minimum log level each 2025-era connection set; serves ``logging/setLevel`` as middleware."""

    def __init__(self) -> None:
        self._levels: OrderedDict[str, LoggingLevel] = OrderedDict()

    def level(self, ctx: ServerRequestContext[Any, Any]) -> LoggingLevel:
        """The minimum level for the connection of ``ctx``."""
        return self._levels.get(_connection(ctx), DEFAULT_LEVEL)

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Answer ``logging/setLevel`` and advertise the ``logging`` capability (MCPServer does neither)."""
        if ctx.method == "logging/setLevel":
            level = (ctx.params or {}).get("level")
            if level not in LEVELS:
                raise MCPError(INVALID_PARAMS, f"level must be one of {', '.join(LEVELS)}")
            key = _connection(ctx)
            self._levels[key] = level
            self._levels.move_to_end(key)
            while len(self._levels) > _CONNECTIONS_KEPT:  # sessions come and go; keep the recent ones
                self._levels.popitem(last=False)
            return {}
        result = await call_next(ctx)
        if ctx.method in ("initialize", "server/discover"):
            dumped = as_dict(result)
            dumped.setdefault("capabilities", {}).setdefault("logging", {})
            return dumped
        return result


def run_events(ctx: Context, levels: LogLevels) -> Callable[[ExecutionStatus], Awaitable[None]]:
    """A status observer that logs each change of a run's state, task count or current task to the client."""
    last: tuple[Any, ...] | None = None
    request = ctx.request_context
    modern = request.protocol_version in MODERN_PROTOCOL_VERSIONS
    minimum = LEVELS.index(levels.level(request)) if not modern else 0

    async def log(status: ExecutionStatus) -> None:
        nonlocal last
        p = status.progress
        now = (status.state, p.completed, p.current_task)
        if now == last:
            return
        last = now
        level = _EVENT_LEVELS[status.state]
        if LEVELS.index(level) < minimum:
            return
        data = {"kickoff_id": status.kickoff_id, "state": status.state.value, "message": _describe(status)}
        # The SDK marks protocol logging deprecated and warns on each call; crew-mcp serves it on purpose. The
        # call only builds the coroutine, so the filter covers no await.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            sending = request.session.send_log_message(
                level, data, logger=LOGGER, related_request_id=request.request_id
            )
        await sending  # 2026-07-28: the SDK sends it only at or above the level the request opted in to

    return log


def _describe(status: ExecutionStatus) -> str:
    p = status.progress
    count = f" ({p.completed or 0}/{p.total} tasks)" if p.total else ""
    match status.state:
        case ExecutionState.RUNNING:
            task = f", now task {p.current_task}" if p.current_task else ""
            return f"Run {status.kickoff_id} is running{count}{task}."
        case ExecutionState.WAITING_FOR_HUMAN:
            return f"Run {status.kickoff_id} waits for human review{count}."
        case ExecutionState.FAILED:
            return f"Run {status.kickoff_id} failed: {status.error or 'no reason given'}."
    return f"Run {status.kickoff_id} is {status.state.value}{count}."
