"""The MCP server: :func:`build_server` assembles tools, resources and a prompt over a running service.

The service itself (crews, ledger, poll loops) lives in the server's lifespan, opened by
:func:`crew_mcp.service.open_service`. Tool input schemas are flat (no ``anyOf``) so every host accepts
them, and output schemas are published portable (see :mod:`crew_mcp.schema`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from mcp.server import MCPServer
from mcp.types import Tool as MCPTool

from . import __version__
from .apps import RunCard
from .boundary import caller
from .fleet.http import request_state_security
from .resources import register_resources
from .runtime import Runtime
from .schema import portable
from .service import CrewService, open_service
from .settings import Settings
from .tools import register_tools
from .typed_tools import register_typed_tools

__all__ = ["Runtime", "ServiceOpener", "build_server"]

ServiceOpener = Callable[..., AbstractAsyncContextManager[CrewService]]
""":func:`~crew_mcp.service.open_service`, or the same with some of its arguments bound (tests)."""

INSTRUCTIONS = """crew-mcp runs CrewAI crews. Typical flow: list_crews → list_inputs(crew) →
kickoff_crew(crew, inputs) → get_status(kickoff_id, wait_seconds=30) until the run completes.
Runs can take minutes: each call returns within the host's time limit with the kickoff_id; call get_status again
to keep waiting. When a run waits for human review (state waiting_for_human), show the user the output and ask
them; never approve on their behalf; then call resume_with_feedback. Runs are kept in crew-mcp's run ledger:
list_executions finds earlier runs, across chats and restarts."""

SIMULATED_NOTE = (
    "\nNo crew is configured, so the crews are crew-mcp's built-in simulated crews (no CrewAI account needed); "
    "say so when you present results."
)


class _PortableMCPServer(MCPServer):
    """MCPServer whose published output schemas are portable (see :mod:`crew_mcp.schema`); computed once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._portable: dict[str, dict[str, Any]] = {}

    async def list_tools(self) -> list[MCPTool]:
        tools = await super().list_tools()
        for tool in tools:
            if tool.output_schema is not None:
                if tool.name not in self._portable:
                    self._portable[tool.name] = portable(tool.output_schema)
                tool.output_schema = self._portable[tool.name]
        return tools


def build_server(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    webhook_base: str | None = None,
    opener: ServiceOpener = open_service,
) -> MCPServer:
    """Build crew-mcp's MCP server. The crews, the ledger and the poll loops live in its lifespan.

    ``runtime`` lets an HTTP app share the running service with its own routes (webhooks, health);
    ``webhook_base`` is the URL under which those routes receive AMP webhooks, when they can; ``opener``
    assembles the service (tests bind a simulator, a ledger or a clock to it).
    """
    runtime = runtime or Runtime()

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Runtime]:
        async with opener(settings, webhook_base=webhook_base, on_change=runtime.subscriptions.notify) as service:
            runtime.service = service
            try:
                yield runtime
            finally:
                runtime.service = None

    card = RunCard(service=runtime.require, caller=lambda ctx: caller(settings, ctx))
    mcp = _PortableMCPServer(
        "crew-mcp",
        title="CrewAI crews",
        version=__version__,
        instructions=INSTRUCTIONS + (SIMULATED_NOTE if settings.simulated else ""),
        lifespan=lifespan,
        log_level=settings.log_level,
        subscriptions=runtime.subscriptions.bus,
        extensions=[card],
        middleware=[runtime.subscriptions.middleware, card.hide_from_plain_clients],
        request_state_security=request_state_security(settings),  # shared across replicas (docs/fleet.md)
    )
    register_tools(mcp, settings, runtime)
    register_resources(mcp, settings, runtime)
    register_typed_tools(mcp, settings, runtime)
    return mcp
