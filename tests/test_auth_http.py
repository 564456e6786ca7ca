"""The auth building blocks assembled the way the HTTP app will assemble them (an MCPServer with build_verifier,
auth_settings, transport_security and protected_resource_routes, under uvicorn on 127.0.0.1), driven by raw
HTTP and by the MCP SDK's own OAuth client: 401 → metadata discovery → dynamic registration → authorization
code + PKCE → token → call, in both protocol eras, against the real test authorization server."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from hitl_support import ERA
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from oauth_provider import MemoryStorage, OAuthProvider, sdk_oauth
from starlette.applications import Starlette
from starlette.routing import Mount

from crew_mcp.auth import (
    AuthConfig,
    Limiter,
    ScopeGate,
    auth_settings,
    build_verifier,
    generate_key,
    principal_from_token,
    protected_resource_routes,
    transport_security,
)
from crew_mcp.auth.config import ApiKeyConfig
from crew_mcp.errors import ConfigError


@dataclass
class Served:
    url: str  # the MCP endpoint
    root: str
    config: AuthConfig


@asynccontextmanager
async def serve_protected(
    *, gate: bool = False, clock: Callable[[], float] | None = None, **config: Any
) -> AsyncIterator[Served]:
    """An MCP server with three tools behind crew-mcp's auth (and the ScopeGate when ``gate``), on a socket bound to
    127.0.0.1:0 first (the resource URL tokens are issued for includes the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    root = f"http://127.0.0.1:{sock.getsockname()[1]}"
    auth = AuthConfig.model_validate({"resource_url": root + "/mcp", **config})
    async with httpx2.AsyncClient() as http:
        mcp = MCPServer("auth-test", token_verifier=build_verifier(auth, http), auth=auth_settings(auth))

        def caller() -> dict[str, str]:
            token = get_access_token()
            assert token is not None
            principal = principal_from_token(token, auth)
            return {"principal": principal.id, "scopes": " ".join(sorted(principal.scopes))}

        # Named like crew-mcp's tools, so each needs its contract scope (crew:read, crew:run, crew:approve).
        for name in ("get_status", "kickoff_crew", "resume_with_feedback"):
            mcp.add_tool(caller, name=name, description=f"{name} stand-in: who the server thinks is calling.")

        inner = mcp.streamable_http_app(transport_security=transport_security(root, "127.0.0.1"), host="127.0.0.1")
        app: Any = Starlette(
            routes=[*protected_resource_routes(auth), Mount("/", app=inner)],
            lifespan=lambda _: mcp.session_manager.run(),
        )
        if gate:
            verifier = build_verifier(auth, http)
            assert verifier is not None
            limiter = Limiter(auth.limits, clock=clock or time.monotonic)
            app = ScopeGate(app, verifier=verifier, config=auth, limiter=limiter)
        server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=2))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: server.serve(sockets=[sock]))
                try:
                    yield Served(root + "/mcp", root, auth)
                finally:
                    server.should_exit = True
        finally:
            sock.close()


@asynccontextmanager
async def oauth_served(provider: OAuthProvider, *, gate: bool = False, **config: Any) -> AsyncIterator[Served]:
    async with serve_protected(gate=gate, mode="oauth", issuer=provider.issuer, **config) as served:
        provider.audience = served.url
        yield served


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def post(url: str, token: str | None = None, **headers: str) -> httpx2.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient() as http:
        return await http.post(url, json=INIT, headers={**HEADERS, **auth, **headers})


def challenge(response: httpx2.Response) -> str:
    return response.headers.get("www-authenticate", "")


async def test_missing_and_refused_tokens_get_401_pointing_at_the_metadata(oauth_provider: OAuthProvider) -> None:
    async with oauth_served(oauth_provider) as served:
        metadata_url = f"{served.root}/.well-known/oauth-protected-resource/mcp"
        for token in (None, oauth_provider.mint(aud="https://other-mcp.example.com/mcp"), "garbage"):
            response = await post(served.url, token)
            assert response.status_code == 401
            assert challenge(response).startswith("Bearer ") and 'error="invalid_token"' in challenge(response)
            assert f'resource_metadata="{metadata_url}"' in challenge(response)
        ok = await post(served.url, oauth_provider.mint())
        assert ok.status_code == 200, ok.text


async def test_protected_resource_metadata_is_served_at_both_well_known_forms(oauth_provider: OAuthProvider) -> None:
    async with oauth_served(oauth_provider, scopes=["crew:read", "crew:run"]) as served, httpx2.AsyncClient() as http:
        for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
            body = (await http.get(served.root + path)).json()
            assert body["resource"] == served.url
            assert body["authorization_servers"] == [oauth_provider.issuer]
            assert body["scopes_supported"] == ["crew:read", "crew:run"]  # every enforced scope


