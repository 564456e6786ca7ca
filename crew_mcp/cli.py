"""``crew-mcp``: the MCP server, the simulator, the demo, and commands for people and scripts.

Heavy modules are imported inside each command so ``crew-mcp serve`` starts as fast as the SDK allows.
Errors print one sentence on stderr (never a traceback) and exit non-zero: 1 for a failed operation,
2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .identity import Caller
    from .models import ExecutionStatus
    from .service import CrewService
    from .settings import Settings
    from .views import RunView

__all__ = ["main"]

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class CLIError(Exception):
    """A failure to report as one sentence; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crew-mcp",
        description="Run CrewAI AMP crews from MCP hosts (Claude Desktop, Claude Code, ...) and from the shell.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: $CREW_MCP_CONFIG)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more to stderr (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # --json is also accepted after the command (crew-mcp runs --json); SUPPRESS keeps a value given before it.
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")

    s = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    s.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp instead of stdio")
    s.add_argument("--host", default="127.0.0.1", help="HTTP bind address (loopback only; default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000; 0 picks a free one)")

    s = sub.add_parser("simulate", help="run the AMP-compatible simulator as an HTTP server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8787)
    s.add_argument("--crews", metavar="FILE", help="TOML or JSON file of simulated crews (default: built-ins)")
    s.add_argument("--token", default="sim-token", help="bearer token the simulator requires ('' for none)")
    s.add_argument("--time-scale", type=float, default=1.0, help="multiply task durations (0.1 = ten times faster)")

    s = sub.add_parser("demo", help="walk through a whole run (inputs, kickoff, review, result) on the simulator")
    s.add_argument("--time-scale", type=float, default=1.0, help="multiply task durations")

    sub.add_parser("crews", help="list configured crews", parents=[out])
    s = sub.add_parser("inputs", help="list a crew's inputs", parents=[out])
    s.add_argument("crew", nargs="?")

    s = sub.add_parser(
        "kickoff", help="start a run: crew-mcp kickoff [CREW] key=value ... (key:=JSON for JSON)", parents=[out]
    )
    s.add_argument("args", nargs="*", metavar="[CREW] key=value")
    s.add_argument("--wait", action="store_true", help="follow the run with a progress display until it settles")
    s.add_argument("--conversation", default="cli", help="conversation id to file the run under (default 'cli')")

    s = sub.add_parser("status", help="show a run's status", parents=[out])
    s.add_argument("kickoff_id")
    s.add_argument("--wait", action="store_true", help="follow the run until it settles")

    s = sub.add_parser("resume", help="approve or reject a run's pending task (a human decision)", parents=[out])
    s.add_argument("kickoff_id")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--approve", action="store_true")
    g.add_argument("--reject", action="store_true")
    s.add_argument("--feedback", default="", help="feedback for the crew")
    s.add_argument("--task-id", help="the waiting task (default: the one the ledger knows)")

    s = sub.add_parser("runs", help="list your runs, newest first", parents=[out])
    s.add_argument("--conversation")
    s.add_argument("--crew")
    s.add_argument("--state")
    s.add_argument("--limit", type=int, default=20)

    sub.add_parser("approvals", help="list runs waiting for human review", parents=[out])
    sub.add_parser(
        "doctor", help="check the configuration, each crew's token, health and inputs, and the ledger", parents=[out]
    )
    return p


def _settings(args: argparse.Namespace) -> Settings:
    from .errors import ConfigError
    from .settings import load_settings

    try:
        return load_settings(config_path=args.config)
    except ConfigError as exc:
        raise CLIError(str(exc), code=2) from None


def _setup_logging(verbose: int, default: str = "WARNING", settings: Settings | None = None) -> None:
    from .logs import configure, settings_secrets

    level = {0: default, 1: "INFO"}.get(verbose, "DEBUG")
    if settings is None:
        configure(level)
    else:
        configure(level, settings.log_format, secrets=settings_secrets(settings))


def _setup_tracing() -> None:
    """OpenTelemetry traces when the standard OTEL_* variables ask for them (the SDK reads the rest itself)."""
    import os

    from .errors import ConfigError
    from .tracing import configure

    try:
        installed = configure(os.environ)
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None
    if installed:
        logging.getLogger(__name__).info("tracing: %s", installed)


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


async def _with_service(settings: Settings, fn: Callable[[CrewService], Awaitable[int]]) -> int:
    from .service import open_service

    if settings.simulated:
        print(
            "note: no crew configured; using the built-in simulator in this process (its runs end with the command).",
            file=sys.stderr,
        )
    async with open_service(settings) as service:
        return await fn(service)


def _human(svc: CrewService, conversation_id: str = "cli") -> Caller:
    """The person at the terminal, filed under the same owner as the MCP server's runs (CREW_MCP_OWNER)."""
    from .identity import Caller, default_owner

    return Caller(owner=default_owner(svc.settings.owner), conversation_id=conversation_id, by="human", via="cli")


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.http:
        if args.host not in LOOPBACK:
            raise CLIError(
                f"Refusing to serve on {args.host}: crew-mcp has no remote authentication yet, so anyone who can reach "
                "the port could run your crews with your tokens. Bind 127.0.0.1 and put an authenticating proxy in "
                "front if you need remote access.",
                2,
            )
        from .app import serve_http

        _check_ledger_url(settings)
        # The configured level (default WARNING), as for stdio: INFO logs a line for every upstream request.
        _setup_logging(args.verbose, settings.log_level, settings)
        _setup_tracing()
        try:
            serve_http(settings, host=args.host, port=args.port)
        except OSError as exc:
            raise CLIError(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.", 2) from None
        return 0
    _check_ledger_url(settings)
    _setup_logging(args.verbose, settings.log_level, settings)
    _setup_tracing()
    from .server import build_server

    build_server(settings).run("stdio")
    return 0


def _check_ledger_url(settings: Settings) -> None:
    """Refuse an unusable ledger URL before serving (it would otherwise fail inside the server's lifespan)."""
    scheme = (settings.ledger_url or "sqlite:").split(":", 1)[0].lower()
    if scheme not in ("sqlite", "redis", "rediss", "unix", "memory"):
        raise CLIError(
            f"CREW_MCP_LEDGER_URL has an unsupported scheme {scheme!r}: use sqlite:///path, redis://host:6379/0 "
            "or memory://.",
            2,
        )


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .simulator import builtin_crews, load_crews, run

    if args.host not in LOOPBACK:
        raise CLIError(f"Refusing to bind {args.host}: the simulator is for this machine only (use 127.0.0.1).", 2)
    try:
        crews = load_crews(args.crews) if args.crews else builtin_crews()
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None
    _setup_logging(args.verbose, "INFO")
    run(args.host, args.port, crews, args.token or None, "wall", args.time_scale)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import anyio

    from .demo import run_demo

    return anyio.run(run_demo, args.time_scale)


def _async_command(args: argparse.Namespace) -> int:
    import anyio

    from .errors import CrewMCPError, describe, exit_code

    settings = _settings(args)
    _setup_logging(args.verbose, settings=settings)

    async def body(svc: CrewService) -> int:
        return await _COMMANDS[args.command](svc, args)

    try:
        return anyio.run(_with_service, settings, body)
    except CrewMCPError as exc:
        raise CLIError(describe(exc), exit_code(exc)) from None


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
    return 0


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


_COMMANDS: dict[str, Callable[[CrewService, argparse.Namespace], Awaitable[int]]] = {
    "crews": _crews,
    "inputs": _inputs,
    "kickoff": _kickoff,
    "status": _status,
    "resume": _resume,
    "runs": _runs,
    "approvals": _approvals,
    "doctor": _doctor,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crew-mcp`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _cmd_serve,
        "simulate": _cmd_simulate,
        "demo": _cmd_demo,
    }
    try:
        return handlers.get(args.command, _async_command)(args)
    except CLIError as exc:
        print(f"crew-mcp: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
