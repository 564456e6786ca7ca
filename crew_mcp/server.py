"""The MCP surface: tools, resources and a prompt over :class:`~crew_mcp.service.CrewService`.

Every failure a model can act on leaves as a :class:`ToolError` sentence (the only exception text mcp
2.3 shows a model). Tool input schemas are flat (no ``anyOf``) so every host accepts them.
"""

import inspect
import json
import keyword
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from operator import getitem
from typing import Annotated, Any, Literal, Optional, TypeVar

from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool
from pydantic import BaseModel, Field, WithJsonSchema

from . import __version__
from .apps import CARD_TOOL_META, RunCard
from .errors import CrewMCPError, UsageError
from .models import ExecutionStatus
from .schema import portable
from .service import Caller, CrewService, default_owner, explain
from .settings import Settings
from .views import ApprovalList, CrewInputs, CrewList, ExecutionList, ResumeView, RunView, dump, execution_uri

__all__ = ["Runtime", "build_server"]

log = logging.getLogger("crew_mcp.server")

ServiceFactory = Callable[[Settings], Awaitable[CrewService]]
_T = TypeVar("_T")

CONVERSATION_DOC = (
    "Your conversation or thread id, if you have a stable one (agent frameworks: pass the thread id). "
    "Omit it otherwise."
)

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


@dataclass
class Runtime:
    """What the lifespan builds; tools reach it through the closure of :func:`build_server`."""

    service: CrewService | None = None
    typed_tools: dict[str, str] = field(default_factory=dict)
    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)
    legacy_subscribers: dict[str, list[Any]] = field(default_factory=dict)

    def require(self) -> CrewService:
        if self.service is None:
            raise ToolError("crew-mcp is still starting; try again in a moment.")
        return self.service

    async def notify(self, kickoff_id: str) -> None:
        """Tell subscribers of ``crew://executions/{kickoff_id}`` (both protocol eras) that it changed."""
        uri = execution_uri(kickoff_id)
        await self.bus.publish(ResourceUpdated(uri=uri))
        for session in list(self.legacy_subscribers.get(uri, [])):
            try:
                await session.send_resource_updated(uri)
            except Exception:
                self.legacy_subscribers[uri].remove(session)

    async def legacy_subscriptions(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        """Serve ``resources/subscribe`` to 2025-era clients, which MCPServer does not do by itself."""
        if ctx.method in ("resources/subscribe", "resources/unsubscribe"):
            uri = str((ctx.params or {}).get("uri", ""))
            sessions = self.legacy_subscribers.setdefault(uri, [])
            if ctx.method == "resources/subscribe":
                sessions.append(ctx.session)
            elif ctx.session in sessions:
                sessions.remove(ctx.session)
            if not sessions:
                self.legacy_subscribers.pop(uri, None)
            return {}
        result = await call_next(ctx)
        if ctx.method == "initialize":
            if isinstance(result, BaseModel):
                dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            else:
                dumped = dict(result or {})
            dumped.setdefault("capabilities", {}).setdefault("resources", {}).update(subscribe=True)
            return dumped
        return result


class Approval(BaseModel):
    """The form shown to a human when a run waits for review (flat primitives only)."""

    approve: bool = Field(description="Approve this output? (No = send it back with your feedback)")
    feedback: str = Field(default="", description="Feedback for the crew: what to change, or a note")


def _owner(settings: Settings) -> str:
    token = get_access_token()
    if token is not None:
        return f"oauth:{token.client_id}:{token.subject or ''}"
    return default_owner(settings)


def _caller(settings: Settings, ctx: Context | None, conversation_id: str, *, by: str = "model") -> Caller:
    conversation = conversation_id.strip()
    if not conversation and ctx is not None:
        headers = ctx.headers or {}
        session = headers.get("mcp-session-id")
        conversation = f"session:{session}" if session else ""
    return Caller(owner=_owner(settings), conversation_id=conversation or "default", by=by, via="tool")  # type: ignore[arg-type]


def _result(view: Any) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=view.text())], structured_content=dump(view, compact=True)
    )


async def _guard(coro: Awaitable[_T]) -> _T:
    try:
        return await coro
    except CrewMCPError as exc:
        raise ToolError(explain(exc)) from None


def _progress(ctx: Context) -> Callable[[ExecutionStatus], Awaitable[None]]:
    async def report(status: ExecutionStatus) -> None:
        p = status.progress
        parts = [status.state.value]
        if p.current_task:
            parts.append(f"task {p.current_task}")
        if p.current_agent:
            parts.append(f"agent {p.current_agent}")
        await ctx.report_progress(float(p.completed or 0), float(p.total) if p.total else None, " · ".join(parts))

    return report


