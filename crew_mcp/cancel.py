"""The ``cancel_run`` tool: stop a run at its crew, after a person confirmed it.

In a client that can show a form (elicitation, both protocol eras through ``Resolve``/``Elicit``) the user is
always asked, whatever the arguments say, and the stop is recorded as theirs. Elsewhere the model must ask the
user in chat and pass ``confirm=true``; under the ``human`` approval policy that is refused (see
:func:`~crew_mcp.stopping.human_only_stop_message`).
"""

# No `from __future__ import annotations` here: the SDK evaluates these signatures at registration, and
# they name local objects (the confirmation resolver) that string annotations could not resolve.
from typing import Annotated, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from .boundary import caller, guard, result
from .runtime import Runtime
from .settings import Settings
from .stopping import StopView

__all__ = ["StopConfirmation", "register_cancel_tool"]

DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)


class StopConfirmation(BaseModel):
    """The form shown before a run is stopped (flat primitives only)."""

    stop: bool = Field(description="Stop this run now? It cannot be resumed afterwards.")


def register_cancel_tool(mcp: MCPServer, settings: Settings, rt: Runtime) -> None:
    """Add ``cancel_run`` to ``mcp``."""

    async def ask_to_stop(
        *, kickoff_id: str, confirm: bool, ctx: Context
    ) -> ElicitationResult[StopConfirmation] | Elicit[StopConfirmation] | None:
        caps = ctx.client_capabilities
        if caps is None or caps.elicitation is None:
            if confirm:
                return None
            raise ToolError(
                f"Stopping run {kickoff_id} cannot be undone, and this client cannot show the user a confirmation "
                "form. Ask the user in chat whether to stop it; only if they say yes, call cancel_run again with "
                "confirm=true."
            )
        record = await guard(rt.require().stoppable(kickoff_id, caller(settings, ctx)))
        waiting = f", waiting for review of task {record.pending.task_id}" if record.pending else ""
        return Elicit(
            f"Stop run {kickoff_id} of crew {record.crew} ({record.state.value}{waiting})? The crew ends it now; "
            "it cannot be resumed, and its unfinished work is lost.",
            StopConfirmation,
        )

    @mcp.tool(title="Stop a run", annotations=DESTRUCTIVE)
    async def cancel_run(
        ctx: Context,
        kickoff_id: Annotated[str, Field(description="The run to stop")],
        # Exactly ElicitationResult[...] (no "| None"): a declined or cancelled form reaches the tool; a resolver
        # that returns None (confirmed in chat) arrives as AcceptedElicitation(data=None).
        confirmation: Annotated[ElicitationResult[StopConfirmation], Resolve(ask_to_stop)],
        confirm: Annotated[
            bool,
            Field(
                description="Only for clients that cannot show a confirmation form: true once the user has said "
                "in chat to stop this run. Clients with forms always ask the user."
            ),
        ] = False,
    ) -> Annotated[CallToolResult, StopView]:
        """Stop a running or paused crew run for good, when the user asks to. It cannot be resumed afterwards.

        The user confirms in a form where the client can show one; otherwise ask them first and pass confirm=true.
        """
        if not isinstance(confirmation, AcceptedElicitation):
            raise ToolError(f"The user did not confirm; run {kickoff_id} goes on. Nothing was stopped.")
        by: Literal["model", "human"] = "model"
        if confirmation.data is not None:
            if not confirmation.data.stop:
                raise ToolError(f"The user chose not to stop run {kickoff_id}; it goes on. Nothing was stopped.")
            by = "human"
        who = caller(settings, ctx, by=by, via="elicitation" if by == "human" else "tool")
        return result(await guard(rt.require().cancel(kickoff_id, who)))
