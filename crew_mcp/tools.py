"""crew-mcp's MCP tools and prompt, each a thin call into :class:`~crew_mcp.service.CrewService`.

Tool docstrings are written for the model: when to call the tool and what comes back. Every failure leaves
through :mod:`crew_mcp.boundary`, as one sentence.
"""

# No `from __future__ import annotations` here: the SDK evaluates these signatures at registration, and
# they name local objects (the approval resolver) that string annotations could not resolve.
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field, WithJsonSchema

from .apps import CARD_TOOL_META
from .boundary import caller, guard, progress, result
from .runtime import Runtime
from .settings import Settings
from .views import ApprovalList, CrewInputs, CrewList, ExecutionList, ResumeView, RunView

__all__ = ["CONVERSATION_DOC", "Approval", "register_tools"]

CONVERSATION_DOC = (
    "Your conversation or thread id, if you have a stable one (agent frameworks: pass the thread id). "
    "Omit it otherwise."
)
CREW_DOC = "Crew name from list_crews; omit when only one crew exists"
STARTS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)


class Approval(BaseModel):
    """The form shown to a human when a run waits for review (flat primitives only)."""

    approve: bool = Field(description="Approve this output? (No = send it back with your feedback)")
    feedback: str = Field(default="", description="Feedback for the crew: what to change, or a note")


