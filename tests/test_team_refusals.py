"""What a team deployment refuses, with which status and header, and that nothing reaches the crews when it does:
bad tokens, missing scopes, DNS rebinding, oversized bodies, kickoffs past the rate, waits past the limit, sessions
past the cap or idle; and a secret scan of everything crew-mcp said, logged and stored."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from hitl_support import MODES, ok, read_json, refused
from mcp import MCPError
from oauth_provider import OAuthProvider, SigningKey
from team_support import TEAM_TOML, Team, serve_team

PROTOCOL = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "Mcp-Protocol-Version": "2026-07-28",
}


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
LEGACY = {"Mcp-Protocol-Version": "2025-11-25"}


def kickoff_call(topic: str = "tides") -> dict[str, Any]:
    """A complete 2026-07-28 ``tools/call`` that starts a run when it is let through."""
    arguments = {"crew": "research", "inputs": {"topic": topic}}
    params = {"name": "kickoff_crew", "arguments": arguments, "_meta": PROTOCOL}
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


async def post(team: Team, token: str | None, body: Any = None, **headers: str) -> httpx2.Response:
    body = body or kickoff_call()
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    # 2026-07-28 mirrors the method (and the tool's name) in headers; a 2025 request sets its own version header.
    routing = {"Mcp-Method": body["method"]}
    if body["method"] == "tools/call":
        routing["Mcp-Name"] = body["params"]["name"]
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(team.url, json=body, headers={**HEADERS, **routing, **auth, **headers})


def challenge(response: httpx2.Response) -> str:
    return response.headers.get("www-authenticate", "")


async def test_bad_tokens_get_401_pointing_at_the_metadata_and_start_nothing(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_team(oauth_provider, tmp_path) as team:
        good = await post(team, team.token("alice"))
        assert good.status_code == 200 and team.upstream.kickoffs() == 1, good.text  # the same call, let through
        now = int(time.time())
        mint = oauth_provider.mint
        bad = {
            "missing": None,
            "wrong audience": mint(aud="api://someone-else"),
            "another resource": mint(aud="https://other-mcp.example.com/mcp"),
            "wrong issuer": mint(iss="https://evil.example.com"),
            "expired": mint(iat=now - 7200, exp=now - 3600),
            "not yet valid": mint(nbf=now + 3600),
            "bad signature": oauth_provider.tamper(mint()),
            "unknown kid": mint(key=SigningKey.new("RS256", published=False)),
            "alg none": oauth_provider.mint_unsigned(),
            "HS256 keyed with the public key": oauth_provider.mint_hs256(b"public key bytes"),
            "garbage": "not-a-token",
        }
        metadata = f'resource_metadata="{team.root}/.well-known/oauth-protected-resource/mcp"'
        for reason, token in bad.items():
            response = await post(team, token)
            assert response.status_code == 401, reason
            assert challenge(response).startswith('Bearer error="invalid_token"'), reason
            assert metadata in challenge(response), reason
            assert response.json()["error"] == "invalid_token", reason
        assert team.upstream.kickoffs() == 1
        async with httpx2.AsyncClient() as http:
            for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
                prm = (await http.get(team.root + path)).json()
                assert prm["resource"] == team.url and prm["authorization_servers"] == [oauth_provider.issuer]
                assert prm["scopes_supported"] == ["crew:read", "crew:run", "crew:approve"]
            assert (await http.get(team.root + "/healthz")).json()["status"] == "ok"  # open to probes


async def test_missing_scopes_get_403_naming_the_scope_to_ask_for(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_team(oauth_provider, tmp_path) as team:
        reader = await post(team, team.token("alice", scope="crew:read"))
        assert reader.status_code == 403
        assert challenge(reader).startswith('Bearer error="insufficient_scope", scope="crew:run"')
        assert f'resource_metadata="{team.root}/.well-known/oauth-protected-resource/mcp"' in challenge(reader)
        assert "kickoff_crew needs the crew:run scope" in reader.json()["error"]["message"]
        nothing = team.token("alice", scope="openid profile")
        assert 'scope="crew:run"' in challenge(await post(team, nothing))  # crew:run carries crew:read
        opening = await post(team, nothing, INIT, **LEGACY)  # any request needs crew:read (the SDK's check)
        assert opening.status_code == 403 and 'error="insufficient_scope"' in challenge(opening)
        assert "Required scope: crew:read" in challenge(opening)
        assert team.upstream.kickoffs() == 0
        async with team.member(team.token("alice", scope="crew:read crew:run")) as client:
            run = await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": "x"}})
            await team.sim.advance(5)
            with pytest.raises(MCPError, match="resume_with_feedback needs the crew:approve scope"):
                await client.call_tool("resume_with_feedback", {"kickoff_id": run["kickoff_id"], "approve": True})
        assert team.sim.count("research", "POST", "/resume") == 0


async def test_dns_rebinding_and_oversized_bodies_are_refused_before_anything_runs(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_team(oauth_provider, tmp_path) as team:
        token = team.token("alice")
        assert (await post(team, token, Host="evil.example")).status_code == 421
        assert (await post(team, token, Origin="http://evil.example")).status_code == 403
        huge = kickoff_call("x" * (5 * 1024 * 1024))
        assert (await post(team, token, huge)).status_code == 413
        assert team.upstream.kickoffs() == 0
        assert (await post(team, token, Origin=team.root)).status_code == 200


async def test_kickoffs_past_the_rate_get_429_with_retry_after(oauth_provider: OAuthProvider, tmp_path: Path) -> None:
    toml = TEAM_TOML + "\n[auth.limits]\nkickoffs_per_minute = 2\n"
    async with serve_team(oauth_provider, tmp_path, toml=toml) as team:
        alice = team.token("alice")
        async with team.member(alice) as client:
            for topic in ("a", "b"):
                await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": topic}})
            with pytest.raises(MCPError, match=r"Too many runs started: at most 2 per minute\. Retry in \d+ s\."):
                await client.call_tool("kickoff_crew", {"crew": "research", "inputs": {"topic": "c"}})
            await ok(client, "list_executions")  # reading is not limited
        limited = await post(team, alice)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 30
        assert team.upstream.kickoffs() == 2
        assert (await post(team, team.token("bob"))).status_code == 200  # per principal
        assert team.upstream.kickoffs() == 3


async def test_waits_past_the_limit_are_refused_with_when_to_retry(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    toml = TEAM_TOML + "\n[auth.limits]\nconcurrent_waits = 1\n"
    async with serve_team(oauth_provider, tmp_path, toml=toml) as team:
        alice = team.token("alice")
        async with team.member(alice) as client, team.member(team.token("bob")) as bob:
            run = (await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": "a"}}))["kickoff_id"]

            async def hold_the_slot() -> None:
                while True:  # a probe below may hold the slot for a moment; then try again (the run stays running)
                    if not (await client.call_tool("get_status", {"kickoff_id": run, "wait_seconds": 40})).is_error:
                        return
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                tg.start_soon(hold_the_slot)
                with anyio.fail_after(20):
                    while True:  # probe (briefly holding the slot itself) until the long wait holds it
                        r = await client.call_tool("get_status", {"kickoff_id": run, "wait_seconds": 0.01})
                        if r.is_error:
                            break
                        await anyio.sleep(0.05)
                sentence = "".join(getattr(c, "text", "") for c in r.content)
                assert "You already have 1 calls waiting on runs" in sentence and "Retry in 45 s" in sentence
                started = await refused(client, "kickoff_crew", {"crew": "research", "inputs": {}, "wait_seconds": 5})
                assert "no run was started" in started
                assert (await ok(client, "get_status", {"kickoff_id": run}))["state"] == "running"  # no wait: fine
                b = (await ok(bob, "kickoff_crew", {"crew": "research", "inputs": {"topic": "b"}}))["kickoff_id"]
                assert (await ok(bob, "get_status", {"kickoff_id": b, "wait_seconds": 0.01}))["kickoff_id"] == b
                tg.cancel_scope.cancel()
        assert team.sim.count("research", "POST", "/kickoff") == 2


async def test_2025_sessions_are_capped_and_expire_when_idle(oauth_provider: OAuthProvider, tmp_path: Path) -> None:
    toml = TEAM_TOML + "\n[auth.limits]\nmax_sessions = 2\nsession_idle_seconds = 0.5\n"
    init, legacy = INIT, LEGACY
    async with serve_team(oauth_provider, tmp_path, toml=toml) as team:
        token = team.token("alice")
        sessions = []
        for _ in range(2):
            opened = await post(team, token, init, **legacy)
            assert opened.status_code == 200
            sessions.append(opened.headers["mcp-session-id"])
        assert (await post(team, token, init, **legacy)).status_code == 503  # capped
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}

        async def gone() -> bool:
            answer = await post(team, token, ping, **legacy, **{"Mcp-Session-Id": sessions[0]})
            return answer.status_code == 404

        with anyio.fail_after(15):
            while True:  # reaped once idle; each probe is activity, so probe less often than the idle time
                await anyio.sleep(1.0)
                if await gone():
                    break
        assert (await post(team, token, init, **legacy)).status_code == 200  # room again


def ledger_bytes(folder: Path) -> bytes:
    """The SQLite ledger's files as stored (database, WAL and shared memory)."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("ledger.db*")))


