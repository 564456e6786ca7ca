"""Each inbound MCP request as operators see it: its ids bound for the logs, a tool call's outcome and duration.

:class:`RequestScope` is MCP server middleware. It runs inside the SDK's own OpenTelemetry span, so log records
made while a request is handled carry its JSON-RPC id, its method, the tool's name and the trace id.

Outcomes of a tool call: ``ok``; ``tool_error`` (an error result the model reads: a ``ToolError``, arguments
that fail the schema, an unknown tool); ``protocol_error`` (a JSON-RPC error only the host sees: an
``MCPError`` such as a broken ledger or a refused crew token); ``input_required`` (a 2026-era round trip that
asks the user first, e.g. an approval form); ``cancelled`` (the client gave up).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import BaseModel

from .logs import bound
from .telemetry import Telemetry

__all__ = ["RequestScope", "as_dict", "outcome_of"]


def as_dict(result: HandlerResult) -> dict[str, Any]:
    """A handler's result as the JSON object it goes out as, for middleware that amends it (a model is dumped the
    way the SDK sends it: by alias, JSON types, no nulls)."""
    if isinstance(result, BaseModel):
        dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return dumped
    return dict(result or {})


def outcome_of(result: Any) -> str:
    """The outcome of a tool call that returned ``result`` (see the module docstring)."""
    match result:
        case CallToolResult(is_error=True) | {"isError": True}:
            return "tool_error"
        case InputRequiredResult():
            return "input_required"
        case _:
            return "ok"


class RequestScope:
    """MCP middleware: binds each request's ids for the logs and reports each tool call to ``telemetry``."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        name = ctx.params.get("name") if ctx.method == "tools/call" and ctx.params else None
        tool = name if isinstance(name, str) else None
        request_id = None if ctx.request_id is None else str(ctx.request_id)
        with bound(mcp_request_id=request_id, mcp_method=ctx.method, tool=tool):
            if tool is None:
                return await call_next(ctx)
            started = time.perf_counter()
            outcome = "protocol_error"
            try:
                result = await call_next(ctx)
                outcome = outcome_of(result)
                return result
            except anyio.get_cancelled_exc_class():
                outcome = "cancelled"
                raise
            finally:
                self._telemetry.tool_call(tool, outcome, time.perf_counter() - started)
