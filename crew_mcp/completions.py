"""Argument completion (``completion/complete``) for the resource templates and the prompt.

Crew names complete ``crew://{crew}/inputs`` and the ``run_crew`` prompt's ``crew``; the caller's own runs
complete ``crew://executions/{kickoff_id}`` and ``crew://conversations/{conversation_id}`` (from the run ledger,
newest first, so another owner's ids are never offered). Anything else completes to nothing, as the protocol
allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mcp.server import MCPServer
from mcp.types import Completion, CompletionArgument, CompletionContext, PromptReference, ResourceTemplateReference

from .boundary import caller
from .runtime import Runtime
from .settings import Settings

__all__ = ["MAX_VALUES", "register_completions"]

MAX_VALUES = 100
"""The protocol's cap on the values of one completion."""
_RUNS_SCANNED = 200
"""How many of the caller's newest runs are offered from (the ledger lists newest first)."""


def register_completions(mcp: MCPServer, settings: Settings, rt: Runtime) -> None:
    """Serve ``completion/complete`` on ``mcp`` (which also advertises the completions capability)."""

    async def crews() -> list[str]:  # only the crews this caller may use: the others are not theirs to know
        return [c.name for c in rt.require().list_crews(rt.typed_tools, caller=caller(settings, None)).crews]

    async def runs(field: str) -> list[str]:
        listing = await rt.require().executions(caller(settings, None), limit=_RUNS_SCANNED)
        values = [getattr(run, field) for run in listing.executions]
        return list(dict.fromkeys(v for v in values if isinstance(v, str) and v))

    sources: dict[tuple[str, str, str], Callable[[], Awaitable[list[str]]]] = {
        ("ref/resource", "crew://{crew}/inputs", "crew"): crews,
        ("ref/prompt", "run_crew", "crew"): crews,
        ("ref/resource", "crew://executions/{kickoff_id}", "kickoff_id"): lambda: runs("kickoff_id"),
        ("ref/resource", "crew://conversations/{conversation_id}", "conversation_id"): lambda: runs("conversation_id"),
    }

    async def complete(
        ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, _: CompletionContext | None
    ) -> Completion:
        target = ref.uri if isinstance(ref, ResourceTemplateReference) else ref.name
        source = sources.get((ref.type, target, argument.name))
        if source is None:
            return Completion(values=[], total=0, has_more=False)
        prefix = argument.value.casefold()
        matches = [v for v in await source() if v.casefold().startswith(prefix)]
        return Completion(values=matches[:MAX_VALUES], total=len(matches), has_more=len(matches) > MAX_VALUES)

    mcp.completion()(complete)  # type: ignore[no-untyped-call]  # the SDK's decorator factory is unannotated
