"""A 2025-era session id is never taken as identity (issue 11): the token says who calls; the session only names
the conversation a run is filed under, within that caller's own runs.

Alice holds a 2025-11-25 session and starts a run in it. Bob presents her ``Mcp-Session-Id`` with his own token. In
the 2025 era her session answers him exactly as a session that does not exist would, for calls and for its GET
stream. In the stateless 2026 era the header only names a conversation, and Bob's view of that conversation holds
none of Alice's runs. All servers are real, on loopback (team_support.py): the test authorization server, the
simulator and crew-mcp's HTTP app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest
from hitl_support import ERA, ok, read_json, refused
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from oauth_provider import OAuthProvider
from team_support import Team, serve_team

UNKNOWN_SESSION = "0123456789abcdef0123456789abcdef"


async def legacy(team: Team, token: str, session: str, method: str, body: dict[str, Any] | None) -> httpx2.Response:
    """A raw 2025-11-25 request in ``session``: a POSTed JSON-RPC ``body``, or (``GET``) the session's stream."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Mcp-Protocol-Version": ERA["legacy"],
        "Mcp-Session-Id": session,
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        if method == "GET":
            async with http.stream("GET", team.url, headers={**headers, "Accept": "text/event-stream"}) as response:
                await response.aread()
                return response
        return await http.post(team.url, json=body, headers=headers)


def calls(kickoff_id: str, conversation: str) -> list[dict[str, Any]]:
    """What Bob tries in Alice's session: her conversation's latest run, her run, her conversation's listing."""
    tools = [
        ("get_status", {}),
        ("get_status", {"kickoff_id": kickoff_id}),
        ("list_executions", {"conversation_id": conversation}),
    ]
    requests = [{"method": "tools/call", "params": {"name": n, "arguments": a}} for n, a in tools]
    requests.append({"method": "resources/read", "params": {"uri": f"crew://conversations/{conversation}"}})
    return [{"jsonrpc": "2.0", "id": i, **r} for i, r in enumerate(requests, start=2)]


async def test_another_members_session_id_gives_none_of_her_runs(oauth_provider: OAuthProvider, tmp_path: Path) -> None:
    async with serve_team(oauth_provider, tmp_path) as team:
        alice_token, bob_token = team.token("alice"), team.token("bob")
        async with team.member(alice_token, "legacy") as alice:
            run = await ok(alice, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
            kickoff_id, conversation = run["kickoff_id"], run["conversation_id"]
            session = conversation.removeprefix("session:")
            assert session != conversation  # her run is filed under her 2025 session

            # 2025 era: her session, used with his token, is answered like a session that never existed.
            for body in [None, *calls(kickoff_id, conversation)]:
                method = "GET" if body is None else "POST"
                hijack = await legacy(team, bob_token, session, method, body)
                unknown = await legacy(team, bob_token, UNKNOWN_SESSION, method, body)
                assert (hijack.status_code, hijack.content) == (unknown.status_code, unknown.content), body
                assert hijack.status_code == 404 and kickoff_id.encode() not in hijack.content, hijack.content

            # 2026 era: the header only names a conversation within Bob's own runs, where Alice's run is not.
            headers = {"Authorization": f"Bearer {bob_token}", "Mcp-Session-Id": session}
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(team.url, http_client=http), mode="auto") as bob,
            ):
                latest = await refused(bob, "get_status")
                assert f"This conversation ({conversation}) has no runs yet" in latest, latest
                mine = await refused(bob, "get_status", {"kickoff_id": kickoff_id})
                assert f"No run with kickoff_id {kickoff_id!r} is known to crew-mcp for you" in mine, mine
                listed = await ok(bob, "list_executions", {"conversation_id": conversation})
                assert listed["executions"] == [], listed
                assert (await read_json(bob, f"crew://conversations/{conversation}")).get("executions", []) == []
                with pytest.raises(MCPError) as caught:
                    await bob.read_resource(f"crew://executions/{kickoff_id}")
                assert caught.value.error.code == -32602

            # Her session is still hers, with her run in it.
            assert (await ok(alice, "get_status"))["kickoff_id"] == kickoff_id