async def _default_service(settings: Settings) -> CrewService:
    from .crews import build_registry
    from .ledger import default_ledger_url, open_ledger

    ledger = open_ledger(settings.ledger_url or default_ledger_url())
    return CrewService(settings, build_registry(settings), ledger)


def build_server(
    settings: Settings,
    *,
    service_factory: ServiceFactory | None = None,
    runtime: Runtime | None = None,
    webhook_base: str | None = None,
) -> MCPServer:
    """Build crew-mcp's MCP server. The crews, the ledger and the poll loops live in its lifespan.

    ``runtime`` lets an HTTP app share the running service with its own routes (webhooks, health);
    ``webhook_base`` is the URL under which those routes receive AMP webhooks, when they can.
    """
    runtime = runtime or Runtime()
    factory = service_factory or _default_service

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Runtime]:
        service = await factory(settings)
        service.webhook_base = webhook_base  # only the HTTP app can receive webhooks (stdio cannot)
        service.on_change = runtime.notify
        async with service:
            runtime.service = service
            try:
                yield runtime
            finally:
                runtime.service = None

    instructions = INSTRUCTIONS + (SIMULATED_NOTE if settings.simulated else "")
    card = RunCard(service=runtime.require, caller=lambda ctx: _caller(settings, ctx, ""))
    mcp = _PortableMCPServer(
        "crew-mcp",
        title="CrewAI crews",
        version=__version__,
        instructions=instructions,
        lifespan=lifespan,
        log_level=settings.log_level,
        subscriptions=runtime.bus,
        extensions=[card],
        middleware=[runtime.legacy_subscriptions, card.hide_from_plain_clients],
    )
    _register_tools(mcp, settings, runtime)
    _register_resources(mcp, settings, runtime)
    _register_typed_tools(mcp, settings, runtime)
    return mcp


