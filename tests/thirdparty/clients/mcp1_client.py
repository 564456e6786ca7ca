"""The MCP Python SDK 1.x client (``mcp==1.30.*``, own venv), acting as an older host: it forces the protocol
version it sends in ``initialize`` and walks the approval flow over stdio, streamable HTTP or HTTP+SSE.

Argument (JSON): ``{"transport": "stdio"|"http"|"sse", "protocol_version": "2025-03-26", "conversation_id": ...,
"command": [...], "env": {...}}`` for stdio, ``"url"`` for http/sse. It also records every progress notification.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import mcp.types
from mcp import ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from walk import Reply, Transcript, approval_walk, run_script


@contextlib.asynccontextmanager
async def streams(spec: dict[str, Any]) -> AsyncIterator[tuple[Any, Any]]:
    if spec["transport"] == "stdio":
        command, *args = spec["command"]
        params = StdioServerParameters(command=command, args=args, env=spec["env"])
        async with stdio_client(params) as (read, write):
            yield read, write
    elif spec["transport"] == "http":
        async with streamable_http_client(spec["url"]) as (read, write, _):
            yield read, write
    else:
        async with sse_client(spec["url"]) as (read, write):
            yield read, write


async def main(spec: dict[str, Any], transcript: Transcript) -> None:
    # ClientSession.initialize() sends mcp.types.LATEST_PROTOCOL_VERSION: pinning it is how an older host speaks.
    mcp.types.LATEST_PROTOCOL_VERSION = spec["protocol_version"]
    progress: list[list[float]] = []

    async with streams(spec) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        transcript.data["protocol_version"] = init.protocolVersion
        transcript.data["tools"] = [t.name for t in (await session.list_tools()).tools]
        transcript.data["progress"] = progress

        async def call(tool: str, arguments: dict[str, Any]) -> Reply:
            seen: list[float] = []
            progress.append(seen)

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                seen.append(value)

            result = await session.call_tool(tool, arguments, progress_callback=on_progress)
            text = "".join(getattr(c, "text", "") for c in result.content)
            return Reply(bool(result.isError), text, result.structuredContent)

        await approval_walk(transcript.recorder(call), spec["conversation_id"])


if __name__ == "__main__":
    run_script(f"mcp {version('mcp')}", main)
