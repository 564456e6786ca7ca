"""The MCP server: :func:`build_server` assembles tools, resources and a prompt over a running service.

The service itself (crews, ledger, poll loops) lives in the server's lifespan, opened by
:func:`crew_mcp.assembly.open_service`. Tool input schemas are flat (no ``anyOf``) so every host accepts
them, and output schemas are published portable (see :mod:`crew_mcp.schema`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from mcp.server import MCPServer
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult
from mcp.types import Tool as MCPTool
from pydantic import ValidationError

from . import __version__
from .apps import RunCard
from .arguments import describe_invalid_arguments
from .assembly import open_service
from .boundary import caller
from .calls import RequestScope
from .cancel import register_cancel_tool
from .completions import register_completions
from .errors import CrewMCPError
from .fleet.http import request_state_security
from .resources import register_resources
from .runtime import Runtime
from .schema import portable, valid_defaults
from .service import CrewService
from .settings import Settings
from .stdio import screened_stdio
from .tools import register_tools
from .typed_tools import register_typed_tools
from .views import execution_uri

__all__ = ["ServiceOpener", "build_server"]

ServiceOpener = Callable[..., AbstractAsyncContextManager[CrewService]]
""":func:`~crew_mcp.assembly.open_service`, or the same with some of its arguments bound (tests)."""

INSTRUCTIONS = """crew-mcp runs CrewAI crews. Typical flow: list_crews → list_inputs(crew) →
kickoff_crew(crew, inputs) → get_status(kickoff_id, wait_seconds={wait}) until the run completes.
Runs can take minutes: each call returns within the host's time limit with the kickoff_id; call get_status again
to keep waiting. When a run waits for human review (state waiting_for_human), show the user the output and ask
them; never approve on their behalf; then call resume_with_feedback. Runs are kept in crew-mcp's run ledger:
list_executions finds earlier runs, across chats and restarts."""

SIMULATED_NOTE = (
    "\nNo crew is configured, so the crews are crew-mcp's built-in simulated crews (no CrewAI account needed); "
    "say so when you present results."
)


class _PortableMCPServer(MCPServer):
    """MCPServer whose published schemas are portable, with valid defaults (see :mod:`crew_mcp.schema`); computed
    once per tool."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._published: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}

    async def list_tools(self) -> list[MCPTool]:
        tools = await super().list_tools()
        for tool in tools:
            if tool.name not in self._published:
                output = portable(tool.output_schema) if tool.output_schema is not None else None
                self._published[tool.name] = (valid_defaults(tool.input_schema), output)
            tool.input_schema, tool.output_schema = self._published[tool.name]
        return tools

    async def run_stdio_async(self) -> None:
        """Serve stdio, answering every line, even one the SDK's reader would drop (see :mod:`crew_mcp.stdio`)."""
        # The SDK's own run_stdio_async, with the screened transport; the low-level server has no public accessor.
        server = self._lowlevel_server
        async with screened_stdio() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        """Call a tool; arguments that do not fit its parameters are reported as one sentence (no pydantic text)."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            # The SDK raises the arguments' ValidationError as the direct cause, before the tool runs; anything a
            # tool or resolver raised arrives wrapped once more and is left as it is.
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            schema = next((t.input_schema for t in await self.list_tools() if t.name == name), None)
            raise ToolError(describe_invalid_arguments(name, cause, schema)) from cause


def build_server(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    webhook_base: str | None = None,
    opener: ServiceOpener = open_service,
    token_verifier: TokenVerifier | None = None,
    auth: AuthSettings | None = None,
) -> MCPServer:
    """Build crew-mcp's MCP server. The crews, the ledger and the poll loops live in its lifespan.

    ``runtime`` lets an HTTP app share the running service with its own routes (webhooks, health);
    ``webhook_base`` is the URL under which those routes receive AMP webhooks, when they can; ``opener``
    assembles the service (tests bind a simulator, a ledger or a clock to it). ``token_verifier`` and ``auth``
    (both or neither; see :mod:`crew_mcp.auth`) protect the HTTP endpoint.
    """
    runtime = runtime or Runtime()
    if settings.auth.mode != "none":
        runtime.subscriptions.guard = _watch_guard(settings, runtime)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Runtime]:
        if runtime.service is not None:
            # Entered again while running: the HTTP+SSE transport enters it per connection; every connection
            # shares the one service (its ledger, poll loops and subscriptions).
            yield runtime
            return
        async with opener(
            settings, webhook_base=webhook_base, on_change=runtime.subscriptions.notify, telemetry=runtime.telemetry
        ) as service:
            runtime.service = service
            try:
                yield runtime
            finally:
                runtime.service = None

    card = RunCard(service=runtime.require, caller=lambda ctx: caller(settings, ctx), wait_slot=runtime.wait_slot)
    mcp = _PortableMCPServer(
        "crew-mcp",
        title="CrewAI crews",
        version=__version__,
        instructions=INSTRUCTIONS.format(wait=settings.recommended_wait)
        + (SIMULATED_NOTE if settings.simulated else ""),
        lifespan=lifespan,
        log_level=settings.log_level,
        subscriptions=runtime.subscriptions.bus,
        extensions=[card],
        middleware=[
            RequestScope(runtime.telemetry),
            runtime.subscriptions.middleware,
            runtime.log_levels.middleware,
            card.hide_from_plain_clients,
        ],
        token_verifier=token_verifier,
        auth=auth,
        request_state_security=request_state_security(settings),  # shared across replicas (docs/fleet.md)
    )
    register_tools(mcp, settings, runtime)
    register_cancel_tool(mcp, settings, runtime)
    register_resources(mcp, settings, runtime)
    register_typed_tools(mcp, settings, runtime)
    register_completions(mcp, settings, runtime)
    return mcp


def _watch_guard(settings: Settings, runtime: Runtime) -> Callable[[str], Awaitable[bool]]:
    """Callers may watch their own runs' resources and the per-caller listings (which only ever show their own)."""
    prefix = execution_uri("")

    async def may_watch(uri: str) -> bool:
        if not uri.startswith(prefix):
            return True
        service = runtime.service
        if service is None:
            return False
        try:
            return await service.owns(uri.removeprefix(prefix), caller(settings, None))
        except CrewMCPError:
            return False

    return may_watch
