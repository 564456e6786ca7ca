"""The OpenAI Agents SDK's MCP servers (openai-agents 0.24, mcp 2.3, the main third-party venv) walking the approval
flow with no model involved: ``MCPServerStdio`` or ``MCPServerStreamableHttp``, ``call_tool`` as an agent run would.

Argument (JSON): ``{"transport": "stdio"|"http", "conversation_id": ..., "command": [...], "env": {...}}`` or
``"url"`` for http.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from agents.mcp import MCPServer, MCPServerStdio, MCPServerStreamableHttp
from walk import Reply, Transcript, approval_walk, run_script


def server(spec: dict[str, Any]) -> MCPServer:
    # The SDK's read timeout defaults to 5 s: allow for get_status's bounded wait (issue 10, defect 9).
    if spec["transport"] == "stdio":
        command, *args = spec["command"]
        params = {"command": command, "args": args, "env": spec["env"]}
        return MCPServerStdio(params=params, client_session_timeout_seconds=60)
    return MCPServerStreamableHttp(params={"url": spec["url"]}, client_session_timeout_seconds=60)


async def main(spec: dict[str, Any], transcript: Transcript) -> None:
    async with server(spec) as crews:
        transcript.data["protocol_version"] = getattr(crews.session, "protocol_version", None)
        transcript.data["tools"] = sorted(tool.name for tool in await crews.list_tools())

        async def call(tool: str, arguments: dict[str, Any]) -> Reply:
            result = await crews.call_tool(tool, arguments)
            text = "".join(getattr(c, "text", "") for c in result.content)
            return Reply(bool(result.is_error), text, result.structured_content)

        await approval_walk(transcript.recorder(call), spec["conversation_id"])


if __name__ == "__main__":
    run_script(f"openai-agents {version('openai-agents')}", main)
