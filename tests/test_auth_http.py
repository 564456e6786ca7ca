"""The auth building blocks assembled the way the HTTP app will assemble them (an MCPServer with build_verifier,
auth_settings, transport_security and protected_resource_routes, under uvicorn on 127.0.0.1), driven by raw
HTTP and by the MCP SDK's own OAuth client: 401 → metadata discovery → dynamic registration → authorization
code + PKCE → token → call, in both protocol eras, against the real test authorization server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from oauth_provider import OAuthProvider
from starlette.applications import Starlette
from starlette.routing import Mount

from crew_mcp.auth import (
    AuthConfig,
    auth_settings,
    build_verifier,
    generate_key,
    principal_from_token,
    protected_resource_routes,
    transport_security,
)
from crew_mcp.auth.config import ApiKeyConfig
from crew_mcp.errors import ConfigError

ERA = {"auto": "2026-07-28", "legacy": "2025-11-25"}


@dataclass
class Served:
    url: str  # the MCP endpoint
    root: str
    config: AuthConfig


@asynccontextmanager
async def serve_protected(**config: Any) -> AsyncIterator[Served]:
    """An MCP server with one ``whoami`` tool behind crew-mcp's auth, on a socket bound to 127.0.0.1:0 first (the
    resource URL tokens are issued for includes the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    root = f"http://127.0.0.1:{sock.getsockname()[1]}"
    auth = AuthConfig.model_validate({"resource_url": root + "/mcp", **config})
    async with httpx2.AsyncClient() as http:
        mcp = MCPServer("auth-test", token_verifier=build_verifier(auth, http), auth=auth_settings(auth))

        @mcp.tool()
        async def whoami() -> dict[str, str]:
            """Who the server thinks is calling."""
            token = get_access_token()
            assert token is not None
            principal = principal_from_token(token, auth)
            return {"principal": principal.id, "scopes": " ".join(sorted(principal.scopes))}

        inner = mcp.streamable_http_app(transport_security=transport_security(root, "127.0.0.1"), host="127.0.0.1")
        app = Starlette(
            routes=[*protected_resource_routes(auth), Mount("/", app=inner)],
            lifespan=lambda _: mcp.session_manager.run(),
        )
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
async def oauth_served(provider: OAuthProvider, **config: Any) -> AsyncIterator[Served]:
    async with serve_protected(mode="oauth", issuer=provider.issuer, **config) as served:
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
            assert body["scopes_supported"] == ["crew:read"]


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


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def sdk_oauth(url: str, storage: MemoryStorage) -> OAuthClientProvider:
    """The SDK's OAuth client with a "browser" that follows the authorization URL and reads the redirect."""
    redirect: dict[str, str] = {}

    async def open_browser(authorization_url: str) -> None:
        async with httpx2.AsyncClient() as browser:
            response = await browser.get(authorization_url)
        assert response.status_code == 302, response.text
        query = parse_qs(urlsplit(response.headers["location"]).query)
        redirect.update({k: v[0] for k, v in query.items()})

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=redirect["code"], state=redirect["state"], iss=redirect.get("iss"))

    metadata = OAuthClientMetadata(redirect_uris=["http://localhost/callback"], client_name="crew-mcp tests")
    return OAuthClientProvider(url, metadata, storage, redirect_handler=open_browser, callback_handler=callback)


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
                    result = await client.call_tool("whoami", {})
        assert not result.is_error
        assert result.structured_content == {
            "principal": f"oauth:{oauth_provider.issuer}#alice",
            "scopes": "crew:read",
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
    async with serve_protected(mode="keys", keys=[entry.model_dump()]) as served:
        refused = await post(served.url)
        assert refused.status_code == 401 and "resource_metadata" not in challenge(refused)
        async with httpx2.AsyncClient() as http:
            assert (await http.get(served.root + "/.well-known/oauth-protected-resource")).status_code == 404
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(served.url, http_client=http)) as client,
        ):
            result = await client.call_tool("whoami", {})
        assert result.structured_content == {"principal": "key:ci-bot", "scopes": "crew:read"}