def register_tools(mcp: MCPServer, settings: Settings, rt: Runtime) -> None:
    """Add the tools and the prompt to ``mcp``."""
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=True)

    @mcp.tool(title="List crews", annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def list_crews() -> Annotated[CallToolResult, CrewList]:
        """List the CrewAI crews this server can run, with what each does. Start here."""
        return result(rt.require().list_crews(rt.typed_tools, caller(settings, None)))

    @mcp.tool(title="List a crew's inputs", annotations=read_only)
    async def list_inputs(
        crew: Annotated[str, Field(description=CREW_DOC)] = "",
    ) -> Annotated[CallToolResult, CrewInputs]:
        """List the inputs a crew needs (with description, type, allowed values and examples) before kickoff_crew."""
        return result(await guard(rt.require().list_inputs(crew or None, caller=caller(settings, None))))

    @mcp.tool(title="Start a crew run", annotations=STARTS, meta=CARD_TOOL_META)
    async def kickoff_crew(
        ctx: Context,
        inputs: Annotated[
            dict[str, Any],
            Field(default_factory=dict, description="Input values by name, as listed by list_inputs"),
        ],
        crew: Annotated[str, Field(description=CREW_DOC)] = "",
        conversation_id: Annotated[str, Field(description=CONVERSATION_DOC)] = "",
        wait_seconds: Annotated[
            float, Field(ge=0, le=600, description="Wait up to this long (capped by the server) for the run to settle")
        ] = 0,
    ) -> Annotated[CallToolResult, RunView]:
        """Start a crew run with the given inputs; returns its kickoff_id at once (or after a bounded wait).

        Validates inputs first. Each call starts a new, billed run: do not repeat it to check progress; use get_status.
        """
        who = caller(settings, ctx, conversation_id)
        async with rt.wait_slot(who, wait_seconds, starting=True):
            work = rt.require().kickoff(crew or None, inputs, who, wait_seconds=wait_seconds, on_update=progress(ctx))
            return result(await guard(work))

    @mcp.tool(title="Get a run's status", annotations=read_only, meta=CARD_TOOL_META)
    async def get_status(
        ctx: Context,
        kickoff_id: Annotated[
            str,
            Field(
                description="The run's kickoff_id (or the request_id of a kickoff that has none yet); omit for this "
                "conversation's latest. Runs started outside crew-mcp (dashboard, scripts) work too"
            ),
        ] = "",
        conversation_id: Annotated[str, Field(description=CONVERSATION_DOC)] = "",
        wait_seconds: Annotated[
            float,
            Field(
                ge=0, le=600, description="Wait up to this long (capped by the server) for the run to finish or pause"
            ),
        ] = 0,
        crew: Annotated[
            str, Field(description="The crew that runs it, for a run started outside crew-mcp; omit otherwise")
        ] = "",
    ) -> Annotated[CallToolResult, RunView]:
        """Get a run's status, progress, output awaiting review, or final output. Finished runs come from the ledger."""
        who = caller(settings, ctx, conversation_id)
        async with rt.wait_slot(who, wait_seconds):
            work = rt.require().status(
                kickoff_id or None, who, wait_seconds=wait_seconds, on_update=progress(ctx), crew=crew or None
            )
            return result(await guard(work))

    async def ask_human(
        *, kickoff_id: str, approve: bool | None, feedback: str, task_id: str, ctx: Context
    ) -> ElicitationResult[Approval] | Elicit[Approval] | None:
        if approve is not None:
            return None
        caps = ctx.client_capabilities
        if caps is None or caps.elicitation is None:
            raise ToolError(
                "This client cannot show the user an approval form. Ask the user in chat whether to approve the "
                "output (and what feedback to give), then call resume_with_feedback again with approve=true|false "
                "and feedback."
            )
        record = await guard(rt.require().waiting_run(kickoff_id, caller(settings, ctx), task_id=task_id or None))
        output = record.pending.output if record.pending else None
        task = task_id or (record.pending.task_id if record.pending else "?")
        return Elicit(
            f"Crew {record.crew} (run {kickoff_id}) waits for your review of task {task}.\n\n"
            f"{output or '(no output was reported)'}\n\nApprove it, or reject it with feedback?",
            Approval,
        )

    @mcp.tool(
        title="Approve or reject a run's pending task",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
        ),
    )
    async def resume_with_feedback(
        ctx: Context,
        kickoff_id: Annotated[str, Field(description="The run waiting for review")],
        # Exactly ElicitationResult[...] (no "| None"): only then does the SDK hand over a declined or cancelled
        # form instead of failing the call; a resolver that returns None arrives as AcceptedElicitation(data=None).
        decision: Annotated[ElicitationResult[Approval], Resolve(ask_human)],
        approve: Annotated[
            bool | None,
            WithJsonSchema(
                {
                    "type": "boolean",
                    "description": "The user's decision: true approves, false sends the task back with the feedback. "
                    "Omit it to have the user asked in a form (clients that support it).",
                }
            ),
        ] = None,
        feedback: Annotated[str, Field(description="The user's feedback, in their words")] = "",
        task_id: Annotated[str, Field(description="The waiting task; omit to use the one the ledger knows")] = "",
    ) -> Annotated[CallToolResult, ResumeView]:
        """Send the user's approve/reject decision and feedback for a run waiting for human review.

        Only pass approve when the user has decided; never decide for them.
        """
        if not isinstance(decision, AcceptedElicitation):
            raise ToolError(
                f"The user did not answer the approval form; run {kickoff_id} stays paused. Ask them in chat."
            )
        by: Literal["model", "human"] = "model"
        answer: Approval | None = decision.data  # None: approve came as an argument, no form was shown
        if answer is not None:
            approve, feedback, by = answer.approve, answer.feedback, "human"
        assert approve is not None
        who = caller(settings, ctx, by=by, via="elicitation" if by == "human" else "tool")
        work = rt.require().resume(kickoff_id, who, approve=approve, feedback=feedback, task_id=task_id or None)
        return result(await guard(work))

    @mcp.tool(title="List runs", annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def list_executions(
        ctx: Context,
        conversation_id: Annotated[str, Field(description="Only runs of this conversation; omit for all")] = "",
        crew: Annotated[str, Field(description="Only runs of this crew; omit for all")] = "",
        state: Annotated[
            str, Field(description="Only runs in this state (running, waiting_for_human, completed, failed, ...)")
        ] = "",
        limit: Annotated[int, Field(ge=1, le=200, description="At most this many, newest first")] = 20,
    ) -> Annotated[CallToolResult, ExecutionList]:
        """List your crew runs newest first, across conversations and restarts (from crew-mcp's run ledger)."""
        work = rt.require().executions(
            caller(settings, ctx),
            conversation_id=conversation_id or None,
            crew=crew or None,
            state=state or None,
            limit=limit,
        )
        return result(await guard(work))

    @mcp.tool(title="List runs waiting for approval", annotations=ToolAnnotations(read_only_hint=True))
    async def list_pending_approvals(ctx: Context) -> Annotated[CallToolResult, ApprovalList]:
        """List runs waiting for human review, newest first, with how long each has waited."""
        return result(await guard(rt.require().pending_approvals(caller(settings, ctx))))

    @mcp.prompt(title="Run a crew step by step")
    def run_crew(crew: str = "") -> str:
        """Walk through running a crew: inputs → kickoff → status → approval → result."""
        target = f"the crew {crew!r}" if crew else "a crew (call list_crews and ask me which one)"
        return (
            f"Help me run {target} with crew-mcp.\n"
            "1. Call list_inputs for it and ask me for every required input you cannot infer; "
            "show me what you will send.\n"
            "2. Call kickoff_crew with those inputs and tell me the kickoff_id.\n"
            f"3. Call get_status(kickoff_id, wait_seconds={settings.recommended_wait}) repeatedly, telling me the "
            "progress, until it completes, fails, or waits for review.\n"
            "4. If it waits for review, show me the output and ask me to approve or reject with feedback; "
            "send my exact decision with resume_with_feedback, then keep following it with get_status.\n"
            "5. Show me the final output."
        )
