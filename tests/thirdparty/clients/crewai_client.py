"""CrewAI's ``MCPServerAdapter`` (crewai-tools[mcp] 1.15, mcp 1.x, own venv) walking the approval flow the way a
CrewAI agent's tools would: synchronous ``tool.run(**arguments)`` calls that hand back the result's text only (no
structured content, no error flag), so the walk follows the run through crew-mcp's text rendering.

Argument (JSON): ``{"transport": "stdio"|"http", "conversation_id": ..., "command": [...], "env": {...}}`` or
``"url"`` for http.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

from crewai_tools import MCPServerAdapter
from mcp import StdioServerParameters
from walk import Reply, Transcript, approval_walk, run_script


def server_params(spec: dict[str, Any]) -> StdioServerParameters | dict[str, Any]:
    if spec["transport"] == "stdio":
        command, *args = spec["command"]
        return StdioServerParameters(command=command, args=args, env=spec["env"])
    return {"url": spec["url"], "transport": "streamable-http"}


async def main(spec: dict[str, Any], transcript: Transcript) -> None:
    # The adapter runs its own event loop in a thread and its tools are synchronous: keep them off this loop.
    adapter = await asyncio.to_thread(MCPServerAdapter, server_params(spec), connect_timeout=60)
    try:
        tools = {tool.name: tool for tool in adapter.tools}
        transcript.data["tools"] = sorted(tools)

        async def call(name: str, arguments: dict[str, Any]) -> Reply:
            text = await asyncio.to_thread(lambda: tools[name].run(**arguments))
            return Reply(False, str(text))

        await approval_walk(transcript.recorder(call), spec["conversation_id"])
    finally:
        await asyncio.to_thread(adapter.stop)


if __name__ == "__main__":
    run_script(f"crewai-tools {version('crewai-tools')}", main)
