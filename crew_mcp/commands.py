"""The ``crew-mcp`` commands that work on crews and runs, for people and scripts: one call into the service each.

They print a view (its text, or ``--json``) and return the exit status; errors leave as the service raised them
(the CLI turns them into one sentence and an exit status) or as :class:`CLIError` for bad command lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .identity import Caller
    from .models import ExecutionStatus
    from .service import CrewService
    from .views import RunView

__all__ = ["COMMANDS", "CLIError"]


class CLIError(Exception):
    """A failure to report as one sentence; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _emit(args: argparse.Namespace, view: Any) -> None:
    from .views import dump

    if args.json:
        print(json.dumps(dump(view), indent=2, ensure_ascii=False))
    else:
        print(view.text())


def _parse_pairs(items: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    crew: str | None = None
    values: dict[str, Any] = {}
    for i, item in enumerate(items):
        if ":=" in item and "=" not in item.split(":=", 1)[0]:
            key, raw = item.split(":=", 1)
            try:
                values[key] = json.loads(raw)
            except ValueError:
                raise CLIError(
                    f"{item!r}: the value after ':=' must be JSON (e.g. tags:='[\"a\",\"b\"]').", 2
                ) from None
        elif "=" in item:
            key, value = item.split("=", 1)
            values[key] = value
        elif i == 0:
            crew = item
        else:
            raise CLIError(f"{item!r} is not key=value; the crew name, if any, comes first.", 2)
    return crew, values


def _progress_printer() -> Callable[[ExecutionStatus], Awaitable[None]]:
    tty = sys.stderr.isatty()
    shown: list[str] = []

    async def show(status: ExecutionStatus) -> None:
        p = status.progress
        bar = f"[{p.completed or 0}/{p.total}] " if p.total else ""
        what = " · ".join(x for x in (p.current_task and f"task {p.current_task}", p.current_agent) if x)
        line = f"{bar}{status.state.value}{' · ' + what if what else ''}"
        if shown and shown[-1] == line:
            return
        shown.append(line)
        sys.stderr.write(("\r\033[K" + line) if tty else line + "\n")
        if tty and status.state.value != "running":
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _human(svc: CrewService, conversation_id: str = "cli") -> Caller:
    """The person at the terminal, filed under the same owner as the MCP server's runs (CREW_MCP_OWNER)."""
    from .identity import Caller, default_owner

    return Caller(owner=default_owner(svc.settings.owner), conversation_id=conversation_id, by="human", via="cli")


async def _crews(svc: CrewService, args: argparse.Namespace) -> int:
    _emit(args, svc.list_crews())
    return 0


async def _inputs(svc: CrewService, args: argparse.Namespace) -> int:
    _emit(args, await svc.list_inputs(args.crew))
    return 0


async def _kickoff(svc: CrewService, args: argparse.Namespace) -> int:
    crew, values = _parse_pairs(args.args)
    caller = _human(svc, args.conversation)
    view = await svc.kickoff(crew, values, caller)
    if args.wait and view.kickoff_id:
        view = await _follow(svc, view.kickoff_id, caller)
    _emit(args, view)
    return 1 if view.state == "may_have_started" else 0  # scripts must not take it for a started run


async def _follow(svc: CrewService, kickoff_id: str, caller: Caller) -> RunView:
    import anyio

    from .watch import POLL_MAX

    show = _progress_printer()
    while True:
        view = await svc.status(kickoff_id, caller, wait_seconds=svc.settings.wait_cap_seconds or 30, on_update=show)
        if view.state != "running":
            return view
        if svc.settings.wait_cap_seconds <= 0:  # the server may not wait: poll at the slowest interval instead
            await anyio.sleep(POLL_MAX)


async def _status(svc: CrewService, args: argparse.Namespace) -> int:
    caller = _human(svc)
    view = await (_follow(svc, args.kickoff_id, caller) if args.wait else svc.status(args.kickoff_id, caller))
    _emit(args, view)
    return 0


async def _resume(svc: CrewService, args: argparse.Namespace) -> int:
    view = await svc.resume(
        args.kickoff_id, _human(svc), approve=bool(args.approve), feedback=args.feedback, task_id=args.task_id
    )
    _emit(args, view)
    return 0


async def _cancel(svc: CrewService, args: argparse.Namespace) -> int:
    import anyio

    caller = _human(svc)
    if not args.yes:
        record = await svc.stoppable(args.kickoff_id, caller)
        if not sys.stdin.isatty():
            raise CLIError(f"Stopping run {args.kickoff_id} cannot be undone: add --yes to confirm.", 2)
        sys.stderr.write(
            f"Stop run {args.kickoff_id} of crew {record.crew} ({record.state.value})? It cannot be resumed. [y/N] "
        )
        sys.stderr.flush()
        answer = await anyio.to_thread.run_sync(sys.stdin.readline)
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing was stopped.", file=sys.stderr)
            return 1
    _emit(args, await svc.cancel(args.kickoff_id, caller))
    return 0


async def _runs(svc: CrewService, args: argparse.Namespace) -> int:
    view = await svc.executions(
        _human(svc), conversation_id=args.conversation, crew=args.crew, state=args.state, limit=args.limit
    )
    _emit(args, view)
    return 0


async def _approvals(svc: CrewService, args: argparse.Namespace) -> int:
    _emit(args, await svc.pending_approvals(_human(svc)))
    return 0


async def _doctor(svc: CrewService, args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    report = await run_doctor(svc)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text())
    return 0 if report.ok else 1


COMMANDS: dict[str, Callable[[CrewService, argparse.Namespace], Awaitable[int]]] = {
    "crews": _crews,
    "inputs": _inputs,
    "kickoff": _kickoff,
    "status": _status,
    "resume": _resume,
    "cancel": _cancel,
    "runs": _runs,
    "approvals": _approvals,
    "doctor": _doctor,
}