async def test_a_token_without_the_required_scope_gets_403_insufficient_scope(oauth_provider: OAuthProvider) -> None:
    async with oauth_served(oauth_provider, scopes=["crew:read", "crew:run"]) as served:
        response = await post(served.url, oauth_provider.mint(scope="openid"))
        assert response.status_code == 403 and 'error="insufficient_scope"' in challenge(response)
        assert "crew:read" in challenge(response)
        assert (await post(served.url, oauth_provider.mint(scope="crew:run"))).status_code == 200  # run ⊃ read


async def test_dns_rebinding_hosts_and_origins_are_refused(oauth_provider: OAuthProvider) -> None:
    async with oauth_served(oauth_provider) as served:
        token = oauth_provider.mint()
        assert (await post(served.url, token, Host="evil.example")).status_code == 421
        assert (await post(served.url, token, Origin="http://evil.example")).status_code == 403
        assert (await post(served.url, token, Origin=served.root)).status_code == 200


def test_transport_security_is_derived_from_the_public_url() -> None:
    public = transport_security("https://Crew.Example.com", "0.0.0.0")
    assert public.enable_dns_rebinding_protection
    assert public.allowed_hosts == ["crew.example.com", "crew.example.com:443"]
    assert public.allowed_origins == ["https://crew.example.com"]
    ported = transport_security("http://crew.example.com:8080", "127.0.0.1")
    assert ported.allowed_hosts[0] == "crew.example.com:8080" and "127.0.0.1:*" in ported.allowed_hosts
    with pytest.raises(ConfigError, match="CREW_MCP_PUBLIC_URL"):
        transport_security(None, "0.0.0.0")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_oauth_client_registers_authorizes_and_calls_a_tool(
    oauth_provider: OAuthProvider, mode: str
) -> None:
    async with oauth_served(oauth_provider, scopes=["crew:read", "crew:run"]) as served:
        storage = MemoryStorage()
        async with httpx2.AsyncClient(auth=sdk_oauth(served.url, storage)) as http:
            with anyio.fail_after(20):
                async with Client(streamable_http_client(served.url, http_client=http), mode=mode) as client:
                    assert client.protocol_version == ERA[mode]
                    result = await client.call_tool("get_status", {})
        assert not result.is_error
        assert result.structured_content == {
            "principal": f"oauth:{oauth_provider.issuer}#alice",
            "scopes": "crew:read crew:run",  # what the metadata lists is what the client asks for
        }
        assert storage.client is not None and storage.client.client_id in oauth_provider.clients  # registered (DCR)
        assert storage.tokens is not None and storage.tokens.refresh_token
        async with httpx2.AsyncClient() as http:
            verifier = build_verifier(served.config, http)
            assert verifier is not None
            access = await verifier.verify_token(storage.tokens.access_token)
        assert access is not None and access.resource == served.url  # RFC 8707: the token names this server


async def test_keys_mode_answers_401_without_metadata_and_serves_a_key() -> None:
    key, key_hash = generate_key()
    entry = ApiKeyConfig(hash=key_hash, principal="ci-bot", scopes=["crew:read"])
    async with serve_protected(gate=True, mode="keys", keys=[entry.model_dump()]) as served:
        refused = await post(served.url)
        assert refused.status_code == 401 and "resource_metadata" not in challenge(refused)
        async with httpx2.AsyncClient() as http:
            assert (await http.get(served.root + "/.well-known/oauth-protected-resource")).status_code == 404
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(served.url, http_client=http)) as client,
        ):
            result = await client.call_tool("get_status", {})
            with pytest.raises(MCPError, match="kickoff_crew needs the crew:run scope"):
                await client.call_tool("kickoff_crew", {})
        assert result.structured_content == {"principal": "key:ci-bot", "scopes": "crew:read"}


# ------------------------------------------------------------------------------------------ ScopeGate

ALL = ["crew:read", "crew:run", "crew:approve"]


