"""Helpers for tests that run real processes (``crew-mcp serve --http``, redis-server, HAProxy, a provider) or need a
loopback port nobody listens on."""

from __future__ import annotations

import contextlib
import signal
import socket
from pathlib import Path

import anyio
from anyio.abc import Process

MARKER = b"crew-mcp: serving MCP at "


def free_port() -> int:
    """A loopback port nothing listens on right now: for a server that cannot bind port 0 itself (HAProxy), or a
    connection that must be refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tail(log: Path) -> str:
    """The end of a process's log, for assertion messages."""
    return log.read_text(errors="replace")[-3000:]


async def announced_url(process: Process, log: Path) -> str:
    """The MCP URL ``crew-mcp serve --http`` prints on stdout once it listens."""
    assert process.stdout is not None
    buffer = b""
    while MARKER not in buffer or b"\n" not in buffer.split(MARKER, 1)[1]:
        try:
            buffer += await process.stdout.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise AssertionError(f"crew-mcp exited before serving:\n{tail(log)}") from None
    return buffer.split(MARKER, 1)[1].split(b"\n", 1)[0].decode().strip()


async def reap(process: Process, *, stop: signal.Signals | None = signal.SIGTERM, grace: float = 10.0) -> None:
    """Stop a process the test started and wait for it: ``stop`` (``None``: straight to SIGKILL), up to ``grace``
    seconds to exit on its own, then SIGKILL. Shielded from cancellation; never raises, never waits unbounded."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None and stop is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(stop)
            with anyio.move_on_after(grace):
                await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with anyio.move_on_after(10):
            await process.wait()
        with anyio.move_on_after(5):
            await process.aclose()
