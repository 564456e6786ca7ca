"""The approvals inbox in real headless Chromium: a real OAuth sign-in, a review, a rejection, the revision, an
approval, the result; a second user who sees nothing of it; cross-site and token-less POSTs refused.

Opt-in (marker ``browser``, ``make test-browser``: Debian's chromium driven by Playwright, as for the run card).
``CREW_MCP_SCREENSHOTS=docs/images`` writes the inbox's screenshots into the docs (else into a temporary folder).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, LAUNCH_ARGS, UI, require_chromium, screenshot_dir
from hitl_support import loopback_socket, serve_on
from inbox_support import Deployment, serve_inbox
from oauth_provider import OAuthProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.browser

FEEDBACK = "Add a one-line summary for the board at the top."


class Browser:
    """One Chromium with a context per person; every page's script errors and off-site requests are collected."""

    def __init__(self, browser: Any, allowed: tuple[str, ...]) -> None:
        self.browser = browser
        self.allowed = allowed
        self.problems: list[str] = []
        self.refusals: list[str] = []  # refusals the tests provoke (a wrong key, a forged post): not problems

    async def page(self, *, width: int = 1280, height: int = 900, scheme: str = "light") -> Any:
        context = await self.browser.new_context(
            viewport={"width": width, "height": height}, device_scale_factor=1.5, color_scheme=scheme
        )
        page = await context.new_page()
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("console", self._console)
        page.on("request", lambda r: None if r.url.startswith(self.allowed) else self.problems.append(r.url))
        return page

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        if where.endswith("/favicon.ico"):
            return  # the browser's own guess for pages without an icon (the JSON refusal, the cross-site page)
        if "status of 403" in message.text or ("status of 401" in message.text and where.endswith("/approvals/login")):
            self.refusals.append(message.text)
        else:
            self.problems.append(f"console: {message.text} ({where})")


@asynccontextmanager
async def chromium(*allowed: str) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    require_chromium()
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        browser = Browser(launched, allowed)
        try:
            yield browser
        finally:
            await launched.close()
    assert browser.problems == []


@asynccontextmanager
async def evil_site(target: str, body: str) -> AsyncIterator[str]:
    """Another origin on this machine (same site: ports do not count) whose page posts a form to ``target``."""
    page = f"""<!doctype html><html><body>
<form method="post" action="{target}" enctype="text/plain"><input type="hidden" name='{body}' value='"}}'></form>
<script>document.forms[0].submit()</script></body></html>"""

    async def index(_: Request) -> Response:
        return HTMLResponse(page)

    async with serve_on(Starlette(routes=[Route("/", index)]), loopback_socket()) as url:
        yield url


async def settle(page: Any) -> None:
    await page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


async def test_a_reviewer_signs_in_rejects_with_feedback_approves_the_revision_and_sees_the_result(
    oauth_provider: OAuthProvider, tmp_path: Path
) -> None:
    expect = _expect()
    shots = screenshot_dir(tmp_path)
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider) as d:
        kickoff_id = await d.kickoff("alice")
        other = await d.kickoff("alice", market="Heat pumps", audience="the sales team")
        await d.kickoff("alice", crew="deep_research", topic="sodium-ion cells")
        async with chromium(d.root, oauth_provider.issuer) as browser:
            oauth_provider.user, oauth_provider.groups = "alice", []
            page = await browser.page()
            # The notice's link: /approvals → the provider's /authorize (code + PKCE) → /approvals/callback → inbox.
            await page.goto(d.inbox)
            assert page.url == d.inbox
            await expect(page.locator("#viewer-name")).to_have_text("alice")
            await expect(page.locator("#pending-count")).to_have_text("2", timeout=UI)
            await page.get_by_role("button", name="Grid batteries: a brief for the board").click()
            review = page.locator("#review-output")
            await expect(review.locator("h4").first).to_have_text("Grid batteries: a brief for the board")
            await expect(review.locator("strong").first).to_have_text("Bottom line:")
            await expect(review.locator("a")).to_have_attribute("href", "https://www.iea.org/reports")
            await expect(page.locator(".card-head .meta")).to_contain_text(kickoff_id)
            await settle(page)
            await page.screenshot(path=str(shots / "inbox-list.png"), animations="disabled")
            await page.locator("#detail").screenshot(path=str(shots / "inbox-review.png"), animations="disabled")

            # Reject needs feedback: nothing is sent without it.
            await page.get_by_role("button", name="Reject").click()
            await expect(page.locator("#feedback-error")).to_be_visible()
            assert d.sim.resume_log == []
            await page.get_by_label("Feedback for the crew").fill(FEEDBACK)
            await page.get_by_role("button", name="Reject").click()
            await expect(page.locator("#toast")).to_contain_text("Sent back task brief", timeout=UI)

            # The crew revises the brief with the feedback; the inbox picks the revision up by itself.
            await expect(review).to_contain_text(f"Revised per feedback: {FEEDBACK}", timeout=UI)
            await expect(page.locator(".card-head .eyebrow")).to_contain_text("round 2")
            await expect(page.locator(".earlier li")).to_contain_text("You sent back brief")
            await expect(page.get_by_label("Feedback for the crew")).to_have_value("")

            # A request from this very page, but without the CSRF token, is refused.
            status = await page.evaluate(
                """(id) => fetch("/approvals/api/decide", {
                    method: "POST", headers: {"Content-Type": "application/json"},
                    body: JSON.stringify({kickoff_id: id, task_id: "brief", approve: true}),
                }).then((r) => r.status)""",
                kickoff_id,
            )
            assert status == 403

            await page.get_by_role("button", name="Approve").click()
            await expect(page.locator(".card-head .badge")).to_have_text("Completed", timeout=UI)
            result = page.locator("#result-output")
            await expect(result.locator("strong").first).to_have_text("Grid batteries")
            await expect(result.locator("table td").first).to_have_text("Partner")
            await expect(page.locator("#history-list li")).to_have_count(2)
            await expect(page.locator("#history-list li").first).to_contain_text("You approved brief of market_brief")
            await settle(page)
            await page.locator("#detail").screenshot(path=str(shots / "inbox-result.png"), animations="disabled")
            await page.locator("#history").screenshot(path=str(shots / "inbox-history.png"), animations="disabled")

            # Light and dark follow the system; the layout folds to one column on a phone.
            dark = await browser.page(scheme="dark")
            await dark.goto(d.inbox)
            await expect(dark.locator("#pending-count")).to_have_text("1", timeout=UI)
            await settle(dark)
            await dark.screenshot(path=str(shots / "inbox-dark.png"), animations="disabled")
            phone = await browser.page(width=390, height=844)
            await phone.goto(d.inbox)
            await expect(phone.locator("#review-output h4").first).to_be_visible(timeout=UI)
            await settle(phone)
            await phone.screenshot(path=str(shots / "inbox-phone.png"), full_page=True, animations="disabled")

            # A cross-site page (another origin on this machine) posts a decision on the other pending run: the
            # browser sends the session cookie (same site), and the inbox refuses it anyway.
            body = f'{{"kickoff_id": "{other}", "task_id": "brief", "approve": true, "x": "'
            async with evil_site(d.inbox + "/api/decide", body) as evil:
                browser.allowed += (evil,)
                async with page.expect_response(d.inbox + "/api/decide") as answer:
                    await page.goto(evil)
                response = await answer.value
                assert response.status == 403
                assert "did not come from the inbox page" in await response.text()

            # A second person signs in: nothing of alice's runs, not even in the history.
            oauth_provider.user = "bob"
            bob = await browser.page()
            await bob.goto(d.inbox)
            await expect(bob.locator("#viewer-name")).to_have_text("bob")
            await expect(bob.locator("#pending-empty")).to_be_visible(timeout=UI)
            await expect(bob.locator("#runs-empty")).to_be_visible()
            await expect(bob.locator("#history-empty")).to_be_visible()
            assert kickoff_id not in await bob.content() and other not in await bob.content()
        await assert_decided(d, kickoff_id, other)