def call(tool: str, request_id: int = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


async def post_json(url: str, body: Any, token: str) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.post(url, json=body, headers={**HEADERS, "Authorization": f"Bearer {token}"})


async def test_a_tool_whose_scope_the_token_lacks_gets_403_naming_the_scope(oauth_provider: OAuthProvider) -> None:
    async with oauth_served(oauth_provider, gate=True, scopes=ALL) as served:
        reader = oauth_provider.mint(scope="crew:read")
        refused = await post_json(served.url, call("kickoff_crew"), reader)
        assert refused.status_code == 403
        header = challenge(refused)
        assert header.startswith("Bearer ") and 'error="insufficient_scope"' in header and 'scope="crew:run"' in header
        assert f'resource_metadata="{served.root}/.well-known/oauth-protected-resource/mcp"' in header
        assert refused.json()["id"] == 7 and "crew:run" in refused.json()["error"]["message"]
        approve = await post_json(served.url, call("resume_with_feedback"), oauth_provider.mint(scope="crew:run"))
        assert approve.status_code == 403 and 'scope="crew:approve"' in challenge(approve)
        headers = {"Authorization": f"Bearer {reader}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(served.url, http_client=http)) as client,
        ):
            assert not (await client.call_tool("get_status", {})).is_error
            with pytest.raises(MCPError, match="kickoff_crew needs the crew:run scope"):
                await client.call_tool("kickoff_crew", {})


async def test_without_configured_scopes_any_valid_token_may_use_every_tool(oauth_provider: OAuthProvider) -> None:
    async with oauth_served(oauth_provider, gate=True) as served:
        headers = {"Authorization": f"Bearer {oauth_provider.mint(scope=None)}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(served.url, http_client=http)) as client,
        ):
            for tool in ("get_status", "kickoff_crew", "resume_with_feedback"):
                assert not (await client.call_tool(tool, {})).is_error


async def test_the_sdk_client_steps_up_when_a_tool_needs_a_broader_scope(oauth_provider: OAuthProvider) -> None:
    async with oauth_served(oauth_provider, gate=True, scopes=ALL) as served:
        oauth_provider.grantable = {"crew:read"}  # the user may only read ... until an administrator grants more
        storage = MemoryStorage()
        async with (
            httpx2.AsyncClient(auth=sdk_oauth(served.url, storage)) as http,
            Client(streamable_http_client(served.url, http_client=http)) as client,
        ):
            first = await client.call_tool("get_status", {})
            assert first.structured_content is not None and first.structured_content["scopes"] == "crew:read"
            oauth_provider.grantable = {"crew:read", "crew:run"}
            stepped = await client.call_tool("kickoff_crew", {})  # 403 insufficient_scope → re-authorize → retry
        assert not stepped.is_error and stepped.structured_content is not None
        assert stepped.structured_content["scopes"] == "crew:read crew:run"
        assert storage.tokens is not None and set((storage.tokens.scope or "").split()) == {"crew:read", "crew:run"}


async def test_kickoffs_past_the_rate_get_429_with_retry_after(oauth_provider: OAuthProvider) -> None:
    now = [100.0]
    limits = {"kickoffs_per_minute": 2}
    async with oauth_served(oauth_provider, gate=True, clock=lambda: now[0], limits=limits) as served:
        token, other = oauth_provider.mint(), oauth_provider.mint(sub="bob")
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(served.url, http_client=http)) as client,
        ):
            assert not (await client.call_tool("kickoff_crew", {})).is_error
            assert not (await client.call_tool("kickoff_crew", {})).is_error
            with pytest.raises(MCPError, match=r"at most 2 per minute\. Retry in 30 s"):
                await client.call_tool("kickoff_crew", {})
            assert not (await client.call_tool("get_status", {})).is_error  # reading is not limited
        refused = await post_json(served.url, call("kickoff_crew"), token)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
        assert (await post_json(served.url, call("kickoff_crew"), other)).status_code != 429  # per principal
        now[0] += 30
        assert (await post_json(served.url, call("kickoff_crew"), token)).status_code != 429


def test_auth_settings_let_the_sdk_check_the_resource_only_when_the_audience_is_it() -> None:
    base = {"mode": "oauth", "issuer": "https://sso.example.com", "resource_url": "https://crew.example.com/mcp"}
    own = auth_settings(AuthConfig.model_validate(base))
    assert own is not None and own.validate_token_resource is True
    assert str(own.issuer_url) == "https://sso.example.com" and own.required_scopes is None
    api_id = auth_settings(AuthConfig.model_validate({**base, "audience": "api://crew-mcp", "scopes": ["crew:read"]}))
    assert api_id is not None and api_id.validate_token_resource is False and api_id.required_scopes == ["crew:read"]
    assert auth_settings(AuthConfig()) is None
    with pytest.raises(ConfigError, match="CREW_MCP_PUBLIC_URL"):
        auth_settings(AuthConfig.model_validate({**base, "resource_url": None}))
