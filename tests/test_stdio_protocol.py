"""``crew-mcp serve`` over stdio answers every line (issue 10, defect 14): raw bytes to the real subprocess, each
line the SDK's reader would drop (not JSON, a batch, ``"jsonrpc": "1.0"``, an object id, params as an array, an
unpaired surrogate, deep nesting, an oversized line) gets a JSON-RPC error with its id where one can be read, and
the server still serves a well-formed client afterwards, in both protocol eras."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from test_stdio import server_env

from crew_mcp.stdio import MAX_LINE_BYTES, screen_line

pytestmark = pytest.mark.slow

PARSE, INVALID, PARAMS = -32700, -32600, -32602
DEEP = "[" * 200 + "]" * 200
BAD_LINES: list[tuple[bytes, Any, int]] = [
    (b"not json at all", None, PARSE),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', None, PARSE),  # cut off
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', None, INVALID),  # a batch
    (b"42", None, INVALID),
    (b'{"jsonrpc": "1.0", "id": 2, "method": "ping"}', 2, INVALID),
    (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', None, INVALID),  # an object id
    (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', None, INVALID),
    (b'{"jsonrpc": "2.0", "id": null, "method": "ping"}', None, INVALID),
    (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": [1, 2]}', 3, PARAMS),
    (b'{"jsonrpc": "2.0", "id": "m", "method": 7}', "m", INVALID),
    (b'{"jsonrpc": "2.0", "id": 4, "method": "ping", "params": {"x": "\\ud800"}}', 4, PARSE),
    (f'{{"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {{"x": {DEEP}}}}}'.encode(), 5, PARSE),
    (b'{"jsonrpc": "2.0", "id": "x-6"}', "x-6", INVALID),  # neither a request nor a response
]
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Wire:
    """The subprocess's stdin and its stdout split into lines."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self._buffer = b""

    async def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line + b"\n")

    async def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        with anyio.fail_after(20):
            while b"\n" not in self._buffer:
                self._buffer += await self.process.stdout.receive()
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(json.dumps(message).encode())
        return await self.receive()


@asynccontextmanager
async def serve(tmp_path: Path) -> AsyncIterator[Wire]:
    env = server_env(tmp_path)
    command = [sys.executable, "-m", "crew_mcp", "serve"]
    with (tmp_path / "stderr.log").open("wb") as errlog:
        async with await anyio.open_process(command, cwd=tmp_path, env=env, stderr=errlog) as process:
            try:
                yield Wire(process)
            finally:
                assert process.stdin is not None
                await process.stdin.aclose()
                with anyio.fail_after(20):
                    await process.wait()


@pytest.mark.parametrize("mode", ["legacy", "modern"])
async def test_every_line_the_sdk_would_drop_is_answered_and_the_server_serves_on(tmp_path: Path, mode: str) -> None:
    async with serve(tmp_path) as wire:
        answers = []
        for line, _, _ in BAD_LINES:
            await wire.send(line)
            answers.append(await wire.receive())
        await wire.send(b"x" * (MAX_LINE_BYTES + 10))  # too long: skipped in chunks, answered
        too_long = await wire.receive()
        await wire.send(b"")  # an empty line is not a message: no answer
        if mode == "legacy":
            hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
            init = await wire.request({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": hello})
            assert init["result"]["protocolVersion"] == "2025-11-25", init
            await wire.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
            params: dict[str, Any] = {}
        else:
            params = {"_meta": MODERN_META}
        # Invalid UTF-8 inside a valid request is read as U+FFFD, as the SDK's reader does: it is served.
        listed = await wire.request({"jsonrpc": "2.0", "id": "tools", "method": "tools/list", "params": params})
        method = "ping" if mode == "legacy" else "resources/list"  # 2026-07-28 has no ping
        ping_line = json.dumps({"jsonrpc": "2.0", "id": "ping", "method": method, "params": {**params, "note": "@"}})
        await wire.send(ping_line.encode().replace(b"@", b"\xff\xfe"))
        ping = await wire.receive()
    for (line, rid, code), answer in zip(BAD_LINES, answers, strict=True):
        assert answer["jsonrpc"] == "2.0" and "result" not in answer, (line[:60], answer)
        assert (answer["id"], answer["error"]["code"]) == (rid, code), (line[:60], answer)
        assert answer["error"]["message"], answer
    assert (too_long["id"], too_long["error"]["code"]) == (None, PARSE) and "larger than" in too_long["error"][
        "message"
    ]
    assert "kickoff_crew" in {t["name"] for t in listed["result"]["tools"]}, listed
    assert ping["id"] == "ping" and "result" in ping, ping


def test_screening_passes_valid_requests_notifications_and_responses_through() -> None:
    for message in (
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "x", "arguments": {"y": [[1]]}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 9, "result": {}},
        {"jsonrpc": "2.0", "id": 9, "error": {"code": 1, "message": "no"}},
    ):
        assert screen_line(json.dumps(message)) is None, message
    assert screen_line('{"jsonrpc": "2.0", "id": 9, "result": {}, "error": 1}') is None  # a bad response: dropped
    assert screen_line("[" * 100_000) == (None, PARSE, "Parse error: the message is nested too deeply.")