async def assert_decided(d: Deployment, kickoff_id: str, untouched: str) -> None:
    record = await d.service.ledger.get(kickoff_id, owner=None)
    assert record is not None and record.state.value == "completed"
    assert [(x.approve, x.by, x.via, x.feedback) for x in record.decisions] == [
        (False, "human", "inbox", FEEDBACK),
        (True, "human", "inbox", ""),
    ]
    spared = await d.service.ledger.get(untouched, owner=None)
    assert spared is not None and spared.decisions == []
    assert [r["execution_id"] for r in d.sim.resume_log] == [kickoff_id, kickoff_id]


async def test_stopping_a_run_asks_first_and_shows_it_stopped(tmp_path: Path) -> None:
    expect = _expect()
    async with serve_inbox(tmp_path, "none") as d:
        running = await d.kickoff(crew="deep_research", topic="tides")
        async with chromium(d.root) as browser:
            page = await browser.page()
            await page.goto(d.inbox)
            await page.get_by_role("button", name="tides").click()
            await expect(page.locator(".card-head .badge")).to_have_text("Running", timeout=UI)
            await page.get_by_role("button", name="Stop run").click()
            dialog = page.locator("#stop-dialog")
            await expect(dialog).to_be_visible()
            await expect(dialog).to_contain_text(running)
            await dialog.get_by_role("button", name="Keep it running").click()
            await expect(dialog).to_be_hidden()
            assert d.sim.count("deep_research", "POST", "/stop") == 0
            await page.get_by_role("button", name="Stop run").click()
            await dialog.get_by_role("button", name="Stop run").click()
            await expect(page.locator("#toast")).to_contain_text("Stopped run", timeout=UI)
            await expect(page.locator(".card-head .badge")).to_have_text("Stopped", timeout=UI)
            await expect(page.locator("#history-list li").first).to_contain_text("You stopped a run of deep_research")
        assert d.sim.count("deep_research", "POST", "/stop") == 1


def _expect() -> Any:
    """Playwright's ``expect``, imported late: the module is collected (and deselected) where Playwright is absent."""
    from playwright.async_api import expect

    return expect


async def test_with_api_keys_a_person_signs_in_by_pasting_their_key(tmp_path: Path) -> None:
    expect = _expect()
    shots = screenshot_dir(tmp_path)
    async with serve_inbox(tmp_path, "keys") as d:
        await d.kickoff("alice")
        async with chromium(d.root) as browser:
            page = await browser.page(width=900, height=700)
            await page.goto(d.inbox)
            assert page.url == d.inbox + "/login"
            await settle(page)
            await page.screenshot(path=str(shots / "inbox-signin.png"), animations="disabled")
            await page.get_by_label("API key").fill("cmk_not-a-key")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator(".notice")).to_contain_text("That key is not one of this server")
            await page.get_by_label("API key").fill(d.keys["alice"])
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#viewer-name")).to_have_text("alice")
            await expect(page.locator("#pending-count")).to_have_text("1", timeout=UI)
            assert d.keys["alice"] not in await page.content()
            await page.get_by_role("button", name="Sign out").click()
            await expect(page.locator(".notice")).to_have_text("You are signed out.")
            await page.goto(d.inbox)
            assert page.url == d.inbox + "/login"
