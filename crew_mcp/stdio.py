"""stdio where every line gets an answer: the SDK's stdio transport behind a reader that screens each line.

The SDK's stdio reader drops a line it cannot parse as a JSON-RPC message (not JSON, a batch array, ``"jsonrpc":
"1.0"``, params as an array, an unpaired ``\\ud800`` escape, nesting deeper than its parser takes), and reads an
object or boolean ``id`` as a notification, so the client waits for its own timeout. Over HTTP the same requests
get an error at once. :func:`screened_stdio` answers each such line with a JSON-RPC error (the line's ``id`` when
one can be read, else ``null``) and passes every valid message on unchanged. A line longer than
:data:`MAX_LINE_BYTES` (the HTTP body limit) is skipped without being held in memory, and answered too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, BinaryIO, cast

import anyio
import anyio.to_thread
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    RequestId,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

__all__ = ["MAX_LINE_BYTES", "screen_line", "screened_stdio"]

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest message line read (the SDK's HTTP body limit); a longer one is skipped and answered with an error."""

Problem = tuple[RequestId | None, int, str]
"""What to answer a line with: its id (or None), the JSON-RPC error code, and the message."""


def screen_line(line: str) -> Problem | None:
    """``None`` when ``line`` is a JSON-RPC message the SDK can serve; else the error to answer it with.

    A valid response (to a request of the server's) is never answered; an invalid one is dropped like the SDK does.
    """
    refused: ValidationError | None = None
    try:
        message = jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError as exc:
        message, refused = None, exc
    if message is not None and not isinstance(message, JSONRPCNotification):
        return None  # a request or a response: the SDK checked its id strictly
    try:
        obj = json.loads(line)
    except RecursionError:
        return None, PARSE_ERROR, "Parse error: the message is nested too deeply."
    except json.JSONDecodeError as exc:
        return None, PARSE_ERROR, f"Parse error: the line is not JSON ({exc.msg}); send one JSON-RPC message per line."
    if isinstance(obj, list):
        return (
            None,
            INVALID_REQUEST,
            "Invalid request: batches (JSON arrays) are not supported; send one message per line.",
        )
    if not isinstance(obj, dict):
        return None, INVALID_REQUEST, "Invalid request: a message must be a JSON object."
    if "id" in obj and not (isinstance(obj["id"], str) or type(obj["id"]) is int):
        return None, INVALID_REQUEST, "Invalid request: id must be a string or an integer."
    if message is not None:
        return None  # a notification
    return _refused(obj, refused)


def _refused(obj: dict[str, Any], refused: ValidationError | None) -> Problem | None:
    """Why the SDK refused a JSON object that Python's parser read, answered with its id (None if it has none)."""
    rid: RequestId | None = obj.get("id")
    if "method" not in obj and ("result" in obj or "error" in obj):
        logger.warning("dropped a response from the client that is not valid JSON-RPC")
        return None
    if obj.get("jsonrpc") != "2.0":
        return rid, INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0".'
    if not isinstance(obj.get("method"), str):
        return rid, INVALID_REQUEST, 'Invalid request: "method" must be a string.'
    if "params" in obj and not isinstance(obj["params"], dict):
        return rid, INVALID_PARAMS, 'Invalid params: "params" must be an object.'
    errors = refused.errors(include_url=False) if refused is not None else []
    if errors and errors[0]["type"] == "json_invalid":  # Python's parser took it, the SDK's did not
        return rid, PARSE_ERROR, f"Parse error: {errors[0]['msg']}."
    return rid, INVALID_REQUEST, "Invalid request: not a valid JSON-RPC 2.0 message."


class _ScreenedLines:
    """The lines of the process's stdin that :func:`screen_line` lets through (what the SDK's reader iterates);
    the others are answered on the transport's write stream."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._replies: Any = None
        self._ready = anyio.Event()

    def reply_with(self, write_stream: Any) -> None:
        self._replies = write_stream
        self._ready.set()

    async def _readline(self) -> bytes:
        return await anyio.to_thread.run_sync(self._source.readline, MAX_LINE_BYTES + 1, abandon_on_cancel=True)

    async def __aiter__(self) -> AsyncIterator[str]:
        while raw := await self._readline():
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := await self._readline()) and not rest.endswith(b"\n"):
                    pass  # skipped, never held: at most one chunk in memory
                limit = f"{MAX_LINE_BYTES // (1024 * 1024)} MiB"
                await self._answer((None, PARSE_ERROR, f"Parse error: the message is larger than {limit}."))
                continue
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            problem = screen_line(line)
            if problem is None:
                yield line
            else:
                await self._answer(problem)

    async def _answer(self, problem: Problem) -> None:
        rid, code, message = problem
        logger.info("answered an unreadable stdio line with error %s", code)
        await self._ready.wait()
        reply = JSONRPCError(jsonrpc="2.0", id=rid, error=ErrorData(code=code, message=message))
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):  # the server is shutting down
            await self._replies.send(SessionMessage(reply))


@asynccontextmanager
async def screened_stdio() -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's ``stdio_server`` reading through :class:`_ScreenedLines`; yields its (read, write) streams.

    fd 0 is pointed at the null device while serving (as the SDK does), so nothing else in the process can read the
    wire; the wire itself is read through a private duplicate.
    """
    source, restore = _claim_stdin()
    lines = _ScreenedLines(source)
    try:
        # stdio_server iterates `stdin` line by line; it is typed as an anyio file, which this iterable stands in for.
        async with stdio_server(stdin=cast(Any, lines)) as (read_stream, write_stream):
            lines.reply_with(write_stream)
            yield read_stream, write_stream
    finally:
        restore()


def _claim_stdin() -> tuple[BinaryIO, Any]:
    """A private binary reader of the wire, and how to put fd 0 back."""
    try:
        if sys.stdin.fileno() != 0:
            raise OSError("stdin is not fd 0")
        wire = os.dup(0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    except (OSError, ValueError, AttributeError):
        return sys.stdin.buffer, lambda: None

    def restore() -> None:
        with suppress(OSError):
            os.dup2(wire, 0)

    # closefd=False: a reader thread may still block on it after the transport exits, so it is never closed.
    return os.fdopen(wire, "rb", closefd=False), restore
