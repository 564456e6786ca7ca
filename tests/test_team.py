"""crew-mcp as a team service (issue 11): the real HTTP app behind OAuth, members connecting with the MCP SDK in
both protocol eras, each seeing only their own runs, crews limited per group, and approvals by an approvers group.

Everything runs on loopback: the test authorization server, the AMP simulator and crew-mcp (see team_support.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from apps_support import APPS
from hitl_support import MODES, ok, read_json, refused, until
from mcp import Client, MCPError
from mcp.client.sse import sse_client
from mcp.types import PromptReference, ResourceUpdatedNotification
from oauth_provider import MemoryStorage, OAuthProvider
from team_support import CREWS, serve_team

from crew_mcp.auth import SCOPE_READ, SCOPE_RUN

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def same_refusal(foreign: str, foreign_id: str, unknown: str) -> bool:
    """Whether two refusals are the same sentence once each names its own id."""
    return foreign.replace(foreign_id, "<id>") == unknown.replace(UNKNOWN, "<id>")


@pytest.mark.parametrize("mode", MODES)
async def test_a_member_signs_in_with_the_sdk_oauth_client_and_runs_a_crew(
    oauth_provider: OAuthProvider, tmp_path: Path, mode: str
) -> None:
    async with serve_team(oauth_provider, tmp_path) as team:
        storage = MemoryStorage()
        async with team.signed_in("alice", mode, storage) as client:
            crews = await ok(client, "list_crews")
            run = await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
            status = await ok(client, "get_status", {"kickoff_id": run["kickoff_id"]})
            listed = await ok(client, "list_executions")
        assert {c["name"] for c in crews["crews"]} == set(CREWS)
        assert status["kickoff_id"] == run["kickoff_id"] and status["state"] == "running"
        assert [r["kickoff_id"] for r in listed["executions"]] == [run["kickoff_id"]]
        assert team.sim.count("research", "POST", "/kickoff") == 1
        # Dynamic client registration, then a token for this server that grew from crew:read to crew:run (step-up).
        assert storage.client is not None and storage.client.client_id in oauth_provider.clients
        assert storage.tokens is not None and {SCOPE_READ, SCOPE_RUN} <= set((storage.tokens.scope or "").split())


@pytest.mark.parametrize("mode", MODES)
async def test_two_members_never_see_each_others_runs(oauth_provider: OAuthProvider, tmp_path: Path, mode: str) -> None:
    async with serve_team(oauth_provider, tmp_path) as team:
        heard: dict[str, list[str]] = {"alice": [], "bob": []}

        def hearing(who: str) -> Any:
            async def on_message(message: Any) -> None:
                inner = getattr(message, "root", message)
                if isinstance(inner, ResourceUpdatedNotification):
                    heard[who].append(str(inner.params.uri))

            return on_message

        alice_token, bob_token = team.token("alice"), team.token("bob")
        async with (
            team.member(alice_token, mode, message_handler=hearing("alice")) as alice,
            team.member(bob_token, mode, message_handler=hearing("bob")) as bob,
        ):
            a_run = await ok(alice, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
            b_run = await ok(bob, "kickoff_crew", {"crew": "research", "inputs": {"topic": "moons"}})
            a, b = a_run["kickoff_id"], b_run["kickoff_id"]
            a_uri, b_uri = f"crew://executions/{a}", f"crew://executions/{b}"
            # 2026: both in the "default" conversation; 2025: each its session's. Never each other's either way.
            conversations = {a: a_run["conversation_id"], b: b_run["conversation_id"]}

            for me, mine, theirs in ((alice, a, b), (bob, b, a)):
                # Tools: listing, the conversation's latest run, status, decisions.
                listed = await ok(me, "list_executions")
                assert [r["kickoff_id"] for r in listed["executions"]] == [mine]
                assert (await ok(me, "get_status"))["kickoff_id"] == mine
                assert (await ok(me, "get_status", {"kickoff_id": mine}))["kickoff_id"] == mine
                for tool, args in (
                    ("get_status", {}),
                    ("resume_with_feedback", {"approve": True}),
                ):
                    foreign = await refused(me, tool, {**args, "kickoff_id": theirs})
                    unknown = await refused(me, tool, {**args, "kickoff_id": UNKNOWN})
                    assert same_refusal(foreign, theirs, unknown), (foreign, unknown)
                # Resources: one run, the conversation, the approvals.
                assert (await read_json(me, f"crew://executions/{mine}"))["kickoff_id"] == mine
                errors = []
                for kickoff_id in (theirs, UNKNOWN):
                    with pytest.raises(MCPError) as caught:
                        await me.read_resource(f"crew://executions/{kickoff_id}")
                    errors.append((caught.value.error.code, caught.value.error.message.replace(kickoff_id, "<id>")))
                assert errors[0] == errors[1] and errors[0][0] == -32602
                for conversation_id in set(conversations.values()):
                    conversation = await read_json(me, f"crew://conversations/{conversation_id}")
                    shown = [r["kickoff_id"] for r in conversation.get("executions", [])]
                    assert shown == ([mine] if conversation_id == conversations[mine] else [])
                assert (await read_json(me, "crew://approvals")).get("approvals", []) == []

            # Subscriptions: only one's own runs; another's is refused (or not honored) like an unknown one.
            if mode == "auto":
                async with (
                    alice.listen(resource_subscriptions=[a_uri]) as alice_updates,
                    bob.listen(resource_subscriptions=[a_uri, b_uri, f"crew://executions/{UNKNOWN}"]) as bob_updates,
                ):
                    assert bob_updates.honored.resource_subscriptions == [b_uri]
                    assert alice_updates.honored.resource_subscriptions == [a_uri]
                    await team.sim.advance(5)  # both runs pause for review; webhooks tell crew-mcp
                    with anyio.fail_after(10):
                        heard["bob"].append(getattr(await bob_updates.__anext__(), "uri", ""))
                        heard["alice"].append(getattr(await alice_updates.__anext__(), "uri", ""))
            else:
                codes = []
                for uri in (a_uri, f"crew://executions/{UNKNOWN}"):
                    with pytest.raises(MCPError) as caught:
                        await bob.subscribe_resource(uri)
                    codes.append((caught.value.error.code, caught.value.error.message.replace(uri, "<uri>")))
                assert codes[0] == codes[1] and codes[0][0] == -32602
                await bob.subscribe_resource(b_uri)
                await alice.subscribe_resource(a_uri)
                await team.sim.advance(5)
                await until(lambda: b_uri in heard["bob"] and a_uri in heard["alice"], timeout=10)
            await ok(alice, "get_status", {"kickoff_id": a})  # one more round trip: anything stray has arrived
            await ok(bob, "get_status", {"kickoff_id": b})
        assert set(heard["bob"]) == {b_uri} and set(heard["alice"]) == {a_uri}


async def test_the_cli_sees_none_of_the_members_runs(
    oauth_provider: OAuthProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crew_mcp.cli import main

    async with serve_team(oauth_provider, tmp_path) as team:
        async with team.member(team.token("alice")) as alice:
            run = await ok(alice, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}})
        for var in ("CREW_MCP_CONFIG", "CREW_MCP_CREW_URL", "CREW_MCP_AUTH", "CREW_MCP_OWNER"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("CREW_MCP_LEDGER_URL", f"sqlite:///{team.ledger_path}")
        capsys.readouterr()
        assert await anyio.to_thread.run_sync(main, ["runs", "--json"]) == 0
        out = capsys.readouterr().out
    assert run["kickoff_id"] not in out and '"count": 0' in out


TEAM_RULES = """
[auth]
scopes = ["crew:read", "crew:run", "crew:approve"]

