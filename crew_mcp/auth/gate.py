"""Per-operation scopes and the kickoff rate, enforced at HTTP level in front of the MCP endpoint.

The SDK's bearer middleware checks one scope list for every request. crew-mcp's scopes differ per tool
(crew:run to start a run, crew:approve to answer a review), and the MCP spec wants a missing one answered
with ``403`` and ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`` so the client can step
up its authorization. That needs the JSON-RPC body, so :class:`ScopeGate` reads it (bounded), decides, and
replays it to the app unchanged. Refusals carry a JSON-RPC error body too: the SDK client surfaces that error
instead of a bare status. Requests without a valid token pass through untouched: the SDK answers them 401.

The gate's verification is the request's only one: it leaves its answer for :class:`GateVerified`, the verifier
the SDK's bearer middleware gets, so a refused opaque token (refusals are not cached) costs one introspection
request and one log line, not two.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from pydantic import AnyHttpUrl
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import AuthConfig, missing_scope, principal_from_token, scope_for_tool, starts_run
from .limits import Limiter

__all__ = ["REFUSED", "GateVerified", "ScopeGate"]

REFUSED = -32000
"""JSON-RPC error code of a refusal (a server-defined code: JSON-RPC reserves -32000..-32099 for servers)."""

# (token, answer) of the verification the gate made for the request it is passing on; set only around that call.
_verified: ContextVar[tuple[str, AccessToken | None] | None] = ContextVar("crew_mcp_gate_verified", default=None)


class GateVerified:
    """The verifier to give the SDK behind a :class:`ScopeGate`: the gate's answer when it already verified this
    request's token, else ``verifier``'s."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's :class:`AccessToken`, or None when it is refused."""
        verified = _verified.get()
        if verified is not None and verified[0] == token:
            return verified[1]
        return await self._verifier.verify_token(token)


def _tool_calls(body: bytes) -> list[tuple[Any, str]]:
    """(request id, tool name) of every ``tools/call`` in a JSON-RPC body; nothing for anything else."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []  # the SDK answers malformed JSON itself
    messages = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for message in messages:
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            if isinstance(name, str):
                calls.append((message.get("id"), name))
    return calls


class ScopeGate:
    """ASGI middleware for the MCP endpoint: 403 for a tool whose scope the token lacks, 429 past the kickoff rate.

    ``verifier`` is the one behind the SDK's :class:`GateVerified`, which reuses the gate's answer for the request.
    ``limiter`` is optional; without it only scopes are enforced. The
    ``resource_metadata_url`` of the 403 challenge defaults to the SDK's RFC 9728 URL for ``resource_url``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        config: AuthConfig,
        limiter: Limiter | None = None,
        paths: tuple[str, ...] = ("/mcp",),
        resource_metadata_url: str | None = None,
        max_body: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
    ) -> None:
        self._app = app
        self._verifier = verifier
        self._config = config
        self._limiter = limiter
        self._paths = frozenset(p.rstrip("/") for p in paths)
        if resource_metadata_url is None and config.mode == "oauth" and config.resource_url is not None:
            resource_metadata_url = str(build_resource_metadata_url(AnyHttpUrl(config.resource_url)))
        self._metadata_url = resource_metadata_url
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") not in self._paths:
            await self._app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization", "")
        if not authorization.lower().startswith("bearer ") or (
            not self._config.enforced_scopes and self._limiter is None
        ):
            await self._app(scope, receive, send)
            return
        messages, complete, body = await self._read(receive)
        replay = _replayer(messages, receive)
        calls = _tool_calls(body) if complete else []
        if not calls:
            await self._app(scope, replay, send)
            return
        token = authorization[7:]  # as the SDK's bearer middleware cuts it, so GateVerified sees the same string
        access = await self._verifier.verify_token(token)
        if access is None:
            await self._pass_verified(scope, replay, send, token, None)
            return
        principal = principal_from_token(access, self._config)
        for request_id, tool in calls:
            needed = missing_scope(principal, scope_for_tool(tool), self._config)
            if needed is not None:
                await self._refuse_scope(send, request_id, tool, needed)
                return
        for request_id, tool in calls:
            if self._limiter is not None and starts_run(tool):
                decision = self._limiter.kickoff(principal.id)
                if not decision.allowed:
                    await self._refuse_rate(send, request_id, decision.retry_after_header or "1")
                    return
        await self._pass_verified(scope, replay, send, token, access)

    async def _pass_verified(
        self, scope: Scope, receive: Receive, send: Send, token: str, access: AccessToken | None
    ) -> None:
        reset = _verified.set((token, access))
        try:
            await self._app(scope, receive, send)
        finally:
            _verified.reset(reset)

    async def _read(self, receive: Receive) -> tuple[list[Message], bool, bytes]:
        """The request's messages up to ``max_body`` bytes; a larger body is left for the SDK to refuse (413)."""
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, False, b""
            body.extend(message.get("body", b""))
            if len(body) > self._max_body:
                return messages, False, b""
            if not message.get("more_body", False):
                return messages, True, bytes(body)

    async def _refuse_scope(self, send: Send, request_id: Any, tool: str, needed: str) -> None:
        text = f"{tool} needs the {needed} scope; authorize again with it (your identity provider must grant it)."
        parts = ['error="insufficient_scope"', f'scope="{needed}"']
        if self._metadata_url:
            parts.append(f'resource_metadata="{self._metadata_url}"')
        parts.append(f'error_description="{text}"')
        headers = [(b"www-authenticate", ("Bearer " + ", ".join(parts)).encode())]
        await _send_error(send, 403, request_id, text, headers)

    async def _refuse_rate(self, send: Send, request_id: Any, retry_after: str) -> None:
        per_minute = self._config.limits.kickoffs_per_minute
        text = f"Too many runs started: at most {per_minute:g} per minute. Retry in {retry_after} s."
        await _send_error(send, 429, request_id, text, [(b"retry-after", retry_after.encode())])


def _replayer(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _send_error(send: Send, status: int, request_id: Any, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": REFUSED, "message": text}}).encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})
