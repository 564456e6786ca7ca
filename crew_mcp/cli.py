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
    from .service import CrewService
    from .settings import Settings

from .commands import COMMANDS, CLIError

__all__ = ["CLIError", "main"]

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


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
    s.add_argument(
        "--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1; others need CREW_MCP_AUTH)"
    )
    s.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000; 0 picks a free one)")

    s = sub.add_parser("simulate", help="run the AMP-compatible simulator as an HTTP server")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    s.add_argument("--crews", metavar="FILE", help="TOML or JSON file of simulated crews (default: built-ins)")
    s.add_argument("--token", default="sim-token", help="bearer token the simulator requires ('' for none)")
    s.add_argument("--time-scale", type=float, default=1.0, help="multiply task durations (0.1 = ten times faster)")

    s = sub.add_parser("demo", help="walk through a whole run (inputs, kickoff, review, result) on the simulator")
    s.add_argument("--time-scale", type=float, default=1.0, help="multiply task durations")

    _add_run_commands(sub, out)

    s = sub.add_parser("keys", help="API keys for `serve --http` with CREW_MCP_AUTH=keys")
    keys = s.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    s = keys.add_parser("new", help="make a key: print it once, and the config lines holding only its hash")
    s.add_argument("--principal", required=True, help="whose key it is; their runs are filed under key:NAME")
    s.add_argument(
        "--scopes",
        default="crew:read,crew:run,crew:approve",
        help="comma-separated: crew:read, crew:run, crew:approve (default: all three)",
    )
    s.add_argument("--groups", default="", help="comma-separated groups, e.g. the approvers group")
    sub.add_parser(
        "doctor", help="check the configuration, each crew's token, health and inputs, and the ledger", parents=[out]
    )
    return p


def _add_run_commands(sub: Any, out: argparse.ArgumentParser) -> None:
    """The commands that work on crews and runs (they share the MCP server's ledger and owner)."""
    sub.add_parser("crews", help="list configured crews", parents=[out])
    s = sub.add_parser("inputs", help="list a crew's inputs", parents=[out])
    s.add_argument("crew", nargs="?", help="the crew (default: the only one)")

    s = sub.add_parser(
        "kickoff", help="start a run: crew-mcp kickoff [CREW] key=value ... (key:=JSON for JSON)", parents=[out]
    )
    s.add_argument("args", nargs="*", metavar="[CREW] key=value")
    s.add_argument("--wait", action="store_true", help="follow the run with a progress display until it settles")
    s.add_argument("--conversation", default="cli", help="conversation id to file the run under (default 'cli')")

    s = sub.add_parser("status", help="show a run's status", parents=[out])
    s.add_argument("kickoff_id", help="the run's kickoff_id (or its request id)")
    s.add_argument("--wait", action="store_true", help="follow the run until it settles")

    s = sub.add_parser("resume", help="approve or reject a run's pending task (a human decision)", parents=[out])
    s.add_argument("kickoff_id", help="the run waiting for review")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--approve", action="store_true", help="accept the task's output; the crew goes on")
    g.add_argument("--reject", action="store_true", help="send the task back with --feedback to redo it")
    s.add_argument("--feedback", default="", help="feedback for the crew")
    s.add_argument("--task-id", help="the waiting task (default: the one the ledger knows)")

    s = sub.add_parser("cancel", help="stop a run at its crew for good (asks first)", parents=[out])
    s.add_argument("kickoff_id", help="the run to stop")
    s.add_argument("--yes", action="store_true", help="stop without asking (scripts; required with no terminal)")

    s = sub.add_parser("runs", help="list your runs, newest first", parents=[out])
    s.add_argument("--conversation", help="only this conversation's runs (e.g. 'cli')")
    s.add_argument("--crew", help="only this crew's runs")
    s.add_argument("--state", help="only runs in this state (running, waiting_for_human, completed, failed, ...)")
    s.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    sub.add_parser("approvals", help="list runs waiting for human review", parents=[out])


def _settings(args: argparse.Namespace) -> Settings:
    from .errors import ConfigError
    from .settings import load_settings

    try:
        return load_settings(config_path=args.config)
    except ConfigError as exc:
        raise CLIError(str(exc), code=2) from None


def _setup_logging(verbose: int, default: str = "WARNING", settings: Settings | None = None) -> None:
    from .logs import configure

    level = {0: default, 1: "INFO"}.get(verbose, "DEBUG")
    if settings is None:
        configure(level)
    else:
        configure(level, settings.log_format, secrets=settings.secrets())


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


async def _with_service(settings: Settings, fn: Callable[[CrewService], Awaitable[int]]) -> int:
    from .assembly import open_service, simulator_state
    from .ledger import default_ledger_url

    if settings.simulated:
        kept = simulator_state(settings.ledger_url or default_ledger_url())
        where = f"its runs are kept in {kept}" if kept else "its runs end with the command"
        print(f"note: no crew configured; using the built-in simulator ({where}).", file=sys.stderr)
    async with open_service(settings) as service:
        return await fn(service)


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.http:
        from .app import check_exposure, serve_http
        from .errors import ConfigError

        try:
            check_exposure(settings, args.host)
        except ConfigError as exc:
            raise CLIError(str(exc), 2) from None
        _check_ledger_url(settings)
        # The configured level (default WARNING), as for stdio: INFO logs a line for every upstream request.
        _setup_logging(args.verbose, settings.log_level, settings)
        _setup_tracing()
        try:
            serve_http(settings, host=args.host, port=args.port)
        except ConfigError as exc:
            raise CLIError(str(exc), 2) from None
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


def _cmd_keys(args: argparse.Namespace) -> int:
    from .auth.keys import generate_key, key_config_entry

    scopes, groups = ([x.strip() for x in v.split(",") if x.strip()] for v in (args.scopes, args.groups))
    key, key_hash = generate_key()
    try:
        entry = key_config_entry(key_hash, args.principal.strip(), scopes, groups)
    except ValueError as exc:
        raise CLIError(f"{exc}.", 2) from None
    if args.json:
        print(json.dumps({"key": key, "hash": key_hash, "config": entry}, indent=2))
        return 0
    print(
        f"API key for {args.principal.strip()} (shown once; crew-mcp keeps only its hash):\n\n  {key}\n\nGive it to "
        "its holder as a bearer token (Authorization: Bearer <key>). Add these lines to the config file\n"
        f"(CREW_MCP_CONFIG) of the server started with CREW_MCP_AUTH=keys, then restart it:\n\n{entry}",
        end="",
    )
    return 0


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
        return await COMMANDS[args.command](svc, args)

    try:
        return anyio.run(_with_service, settings, body)
    except CrewMCPError as exc:
        raise CLIError(describe(exc), exit_code(exc)) from None


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
        "keys": _cmd_keys,
    }
    try:
        return handlers.get(args.command, _async_command)(args)
    except CLIError as exc:
        print(f"crew-mcp: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
