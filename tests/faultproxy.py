"""A fault-injecting HTTP/1.1 proxy on loopback, for tests of what a client does when the network misbehaves.

:class:`FaultProxy` listens on ``127.0.0.1`` (a free port) and forwards each request to an upstream (e.g. the
simulator under :func:`crew_mcp.simulator.serve_simulator`) over a fresh connection, unless a programmed
:class:`Fault` matches the request's method and path. Every fault happens either **before** forwarding (the
upstream never sees the request) or **after** it (the upstream processed it; only the client's answer is
broken), which is exactly the difference a client must never guess wrong about a kickoff.

The proxy speaks raw HTTP/1.1 over asyncio streams (keep-alive to the client, ``Connection: close`` to the
upstream), so the faults are real bytes on a real socket: a reset is a TCP RST, a truncated body is a short
read, a stall is silence. Every request it saw is recorded in :attr:`FaultProxy.seen`.

```python
async with serve_simulator(sim) as upstream, FaultProxy(upstream) as proxy:
    proxy.on("POST", "/trip_planner/kickoff", Fault.http(503, retry_after=2, after=True))
    proxy.on("GET", "/trip_planner/status/*", Fault.stall(), times=None)
    ...  # point the client at proxy.url
```
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy", "Seen"]

Kind = Literal["pass", "http", "reset", "truncate", "stall", "trickle"]
Headers = list[tuple[str, str]]
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer"}
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Fault:
    """What the proxy does with one matching request. Build one with the class methods.

    ``after=False`` (the default): the request is never forwarded and the answer is made up here.
    ``after=True``: the request is forwarded and fully answered upstream first; then the client gets the fault.
    The transport faults (reset, truncate, stall, trickle) break the upstream's own answer when ``after``,
    and a made-up ``200 {"status": "ok"}`` otherwise.
    """

    kind: Kind
    after: bool = False
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b'{"status": "ok"}'
    content_type: str = "application/json"
    chunk: int = 1
    interval: float = 0.02

    @property
    def name(self) -> str:
        """A short label: ``http 503 after``, ``reset before``, ``pass``."""
        if self.kind == "pass":
            return "pass"
        what = f"http {self.status}" if self.kind == "http" else self.kind
        return f"{what} {'after' if self.after else 'before'}"

    @classmethod
    def passthrough(cls) -> Fault:
        """Forward untouched (consumes one shot: lets a request through before the next fault)."""
        return cls("pass", after=True)

    @classmethod
    def http(cls, status: int, *, retry_after: float | None = None, body: Any = None, after: bool = False) -> Fault:
        """Answer ``status`` with a JSON body (default ``{"error", "message"}``) and ``Retry-After`` when given.

        Covers 500, 502, 503, 429, 401, 404 and any other status.
        """
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        payload = {"error": phrase, "message": "Injected by the fault proxy"} if body is None else body
        headers = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
        return cls("http", after, status, headers, json.dumps(payload).encode())

    @classmethod
    def html(cls, *, after: bool = False) -> Fault:
        """Answer ``200`` with an HTML page (a login wall or a gateway's error page)."""
        page = b"<!doctype html><html><head><title>Sign in</title></head><body><h1>Sign in</h1></body></html>"
        return cls("http", after, 200, body=page, content_type="text/html; charset=utf-8")

    @classmethod
    def invalid_json(cls, *, after: bool = False) -> Fault:
        """Answer ``200`` with ``Content-Type: application/json`` and a body that is not JSON."""
        return cls("http", after, 200, body=b"{kickoff_id: oops,")

    @classmethod
    def wrong_shape(cls, body: Any = None, *, after: bool = False) -> Fault:
        """Answer ``200`` with valid JSON of the wrong shape (default ``{"unexpected": "shape"}``)."""
        payload = {"unexpected": "shape"} if body is None else body
        return cls("http", after, 200, body=json.dumps(payload).encode())

    @classmethod
    def reset(cls, *, after: bool = False) -> Fault:
        """Send the head and half the body of the answer, then reset the connection (TCP RST)."""
        return cls("reset", after)

    @classmethod
    def truncate(cls, *, after: bool = False) -> Fault:
        """Send the answer with its full ``Content-Length`` but only half its body, then close (FIN)."""
        return cls("truncate", after)

    @classmethod
    def stall(cls, *, after: bool = False) -> Fault:
        """Never answer; the connection stays open until the client or the proxy closes it."""
        return cls("stall", after)

    @classmethod
    def trickle(cls, *, chunk: int = 1, interval: float = 0.02, after: bool = False) -> Fault:
        """Send the whole answer ``chunk`` bytes at a time, ``interval`` seconds apart."""
        return cls("trickle", after, chunk=max(1, chunk), interval=interval)


@dataclass
class Seen:
    """One request the proxy received, what it did with it, and whether the upstream got it."""

    method: str
    path: str
    body: bytes
    fault: str = "pass"
    forwarded: bool = False
    error: str | None = None


@dataclass
class _Rule:
    method: str
    path: str
    fault: Fault
    left: int | None

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and fnmatch.fnmatchcase(path, self.path)


@dataclass
class _Response:
    status: int
    reason: str
    headers: Headers
    body: bytes
    complete: bool = True
    declared: int | None = field(default=None)

    def head(self, length: int | None = None) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() not in _HOP and k.lower() != "content-length"]
        lines.append(f"content-length: {len(self.body) if length is None else length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Closed(Exception):
    """The client closed its connection (or sent something that is not HTTP/1.1)."""


class FaultProxy:
    """A loopback HTTP proxy in front of ``upstream`` (``http://127.0.0.1:port``) that injects :class:`Fault` s.

    Use as an async context manager; :attr:`url` is its root. Requests that match no rule are forwarded.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.url = ""
        self.seen: list[Seen] = []
        self._rules: deque[_Rule] = deque()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # ------------------------------------------------------------------------------ programming

    def on(self, method: str, path: str, fault: Fault, *, times: int | None = 1) -> FaultProxy:
        """Apply ``fault`` to the next ``times`` requests (None: every one) matching ``method`` and ``path``.

        ``method`` is ``"GET"``, ``"POST"``... or ``"*"``; ``path`` is an exact path or a glob
        (``"/research/status/*"``). Rules are tried in the order they were added.
        """
        self._rules.append(_Rule(method.upper(), path, fault, times))
        return self

    def clear(self) -> FaultProxy:
        """Forget every rule (what was seen stays)."""
        self._rules.clear()
        return self

    def count(self, method: str, path: str, *, forwarded: bool | None = None) -> int:
        """How many requests matching ``method`` and ``path`` (glob) were seen, optionally only (not) forwarded."""
        rule = _Rule(method.upper(), path, Fault.passthrough(), None)
        return sum(
            1 for s in self.seen if rule.matches(s.method, s.path) and (forwarded is None or s.forwarded is forwarded)
        )

    # ------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_MAX_HEAD)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and end every open connection, stalled ones included."""
        if self._server is not None:
            self._server.close()
        # Aborting the connections ends every handler (a stall reads EOF); cancelling them instead makes asyncio's
        # stream callback log the CancelledError as an error.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=10)
            for task in late:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------------------ serving

    def _take(self, method: str, path: str) -> Fault | None:
        for rule in self._rules:
            if rule.matches(method, path) and (rule.left is None or rule.left > 0):
                if rule.left is not None:
                    rule.left -= 1
                return rule.fault
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while await self._exchange(reader, writer):
                pass
        except (_Closed, ConnectionError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the client connection must end."""
        method, target, headers, body = await _read_request(reader)
        path = target.split("?", 1)[0]
        seen = Seen(method, path, body)
        self.seen.append(seen)
        fault = self._take(method, path) or Fault.passthrough()
        seen.fault = fault.name
        if fault.after:
            try:
                response = await self._forward(method, target, headers, body, seen)
            except (_Closed, OSError) as exc:
                seen.error = f"{type(exc).__name__}: {exc}"
                if seen.forwarded:
                    return False  # the upstream hung up on a request it got: so does the proxy
                response = _made_up(Fault.http(502, body={"error": "Bad Gateway", "message": "upstream unreachable"}))
            else:
                response = _made_up(fault) if fault.kind == "http" else response
        else:
            response = _made_up(fault)
        keep = _keep_alive(headers)
        if fault.kind in ("pass", "http"):
            return await _send(writer, response, keep)
        if fault.kind == "stall":
            await reader.read()  # until the client gives up (or aclose() ends it)
            return False
        if fault.kind == "trickle":
            return await _trickle(writer, response, fault, keep)
        data = response.head() + response.body
        half = len(response.head()) + len(response.body) // 2
        if fault.kind == "truncate":
            writer.write(data[:half])
            await writer.drain()
            writer.close()  # a clean FIN: the client sees a short body, not a reset
            return False
        writer.write(data[:half])
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST
        writer.transport.abort()
        return False

    async def _forward(self, method: str, target: str, headers: Headers, body: bytes, seen: Seen) -> _Response:
        reader, writer = await asyncio.open_connection(*self.upstream, limit=_MAX_HEAD)
        try:
            lines = [f"{method} {target} HTTP/1.1"]
            lines += [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP and k.lower() != "content-length"]
            lines += [f"content-length: {len(body)}", "connection: close"]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            seen.forwarded = True
            return await _read_response(reader)
        finally:
            writer.transport.abort()


# ------------------------------------------------------------------------------------------ HTTP/1.1 bytes


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, Headers]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _Closed from exc
    lines = raw.decode("latin-1").split("\r\n")
    headers: Headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _header(headers: Headers, name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


async def _read_body(reader: asyncio.StreamReader, headers: Headers, *, to_eof: bool) -> tuple[bytes, bool]:
    """The body and whether it arrived whole."""
    if "chunked" in (_header(headers, "transfer-encoding") or "").lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return body, True
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = _header(headers, "content-length")
    if length is not None:
        try:
            return await reader.readexactly(int(length)), True
        except asyncio.IncompleteReadError as exc:
            return exc.partial, False
    return (await reader.read(), True) if to_eof else (b"", True)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, Headers, bytes]:
    line, headers = await _read_head(reader)
    method, target, version = [*line.split(" "), "", "", ""][:3]
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        raise _Closed(line)
    body, _ = await _read_body(reader, headers, to_eof=False)
    return method.upper(), target, headers, body


async def _read_response(reader: asyncio.StreamReader) -> _Response:
    line, headers = await _read_head(reader)
    _, status, reason = [*line.split(" ", 2), "", ""][:3]
    body, complete = await _read_body(reader, headers, to_eof=True)
    declared = _header(headers, "content-length")
    try:
        return _Response(int(status), reason, headers, body, complete, int(declared) if declared else None)
    except ValueError as exc:
        raise _Closed(f"not an HTTP/1.1 answer: {line!r}") from exc


def _made_up(fault: Fault) -> _Response:
    try:
        reason = HTTPStatus(fault.status).phrase
    except ValueError:
        reason = "Unknown"
    return _Response(fault.status, reason, [("content-type", fault.content_type), *fault.headers], fault.body)


def _keep_alive(headers: Headers) -> bool:
    return (_header(headers, "connection") or "").lower() != "close"


async def _send(writer: asyncio.StreamWriter, response: _Response, keep: bool) -> bool:
    # An upstream answer that broke off is passed on broken: its declared length, the bytes that came, then EOF.
    length = response.declared if not response.complete else None
    writer.write(response.head(length) + response.body)
    await writer.drain()
    return keep and response.complete


async def _trickle(writer: asyncio.StreamWriter, response: _Response, fault: Fault, keep: bool) -> bool:
    data = response.head() + response.body
    for start in range(0, len(data), fault.chunk):
        writer.write(data[start : start + fault.chunk])
        await writer.drain()
        await asyncio.sleep(fault.interval)
    return keep