@pytest.mark.parametrize("mode", MODES)
async def test_no_token_reaches_the_crews_callers_logs_results_or_the_ledger(
    oauth_provider: OAuthProvider, tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    said: list[str] = []
    async with serve_team(oauth_provider, tmp_path) as team:
        async with team.signed_in("alice", mode) as alice, team.member(team.token("bob"), mode) as bob:
            for client in (alice, bob):
                run = await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
                await team.sim.advance(5)
                for tool, args in (
                    ("list_crews", {}),
                    ("list_inputs", {"crew": "research"}),
                    ("get_status", {"kickoff_id": run["kickoff_id"]}),
                    ("list_executions", {}),
                    ("list_pending_approvals", {}),
                    ("resume_with_feedback", {"kickoff_id": run["kickoff_id"], "approve": True, "feedback": "ok"}),
                ):
                    said.append(json.dumps(await ok(client, tool, args)))
                said.append(await refused(client, "get_status", {"kickoff_id": "00000000-0000-4000-8000-0000000000"}))
                for uri in ("crew://crews", "crew://research/inputs", f"crew://executions/{run['kickoff_id']}"):
                    said.append(json.dumps(await read_json(client, uri)))
        tokens = [t for t in team.given_tokens if t]
        upstream_headers = json.dumps([headers for _, _, headers in team.upstream.requests])
        stored = ledger_bytes(tmp_path)
    assert len(tokens) >= 3 and team.upstream.kickoffs() == 2
    assert f"Bearer {team.crew_token}" in upstream_headers  # the crews see crew-mcp's token ...
    logs = caplog.text
    for token in tokens:  # ... and never a caller's
        signature = token.rsplit(".", 1)[-1]
        for where, text in (("upstream", upstream_headers), ("logs", logs), ("answers", "\n".join(said))):
            assert token not in text and signature not in text, where
        assert token.encode() not in stored and signature.encode() not in stored
    for fragment in (team.crew_token, team.crew_token[-16:]):
        assert fragment not in logs and fragment not in "\n".join(said) and fragment.encode() not in stored
    assert "oauth:" in stored.decode(errors="replace")  # the scan read the real ledger


async def test_the_sse_message_endpoint_enforces_the_same_scopes_and_starts_nothing(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    """A token with only crew:read may open the HTTP+SSE transport, but a kickoff posted there is refused."""
    async with serve_team(oauth_provider, tmp_path) as team:
        reader = {"Authorization": f"Bearer {team.token('alice', scope='crew:read')}"}
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "kickoff_crew", "arguments": {"crew": "research", "inputs": {"topic": "x"}}},
        }
        async with httpx2.AsyncClient(timeout=30) as http:
            refused = await http.post(f"{team.root}/messages/?session_id=0123", json=call, headers=reader)
        assert refused.status_code == 403
        assert challenge(refused).startswith('Bearer error="insufficient_scope", scope="crew:run"')
        assert team.upstream.kickoffs() == 0


async def test_an_opaque_token_is_introspected_once_per_tool_call(
    oauth_provider: OAuthProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The scope gate and the SDK's bearer check share one verification: a refused opaque token (refusals are not
    cached) costs one introspection request and one log line, an accepted one is introspected once and then cached."""
    oauth_provider.add_client("crew-mcp", "introspection-secret-value")
    env = {
        "CREW_MCP_OAUTH_INTROSPECTION_URL": oauth_provider.issuer + "/introspect",
        "CREW_MCP_OAUTH_CLIENT_ID": "crew-mcp",
        "CREW_MCP_OAUTH_CLIENT_SECRET": "introspection-secret-value",
    }
    async with serve_team(oauth_provider, tmp_path, env=env) as team:
        with caplog.at_level(logging.INFO, logger="crew_mcp.auth"):
            response = await post(team, oauth_provider.opaque(active=False))
        assert response.status_code == 401 and challenge(response).startswith('Bearer error="invalid_token"')
        assert oauth_provider.introspections == 1
        assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
            "bearer token refused: the authorization server says it is not active"
        ]
        accepted = await post(team, oauth_provider.opaque())
        assert accepted.status_code == 200 and team.upstream.kickoffs() == 1, accepted.text
        assert oauth_provider.introspections == 2
