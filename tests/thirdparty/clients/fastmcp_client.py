"""fastmcp's Client (2.14 with mcp 1.x in its own venv; 4.2 with mcp 2.3 in the main third-party venv) walking the
approval flow over stdio or streamable HTTP. fastmcp parses every structured result against the tool's output
schema (``result.data``); when that fails it logs "Error parsing structured content" and leaves ``data`` empty, so
the script records, per call, whether the result parsed and what fastmcp said.

Argument (JSON): ``{"transport": "stdio"|"http", "conversation_id": ..., "command": [...], "env": {...}}`` or
``"url"`` for http.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport
from pydantic_core import to_jsonable_python
from walk import Reply, Transcript, approval_walk, run_script


class ParseErrors(logging.Handler):
    """Keeps fastmcp's "Error parsing structured content" log lines: its only word on a result it cannot parse."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "structured content" in record.getMessage():
            self.seen.append(record.getMessage())


async def main(spec: dict[str, Any], transcript: Transcript) -> None:
    errors = ParseErrors()
    logging.getLogger("fastmcp").addHandler(errors)
    if spec["transport"] == "stdio":
        command, *args = spec["command"]
        transport: Any = StdioTransport(command, args, env=spec["env"])
    else:
        transport = StreamableHttpTransport(spec["url"])

    async with Client(transport, timeout=60) as client:
        # fastmcp 4 negotiates either era (a 2026-07-28 connection has no InitializeResult); 2.x only the handshake.
        negotiated = getattr(client, "protocol_version", None)
        transcript.data["protocol_version"] = negotiated or client.initialize_result.protocolVersion
        transcript.data["tools"] = [t.name for t in await client.list_tools()]

        async def call(tool: str, arguments: dict[str, Any]) -> Reply:
            before = len(errors.seen)
            result = await client.call_tool(tool, arguments, raise_on_error=False)
            text = "".join(getattr(c, "text", "") for c in result.content)
            parsed = {
                "parsed": result.data is not None,
                "data": to_jsonable_python(result.data, fallback=repr),
                "parse_errors": errors.seen[before:],
            }
            return Reply(bool(result.is_error), text, result.structured_content, parsed)

        await approval_walk(transcript.recorder(call), spec["conversation_id"])
        # list_inputs and list_executions carry the other schemas defect 3 names (inputs[].default/.example).
        listing = transcript.recorder(call, into="listings")
        for tool, arguments in (("list_inputs", {"crew": "trip_planner"}), ("list_executions", {})):
            await listing(tool, arguments)


if __name__ == "__main__":
    run_script(f"fastmcp {version('fastmcp')}", main)