def _register_tools(mcp: MCPServer, settings: Settings, rt: Runtime) -> None:
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=True)

    @mcp.tool(title="List crews", annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def list_crews() -> Annotated[CallToolResult, CrewList]:
        """List the CrewAI crews this server can run, with what each does. Start here."""
        return _result(rt.require().list_crews(rt.typed_tools))

    @mcp.tool(title="List a crew's inputs", annotations=read_only)
    async def list_inputs(
        crew: Annotated[str, Field(description="Crew name from list_crews; omit when only one crew exists")] = "",
    ) -> Annotated[CallToolResult, CrewInputs]:
        """List the inputs a crew needs (with description, type, allowed values and examples) before kickoff_crew."""
        return _result(await _guard(rt.require().list_inputs(crew or None)))

    @mcp.tool(
        title="Start a crew run",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
        meta=CARD_TOOL_META,
    )
    async def kickoff_crew(
        ctx: Context,
        inputs: Annotated[
            dict[str, Any],
            Field(default_factory=dict, description="Input values by name, as listed by list_inputs"),
        ],
        crew: Annotated[str, Field(description="Crew name from list_crews; omit when only one crew exists")] = "",
        conversation_id: Annotated[str, Field(description=CONVERSATION_DOC)] = "",
        wait_seconds: Annotated[
            float, Field(ge=0, le=600, description="Wait up to this long (capped by the server) for the run to settle")
        ] = 0,
    ) -> Annotated[CallToolResult, RunView]:
        """Start a crew run with the given inputs; returns its kickoff_id at once (or after a bounded wait).

        Validates inputs first. Each call starts a new, billed run: do not repeat it to check progress; use get_status.
        """
        svc = rt.require()
        caller = _caller(settings, ctx, conversation_id)
        return _result(
            await _guard(svc.kickoff(crew or None, inputs, caller, wait_seconds=wait_seconds, on_update=_progress(ctx)))
        )

    @mcp.tool(title="Get a run's status", annotations=read_only, meta=CARD_TOOL_META)
    async def get_status(
        ctx: Context,
        kickoff_id: Annotated[str, Field(description="The run's kickoff_id; omit for this conversation's latest")] = "",
        conversation_id: Annotated[str, Field(description=CONVERSATION_DOC)] = "",
        wait_seconds: Annotated[
            float,
            Field(
                ge=0, le=600, description="Wait up to this long (capped by the server) for the run to finish or pause"
            ),
        ] = 0,
    ) -> Annotated[CallToolResult, RunView]:
        """Get a run's status, progress, output awaiting review, or final output. Finished runs come from the ledger."""
        svc = rt.require()
        caller = _caller(settings, ctx, conversation_id)
        view = await _guard(svc.status(kickoff_id or None, caller, wait_seconds=wait_seconds, on_update=_progress(ctx)))
        return _result(view)

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
        svc = rt.require()
        record = await _guard(svc.pending_record(kickoff_id, _caller(settings, ctx, ""), task_id=task_id or None))
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
        svc = rt.require()
        by: Literal["model", "human"] = "model"
        if not isinstance(decision, AcceptedElicitation):
            raise ToolError(
                f"The user did not answer the approval form; run {kickoff_id} stays paused. Ask them in chat."
            )
        answer: Approval | None = decision.data  # None: approve came as an argument, no form was shown
        if answer is not None:
            approve, feedback, by = answer.approve, answer.feedback, "human"
        assert approve is not None
        caller = _caller(settings, ctx, "", by=by)
        caller = Caller(caller.owner, caller.conversation_id, by=by, via="elicitation" if by == "human" else "tool")
        view = await _guard(svc.resume(kickoff_id, caller, approve=approve, feedback=feedback, task_id=task_id or None))
        return _result(view)

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
        svc = rt.require()
        caller = _caller(settings, ctx, "")
        view = await _guard(
            svc.executions(
                caller, conversation_id=conversation_id or None, crew=crew or None, state=state or None, limit=limit
            )
        )
        return _result(view)

    @mcp.tool(title="List runs waiting for approval", annotations=ToolAnnotations(read_only_hint=True))
    async def list_pending_approvals(ctx: Context) -> Annotated[CallToolResult, ApprovalList]:
        """List runs waiting for human review, newest first, with how long each has waited."""
        return _result(await _guard(rt.require().pending_approvals(_caller(settings, ctx, ""))))

    @mcp.prompt(title="Run a crew step by step")
    def run_crew(crew: str = "") -> str:
        """Walk through running a crew: inputs → kickoff → status → approval → result."""
        target = f"the crew {crew!r}" if crew else "a crew (call list_crews and ask me which one)"
        return (
            f"Help me run {target} with crew-mcp.\n"
            "1. Call list_inputs for it and ask me for every required input you cannot infer; "
            "show me what you will send.\n"
            "2. Call kickoff_crew with those inputs and tell me the kickoff_id.\n"
            "3. Call get_status(kickoff_id, wait_seconds=30) repeatedly, telling me the progress, until it completes, "
            "fails, or waits for review.\n"
            "4. If it waits for review, show me the output and ask me to approve or reject with feedback; "
            "send my exact decision with resume_with_feedback, then keep following it with get_status.\n"
            "5. Show me the final output."
        )


def _register_resources(mcp: MCPServer, settings: Settings, rt: Runtime) -> None:
    async def read(coro: Awaitable[BaseModel], uri: str) -> str:
        try:
            return json.dumps(dump(await coro), ensure_ascii=False)
        except UsageError as exc:
            raise ResourceNotFoundError(f"{uri}: {exc}") from None
        except CrewMCPError as exc:
            raise ResourceNotFoundError(f"{uri}: {explain(exc)}") from None

    @mcp.resource("crew://crews", name="crews", title="Configured crews", mime_type="application/json")
    async def crews_resource() -> str:
        """The crews this server runs."""
        return json.dumps(dump(rt.require().list_crews(rt.typed_tools)), ensure_ascii=False)

    @mcp.resource("crew://{crew}/inputs", name="crew-inputs", title="A crew's inputs", mime_type="application/json")
    async def inputs_resource(crew: str) -> str:
        """What a crew needs to start."""
        return await read(rt.require().list_inputs(crew), f"crew://{crew}/inputs")

    @mcp.resource(
        "crew://executions/{kickoff_id}", name="execution", title="A run's status", mime_type="application/json"
    )
    async def execution_resource(kickoff_id: str) -> str:
        """One run's normalized status (final statuses come from the ledger)."""
        caller = Caller(owner=_owner(settings))
        return await read(rt.require().status(kickoff_id, caller), f"crew://executions/{kickoff_id}")

    @mcp.resource(
        "crew://conversations/{conversation_id}",
        name="conversation",
        title="A conversation's runs",
        mime_type="application/json",
    )
    async def conversation_resource(conversation_id: str) -> str:
        """Every run of one conversation, newest first."""
        caller = Caller(owner=_owner(settings))
        return await read(
            rt.require().executions(caller, conversation_id=conversation_id, limit=200),
            f"crew://conversations/{conversation_id}",
        )

    @mcp.resource("crew://approvals", name="approvals", title="Runs waiting for review", mime_type="application/json")
    async def approvals_resource() -> str:
        """Runs waiting for human review, newest first."""
        return await read(rt.require().pending_approvals(Caller(owner=_owner(settings))), "crew://approvals")


_PY_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict[str, Any],
    "array": list[Any],
}


