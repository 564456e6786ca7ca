"""The flow every third-party client script drives through its own client library, and the transcript it prints.

Standard library only: this module runs in every client's venv (mcp 1.x, fastmcp 2.x, crewai, ...), none of which
has crew-mcp installed. A script reads one JSON argument (the target: transport, server command or URL, ...),
builds a ``call(tool, arguments) -> Reply`` on top of its client, hands it to :func:`approval_walk`, and prints the
:class:`Transcript` as one JSON line on stdout. The pytest side (tests/thirdparty_support.py) asserts on it.

The walk: kickoff_crew (the simulated ``research`` crew, which pauses for one review) → get_status until the run
waits for a human → resume_with_feedback(approve=false, feedback) → get_status until the re-run waits again with
the feedback in its output → resume_with_feedback(approve=true) → get_status until completed.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

CREW = "research"
TOPIC = "tide pools of the Atlantic coast"
REJECT_FEEDBACK = "Name one risk and its cost."
APPROVE_FEEDBACK = "Good, ship it."
WAIT_SECONDS = 10
MAX_POLLS = 20
# The first line of every run's text rendering: "Run <kickoff_id> of crew <crew>: <state> ...". Clients that hand
# back only the text (no structuredContent) are followed through it.
RUN_HEAD = re.compile(r"^Run (\S+) of crew \S+: (\w+)", re.M)


@dataclass
class Reply:
    """One tool result as a client library handed it back."""

    is_error: bool
    text: str
    structured: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class WalkStopped(Exception):
    """The walk cannot go on: a tool answered with an error, or a run never reached the expected state."""


def run_of(reply: Reply) -> dict[str, Any]:
    """The run a reply describes: its structured content (a resume's ``run``), else what its text says."""
    if reply.structured is not None:
        run = reply.structured.get("run", reply.structured)
        return run if isinstance(run, dict) else {}
    head = RUN_HEAD.search(reply.text)
    return {"kickoff_id": head.group(1), "state": head.group(2), "text": reply.text} if head else {}


def review_text(run: dict[str, Any]) -> str:
    """The output waiting for review (structured ``pending.output``, or the whole text rendering)."""
    pending = run.get("pending")
    if isinstance(pending, dict):
        return str(pending.get("output") or "")
    return str(run.get("text") or "")


def _leaves(exc: BaseException) -> list[BaseException]:
    """The errors an exception group (a task group's, a client library's) is made of."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


class Transcript:
    """What happened, in order: the negotiated protocol, the tools listed, every call and how the walk ended."""

    def __init__(self, client: str) -> None:
        self.data: dict[str, Any] = {"client": client, "protocol_version": None, "tools": [], "calls": []}
        self.data["error"] = None

    def recorder(
        self, call: Callable[[str, dict[str, Any]], Awaitable[Reply]], into: str = "calls"
    ) -> Callable[..., Awaitable[Reply]]:
        """Wrap ``call`` so every call and its reply land in the transcript's list ``into``."""

        async def recorded(tool: str, arguments: dict[str, Any]) -> Reply:
            entry: dict[str, Any] = {"tool": tool, "arguments": arguments}
            self.data.setdefault(into, []).append(entry)
            reply = await call(tool, arguments)
            run = run_of(reply)
            entry.update(is_error=reply.is_error, text=reply.text, structured=reply.structured, **reply.extra)
            entry.update(state=run.get("state"), kickoff_id=run.get("kickoff_id"))
            return reply

        return recorded

    def fail(self, exc: BaseException) -> None:
        """Record why the walk ended early: the innermost errors in one line, and the traceback's end."""
        self.data["error"] = "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))[:2000]
        if not isinstance(exc, WalkStopped):
            self.data["traceback"] = "".join(traceback.format_exception(exc)).strip()[-4000:]

    def print(self) -> None:
        """The transcript as the last line of stdout."""
        sys.stdout.write(json.dumps(self.data, default=str) + "\n")
        sys.stdout.flush()


async def _step(call: Callable[..., Awaitable[Reply]], tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    reply = await call(tool, arguments)
    if reply.is_error:
        raise WalkStopped(f"{tool} answered with an error: {reply.text}")
    run = run_of(reply)
    if not run.get("kickoff_id") or not run.get("state"):
        raise WalkStopped(f"{tool} answered with no run in it: {reply.text}")
    return run


async def _wait_until(
    call: Callable[..., Awaitable[Reply]], kickoff_id: str, wanted: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    for _ in range(MAX_POLLS):
        run = await _step(call, "get_status", {"kickoff_id": kickoff_id, "wait_seconds": WAIT_SECONDS})
        if run["state"] == wanted and check(run):
            return run
        if run["state"] not in {"running", "waiting_for_human", "unknown"}:
            raise WalkStopped(f"expected {wanted}, the run is {run['state']}: {run.get('error') or run}")
    raise WalkStopped(f"the run never reached {wanted} in {MAX_POLLS} polls")


async def approval_walk(call: Callable[..., Awaitable[Reply]], conversation_id: str) -> None:
    """kickoff → status → reject with feedback → re-run → approve → completed, through ``call``."""
    args = {"crew": CREW, "inputs": {"topic": TOPIC}, "conversation_id": conversation_id}
    kickoff_id = (await _step(call, "kickoff_crew", args))["kickoff_id"]
    await _wait_until(call, kickoff_id, "waiting_for_human", lambda run: True)
    decision = {"kickoff_id": kickoff_id, "approve": False, "feedback": REJECT_FEEDBACK}
    await _step(call, "resume_with_feedback", decision)
    await _wait_until(call, kickoff_id, "waiting_for_human", lambda run: REJECT_FEEDBACK in review_text(run))
    decision = {"kickoff_id": kickoff_id, "approve": True, "feedback": APPROVE_FEEDBACK}
    await _step(call, "resume_with_feedback", decision)
    await _wait_until(call, kickoff_id, "completed", lambda run: True)


def run_script(
    client: str, body: Callable[[dict[str, Any], Transcript], Awaitable[None]], timeout: float = 150
) -> None:
    """Run ``body(target, transcript)`` with the script's one JSON argument as target; print the transcript.

    Whatever happens, the transcript is printed: an exception (a client library's own error included) ends the walk
    and is recorded in it, so the test reports what the client said rather than a bare exit status.
    """
    spec: dict[str, Any] = json.loads(sys.argv[1])
    transcript = Transcript(client)

    async def guarded() -> None:
        try:
            async with asyncio.timeout(timeout):
                await body(spec, transcript)
        except Exception as exc:
            transcript.fail(exc)

    asyncio.run(guarded())
    transcript.print()
