"""langchain-mcp-adapters 0.3.2 (mcp 1.x, own venv) walking the approval flow as a LangChain agent would call tools.

Two modes: ``session`` keeps one MCP session (``client.session()`` + ``load_mcp_tools``); ``per-call`` is the
default ``MultiServerMCPClient.get_tools()``, which opens a new session for every tool call: over stdio, a new
crew-mcp process each time, so the run must be followable across processes. Tools are invoked with a LangChain
tool call, which hands back a ``ToolMessage`` whose artifact carries the structured content.

Argument (JSON): ``{"mode": "session"|"per-call", "transport": "stdio"|"http", "conversation_id": ...,
"command": [...], "env": {...}}`` or ``"url"`` for http.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools
from walk import Reply, Transcript, approval_walk, run_script


def connection(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["transport"] == "stdio":
        command, *args = spec["command"]
        return {"transport": "stdio", "command": command, "args": args, "env": spec["env"]}
    return {"transport": "streamable_http", "url": spec["url"]}


@contextlib.asynccontextmanager
async def tools_of(client: MultiServerMCPClient, mode: str) -> AsyncIterator[list[BaseTool]]:
    if mode == "per-call":
        yield await client.get_tools()
    else:
        async with client.session("crews") as session:
            yield await load_mcp_tools(session)


async def main(spec: dict[str, Any], transcript: Transcript) -> None:
    client = MultiServerMCPClient({"crews": connection(spec)})
    async with tools_of(client, spec["mode"]) as tools:
        by_name = {tool.name: tool for tool in tools}
        transcript.data["tools"] = sorted(by_name)
        calls = 0

        async def call(name: str, arguments: dict[str, Any]) -> Reply:
            nonlocal calls
            calls += 1
            message = await by_name[name].ainvoke(
                {"name": name, "args": arguments, "id": f"call-{calls}", "type": "tool_call"}
            )
            assert isinstance(message, ToolMessage), message
            content = message.content
            text = (
                content
                if isinstance(content, str)
                else "".join(b.get("text", "") for b in content if isinstance(b, dict))
            )
            artifact = message.artifact if isinstance(message.artifact, dict) else {}
            return Reply(message.status == "error", text, artifact.get("structured_content"))

        await approval_walk(transcript.recorder(call), spec["conversation_id"])


if __name__ == "__main__":
    run_script(f"langchain-mcp-adapters {version('langchain-mcp-adapters')}", main)
