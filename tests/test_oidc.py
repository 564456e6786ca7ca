"""Opt-in (``make test-oidc``): crew-mcp as a team service against a certified OpenID provider, panva's
``oidc-provider`` from npm (tests/oidc/provider.mjs), instead of the test authorization server.

The same flow a member's MCP host runs: 401 → protected resource metadata → OpenID discovery → dynamic client
registration → authorization code + PKCE with an RFC 8707 resource indicator → a JWT access token for crew-mcp →
tool calls, in both protocol eras; two members' runs stay apart; tokens for another resource are refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx2
import pytest
from anyio.abc import Process
from hitl_support import MODES, ok, refused
from oauth_provider import MemoryStorage
from process_support import reap
from team_support import serve_team

pytestmark = pytest.mark.oidc

ROOT = Path(__file__).resolve().parents[1]
OIDC = ROOT / ".thirdparty" / "oidc"
NODE_BIN = ROOT / ".thirdparty" / "node" / "node_modules" / ".bin"


async def _issuer(process: Process) -> str:
    assert process.stdout is not None
    buffer = b""
    while b"ISSUER " not in buffer or b"\n" not in buffer.split(b"ISSUER ", 1)[1]:
        try:
            buffer += await process.stdout.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise AssertionError(f"oidc-provider exited before listening: {buffer!r}") from None
    return buffer.split(b"ISSUER ", 1)[1].split(b"\n", 1)[0].decode().strip()


@pytest.fixture
async def oidc_issuer(tmp_path: Path) -> AsyncIterator[str]:
    """oidc-provider on 127.0.0.1 (port 0); its issuer URL. Its errors go to ``provider.log`` (shown on failure)."""
    node = shutil.which("node", path=f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not (OIDC / "node_modules" / "oidc-provider").is_dir() or node is None:
        pytest.fail("oidc-provider is not installed: run `make test-oidc`", pytrace=False)
    shutil.copy(ROOT / "tests" / "oidc" / "provider.mjs", OIDC / "provider.mjs")  # resolves oidc-provider from there
    log = tmp_path / "provider.log"
    with log.open("wb") as errors:
        process = await anyio.open_process([node, "provider.mjs"], cwd=OIDC, stderr=errors)
    try:
        with anyio.fail_after(30):
            yield await _issuer(process)
    finally:
        print(log.read_text(errors="replace"))
        await reap(process)


def login_as(issuer: str) -> Callable[[str], Awaitable[None]]:
    """Who the provider signs in next (its test-only control route)."""

    async def switch(user: str) -> None:
        async with httpx2.AsyncClient() as http:
            answer = await http.post(f"{issuer}/_test/user/{quote(user)}")
        assert answer.status_code == 204

    return switch


@pytest.mark.parametrize("mode", MODES)
async def test_members_sign_in_at_a_certified_provider_and_keep_their_runs_apart(
    oidc_issuer: str, tmp_path: Path, mode: str
) -> None:
    switch = login_as(oidc_issuer)
    async with serve_team(None, tmp_path, issuer=oidc_issuer, switch_user=switch) as team:
        alice_storage, bob_storage = MemoryStorage(), MemoryStorage()
        async with team.signed_in("alice", mode, alice_storage) as alice:
            a = (await ok(alice, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}}))["kickoff_id"]
        async with team.signed_in("bob", mode, bob_storage) as bob:
            b = (await ok(bob, "kickoff_crew", {"crew": "research", "inputs": {"topic": "moons"}}))["kickoff_id"]
            assert [r["kickoff_id"] for r in (await ok(bob, "list_executions"))["executions"]] == [b]
            assert "No run with kickoff_id" in await refused(bob, "get_status", {"kickoff_id": a})
        assert alice_storage.tokens is not None and bob_storage.tokens is not None
        for storage in (alice_storage, bob_storage):
            assert storage.client is not None and storage.client.client_id  # registered dynamically
            assert storage.tokens is not None and storage.tokens.access_token.count(".") == 2  # a JWT for crew-mcp
        assert team.sim.count("research", "POST", "/kickoff") == 2


async def test_a_token_the_certified_provider_issued_for_another_resource_is_refused(
    oidc_issuer: str, tmp_path: Path
) -> None:
    switch = login_as(oidc_issuer)
    async with serve_team(None, tmp_path, issuer=oidc_issuer, switch_user=switch) as team:
        storage = MemoryStorage()
        async with team.signed_in("alice", "auto", storage) as alice:
            await ok(alice, "list_crews")
    # The same provider, the same user, a token for another MCP server (its own resource indicator).
    (tmp_path / "other").mkdir()
    async with serve_team(None, tmp_path / "other", issuer=oidc_issuer, switch_user=switch) as other:
        assert storage.tokens is not None
        headers = {
            "Authorization": f"Bearer {storage.tokens.access_token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        async with httpx2.AsyncClient() as http:
            answer = await http.post(other.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
    assert answer.status_code == 401 and 'error="invalid_token"' in answer.headers["www-authenticate"]
