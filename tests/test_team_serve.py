"""``crew-mcp serve --http --host 0.0.0.0`` as a real process: refused without authentication (with how to configure
it), serving a team with OAuth. The test still connects through 127.0.0.1, presenting the public host name the way a
TLS-terminating proxy in front of crew-mcp would."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from oauth_provider import OAuthProvider
from process_support import announced_url, reap, tail

from crew_mcp.simulator import Simulator, serve_simulator

pytestmark = pytest.mark.slow

PUBLIC = "https://crew.example.com"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREW_MCP_", "MCP_CREWAI_"))}
    return {**env, **extra}


async def test_serving_every_interface_without_authentication_is_refused_with_how_to_configure_it(
    tmp_path: Path,
) -> None:
    env = clean_env(CREW_MCP_LEDGER_URL=f"sqlite:///{tmp_path}/ledger.db")
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "crew_mcp", "serve", "--http", "--host", "0.0.0.0", "--port", "0"],
            env=env,
            check=False,
        )
    err = done.stderr.decode()
    assert done.returncode == 2 and done.stdout == b""
    assert err.startswith("crew-mcp: Refusing to serve on 0.0.0.0 without authentication")
    for how in ("CREW_MCP_AUTH=oauth", "CREW_MCP_OAUTH_ISSUER", "CREW_MCP_PUBLIC_URL", "crew-mcp keys new"):
        assert how in err
    assert err.count("\n") == 1 and "Traceback" not in err


async def test_serving_every_interface_with_oauth_serves_the_team(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    crew_token = "crew-secret-" + secrets.token_hex(8)
    sim = Simulator(clock="manual", token=crew_token)
    log = tmp_path / "serve.log"
    oauth_provider.audience = PUBLIC + "/mcp"
    async with sim, serve_simulator(sim) as sim_root:
        env = clean_env(
            CREW_MCP_AUTH="oauth",
            CREW_MCP_OAUTH_ISSUER=oauth_provider.issuer,
            CREW_MCP_OAUTH_SCOPES="crew:read crew:run crew:approve",
            CREW_MCP_PUBLIC_URL=PUBLIC,
            CREW_MCP_CREW_URL=f"{sim_root}/research",
            CREW_MCP_CREW_NAME="research",
            CREW_MCP_CREW_TOKEN=crew_token,
            CREW_MCP_LEDGER_URL=f"sqlite:///{tmp_path}/ledger.db",
        )
        command = [sys.executable, "-m", "crew_mcp", "serve", "--http", "--host", "0.0.0.0", "--port", "0"]
        with log.open("wb") as errors:
            process = await anyio.open_process(command, env=env, stderr=errors)
            try:
                with anyio.fail_after(60):
                    bound = await announced_url(process, log)
                assert bound.startswith("http://0.0.0.0:"), bound
                local = "http://127.0.0.1:" + bound.rsplit(":", 1)[1]
                as_public = {"Host": "crew.example.com"}
                async with httpx2.AsyncClient(headers=as_public) as http:
                    with anyio.fail_after(30):
                        anonymous = await http.post(local, json={}, headers={"Accept": "application/json"})
                        token = {"Authorization": f"Bearer {oauth_provider.mint()}"}
                        direct = await http.post(local, json={}, headers={"Host": "127.0.0.1", **token})
                        health = await http.get(local.removesuffix("/mcp") + "/healthz")
                assert anonymous.status_code == 401, tail(log)
                expected = f'resource_metadata="{PUBLIC}/.well-known/oauth-protected-resource/mcp"'
                assert expected in anonymous.headers["www-authenticate"]
                assert direct.status_code == 421  # a good token, but not the public host: DNS rebinding
                assert health.status_code == 200
                for user, mode in (("alice", "auto"), ("bob", "legacy")):
                    headers = {**as_public, "Authorization": f"Bearer {oauth_provider.mint(sub=user)}"}
                    with anyio.fail_after(30):
                        async with (
                            httpx2.AsyncClient(headers=headers) as http,
                            Client(streamable_http_client(local, http_client=http), mode=mode) as client,
                        ):
                            run = await client.call_tool("kickoff_crew", {"inputs": {"topic": user}})
                            listed = await client.call_tool("list_executions", {})
                    assert not run.is_error and not listed.is_error, (run.content, tail(log))
                    assert listed.structured_content is not None and run.structured_content is not None
                    mine = [r["kickoff_id"] for r in listed.structured_content["executions"]]
                    assert mine == [run.structured_content["kickoff_id"]]
                assert sim.count("research", "POST", "/kickoff") == 2
            finally:
                await reap(process, grace=15)
    assert crew_token not in log.read_text(errors="replace")
