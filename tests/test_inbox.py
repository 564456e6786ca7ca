"""The approvals inbox over HTTP (issue 13, part 2): sign-in, sessions, CSRF and Origin, isolation, decisions.

A real crew-mcp (uvicorn on loopback) with a real authorization server (tests/oauth_provider.py), driven by an
httpx2 client that keeps cookies and follows the redirects a browser would (see inbox_support.py).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from inbox_support import csrf_of, decide, serve_inbox, sign_in, state
from oauth_provider import OAuthProvider, serve_provider

from crew_mcp.inbox.security import CSP


def cookie_header(response: httpx2.Response, name: str) -> str:
    """The Set-Cookie line that sets ``name``."""
    lines = [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(name + "=")]
    assert len(lines) == 1, response.headers
    return lines[0]


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the servers logged: the test's own HTTP client (the "browser", which logs URLs and headers) left out."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx2", "httpcore2")))


def attributes(line: str) -> set[str]:
    return {part.strip().lower() for part in line.split(";")[1:]}


# --------------------------------------------------------------------------------------------- sign-in


async def test_signing_in_follows_the_authorization_code_flow_with_pkce_and_lands_on_the_inbox(
    oauth_provider: OAuthProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d, d.browser() as browser:
        oauth_provider.user = "alice"
        first = await browser.get("/approvals")
        assert first.status_code == 303 and first.headers["location"] == "/approvals/login/start"
        start = await browser.get("/approvals/login/start")
        assert start.status_code == 302
        signin_cookie = cookie_header(start, "crew_mcp_signin")
        authorize = urlsplit(start.headers["location"])
        assert f"{authorize.scheme}://{authorize.netloc}" == oauth_provider.issuer
        query = {k: v[0] for k, v in parse_qs(authorize.query).items()}
        # crew-mcp registered itself (RFC 7591) as a public client with exactly the inbox's redirect URI.
        client = oauth_provider.clients[query["client_id"]]
        assert client.secret is None and client.redirect_uris == [d.inbox + "/callback"]
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert query["resource"] == d.root + "/mcp" and query["redirect_uri"] == d.inbox + "/callback"
        assert set(query["scope"].split()) == {"crew:read", "crew:run", "crew:approve"}
        # The state and the PKCE verifier stay server-side: the browser holds only the sign-in cookie's id.
        assert query["state"] not in signin_cookie
        back = await browser.get(start.headers["location"])
        assert back.status_code == 302 and back.headers["location"].startswith(d.inbox + "/callback?")
        code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
        landed = await browser.get(back.headers["location"])
        assert landed.status_code == 303 and landed.headers["location"] == "/approvals"
        session_line = cookie_header(landed, "crew_mcp_inbox")
        assert {"httponly", "path=/", "samesite=lax", "max-age=28800"} <= attributes(session_line)
        assert "secure" not in attributes(session_line)  # plain http on loopback: a Secure cookie would never return
        assert "max-age=0" in attributes(cookie_header(landed, "crew_mcp_signin"))  # the sign-in cookie is spent
        page = await browser.get("/approvals")
        assert page.status_code == 200 and ">alice<" in page.text
        assert page.headers["content-security-policy"] == CSP and page.headers["referrer-policy"] == "no-referrer"
        viewer = (await state(browser))["viewer"]
        assert viewer["principal"] == f"oauth:{oauth_provider.issuer}#alice" and viewer["may_decide"]
        # Replaying the callback (the code, the state) after it was used signs nobody in.
        again = await browser.get(back.headers["location"])
        assert again.status_code == 400 and "sign in again" in again.text
        sid = browser.cookies["crew_mcp_inbox"]
    # The store holds the session under the id's hash, never the id; no id, code or token reached a log.
    rows = sqlite3.connect(tmp_path / "inbox-sessions.db").execute("SELECT key, value FROM inbox_kv").fetchall()
    assert rows and not any(sid in key or sid in value for key, value in rows)
    logged = server_log(caplog)
    assert sid not in logged and query["state"] not in logged and code not in logged


async def test_a_configured_confidential_client_signs_in_with_its_secret(
    oauth_provider: OAuthProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "inbox-secret-0f3c9a7d51e24b68"
    env = {"CREW_MCP_INBOX_CLIENT_ID": "crew-inbox", "CREW_MCP_INBOX_CLIENT_SECRET": secret}
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider, env=env) as d, d.browser() as browser:
        oauth_provider.add_client("crew-inbox", secret, [d.inbox + "/callback"])
        page = await sign_in(d, browser, "alice")
        assert page.status_code == 200 and ">alice<" in page.text
        assert list(oauth_provider.clients) == ["crew-inbox"]  # nothing registered
        assert secret not in page.text
    assert secret not in server_log(caplog)


async def test_a_client_id_and_secret_with_reserved_characters_reach_the_provider_intact(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    """RFC 6749 §2.3.1: HTTP Basic client authentication form-encodes the id and the secret first."""
    client_id, secret = "crew:inbox", "inbox%secret:+/0f3c9a7d51e24b68"
    env = {"CREW_MCP_INBOX_CLIENT_ID": client_id, "CREW_MCP_INBOX_CLIENT_SECRET": secret}
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider, env=env) as d, d.browser() as browser:
        oauth_provider.add_client(client_id, secret, [d.inbox + "/callback"])
        page = await sign_in(d, browser, "alice")
        assert page.status_code == 200 and ">alice<" in page.text


async def test_a_sign_in_that_does_not_match_its_browser_or_provider_is_refused(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d, d.browser() as browser:
        start = await browser.get("/approvals/login/start")
        back = await browser.get(start.headers["location"])
        callback = back.headers["location"]
        # Login CSRF: another browser (no sign-in cookie) presenting this code and state gets no session.
        async with d.browser() as other:
            refused = await other.get(callback)
            assert refused.status_code == 400 and "crew_mcp_inbox" not in other.cookies
        # The same browser with a changed state is refused too (and the sign-in record is spent).
        start = await browser.get("/approvals/login/start")
        back = await browser.get(start.headers["location"])
        forged = back.headers["location"].replace("state=", "state=x")
        assert (await browser.get(forged)).status_code == 400
        # RFC 9207: a redirect naming another issuer is a mix-up.
        start = await browser.get("/approvals/login/start")
        back = await browser.get(start.headers["location"])
        mixed = back.headers["location"].replace("iss=", "iss=https%3A%2F%2Fevil.example&was=")
        answer = await browser.get(mixed)
        assert answer.status_code == 401 and "another identity provider" in answer.text
        # The provider refusing: its error code is shown, nothing else of what it sent.
        start = await browser.get("/approvals/login/start")
        state_value = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        denied = await browser.get(f"/approvals/callback?state={state_value}&error=access_denied")
        assert denied.status_code == 401 and "(access_denied)" in denied.text
        assert "crew_mcp_inbox" not in browser.cookies


async def test_a_token_for_another_resource_signs_nobody_in(oauth_provider: OAuthProvider, tmp_path: Path) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d, d.browser() as browser:
        # The provider signs with a key it does not publish: the token is not one the MCP endpoint would accept.
        oauth_provider.rotate(published=False)
        start = await browser.get("/approvals/login/start")
        back = await browser.get(start.headers["location"])
        answer = await browser.get(back.headers["location"])
        assert answer.status_code == 401 and "is not one this server accepts" in answer.text
        assert "crew_mcp_inbox" not in browser.cookies


async def test_sign_out_ends_the_session_server_side(oauth_provider: OAuthProvider, tmp_path: Path) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d, d.browser() as browser:
        page = await sign_in(d, browser, "alice")
        token = csrf_of(page.text)
        sid = browser.cookies["crew_mcp_inbox"]
        # Signing out is a POST like any other: without the page's token it is refused.
        refused = await browser.post("/approvals/logout", data={}, headers={"Origin": d.root})
        assert refused.status_code == 403
        # A form post under no-referrer carries "Origin: null": only a browser's own Sec-Fetch-Site vouches for it.
        for headers in ({"Origin": "null"}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}, {}):
            nulled = await browser.post("/approvals/logout", data={"csrf_token": token}, headers=headers)
            assert nulled.status_code == 403, headers
        same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        assert (await state(browser))["viewer"]["name"] == "alice"
        out = await browser.post("/approvals/logout", data={"csrf_token": token}, headers=same)
        assert out.status_code == 303 and out.headers["location"] == "/approvals/login?signed_out=1"
        assert "max-age=0" in attributes(cookie_header(out, "crew_mcp_inbox"))
        signed_out = await browser.get(out.headers["location"])
        assert "You are signed out." in signed_out.text and 'href="/approvals/login/start"' in signed_out.text
        # The old id is dead on the server, not just forgotten by this browser.
        async with d.browser(cookies={"crew_mcp_inbox": sid}) as replay:
            answer = await replay.get("/approvals/api/state")
            assert answer.status_code == 401 and answer.json()["signin"] is True


# --------------------------------------------------------------------------------------- CSRF and Origin


async def test_a_cross_site_post_without_the_csrf_token_is_refused_and_nothing_reaches_the_crew(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d, d.browser() as browser:
        kickoff_id = await d.kickoff("alice")
        page = await sign_in(d, browser, "alice")
        token = csrf_of(page.text)
        (item,) = (await state(browser))["pending"]
        body = {"kickoff_id": kickoff_id, "task_id": "brief", "approve": True, "fingerprint": item["fingerprint"]}
        attempts: list[dict[str, str]] = [
            {"Origin": "http://evil.example"},  # a foreign site
            {"Origin": "http://127.0.0.1:1"},  # same site (ports do not count), another origin: the cookie is sent
            {"Origin": "http://evil.example", "X-CSRF-Token": token},  # even with the token (it could not have it)
            {"Origin": d.root},  # the right origin but no token
            {"Origin": d.root, "X-CSRF-Token": token[:-2] + "xx"},  # a wrong token
            {"X-CSRF-Token": token},  # no Origin at all
        ]
        for headers in attempts:
            refused = await browser.post("/approvals/api/decide", json=body, headers=headers)
            assert refused.status_code == 403, (headers, refused.text)
            assert "Nothing was sent" in refused.json()["error"]
        stop = await browser.post("/approvals/api/stop", json={"kickoff_id": kickoff_id}, headers={"Origin": d.root})
        assert stop.status_code == 403
        # A classic cross-site form post (no JSON, no token) is refused the same way.
        fields = {k: str(v) for k, v in body.items()}
        form = await browser.post("/approvals/api/decide", data=fields, headers={"Origin": "http://evil.example"})
        assert form.status_code == 403
        still = await state(browser)
        assert [p["kickoff_id"] for p in still["pending"]] == [kickoff_id] and still["history"] == []
        record = await d.service.ledger.get(kickoff_id, owner=None)
        assert record is not None and record.decisions == [] and record.stops == []
        assert d.sim.resume_log == [] and d.sim.count("market_brief", "POST", "/stop") == 0
        # The page's own request goes through.
        assert (await decide(d, browser, token, item, approve=True)).status_code == 200


async def test_a_foreign_host_gets_nothing(tmp_path: Path) -> None:
    async with serve_inbox(tmp_path, "none") as d, d.browser() as browser:
        for path in ("/approvals", "/approvals/api/state", "/approvals/static/inbox.js"):
            rebound = await browser.get(path, headers={"Host": "evil.example:80"})
            assert rebound.status_code == 421 and "set-cookie" not in rebound.headers
        assert (await browser.get("/approvals", headers={"Host": "localhost:1"})).status_code == 200


# ------------------------------------------------------------------------------------------- isolation


async def test_a_second_user_sees_nothing_of_the_first_users_runs(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d:
        paused = await d.kickoff("alice")
        running = await d.kickoff("alice", crew="deep_research", topic="tides")
        async with d.browser() as alice:
            await sign_in(d, alice, "alice")
            mine = await state(alice)
            assert [p["kickoff_id"] for p in mine["pending"]] == [paused]
            assert {r["kickoff_id"] for r in mine["runs"]} == {paused, running}
        async with d.browser() as bob:
            page = await sign_in(d, bob, "bob")
            token = csrf_of(page.text)
            theirs = await state(bob)
            assert theirs["pending"] == [] and theirs["runs"] == [] and theirs["history"] == []
            assert paused not in (await bob.get("/approvals/api/state")).text
            # Naming alice's run does not help: the same "not found" as for an unknown run, and nothing is sent.
            item = {"kickoff_id": paused, "task_id": "brief", "fingerprint": mine["pending"][0]["fingerprint"]}
            refused = await decide(d, bob, token, item, approve=True)
            assert refused.status_code == 404 and "alice" not in refused.text
            stop = await bob.post(
                "/approvals/api/stop", json={"kickoff_id": running}, headers={"Origin": d.root, "X-CSRF-Token": token}
            )
            assert stop.status_code == 404
        assert d.sim.resume_log == [] and d.sim.count("deep_research", "POST", "/stop") == 0


async def test_a_reviewer_decides_on_anothers_run_and_sees_only_that(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d:
        paused = await d.kickoff("alice")
        await d.kickoff("alice", crew="deep_research", topic="tides")
        async with d.browser() as robin:
            page = await sign_in(d, robin, "robin", groups=["crew-reviewers"])
            seen = await state(robin)
            assert seen["viewer"]["approver"] is True
            (item,) = seen["pending"]
            assert item["kickoff_id"] == paused and item["owner"] == "alice" and item["yours"] is False
            assert item["may_stop"] is False and seen["runs"] == []  # alice's running run is not his to see
            assert (await decide(d, robin, csrf_of(page.text), item, approve=True)).status_code == 200
            after = await state(robin)
            assert after["pending"] == [] and after["runs"] == []
            (event,) = after["history"]
            assert (event["who"], event["approve"], event["via"]) == ("you", True, "inbox")
        record = await d.service.ledger.get(paused, owner=None)
        assert record is not None
        (decision,) = record.decisions
        assert decision.actor == f"oauth:{oauth_provider.issuer}#robin" and (decision.by, decision.via) == (
            "human",
            "inbox",
        )


async def test_a_sign_in_without_the_approve_scope_may_look_but_not_decide(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d:
        await d.kickoff("alice")
        oauth_provider.grantable = {"crew:read"}
        async with d.browser() as browser:
            page = await sign_in(d, browser, "alice")
            seen = await state(browser)
            assert seen["viewer"]["may_decide"] is False and seen["viewer"]["may_stop"] is False
            refused = await decide(d, browser, csrf_of(page.text), seen["pending"][0], approve=True)
            assert refused.status_code == 403 and "crew:approve" in refused.json()["error"]
        oauth_provider.grantable = set()
        async with d.browser() as browser:
            page = await sign_in(d, browser, "alice")
            assert page.status_code == 403 and "crew:read" in page.text
            assert "crew_mcp_inbox" not in browser.cookies
        assert d.sim.resume_log == []


# ------------------------------------------------------------------------------------------- decisions


async def test_decisions_in_the_inbox_count_as_human_under_the_human_policy(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    env = {"CREW_MCP_APPROVAL_POLICY": "human"}
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider, env=env) as d:
        kickoff_id = await d.kickoff("alice")
        # The model may not decide under this policy...
        async with d.mcp("alice") as client:
            model = await client.call_tool("resume_with_feedback", {"kickoff_id": kickoff_id, "approve": True})
            assert model.is_error
        async with d.browser() as browser:
            page = await sign_in(d, browser, "alice")
            token = csrf_of(page.text)
            (item,) = (await state(browser))["pending"]
            assert item["round"] == 1 and "Grid batteries: a brief for the board" in item["output"]
            # ...the person may. Rejecting needs feedback; the revision comes back for review.
            empty = await decide(d, browser, token, item, approve=False)
            assert empty.status_code == 400 and d.sim.resume_log == []
            feedback = "Add a one-line summary for the board at the top."
            rejected = await decide(d, browser, token, item, approve=False, feedback=feedback)
            assert rejected.status_code == 200 and rejected.json()["notice"].startswith("Sent back task brief")
            (revised,) = (await state(browser))["pending"]
            assert revised["round"] == 2 and f"Revised per feedback: {feedback}" in revised["output"]
            assert revised["fingerprint"] != item["fingerprint"]
            # A decision on the output shown before the revision is not sent.
            stale = await decide(d, browser, token, item, approve=True)
            assert stale.status_code == 409 and stale.json()["stale"] is True
            approved = await decide(d, browser, token, revised, approve=True, feedback="Thanks")
            assert approved.status_code == 200
            final = await state(browser)
            assert final["pending"] == []
            (run,) = final["runs"]
            assert run["state"] == "completed" and "is worth entering in 2027" in (run["result"] or "")
            assert [(e["approve"], e["feedback"]) for e in final["history"]] == [(True, "Thanks"), (False, feedback)]
        record = await d.service.ledger.get(kickoff_id, owner=None)
        assert record is not None
        assert [(x.approve, x.by, x.via, x.actor) for x in record.decisions] == [
            (False, "human", "inbox", f"oauth:{oauth_provider.issuer}#alice"),
            (True, "human", "inbox", f"oauth:{oauth_provider.issuer}#alice"),
        ]
        assert len(d.sim.resume_log) == 2


async def test_a_malformed_decision_is_refused_before_anything_is_read(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d, d.browser() as browser:
        page = await sign_in(d, browser, "alice")
        headers = {"Origin": d.root, "X-CSRF-Token": csrf_of(page.text)}
        cases: list[tuple[Any, dict[str, str], int]] = [
            ("not json", {"Content-Type": "application/json"}, 400),
            ("[1, 2]", {"Content-Type": "application/json"}, 400),
            ('{"kickoff_id": "k"}', {"Content-Type": "application/json"}, 400),
            ("kickoff_id=k", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
            ("x" * (70 * 1024), {"Content-Type": "application/json"}, 413),
        ]
        for content, extra, status in cases:
            answer = await browser.post("/approvals/api/decide", content=content, headers={**headers, **extra})
            assert answer.status_code == status, (content[:20], answer.text)
            assert "error" in answer.json()
        long = {"kickoff_id": "k", "task_id": "t", "approve": False, "feedback": "x" * 10_001}
        assert (await browser.post("/approvals/api/decide", json=long, headers=headers)).status_code == 400


# -------------------------------------------------------------------------------- keys and local modes


async def test_keys_mode_signs_in_with_an_api_key_and_stops_a_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_inbox(tmp_path, "keys") as d:
        running = await d.kickoff("alice", crew="deep_research", topic="tides")
        async with d.browser() as browser:
            first = await browser.get("/approvals")
            assert first.status_code == 303 and first.headers["location"] == "/approvals/login"
            form = await browser.get("/approvals/login")
            assert 'name="key"' in form.text and 'type="password"' in form.text
            token = csrf_of(form.text)
            wrong = await browser.post(
                "/approvals/login", data={"csrf_token": token, "key": "cmk_wrong"}, headers={"Origin": d.root}
            )
            assert wrong.status_code == 401 and "That key is not one of this server" in wrong.text
            # The form's own token is required (and a cross-site form is refused): no login CSRF.
            token = csrf_of(wrong.text)
            forged = await browser.post(
                "/approvals/login", data={"key": d.keys["alice"]}, headers={"Origin": "http://evil.example"}
            )
            assert forged.status_code == 403 and "crew_mcp_inbox" not in browser.cookies
            token = csrf_of(forged.text)
            signed = await browser.post(
                "/approvals/login", data={"csrf_token": token, "key": d.keys["alice"]}, headers={"Origin": d.root}
            )
            assert signed.status_code == 303
            assert {"httponly", "samesite=lax", "path=/"} <= attributes(cookie_header(signed, "crew_mcp_inbox"))
            page = await browser.get("/approvals")
            assert ">alice<" in page.text and d.keys["alice"] not in page.text
            seen = await state(browser)
            assert seen["viewer"]["principal"] == "key:alice"
            (run,) = seen["runs"]
            assert run["kickoff_id"] == running and run["may_stop"] is True
            stop = await browser.post(
                "/approvals/api/stop",
                json={"kickoff_id": running},
                headers={"Origin": d.root, "X-CSRF-Token": csrf_of(page.text)},
            )
            assert stop.status_code == 200 and stop.json()["notice"].startswith("Stopped run")
            after = await state(browser)
            assert after["runs"][0]["state"] == "cancelled" and after["runs"][0]["may_stop"] is False
            (event,) = after["history"]
            assert (event["kind"], event["outcome"], event["by"], event["via"]) == ("stop", "stopped", "human", "inbox")
        assert d.sim.count("deep_research", "POST", "/stop") == 1
    assert d.keys["alice"] not in server_log(caplog)


async def test_on_loopback_without_auth_the_inbox_serves_the_local_user(tmp_path: Path) -> None:
    async with serve_inbox(tmp_path, "none", env={"CREW_MCP_OWNER": "local:sam"}) as d:
        kickoff_id = await d.kickoff()
        async with d.browser() as browser:
            page = await browser.get("/approvals")  # no sign-in: a session for the local user, made on the spot
            assert page.status_code == 200 and ">sam<" in page.text
            assert {"httponly", "samesite=lax"} <= attributes(cookie_header(page, "crew_mcp_inbox"))
            assert "Sign out" in page.text
            seen = await state(browser)
            assert seen["viewer"] == {
                "name": "sam",
                "principal": "local:sam",
                "kind": "local",
                "approver": False,
                "may_decide": True,
                "may_stop": True,
            }
            (item,) = seen["pending"]
            assert item["kickoff_id"] == kickoff_id
            # CSRF applies here too: a local web page must not decide for the local user.
            refused = await browser.post(
                "/approvals/api/decide", json={"kickoff_id": kickoff_id}, headers={"Origin": "http://127.0.0.1:1"}
            )
            assert refused.status_code == 403
            assert (await decide(d, browser, csrf_of(page.text), item, approve=True)).status_code == 200
            assert (await browser.get("/approvals/login")).headers["location"] == "/approvals"
        record = await d.service.ledger.get(kickoff_id, owner="local:sam")
        assert record is not None and [(x.by, x.via) for x in record.decisions] == [("human", "inbox")]


async def test_static_files_are_only_the_pages_own(tmp_path: Path) -> None:
    async with serve_inbox(tmp_path, "none") as d, d.browser() as browser:
        js = await browser.get("/approvals/static/inbox.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "innerHTML" not in js.text.replace("(never innerHTML)", "")
        md = await browser.get("/approvals/static/markdown.js")
        assert md.status_code == 200 and "function renderMarkdown" in md.text
        for name in ("../app.py", "page.html", "nothing.js"):
            assert (await browser.get(f"/approvals/static/{name}")).status_code == 404


async def test_the_inbox_can_be_turned_off(tmp_path: Path) -> None:
    async with serve_inbox(tmp_path, "none", env={"CREW_MCP_INBOX_ENABLED": "false"}) as d, d.browser() as browser:
        assert (await browser.get("/approvals")).status_code == 404


class ProviderWithoutRegistration(OAuthProvider):
    """An authorization server that does not offer dynamic client registration (many don't)."""

    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in super().metadata().items() if k != "registration_endpoint"}