def _typed_crews(settings: Settings) -> list[tuple[str, str, list[Any]]]:
    """(crew, description, inputs) for crews that get a typed ``run_<crew>`` tool."""
    if settings.crews:
        chosen = [c for c in settings.crews if c.typed_tool or (c.typed_tool is None and c.inputs)]
        chosen = [c for c in chosen if c.typed_tool or len(chosen) <= settings.typed_tools_max]
        return [(c.name, c.description, [(n, i) for n, i in c.inputs.items()]) for c in chosen if c.inputs]
    from .crews import input_config
    from .simulator import builtin_crews

    specs = builtin_crews()[: settings.typed_tools_max]
    return [(s.name, f"[simulated] {s.description}", [(i.name, input_config(i)) for i in s.inputs]) for s in specs]


def _usable_names(crew: str, inputs: list[Any]) -> bool:
    """A typed tool needs every input name to be a parameter name; otherwise the crew keeps only kickoff_crew."""
    bad = [n for n, _ in inputs if not n.isidentifier() or keyword.iskeyword(n) or n == "ctx"]
    if bad:
        log.warning("crew %s gets no run_%s tool: input names %s are not usable as parameters", crew, crew, bad)
    return not bad


def _register_typed_tools(mcp: MCPServer, settings: Settings, rt: Runtime) -> None:
    for crew, description, inputs in _typed_crews(settings):
        if not _usable_names(crew, inputs):
            continue
        tool_name = f"run_{crew}"
        fn = _typed_tool(settings, rt, crew, inputs)
        fn.__name__ = tool_name
        mcp.add_tool(
            fn,
            name=tool_name,
            title=f"Run crew {crew}",
            description=f"Start the {crew} crew: {description}".rstrip(": ")
            + ". Returns the kickoff_id; follow it with get_status.",
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
            ),
            meta=CARD_TOOL_META,
        )
        rt.typed_tools[crew] = tool_name


def _typed_tool(settings: Settings, rt: Runtime, crew: str, inputs: list[Any]) -> Callable[..., Any]:
    names = {n for n, _ in inputs}
    params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    for name, conf in sorted(inputs, key=lambda item: not (item[1].required and item[1].default is None)):
        base: Any = getitem(Literal, tuple(conf.enum)) if conf.enum else _PY_TYPES[conf.type]
        examples = [conf.example] if conf.example is not None else None
        ann: Any = getitem(Annotated, (base, Field(description=conf.description or name, examples=examples)))
        default: Any = inspect.Parameter.empty
        if not conf.required or conf.default is not None:
            default = conf.default
        if default is None:  # optional with no default: a plain typed schema, absent means "not given"
            schema: dict[str, Any] = {"type": conf.type, "description": conf.description or name}
            if conf.enum:
                schema["enum"] = list(conf.enum)
            ann = getitem(Annotated, (getitem(Optional, base), WithJsonSchema(schema)))
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default))
        annotations[name] = ann
    extras: list[tuple[str, Any, Any]] = [
        ("conversation_id", Annotated[str, Field(description=CONVERSATION_DOC)], ""),
        ("wait_seconds", Annotated[float, Field(ge=0, le=600, description="Wait up to this long")], 0.0),
    ]
    for name, ann, default in extras:
        if name not in names:
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default))
            annotations[name] = ann
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
    annotations["ctx"] = Context

    async def run_typed(**kwargs: Any) -> CallToolResult:
        ctx: Context = kwargs.pop("ctx")
        conversation_id = kwargs.pop("conversation_id", "") if "conversation_id" not in names else ""
        wait = float(kwargs.pop("wait_seconds", 0.0)) if "wait_seconds" not in names else 0.0
        values = {k: v for k, v in kwargs.items() if v is not None}
        svc = rt.require()
        caller = _caller(settings, ctx, str(conversation_id))
        return _result(await _guard(svc.kickoff(crew, values, caller, wait_seconds=wait, on_update=_progress(ctx))))

    run_typed.__signature__ = inspect.Signature(params, return_annotation=Annotated[CallToolResult, RunView])  # type: ignore[attr-defined]
    run_typed.__annotations__ = {**annotations, "return": Annotated[CallToolResult, RunView]}
    return run_typed
