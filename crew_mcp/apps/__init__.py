"""crew-mcp's MCP App (extension ``io.modelcontextprotocol/ui``): the run card and the app-only tools it calls.

The contract (also in docs/apps.md):

* Resource ``ui://crew-mcp/run`` (:data:`RUN_CARD_URI`), ``text/html;profile=mcp-app``, one self-contained page
  (no external script, style, font or image) with ``_meta.ui.csp == {}``: it declares no domain, so the host's
  restrictive default CSP applies (``connect-src 'none'``). The page talks only to its host, over ``postMessage``.
* Tools whose result is a ``RunView`` (``get_status``, ``kickoff_crew``, ``run_<crew>``) carry
  :data:`CARD_TOOL_META` (``_meta.ui.resourceUri``). Their results are unchanged: the card renders their
  ``structuredContent``.
* App-only tools (``_meta.ui.visibility == ["app"]``), served only to clients that negotiated MCP Apps:
  ``app_run_view(kickoff_id, wait_seconds=0, since="")`` and
  ``app_decide(kickoff_id, task_id, approve, review_token, feedback="")``, both answering a :class:`CardView`.
* A decision sent by ``app_decide`` is recorded as ``by="human", via="app"``, so it passes the ``human`` approval
  policy. Three things establish that a person made it: hosts must keep app-only tools out of the model's tool
  list (the spec's MUST); crew-mcp lists and serves them only to clients that negotiated Apps; and the call must
  carry the review token that ``app_run_view`` returned in its result ``_meta`` (which hosts do not show the
  model). The token is an HMAC over (owner, kickoff_id, task_id, the output under review), so it also proves
  the person saw *that* output: a revised output needs a fresh token.
* Clients without Apps see today's tools/list and resources/list (:meth:`RunCard.hide_from_plain_clients`).

Wiring (``build_server``): ``card = RunCard(service=..., caller=...)``, ``MCPServer(extensions=[card],
middleware=[..., card.hide_from_plain_clients])``, and ``meta=CARD_TOOL_META`` on the RunView tools.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server.apps import Apps, ResourceCsp, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from ..boundary import guard
from ..calls import as_dict
from ..errors import RunNotFoundError
from ..identity import Caller
from ..models import ExecutionStatus
from ..service import CrewService
from ..views import RunView, decision_notice, dump

__all__ = [
    "APP_TOOLS",
    "CARD_TOOL_META",
    "REVIEW_META_KEY",
    "RUN_CARD_URI",
    "CardView",
    "RunCard",
    "card_html",
    "fingerprint",
]

RUN_CARD_URI = "ui://crew-mcp/run"
"""The run card's resource URI."""

CARD_TOOL_META: dict[str, Any] = {"ui": {"resourceUri": RUN_CARD_URI}}
"""``_meta`` for the model-visible tools the card renders (``MCPServer.tool(..., meta=CARD_TOOL_META)``)."""

APP_TOOLS = ("app_run_view", "app_decide")
"""The app-only tools: hidden from the model, callable by the card through its host."""

REVIEW_META_KEY = "crew-mcp/review"
"""Result ``_meta`` key carrying ``{"task_id", "token"}`` for the output under review (card only)."""

APP_WAIT_MAX = 30.0
"""Longest bounded wait one ``app_run_view`` call may ask for (hosts cancel tool calls after about 60 s)."""

PAUSED_CHECK = 10.0
"""Seconds between re-reads of a paused run during one ``app_run_view`` wait."""

_T = TypeVar("_T")


_INLINE = re.compile(r"/\* inline: ([a-z_]+\.(?:css|js)) \*/")


@functools.cache
def card_html() -> str:
    """The card's one self-contained HTML document: run_card.html with its stylesheet and scripts inlined.

    They are separate files in the package so each can be read (and audited) on its own; the host gets one page.
    """
    folder = resources.files(__package__)

    def inline(match: re.Match[str]) -> str:
        text = folder.joinpath(match.group(1)).read_text(encoding="utf-8")
        # Either would end (or confuse) the inline <style>/<script> element early.
        if "</" in text or "<!--" in text:
            raise ValueError(f"{match.group(1)} cannot be inlined: it contains '</' or '<!--'")
        return text

    return _INLINE.sub(inline, folder.joinpath("run_card.html").read_text(encoding="utf-8"))


