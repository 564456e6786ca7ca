"""The MCP App (run card) as a host sees it, in both protocol eras: the ``ui://`` resource, the tool metadata, the
app-only tools, and the human decision they carry. The card's HTML running in a browser: test_apps_browser.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from apps_support import APPS, OWNER, card, connected, error_text, ok, paused_run, review_crew
from hitl_support import MODES
from mcp import Client

from crew_mcp.apps import APP_TOOLS, REVIEW_META_KEY, RUN_CARD_URI, card_html
from crew_mcp.settings import Settings
from crew_mcp.simulator import Simulator

# ------------------------------------------------------------------------------------------ the resource


@pytest.mark.parametrize("mode", MODES)
async def test_card_resource_is_a_self_contained_mcp_app_under_the_default_csp(mode: str) -> None:
    async with connected(mode, apps=True) as (client, _):
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        read = await client.read_resource(RUN_CARD_URI)
    assert listed[RUN_CARD_URI].mime_type == "text/html;profile=mcp-app"
    (content,) = read.contents
    assert content.mime_type == "text/html;profile=mcp-app"
    # Declared, and empty: no connectDomains / resourceDomains, so the host's restrictive default CSP applies.
    assert content.meta == {"ui": {"csp": {}, "prefersBorder": True}}
    html = getattr(content, "text", "")
    assert html == card_html() and html.lstrip().lower().startswith("<!doctype html>")
    # Everything inline: nothing for the page to fetch, so connect-src 'none' and default-src 'none' cost nothing.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", html, re.IGNORECASE)
    assert not re.search(r"@import|url\(|fetch\(|XMLHttpRequest|WebSocket|EventSource|innerHTML", html)


@pytest.mark.parametrize("mode", MODES)
async def test_apps_client_sees_the_card_on_run_tools_and_the_app_only_tools(mode: str) -> None:
    async with connected(mode, apps=True) as (client, _):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        capabilities = client.server_capabilities
    card_meta = {"ui": {"resourceUri": RUN_CARD_URI}}
    assert tools["get_status"].meta == card_meta
    assert tools["kickoff_crew"].meta == card_meta
    assert tools["run_research"].meta == card_meta
    for name in APP_TOOLS:
        assert tools[name].meta == {"ui": {"resourceUri": RUN_CARD_URI, "visibility": ["app"]}}
    assert tools["resume_with_feedback"].meta is None
    if mode == "auto":  # the 2025-11-25 wire has no `extensions` capability; hosts go by the tools' _meta.ui
        assert capabilities.extensions == {"io.modelcontextprotocol/ui": {}}


@pytest.mark.parametrize("mode", MODES)
async def test_client_without_apps_sees_no_app_tools_no_ui_meta_and_no_ui_resource(mode: str) -> None:
    async with connected(mode, apps=False) as (client, _):
        tools = (await client.list_tools()).tools
        resources = (await client.list_resources()).resources
        for name in APP_TOOLS:
            refused = error_text(
                await client.call_tool(name, {"kickoff_id": "k", "task_id": "t", "approve": True, "review_token": "x"})
            )
            assert "answers only hosts that render MCP Apps" in refused
            assert "resume_with_feedback" in refused
    names = {t.name for t in tools}
    assert not names & set(APP_TOOLS)
    assert {"get_status", "kickoff_crew", "resume_with_feedback", "run_research"} <= names
    assert all(not (t.meta or {}).get("ui") for t in tools)
    assert not [r for r in resources if str(r.uri).startswith("ui://")]


@pytest.mark.parametrize("mode", MODES)
async def test_hosts_with_and_without_apps_get_the_same_run_results(mode: str, tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'runs.db'}"
    sim = Simulator([review_crew()], clock="manual")
    async with sim:
        async with connected(mode, apps=False, sim=sim, ledger=ledger) as (plain, _):
            kickoff_id = await paused_run(plain)
            await ok(plain, "get_status", {"kickoff_id": kickoff_id})
            before = await ok(plain, "get_status", {"kickoff_id": kickoff_id})
        async with connected(mode, apps=True, sim=sim, ledger=ledger) as (apps, _):
            after = await ok(apps, "get_status", {"kickoff_id": kickoff_id})
    assert after.content == before.content
    assert after.structured_content == before.structured_content
    assert not {k for k in (after.meta or {}) if not k.startswith("io.modelcontextprotocol/")}


# ----------------------------------------------------------------------------------------- app tools


@pytest.mark.parametrize("mode", MODES)
async def test_app_run_view_gives_the_run_with_its_inputs_and_a_review_token(mode: str) -> None:
    async with connected(mode, apps=True) as (client, _):
        kickoff_id = await paused_run(client, topic="tidal energy")
        view, meta = await card(client, kickoff_id)
    assert view["run"]["state"] == "waiting_for_human"
    assert view["run"]["pending"]["output"] == "## Brief on tidal energy"
    assert view["inputs"] == {"topic": "tidal energy"} and view["input_names"] == ["topic"]
    assert view["approval_policy"] == "model" and view["fingerprint"]
    review = meta[REVIEW_META_KEY]
    assert review["task_id"] == "draft" and re.fullmatch(r"[0-9a-f]{32}", review["token"])


@pytest.mark.parametrize("mode", MODES)
async def test_app_run_view_keeps_only_input_names_when_the_ledger_drops_values(mode: str) -> None:
    settings = Settings(owner=OWNER, keep_input_values=False)
    async with connected(mode, apps=True, settings=settings) as (client, _):
        view, _ = await card(client, await paused_run(client))
    assert view["inputs"] == {} and view["input_names"] == ["topic"]


@pytest.mark.parametrize("mode", MODES)
async def test_app_run_view_long_poll_returns_when_the_run_moves(mode: str) -> None:
    async with connected(mode, apps=True) as (client, _):
        kickoff_id = await paused_run(client)
        _, meta = await card(client, kickoff_id)
        decided = await ok(
            client,
            "app_decide",
            {
                "kickoff_id": kickoff_id,
                "task_id": "draft",
                "approve": True,
                "review_token": meta[REVIEW_META_KEY]["token"],
            },
        )
        assert decided.structured_content is not None
        seen = decided.structured_content["fingerprint"]
        with anyio.fail_after(10):
            moved, _ = await card(client, kickoff_id, wait_seconds=25, since=seen)
    # The approved draft let the crew start "publish": the poll came back with that, well before 25 s.
    assert moved["fingerprint"] != seen
    assert moved["run"]["progress"]["current_task"] == "publish"


@pytest.mark.parametrize("mode", MODES)
async def test_a_decision_in_the_card_is_human_under_the_human_policy(mode: str) -> None:
    settings = Settings(owner=OWNER, approval_policy="human")
    async with connected(mode, apps=True, settings=settings) as (client, _):
        kickoff_id = await paused_run(client)
        by_model = await client.call_tool(
            "resume_with_feedback", {"kickoff_id": kickoff_id, "approve": False, "feedback": "shorter"}
        )
        assert "approval policy is 'human'" in error_text(by_model)
        _, meta = await card(client, kickoff_id)
        args = {"kickoff_id": kickoff_id, "task_id": "draft", "approve": False, "feedback": "Add a summary."}
        decided = await ok(client, "app_decide", {**args, "review_token": meta[REVIEW_META_KEY]["token"]})
        assert decided.structured_content is not None
        assert (
            decided.structured_content["notice"] == "Sent back task draft; the crew is revising it with your feedback."
        )
        with anyio.fail_after(10):
            revised, revised_meta = await card(
                client, kickoff_id, wait_seconds=25, since=decided.structured_content["fingerprint"]
            )
    (decision,) = revised["run"]["decisions"]
    assert (decision["by"], decision["via"], decision["actor"]) == ("human", "app", OWNER)
    assert (decision["approve"], decision["feedback"]) == (False, "Add a summary.")
    assert revised["run"]["state"] == "waiting_for_human"
    assert "Revised per feedback: Add a summary." in revised["run"]["pending"]["output"]
    assert revised_meta[REVIEW_META_KEY]["token"] != meta[REVIEW_META_KEY]["token"]


@pytest.mark.parametrize("mode", MODES)
async def test_the_card_says_when_the_crews_answer_to_a_decision_was_lost(mode: str) -> None:
    sim = Simulator([review_crew()], clock="manual")
    async with sim, connected(mode, apps=True, sim=sim) as (client, _):
        kickoff_id = await paused_run(client)
        _, meta = await card(client, kickoff_id)
        # app_decide reads the run's status first (let through), then sends the decision (its answer lost)
        sim.faults("brief").delay_next(1, seconds=0).fail_next(1, status=502)
        args = {"kickoff_id": kickoff_id, "task_id": "draft", "approve": False, "feedback": "Add a summary."}
        decided = await ok(client, "app_decide", {**args, "review_token": meta[REVIEW_META_KEY]["token"]})
    assert decided.structured_content is not None
    assert decided.structured_content["notice"] == (
        "Sent back task draft; the crew's answer was lost, so it may or may not have acted on it; "
        "it was not sent again."
    )
    assert sim.count("brief", "POST", "/resume") == 1


@pytest.mark.parametrize("mode", MODES)
async def test_app_decide_refuses_a_forged_stale_or_misdirected_decision_and_sends_nothing(mode: str) -> None:
    async with connected(mode, apps=True) as (client, _):
        kickoff_id = await paused_run(client)
        _, meta = await card(client, kickoff_id)
        token = meta[REVIEW_META_KEY]["token"]
        base = {"kickoff_id": kickoff_id, "task_id": "draft", "approve": True}
        forged = error_text(await client.call_tool("app_decide", {**base, "review_token": "0" * 32}))
        wrong_task = error_text(
            await client.call_tool("app_decide", {**base, "task_id": "publish", "review_token": token})
        )
        untouched, _ = await card(client, kickoff_id)
        # Reject once (valid), then replay the first token against the revised output.
        sent = await ok(client, "app_decide", {**base, "approve": False, "feedback": "again", "review_token": token})
        assert sent.structured_content is not None
        with anyio.fail_after(10):
            revised, _ = await card(client, kickoff_id, wait_seconds=25, since=sent.structured_content["fingerprint"])
        assert revised["run"]["state"] == "waiting_for_human"
        stale = error_text(await client.call_tool("app_decide", {**base, "review_token": token}))
        after, _ = await card(client, kickoff_id)
    assert "out of date" in forged and "nothing was sent" in forged
    assert "no longer waits for review of task publish" in wrong_task
    assert untouched["run"]["decisions"] == [] and untouched["run"]["state"] == "waiting_for_human"
    assert "out of date" in stale
    assert [d["approve"] for d in after["run"]["decisions"]] == [False]


@pytest.mark.parametrize("mode", MODES)
async def test_app_tools_see_only_the_callers_runs(mode: str, tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'runs.db'}"
    sim = Simulator([review_crew()], clock="manual")
    async with sim:
        async with connected(mode, apps=True, sim=sim, ledger=ledger) as (alice, _):
            kickoff_id = await paused_run(alice)
        other = Settings(owner="someone-else")
        async with connected(mode, apps=True, sim=sim, ledger=ledger, settings=other) as (bob, _):
            refused = error_text(await bob.call_tool("app_run_view", {"kickoff_id": kickoff_id}))
    assert "No run with kickoff_id" in refused


@pytest.mark.parametrize("mode", MODES)
async def test_card_on_a_paused_run_sees_a_decision_made_elsewhere(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import crew_mcp.apps

    monkeypatch.setattr(crew_mcp.apps, "PAUSED_CHECK", 0.05)  # re-read the paused run often, so the test is quick
    async with connected(mode, apps=True) as (client, _):
        kickoff_id = await paused_run(client)
        view, _ = await card(client, kickoff_id)
        seen: list[dict[str, Any]] = []

        async def poll() -> None:
            seen.append((await card(client, kickoff_id, wait_seconds=25, since=view["fingerprint"]))[0])

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                # The person answers in chat instead (model policy): the card's pending poll must notice.
                await ok(client, "resume_with_feedback", {"kickoff_id": kickoff_id, "approve": True})
    (moved,) = seen
    assert moved["fingerprint"] != view["fingerprint"]
    assert moved["run"]["state"] == "running"
    assert [(d["by"], d["via"]) for d in moved["run"]["decisions"]] == [("model", "tool")]


@pytest.mark.parametrize("mode", MODES)
async def test_over_streamable_http_the_card_works_for_apps_hosts_only(mode: str, tmp_path: Path) -> None:
    from test_http import serve_crew_mcp

    from crew_mcp.settings import load_settings
    from crew_mcp.simulator import serve_simulator

    sim = Simulator([review_crew()], clock="manual")
    async with serve_simulator(sim) as sim_root:
        config = tmp_path / "crews.toml"
        config.write_text(f'[[crews]]\nname = "brief"\nurl = "{sim_root}/brief"\ntoken_env = "SIM_TOKEN"\n')
        env = {"SIM_TOKEN": "sim-token", "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db"}
        settings = load_settings(env={**env, "CREW_MCP_APPROVAL_POLICY": "human"}, config_path=str(config))
        async with serve_crew_mcp(settings) as root:
            with anyio.fail_after(30):
                async with Client(f"{root}/mcp", mode=mode) as plain:
                    plain_tools = {t.name for t in (await plain.list_tools()).tools}
                    kickoff_id = await paused_run(plain)
                    refused = error_text(await plain.call_tool("app_run_view", {"kickoff_id": kickoff_id}))
                async with Client(f"{root}/mcp", mode=mode, extensions=[APPS]) as apps:
                    apps_tools = {t.name for t in (await apps.list_tools()).tools}
                    _, meta = await card(apps, kickoff_id)
                    token = meta[REVIEW_META_KEY]["token"]
                    args = {"kickoff_id": kickoff_id, "task_id": "draft", "approve": True, "review_token": token}
                    decided = await ok(apps, "app_decide", args)
    assert not plain_tools & set(APP_TOOLS) and set(APP_TOOLS) <= apps_tools
    assert "answers only hosts that render MCP Apps" in refused
    assert decided.structured_content is not None
    (decision,) = decided.structured_content["run"]["decisions"]
    assert (decision["by"], decision["via"]) == ("human", "app")