[auth.approval]
owner = false
group = "crew-reviewers"

[[auth.crew_access]]
group = "research"
crews = ["research"]

[[auth.crew_access]]
group = "crew-reviewers"
crews = ["*"]
"""


async def test_crews_are_limited_per_group_like_unknown_crews(oauth_provider: OAuthProvider, tmp_path: Path) -> None:
    async with serve_team(oauth_provider, tmp_path, toml=TEAM_RULES) as team:
        async with team.member(team.token("ann", groups=["research"])) as ann:
            crews = await ok(ann, "list_crews")
            assert [c["name"] for c in crews["crews"]] == ["research"]
            assert (await ok(ann, "list_inputs"))["crew"] == "research"  # the only crew open to her
            hidden = await refused(ann, "kickoff_crew", {"crew": "trip_planner", "inputs": {}})
            unknown = await refused(ann, "kickoff_crew", {"crew": "no_such_crew", "inputs": {}})
            assert hidden.replace("trip_planner", "<crew>") == unknown.replace("no_such_crew", "<crew>")
            assert "Available crews: research." in hidden
            assert "trip_planner" not in await refused(ann, "list_inputs", {"crew": "content_pipeline"})
            with pytest.raises(MCPError):
                await ann.read_resource("crew://trip_planner/inputs")
            assert [c["name"] for c in (await read_json(ann, "crew://crews"))["crews"]] == ["research"]
            # Nor do completions or a run looked up by id name the crews she may not use.
            offered = await ann.complete(
                PromptReference(type="ref/prompt", name="run_crew"), {"name": "crew", "value": ""}
            )
            assert offered.completion.values == ["research"]
            lookup = await refused(ann, "get_status", {"kickoff_id": UNKNOWN, "crew": "no_such_crew"})
            assert "Available crews: research." in lookup and "trip_planner" not in lookup
        async with team.member(team.token("carl", groups=[])) as carl:
            assert (await ok(carl, "list_crews"))["crews"] == []
            assert "No crew is open to you" in await refused(carl, "list_inputs")
        assert team.sim.count("trip_planner", "POST", "/kickoff") == 0


async def test_approvers_see_and_decide_on_others_runs_and_the_decision_names_them(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_team(oauth_provider, tmp_path, toml=TEAM_RULES) as team:
        ann_token = team.token("ann", groups=["research"])
        async with team.member(ann_token) as ann, team.member(team.token("rita", groups=["crew-reviewers"])) as rita:
            run = (await ok(ann, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}}))["kickoff_id"]
            early = await refused(rita, "get_status", {"kickoff_id": run})  # running: not hers to see yet
            assert "No run with kickoff_id" in early
            await team.sim.advance(5)
            assert (await ok(ann, "get_status", {"kickoff_id": run}))["state"] == "waiting_for_human"
            # The owner may not decide (owner = false): she is told who can, and nothing is sent.
            denied = await refused(ann, "resume_with_feedback", {"kickoff_id": run, "approve": True})
            assert "only the approvers decide" in denied and team.sim.count("research", "POST", "/resume") == 0
            assert (await ok(ann, "list_pending_approvals"))["approvals"] == []
            pending = await ok(rita, "list_pending_approvals")
            assert [p["kickoff_id"] for p in pending["approvals"]] == [run]
            assert (await ok(rita, "get_status", {"kickoff_id": run}))["state"] == "waiting_for_human"
            decided = await ok(rita, "resume_with_feedback", {"kickoff_id": run, "approve": True, "feedback": "ok"})
            assert decided["approve"] is True
            # Decided: the run is no longer waiting, so it is Ann's alone again.
            assert "No run with kickoff_id" in await refused(rita, "get_status", {"kickoff_id": run})
            assert (await ok(rita, "list_executions"))["executions"] == []
        records = await _ledger_records(team.ledger_path)
    (record,) = records
    assert record["owner"] == f"oauth:{oauth_provider.issuer}#ann"
    assert [d["actor"] for d in record["decisions"]] == [f"oauth:{oauth_provider.issuer}#rita"]


async def _ledger_records(path: Path) -> list[dict[str, Any]]:
    from crew_mcp.ledger import open_ledger

    ledger = open_ledger(f"sqlite:///{path}")
    try:
        return [r.model_dump(mode="json") for r in await ledger.list(owner=None, limit=100)]
    finally:
        await ledger.aclose()


async def test_the_sse_transport_is_protected_and_its_runs_belong_to_the_token_holder(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    """The deprecated HTTP+SSE transport gets the same token checks as /mcp, and the same owner from the token."""
    async with serve_team(oauth_provider, tmp_path) as team:
        async with httpx2.AsyncClient() as http:
            bare = await http.get(f"{team.root}/sse")
            post = await http.post(f"{team.root}/messages/?session_id=x", json={})
        assert bare.status_code == 401 and "resource_metadata=" in bare.headers["www-authenticate"]
        assert post.status_code == 401

        alice = team.token("alice")
        headers = {"Authorization": f"Bearer {alice}"}
        with anyio.fail_after(30):
            async with Client(sse_client(f"{team.root}/sse", headers=headers), mode="legacy") as client:
                run = await ok(client, "kickoff_crew", {"crew": "research", "inputs": {"topic": "sse"}})
        async with team.member(alice) as same, team.member(team.token("bob")) as other:
            mine = await ok(same, "list_executions")
            theirs = await ok(other, "list_executions")
        assert [r["kickoff_id"] for r in mine["executions"]] == [run["kickoff_id"]]
        assert theirs["executions"] == []


async def test_an_approver_decides_on_anothers_run_from_the_run_card(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    """The card's decision goes through and its answer comes back, though the run is no longer the approver's."""

    async with serve_team(oauth_provider, tmp_path, toml=TEAM_RULES) as team:
        rita_token = team.token("rita", groups=["crew-reviewers"])
        async with (
            team.member(team.token("ann", groups=["research"])) as ann,
            team.member(rita_token, extensions=[APPS]) as rita,
        ):
            run = (await ok(ann, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}}))["kickoff_id"]
            await team.sim.advance(5)
            assert (await ok(ann, "get_status", {"kickoff_id": run}))["state"] == "waiting_for_human"
            shown = await rita.call_tool("app_run_view", {"kickoff_id": run})
            assert not shown.is_error and shown.structured_content is not None
            review = dict(shown.meta or {})["crew-mcp/review"]
            decided = await rita.call_tool(
                "app_decide",
                {"kickoff_id": run, "task_id": review["task_id"], "approve": True, "review_token": review["token"]},
            )
            assert not decided.is_error, decided.content
            assert decided.structured_content is not None and decided.structured_content["run"]["state"] == "running"
        assert team.sim.count("research", "POST", "/resume") == 1