async def test_a_provider_that_cannot_be_used_gets_a_sentence_saying_what_to_configure(tmp_path: Path) -> None:
    async with serve_provider(ProviderWithoutRegistration()) as provider:
        async with serve_inbox(tmp_path, "oauth", provider=provider) as d, d.browser() as browser:
            answer = await browser.get("/approvals/login/start")
            assert answer.status_code == 503 and "CREW_MCP_INBOX_CLIENT_ID" in answer.text
            assert f"{d.inbox}/callback" in answer.text and "crew_mcp_signin" not in browser.cookies
        # An issuer whose metadata cannot be read at all.
        env = {"CREW_MCP_OAUTH_ISSUER": provider.issuer + "/nowhere"}
        (tmp_path / "b").mkdir()
        async with serve_inbox(tmp_path / "b", "oauth", provider=provider, env=env) as d, d.browser() as browser:
            answer = await browser.get("/approvals/login/start")
            assert answer.status_code == 503 and "cannot read the sign-in settings" in answer.text


async def test_polls_read_the_crews_at_most_every_ten_seconds_per_person(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d:
        await d.kickoff("alice", crew="deep_research", topic="tides")
        await d.kickoff("alice")
        async with d.browser() as tab, d.browser() as other_tab:
            page = await sign_in(d, tab, "alice")
            await sign_in(d, other_tab, "alice")
            reads = d.sim.count("deep_research", "GET", "/status")
            first = await state(tab)
            after_first = d.sim.count("deep_research", "GET", "/status")
            assert after_first == reads + 1
            # More polls, from this tab and another: the ledger answers, the crew is not asked again.
            for browser in (tab, other_tab, tab):
                assert (await state(browser))["version"] == first["version"]
            assert d.sim.count("deep_research", "GET", "/status") == after_first
            # A decision makes the next poll look at once (to show what the crew does with it).
            assert (await decide(d, tab, csrf_of(page.text), first["pending"][0], approve=True)).status_code == 200
            await state(tab)
            assert d.sim.count("deep_research", "GET", "/status") == after_first + 1


async def test_when_owners_may_not_approve_their_runs_wait_for_a_reviewer(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    toml = '[auth.approval]\nowner = false\ngroup = "crew-reviewers"\n'
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider, toml=toml) as d:
        kickoff_id = await d.kickoff("alice")
        async with d.browser() as browser:
            page = await sign_in(d, browser, "alice")
            seen = await state(browser)
            assert seen["pending"] == [] and [(r["kickoff_id"], r["state"]) for r in seen["runs"]] == [
                (kickoff_id, "waiting_for_human")
            ]
            item = {"kickoff_id": kickoff_id, "task_id": "brief", "fingerprint": ""}
            refused = await decide(d, browser, csrf_of(page.text), item, approve=True)
            assert refused.status_code == 403 and "only the approvers" in refused.json()["error"]
        assert d.sim.resume_log == []


async def asgi_post(app: Any, path: str, headers: dict[str, str], messages: list[dict[str, Any]]) -> int:
    """POST to ``app`` through ASGI with exactly ``messages`` as the request's stream; the response's status.

    For what no HTTP client sends and no socket delivers on cue: a garbled Content-Length, a body cut off mid-way."""
    pending = list(messages)
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    with anyio.fail_after(10):
        await app(scope, receive, send)
    return statuses[0]


async def test_a_cut_off_body_or_a_garbled_length_is_refused_never_a_server_error(tmp_path: Path) -> None:
    async with serve_inbox(tmp_path, "keys") as d, d.browser() as browser:
        page = await sign_in(d, browser, "alice")
        host = urlsplit(d.root).netloc
        cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        form = {"host": host, "origin": d.root, "content-type": "application/x-www-form-urlencoded"}
        api = {
            "host": host,
            "origin": d.root,
            "content-type": "application/json",
            "cookie": cookies,
            "x-csrf-token": csrf_of(page.text),
        }
        part = {"type": "http.request", "body": b'{"kickoff_id": "', "more_body": True}
        # The sign-in form reads as empty (403: no sign-in form), the decision as no JSON object (400).
        for path, headers, status in (("/approvals/login", form, 403), ("/approvals/api/decide", api, 400)):
            cut_off = await asgi_post(d.app, path, {**headers, "content-length": "100"}, [part])
            garbled = await asgi_post(d.app, path, {**headers, "content-length": "1e3"}, [{**part, "more_body": False}])
            assert (cut_off, garbled) == (status, status), path
        assert (await state(browser))["viewer"]["principal"] == "key:alice"  # the session is untouched
