"""Serving the simulator over real HTTP: :func:`serve_simulator` for tests, :func:`run` for the CLI."""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import UsageError
from .app import DEFAULT_TOKEN, SERVER_MARK, Simulator
from .specs import CrewSpec, load_crews

__all__ = ["check_loopback", "run", "serve_app", "serve_simulator"]


def check_loopback(host: str) -> None:
    """Refuse any host that is not a loopback address: the simulator is a test double, not a service."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"The simulator only binds loopback addresses; use 127.0.0.1 instead of {host!r}.")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it a
    # response written in two parts (headers, body) waits ~40 ms for the peer's delayed ACK on keep-alive.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    sock.setblocking(False)
    return sock


def _root(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _marked(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, SERVER_MARK: True}
        await app(scope, receive, send)

    return wrapped


def _server(app: ASGIApp, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        _marked(app),
        lifespan="on",
        log_level=log_level,
        access_log=log_level == "info",
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


@asynccontextmanager
async def serve_app(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, on_exit: Callable[[], None] | None = None
) -> AsyncIterator[str]:
    """Run any ASGI ``app`` under uvicorn (lifespan on) in a task and yield its root URL ``http://host:port``.

    Port 0 picks a free port. ``on_exit`` runs just before shutdown starts. Loopback hosts only.
    """
    check_loopback(host)
    sock = _bind(host, port)
    server = _server(app, "warning")
    stopped = False

    async def serve() -> None:
        nonlocal stopped
        try:
            await server.serve(sockets=[sock])
        finally:
            stopped = True

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            with anyio.fail_after(10):
                while not server.started:
                    if stopped:
                        raise RuntimeError("the server stopped during start-up")
                    await anyio.sleep(0.01)
            try:
                yield _root(host, sock)
            finally:
                if on_exit is not None:
                    on_exit()
                server.should_exit = True
    finally:
        sock.close()


@asynccontextmanager
async def serve_simulator(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run ``sim`` under uvicorn (lifespan on, so the wall-clock ticker runs) and yield its root URL.

    Port 0 picks a free port. The server is shut down, and held responses ended, when the block exits.
    """
    async with serve_app(sim.app, host, port, on_exit=sim.cancel_hangs) as root:
        yield root


def run(
    host: str = "127.0.0.1",
    port: int = 8787,
    crews: Sequence[CrewSpec] | str | Path | None = None,
    token: str | None = DEFAULT_TOKEN,
    clock: Literal["wall", "manual"] = "wall",
    time_scale: float = 1.0,
) -> None:
    """Serve a simulator until Ctrl-C (the ``crew-mcp simulate`` command).

    ``crews`` is a list of specs, a TOML/JSON file (see :func:`load_crews`), or None for the built-in crews.
    Raises :class:`~crew_mcp.errors.ConfigError` for a bad crews file and
    :class:`~crew_mcp.errors.UsageError` for a non-loopback host or a busy port.
    """
    check_loopback(host)
    specs = load_crews(crews) if isinstance(crews, str | Path) else crews
    sim = Simulator(specs, token=token, clock=clock, time_scale=time_scale)
    sock = _bind(host, port)
    root = _root(host, sock)
    lines = [f"crew-mcp simulator on {root} (clock={clock}, token={'on' if token else 'off'})"]
    lines += [f"  {name}: {root}/{name}" for name in sim.crews]
    if clock == "manual":
        lines.append(f'  advance time: POST {root}/_sim/advance {{"seconds": N}}')
    print("\n".join(lines), file=sys.stderr, flush=True)
    try:
        _server(sim.app, "info").run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
