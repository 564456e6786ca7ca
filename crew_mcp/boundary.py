"""The MCP boundary: who is calling, how a view becomes a tool result, and the one translation of errors.

What a model can fix (:class:`~crew_mcp.errors.UsageError`, an upstream failure it can retry or report)
becomes a :class:`ToolError`, the only exception text mcp 2.3 shows a model. What only the person running
crew-mcp can fix (configuration, a crew refusing crew-mcp's token, the run ledger) becomes an
:class:`MCPError` for the host to show. Resources follow the same split, with an unknown run or crew as
the protocol's "not found" (-32602).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp import MCPError
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import INTERNAL_ERROR, CallToolResult, TextContent
from pydantic import BaseModel

from . import errors as e
from .auth.config import Principal, principal_from_token
from .identity import DEFAULT_CONVERSATION, Caller, Decider, default_owner
from .models import ExecutionState, ExecutionStatus
from .runlog import run_events
from .runtime import Runtime
from .settings import Settings
from .views import dump

__all__ = ["caller", "guard", "principal", "progress", "resource", "result", "translate"]

_T = TypeVar("_T")


def translate(exc: e.CrewMCPError) -> ToolError | MCPError:
    """The one translation of crew-mcp's errors for MCP tools."""
    sentence = e.describe(exc)
    if isinstance(exc, e.UsageError | e.CrewAPIError):
        return ToolError(sentence)
    if isinstance(exc, e.UpstreamError) and not exc.configuration:
        return ToolError(sentence)
    return MCPError(INTERNAL_ERROR, sentence)


async def guard(work: Awaitable[_T]) -> _T:
    """Await a service call, translating its errors (:func:`translate`)."""
    try:
        return await work
    except e.CrewMCPError as exc:
        raise translate(exc) from None


async def resource(work: Awaitable[BaseModel] | BaseModel, uri: str) -> str:
    """A resource's JSON text from a service call's view (empty fields left out, as in tool results), or the
    resource's protocol error."""
    try:
        view = work if isinstance(work, BaseModel) else await work
        return json.dumps(dump(view, compact=True), ensure_ascii=False)
    except (e.RunNotFoundError, e.UnknownCrewError, e.InvalidInputError) as exc:
        raise ResourceNotFoundError(f"{uri}: {exc}") from None
    except e.CrewMCPError as exc:
        mapped = translate(exc)
        raise (MCPError(INTERNAL_ERROR, f"{uri}: {mapped}") if isinstance(mapped, ToolError) else mapped) from None


def result(view: Any) -> CallToolResult:
    """A view as a tool result: its text for the model, its fields as structured content (nulls left out)."""
    return CallToolResult(
        content=[TextContent(type="text", text=view.text())], structured_content=dump(view, compact=True)
    )


def principal(settings: Settings) -> Principal | None:
    """The authenticated principal of this request (issuer + subject, or the API key's name); None without
    authentication (stdio, loopback HTTP without ``CREW_MCP_AUTH``).

    Raises:
        MCPError: a verifier accepted a token that names no principal (never happens with crew-mcp's verifiers).
    """
    token = get_access_token()
    if token is None:
        return None
    try:
        return principal_from_token(token, settings.auth)
    except ValueError:
        raise MCPError(
            INTERNAL_ERROR, "The access token names no user; crew-mcp cannot tell whose runs to show."
        ) from None


def caller(
    settings: Settings, ctx: Context | None, conversation_id: str = "", *, by: Decider = "model", via: str = "tool"
) -> Caller:
    """Who calls: the owner, the conversation (argument, else the 2025-era HTTP session), and who decides.

    The session only files runs under a conversation within the owner's runs; identity comes from the token.
    With authentication, the caller carries its crews and approval rights from the ``[auth]`` configuration.
    """
    conversation = conversation_id.strip()
    if not conversation and ctx is not None:
        session = (ctx.headers or {}).get("mcp-session-id")
        conversation = f"session:{session}" if session else ""
    conversation = conversation or DEFAULT_CONVERSATION
    who = principal(settings)
    if who is None:
        return Caller(owner=default_owner(settings.owner), conversation_id=conversation, by=by, via=via)
    return Caller.for_principal(who, settings.auth, conversation_id=conversation, by=by, via=via)


def progress(ctx: Context) -> Callable[[ExecutionStatus], Awaitable[None]]:
    """Report a run's progress to the calling client, and its events as log messages (:mod:`crew_mcp.runlog`)."""
    report = _progress(ctx)
    runtime = ctx.request_context.lifespan_context
    log = run_events(ctx, runtime.log_levels) if isinstance(runtime, Runtime) else None

    async def observe(status: ExecutionStatus) -> None:
        await report(status)
        if log is not None:
            await log(status)

    return observe


def _progress(ctx: Context) -> Callable[[ExecutionStatus], Awaitable[None]]:
    """Report a run's progress to the calling client (tasks done of total, state, current task and agent).

    The protocol requires each notification of one request to carry a larger value than the one before, and a
    wait sees the same status many times (each poll), or a smaller count (a documented-shape status drops its
    progress on completion). So a notification goes out only when something moved: more tasks done (the value
    is the count), or only the state, task or agent changed (the value creeps halfway towards the next whole
    task, never reaching it). A completed run reports total of total; a total once known is kept.
    """
    last: float | None = None
    said: str | None = None
    total: float | None = None

    async def report(status: ExecutionStatus) -> None:
        nonlocal last, said, total
        p = status.progress
        total = float(p.total) if p.total else total
        done = float(p.completed or 0)
        if status.state is ExecutionState.COMPLETED:
            done = max(done, total or math.floor(last or 0) + 1.0)
        parts = [status.state.value]
        if p.current_task:
            parts.append(f"task {p.current_task}")
        if p.current_agent:
            parts.append(f"agent {p.current_agent}")
        message = " · ".join(parts)
        if last is None or done > last:
            value = done
        elif message != said:
            value = last + (math.floor(last) + 1.0 - last) / 2
            if value <= last:  # no float left between them: nothing to say that would still increase
                return
        else:
            return
        last, said = value, message
        await ctx.report_progress(value, total, message)

    return report
