"""crew-mcp's MCP resources: the same views the tools return, as JSON, for hosts that read or subscribe.

An unknown run or crew is the protocol's "not found" (-32602); a ledger outage, a configuration problem or a
crew refusing crew-mcp's token is reported as what it is (see :mod:`crew_mcp.boundary`).
"""

from __future__ import annotations

from mcp.server import MCPServer

from .boundary import caller, resource
from .identity import Caller
from .runtime import Runtime
from .settings import Settings

__all__ = ["register_resources"]


def register_resources(mcp: MCPServer, settings: Settings, rt: Runtime) -> None:
    """Add the resources to ``mcp``."""

    def me() -> Caller:
        return caller(settings, None)

    @mcp.resource("crew://crews", name="crews", title="Configured crews", mime_type="application/json")
    async def crews_resource() -> str:
        """The crews this server runs."""
        return await resource(rt.require().list_crews(rt.typed_tools, me()), "crew://crews")

    @mcp.resource("crew://{crew}/inputs", name="crew-inputs", title="A crew's inputs", mime_type="application/json")
    async def inputs_resource(crew: str) -> str:
        """What a crew needs to start."""
        return await resource(rt.require().list_inputs(crew, caller=me()), f"crew://{crew}/inputs")

    @mcp.resource(
        "crew://executions/{kickoff_id}", name="execution", title="A run's status", mime_type="application/json"
    )
    async def execution_resource(kickoff_id: str) -> str:
        """One run's normalized status (final statuses come from the ledger)."""
        return await resource(rt.require().status(kickoff_id, me()), f"crew://executions/{kickoff_id}")

    @mcp.resource(
        "crew://conversations/{conversation_id}",
        name="conversation",
        title="A conversation's runs",
        mime_type="application/json",
    )
    async def conversation_resource(conversation_id: str) -> str:
        """Every run of one conversation, newest first."""
        work = rt.require().executions(me(), conversation_id=conversation_id, limit=200)
        return await resource(work, f"crew://conversations/{conversation_id}")

    @mcp.resource("crew://approvals", name="approvals", title="Runs waiting for review", mime_type="application/json")
    async def approvals_resource() -> str:
        """Runs waiting for human review, newest first."""
        return await resource(rt.require().pending_approvals(me()), "crew://approvals")
