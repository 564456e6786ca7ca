"""Helpers for tests that run ``crew-mcp serve --http`` as a real process."""

from __future__ import annotations

from pathlib import Path

import anyio
from anyio.abc import Process

MARKER = b"crew-mcp: serving MCP at "


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
