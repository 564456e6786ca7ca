"""crew-mcp served to a team, as a deployment would run it, for the team tests (test_team*.py).

Three real servers on 127.0.0.1, port 0: the test authorization server (``oauth_provider.py``), the AMP simulator
(manual clock, a secret crew token, every request it receives recorded), and crew-mcp's own HTTP app
(``build_app`` under uvicorn) configured from the environment and a TOML file, with a SQLite ledger file.
Members connect with the MCP SDK ``Client`` in either protocol era, with a minted token or through the SDK's
OAuth client (the whole authorization-code flow).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from hitl_support import ERA, loopback_socket, serve_on
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from oauth_provider import MemoryStorage, OAuthProvider, sdk_oauth
from starlette.types import ASGIApp, Receive, Scope, Send

from crew_mcp.app import build_app
from crew_mcp.settings import load_settings
from crew_mcp.simulator import Simulator
from crew_mcp.simulator.serve import serve_app

CREWS = ("research", "trip_planner", "content_pipeline")
ALL_SCOPES = ["crew:read", "crew:run", "crew:approve"]

# Who may approve: the run's owner, or anyone in the reviewers' group.
APPROVAL_TOML = """
[auth.approval]
owner = true
group = "crew-reviewers"
"""
TEAM_TOML = '\n[auth]\nscopes = ["crew:read", "crew:run", "crew:approve"]\n' + APPROVAL_TOML


@dataclass
class Upstream:
    """What reached the simulator: method, path and headers of every request."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                self.requests.append((scope["method"], scope["path"], headers))
            await app(scope, receive, send)

        return recording

    def kickoffs(self) -> int:
        return sum(1 for method, path, _ in self.requests if method == "POST" and path.endswith("/kickoff"))


@dataclass
class Team:
    """A running deployment: where it is, the servers behind it, and how members connect."""

    root: str
    provider: OAuthProvider | None
    sim: Simulator
    upstream: Upstream
    crew_token: str
    ledger_path: Path
    given_tokens: list[str] = field(default_factory=list)
    switch_user: Callable[[str], Awaitable[None]] | None = None

    @property
    def url(self) -> str:
        return self.root + "/mcp"

    def token(self, user: str, *, groups: list[str] | None = None, **claims: Any) -> str:
        """A good token for ``user`` issued for this server (remembered for the secret scans)."""
        assert self.provider is not None, "only the test authorization server mints tokens at will"
        token = self.provider.mint(sub=user, groups=groups or [], **claims)
        self.given_tokens.append(token)
        return token

    @asynccontextmanager
    async def member(self, token: str, mode: str = "auto", **client_kw: Any) -> AsyncIterator[Client]:
        """A client connected with a bearer token."""
        headers = {"Authorization": f"Bearer {token}"}
        with anyio.fail_after(30):
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(self.url, http_client=http), mode=mode, **client_kw) as client,
            ):
                assert client.protocol_version == ERA[mode]
                yield client

    @asynccontextmanager
    async def signed_in(self, user: str, mode: str, storage: MemoryStorage | None = None) -> AsyncIterator[Client]:
        """A client that signs ``user`` in through the SDK's OAuth client: 401, metadata discovery, dynamic client
        registration, authorization code + PKCE, token; then calls."""
        if self.switch_user is not None:
            await self.switch_user(user)
        elif self.provider is not None:
            self.provider.user = user
        storage = storage or MemoryStorage()
        with anyio.fail_after(30):
            async with (
                httpx2.AsyncClient(auth=sdk_oauth(self.url, storage)) as http,
                Client(streamable_http_client(self.url, http_client=http), mode=mode) as client,
            ):
                assert client.protocol_version == ERA[mode]
                yield client
        if storage.tokens is not None:
            self.given_tokens += [storage.tokens.access_token, storage.tokens.refresh_token or ""]


@asynccontextmanager
async def serve_team(
    provider: OAuthProvider | None,
    tmp_path: Path,
    *,
    toml: str = TEAM_TOML,
    env: dict[str, str] | None = None,
    issuer: str | None = None,
    switch_user: Callable[[str], Awaitable[None]] | None = None,
) -> AsyncIterator[Team]:
    """The simulator and crew-mcp (OAuth against ``provider``, or another authorization server at ``issuer`` whose
    signed-in user ``switch_user`` sets) on loopback, configured like a deployment."""
    issuer = issuer or (provider.issuer if provider is not None else "")
    crew_token = "crew-secret-" + secrets.token_hex(16)
    sim = Simulator(clock="manual", token=crew_token)
    upstream = Upstream()
    async with sim, serve_app(upstream.wrap(sim.app), on_exit=sim.cancel_hangs) as sim_root:
        sock = loopback_socket()
        root = f"http://127.0.0.1:{sock.getsockname()[1]}"
        crews = "".join(f'[[crews]]\nname = "{n}"\nurl = "{sim_root}/{n}"\ntoken_env = "CREW_TOKEN"\n\n' for n in CREWS)
        config = tmp_path / "crew-mcp.toml"
        config.write_text(crews + toml, encoding="utf-8")
        ledger_path = tmp_path / "ledger.db"
        settings = load_settings(
            env={
                "CREW_TOKEN": crew_token,
                "CREW_MCP_AUTH": "oauth",
                "CREW_MCP_OAUTH_ISSUER": issuer,
                "CREW_MCP_PUBLIC_URL": root,
                "CREW_MCP_LEDGER_URL": f"sqlite:///{ledger_path}",
                "CREW_MCP_LOG_LEVEL": "DEBUG",
                **(env or {}),
            },
            config_path=str(config),
        )
        if provider is not None:
            provider.audience = root + "/mcp"
        app = build_app(settings, host="127.0.0.1", port=sock.getsockname()[1])
        async with serve_on(app, sock):
            yield Team(root, provider, sim, upstream, crew_token, ledger_path, switch_user=switch_user)