class CardView(BaseModel):
    """What the run card shows: the run, its inputs as the ledger kept them, and a fingerprint for long polls."""

    run: RunView
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Input values, when the ledger keeps them (CREW_MCP_KEEP_INPUT_VALUES)"
    )
    input_names: list[str] = Field(default_factory=list)
    fingerprint: str = Field(description="Pass back as `since` to wait for the next change")
    approval_policy: Literal["model", "human"]
    notice: str = Field(default="", description="What the last action did, in a sentence for the person")

    def text(self) -> str:
        return "\n".join(filter(None, [self.notice, self.run.text()]))


class RunCard(Apps):
    """The MCP Apps extension of crew-mcp: the ``ui://crew-mcp/run`` card and its app-only tools.

    ``service`` returns the running :class:`CrewService` (raising ``ToolError`` while it starts); ``caller``
    names the principal of the current request, exactly as the model-visible tools do.
    """

    def __init__(
        self,
        *,
        service: Callable[[], CrewService],
        caller: Callable[[Context], Caller],
        wait_slot: Callable[[Caller, float], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        super().__init__()
        self._service = service
        self._caller = caller
        self._wait_slot = wait_slot or _no_slot
        # Per process: a token outlives neither a restart nor a hop to another replica; the card then gets
        # "out of date" and fetches a fresh token with app_run_view (see docs/apps.md).
        self._key = secrets.token_bytes(32)
        self.add_html_resource(
            RUN_CARD_URI,
            card_html(),
            name="run-card",
            title="Crew run",
            description="An interactive card for one crew run: progress, the output to review, approve or reject.",
            csp=ResourceCsp(),
            prefers_border=True,
        )
        self._register_tools()

    # ------------------------------------------------------------------------------------------- tools

    def _register_tools(self) -> None:
        @self.tool(
            resource_uri=RUN_CARD_URI,
            visibility=["app"],
            title="Run card: read a run",
            annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True),
        )
        async def app_run_view(
            ctx: Context,
            kickoff_id: Annotated[str, Field(description="The run shown by the card")],
            wait_seconds: Annotated[
                float, Field(ge=0, le=APP_WAIT_MAX, description="Wait up to this long for the run to change")
            ] = 0,
            since: Annotated[str, Field(description="The fingerprint the card shows; wait for a different one")] = "",
        ) -> Annotated[CallToolResult, CardView]:
            """For crew-mcp's run card only: the run with its inputs, after an optional bounded wait for a change."""
            caller = self._app_caller(ctx, "app_run_view")
            # Within the server's wait cap, and counted like any other wait of this user (team limits).
            wait = min(wait_seconds, self._service().settings.wait_cap_seconds)
            async with self._wait_slot(caller, wait):
                view = await guard(self._status(kickoff_id, caller, wait, since))
            return await self._card_result(view, caller)

        @self.tool(
            resource_uri=RUN_CARD_URI,
            visibility=["app"],
            title="Run card: approve or reject",
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
            ),
        )
        async def app_decide(
            ctx: Context,
            kickoff_id: Annotated[str, Field(description="The run waiting for review")],
            task_id: Annotated[str, Field(description="The task whose output the person reviewed")],
            approve: Annotated[bool, Field(description="true approves; false sends the task back with the feedback")],
            review_token: Annotated[str, Field(description="The token app_run_view returned for this output")],
            feedback: Annotated[str, Field(description="The person's feedback, in their words")] = "",
        ) -> Annotated[CallToolResult, CardView]:
            """For crew-mcp's run card only: send the person's decision on the output they reviewed."""
            caller = self._app_caller(ctx, "app_decide").deciding("human", "app")
            svc = self._service()
            view = await guard(svc.status(kickoff_id, caller))
            pending = view.pending
            if view.state != "waiting_for_human" or pending is None or pending.task_id != task_id:
                raise ToolError(
                    f"Run {kickoff_id} no longer waits for review of task {task_id} (it is {view.state}); "
                    "nothing was sent. The card shows its current state."
                )
            expected = self._token(caller.owner, kickoff_id, task_id, pending.output)
            if not hmac.compare_digest(expected, review_token):
                raise ToolError(
                    "This card is out of date (the output changed, or crew-mcp restarted since it was shown); "
                    "nothing was sent. Review the output shown now and decide again."
                )
            resumed = await guard(svc.resume(kickoff_id, caller, approve=approve, feedback=feedback, task_id=task_id))
            notice = decision_notice(task_id, approve, resumed.outcome)
            return await self._card_result(resumed.run, caller, notice=notice)

    def _app_caller(self, ctx: Context, tool: str) -> Caller:
        if not client_supports_apps(ctx):
            raise ToolError(
                f"{tool} belongs to crew-mcp's run card and answers only hosts that render MCP Apps. "
                "Use get_status and resume_with_feedback instead."
            )
        return self._caller(ctx)

    async def _status(self, kickoff_id: str, caller: Caller, wait: float, since: str) -> RunView:
        """The run's status; with a wait, return as soon as it differs from ``since``, or when the wait is over.

        A running run is watched by the service's shared poll loop. A paused one has nothing to watch there (it
        is settled): a decision made elsewhere (chat, terminal, another card) shows up on a re-read every
        :data:`PAUSED_CHECK` seconds.
        """
        svc = self._service()
        if wait <= 0 or not since:
            return await svc.status(kickoff_id, caller, wait_seconds=wait)
        deadline = anyio.current_time() + wait
        while True:
            remaining = deadline - anyio.current_time()
            view = await self._changed_or_settled(svc, kickoff_id, caller, max(remaining, 0.0), since)
            if fingerprint(view) != since or view.state != "waiting_for_human" or remaining <= 0:
                return view
            await anyio.sleep(min(PAUSED_CHECK, remaining))

    async def _changed_or_settled(
        self, svc: CrewService, kickoff_id: str, caller: Caller, wait: float, since: str
    ) -> RunView:
        view: RunView | None = None
        with anyio.CancelScope() as scope:

            async def on_update(status: ExecutionStatus) -> None:
                if fingerprint(status) != since:
                    scope.cancel()

            view = await svc.status(kickoff_id, caller, wait_seconds=wait, on_update=on_update)
        # Cancelled mid-wait because something changed: read it once more, outside the wait.
        return view if view is not None else await svc.status(kickoff_id, caller)

    async def _card_result(self, run: RunView, caller: Caller, *, notice: str = "") -> CallToolResult:
        svc = self._service()
        record = None
        if run.kickoff_id:
            try:
                record = await svc.record(run.kickoff_id, caller)
            except RunNotFoundError:  # an approver's view of another's run that has moved on: no inputs to show
                record = None
        card = CardView(
            run=run,
            inputs=dict(record.inputs) if record else {},
            input_names=list(record.input_names) if record else [],
            fingerprint=fingerprint(run),
            approval_policy=svc.settings.approval_policy,
            notice=notice,
        )
        meta: dict[str, Any] | None = None
        if run.state == "waiting_for_human" and run.pending is not None and run.kickoff_id:
            token = self._token(caller.owner, run.kickoff_id, run.pending.task_id, run.pending.output)
            meta = {REVIEW_META_KEY: {"task_id": run.pending.task_id, "token": token}}
        return CallToolResult(
            content=[TextContent(type="text", text=card.text())],
            structured_content=dump(card, compact=True),
            _meta=meta,
        )

    def _token(self, owner: str, kickoff_id: str, task_id: str, output: str | None) -> str:
        digest = hashlib.sha256((output or "").encode()).hexdigest()
        message = json.dumps([owner, kickoff_id, task_id, digest]).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    # ------------------------------------------------------------------------------------- middleware

    async def hide_from_plain_clients(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: a client without MCP Apps gets tools/list and resources/list as they were before
        the card existed (no app-only tools, no ``_meta.ui``, no ``ui://`` resource)."""
        result = await call_next(ctx)
        if ctx.method not in ("tools/list", "resources/list") or client_supports_apps(ctx):
            return result
        data = as_dict(result)
        if ctx.method == "tools/list":
            data["tools"] = [_plain_tool(t) for t in data.get("tools", []) if t.get("name") not in APP_TOOLS]
        else:
            data["resources"] = [r for r in data.get("resources", []) if not str(r.get("uri", "")).startswith("ui://")]
        return data


def _plain_tool(tool: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (tool.get("_meta") or {}).items() if k != "ui"}
    plain = {k: v for k, v in tool.items() if k != "_meta"}
    if meta:
        plain["_meta"] = meta
    return plain


def fingerprint(run: RunView | ExecutionStatus) -> str:
    """A short digest of what the card shows of a run's progress: state, tasks, agent and the pending output."""
    p, pending = run.progress, run.pending
    parts = [
        str(run.state),
        p.completed,
        p.total,
        p.current_task,
        p.current_agent,
        pending.task_id if pending else None,
        pending.output if pending else None,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@asynccontextmanager
async def _no_slot(caller: Caller, seconds: float) -> AsyncIterator[None]:
    yield
