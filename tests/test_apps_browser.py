"""The run card in real headless Chromium, inside a test host page that speaks MCP Apps over postMessage.

tests/browser/host.html loads the card from ``resources/read`` into a sandboxed iframe (scripts only, opaque origin)
under the CSP the spec derives from the resource's ``_meta.ui.csp``, and drives it with AppBridge from
``@modelcontextprotocol/ext-apps`` (the extension's own host SDK). The card's ``tools/call`` requests go from the page
to this test (Playwright's ``expose_function``) and on to a real crew-mcp server through the SDK ``Client``.

Opt-in (marker ``browser``): ``make test-browser`` installs Debian's chromium, Playwright and the AppBridge bundle.
``CREW_MCP_SCREENSHOTS=docs/images`` writes the card's screenshots into the docs (else into a temporary folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from apps_support import card, connected, ok
from browser_support import CHROMIUM, LAUNCH_ARGS, ROOT, UI, require_chromium, screenshot_dir
from hitl_support import loopback_socket, serve_on
from inbox_support import brief_crew
from mcp import Client
from starlette.applications import Starlette
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from crew_mcp.apps import REVIEW_META_KEY, RUN_CARD_URI

pytestmark = pytest.mark.browser

HOST_DIR = Path(__file__).parent / "browser"


def bridge_bundle() -> Path:
    path = Path(os.environ.get("CREW_MCP_APP_BRIDGE", ROOT / ".browser" / "app-bridge.js"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make test-browser`, which builds it", pytrace=False)
    return path


@asynccontextmanager
async def host_site() -> AsyncIterator[str]:
    """The test host page and the AppBridge bundle, served on 127.0.0.1 (port 0)."""
    bundle = bridge_bundle()
    app = Starlette(
        routes=[
            Route("/", lambda _: FileResponse(HOST_DIR / "host.html")),
            Route("/app-bridge.js", lambda _: FileResponse(bundle, media_type="text/javascript")),
            Route("/favicon.ico", lambda _: Response(status_code=204)),
        ]
    )
    async with serve_on(app, loopback_socket()) as url:
        yield url


@asynccontextmanager
async def browser_page(site: str) -> AsyncIterator[Any]:
    """A Chromium page on the host site; fails the test on any console error or request off the site."""
    from playwright.async_api import async_playwright

    require_chromium()
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 720, "height": 1100}, device_scale_factor=1.5)
            page = await context.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: None if r.url.startswith(site) else problems.append(f"request: {r.url}"))
            await page.goto(site + "/")
            yield page
        finally:
            await browser.close()
    assert problems == []


async def expose_server(page: Any, client: Client, results: list[dict[str, Any]]) -> None:
    """Let the host page call crew-mcp's tools (what a real host does with the card's tools/call)."""

    async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await client.call_tool(name, arguments)
        dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        results.append({"name": name, "arguments": arguments, "result": dumped})
        return dumped

    await page.expose_function("crewMcpCallTool", call)


async def start_card(page: Any, client: Client, tool_args: dict[str, Any], tool_result: dict[str, Any]) -> Any:
    """Read the card like a host (resources/read), load it and hand it the tool input and result."""
    read = await client.read_resource(RUN_CARD_URI)
    (content,) = read.contents
    assert content.mime_type == "text/html;profile=mcp-app"
    csp = (content.meta or {}).get("ui", {}).get("csp", {})
    params = {
        "html": content.text,  # type: ignore[union-attr]
        "csp": csp,
        "toolArgs": tool_args,
        "toolResult": tool_result,
        "theme": "light",
        "width": 640,
    }
    await page.evaluate("(p) => window.startHost(p)", params)
    return page.frame_locator("iframe")


async def settled(page: Any) -> None:
    """Wait until the iframe has the height the card last asked for, and the card has painted it."""
    await page.wait_for_function(
        """() => {
            const sizes = window.hostSizes, frame = document.querySelector("iframe");
            return sizes.length && frame.style.height === sizes[sizes.length - 1].height + "px";
        }""",
        timeout=UI,
    )
    await page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


async def shoot(page: Any, folder: Path, name: str) -> None:
    await settled(page)
    await page.locator("iframe").screenshot(path=str(folder / name), animations="disabled")


async def wait_for_call(page: Any, name: str, count: int = 1) -> list[dict[str, Any]]:
    script = f"() => window.hostCalls.filter((c) => c.name === {json.dumps(name)}).length >= {count}"
    await page.wait_for_function(script, timeout=UI)
    calls: list[dict[str, Any]] = await page.evaluate("() => window.hostCalls")
    return [c for c in calls if c["name"] == name]


def last_token(results: list[dict[str, Any]]) -> str:
    views = [r for r in results if r["name"] == "app_run_view" and REVIEW_META_KEY in r["result"].get("_meta", {})]
    token = views[-1]["result"]["_meta"][REVIEW_META_KEY]["token"]
    assert isinstance(token, str)
    return token


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_card_reviews_a_paused_run_rejects_with_feedback_and_approves_the_revision(
    mode: str, tmp_path: Path
) -> None:
    expect = _expect()
    shots = screenshot_dir(tmp_path)
    results: list[dict[str, Any]] = []
    async with host_site() as site, connected(mode, apps=True, crews=[brief_crew()]) as (client, _):
        inputs = {"market": "Grid batteries", "audience": "the board"}
        run = await ok(client, "kickoff_crew", {"crew": "market_brief", "inputs": inputs})
        assert run.structured_content is not None
        kickoff_id = run.structured_content["kickoff_id"]
        status = await ok(client, "get_status", {"kickoff_id": kickoff_id})
        tool_result = status.model_dump(by_alias=True, mode="json", exclude_none=True)
        async with browser_page(site) as page:
            await expose_server(page, client, results)
            frame = await start_card(page, client, {"kickoff_id": kickoff_id}, tool_result)

            # Paused: the output to review, rendered as Markdown, the inputs, the progress; the buttons live once
            # app_run_view has brought the review token.
            await expect(frame.locator("#state")).to_have_text("Needs your review", timeout=UI)
            await expect(frame.locator("#review-output h4").first).to_have_text("Grid batteries: a brief for the board")
            await expect(frame.locator("#review-output strong").first).to_have_text("Bottom line:")
            await expect(frame.locator("#review-output a")).to_have_attribute("href", "https://www.iea.org/reports")
            await expect(frame.locator("#progress-text")).to_contain_text("1 of 3 tasks done")
            await expect(frame.locator("#progress-text")).to_contain_text("Paused at: brief by Analyst")
            await expect(frame.locator("#inputs-body dd")).to_have_text(["the board", "Grid batteries"])
            await expect(frame.get_by_role("button", name="Approve")).to_be_enabled(timeout=UI)
            await shoot(page, shots, "run-card-paused.png")

            # The host switches to a dark theme in a narrow panel: the card follows the host context.
            await page.evaluate("() => { document.getElementById('frame-wrap').style.maxWidth = '360px'; }")
            await page.evaluate("() => window.setTheme('dark')")
            await expect(frame.locator("html")).to_have_attribute("data-theme", "dark", timeout=UI)
            await shoot(page, shots, "run-card-paused-dark-narrow.png")
            await page.evaluate("() => { document.getElementById('frame-wrap').style.maxWidth = ''; }")
            await page.evaluate("() => window.setTheme('light')")
            await expect(frame.locator("html")).to_have_attribute("data-theme", "light", timeout=UI)

            # Reject needs feedback: nothing is sent without it.
            await frame.get_by_role("button", name="Reject").click()
            await expect(frame.locator("#feedback-error")).to_be_visible()
            assert await page.evaluate("() => window.hostCalls.filter((c) => c.name === 'app_decide').length") == 0

            token = last_token(results)
            feedback = "Add a one-line summary for the board at the top."
            await frame.get_by_label("Feedback for the crew").fill(feedback)
            await frame.get_by_role("button", name="Reject").click()
            (reject,) = await wait_for_call(page, "app_decide")
            assert reject["arguments"] == {
                "kickoff_id": kickoff_id,
                "task_id": "brief",
                "approve": False,
                "feedback": feedback,
                "review_token": token,
            }

            # The crew revises the brief with the feedback; the card follows and shows the revision for review.
            await expect(frame.locator("#review-title")).to_have_text("Revised output: brief", timeout=UI)
            await expect(frame.locator("#review-output")).to_contain_text(f"Revised per feedback: {feedback}")
            await expect(frame.locator("#history-list li")).to_contain_text("Rejected brief")
            await expect(frame.locator("#feedback")).to_have_value("")
            await expect(frame.get_by_role("button", name="Approve")).to_be_enabled(timeout=UI)
            await shoot(page, shots, "run-card-revised.png")

            await frame.get_by_role("button", name="Approve").click()
            approve = (await wait_for_call(page, "app_decide", 2))[-1]
            assert approve["arguments"]["approve"] is True
            assert approve["arguments"]["review_token"] == last_token(results) != token

            # The run finishes: the final result, the per-task outputs, both decisions.
            await expect(frame.locator("#state")).to_have_text("Completed", timeout=UI)
            await expect(frame.locator("#result-output strong").first).to_have_text("Grid batteries")
            await expect(frame.locator("#result-output table td").first).to_have_text("Partner")
            await expect(frame.locator("#tasks-summary")).to_have_text("Task outputs (3)")
            await expect(frame.locator("#history-list li")).to_have_count(2)
            await expect(frame.locator("#review")).to_be_hidden()
            await shoot(page, shots, "run-card-completed.png")

        final = await card(client, kickoff_id)
    decisions = final[0]["run"]["decisions"]
    assert [(d["approve"], d["by"], d["via"]) for d in decisions] == [(False, "human", "app"), (True, "human", "app")]
    # Once the run finished, the card stopped calling crew-mcp: the last app_run_view saw it completed.
    views = [r for r in results if r["name"] == "app_run_view"]
    assert views[-1]["result"]["structuredContent"]["run"]["state"] == "completed"
    # Long polls, not a busy loop: a handful of reads for two pauses and three tasks.
    assert len(views) < 30, len(views)


async def test_card_never_approves_an_output_it_did_not_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crew_mcp.apps

    # The card's pending long poll must not notice the revision by itself before the click below.
    monkeypatch.setattr(crew_mcp.apps, "PAUSED_CHECK", 1000.0)
    expect = _expect()
    results: list[dict[str, Any]] = []
    async with host_site() as site, connected("auto", apps=True, crews=[brief_crew()]) as (client, _):
        run = await ok(client, "kickoff_crew", {"crew": "market_brief", "inputs": {"market": "m", "audience": "a"}})
        assert run.structured_content is not None
        kickoff_id = run.structured_content["kickoff_id"]
        status = await ok(client, "get_status", {"kickoff_id": kickoff_id})
        tool_result = status.model_dump(by_alias=True, mode="json", exclude_none=True)
        async with browser_page(site) as page:
            await expose_server(page, client, results)
            frame = await start_card(page, client, {"kickoff_id": kickoff_id}, tool_result)
            await expect(frame.get_by_role("button", name="Approve")).to_be_enabled(timeout=UI)
            # Meanwhile the brief is rejected in chat and revised: the card still shows the first version.
            await ok(
                client, "resume_with_feedback", {"kickoff_id": kickoff_id, "approve": False, "feedback": "shorter"}
            )
            await frame.get_by_role("button", name="Approve").click()
            await expect(frame.locator("#notice")).to_contain_text("This card is out of date", timeout=UI)
            await expect(frame.locator("#notice")).to_contain_text("nothing was sent")
            # It reloads and shows the revision, with the chat decision in the history; the person decides again.
            await expect(frame.locator("#review-output")).to_contain_text("Revised per feedback: shorter", timeout=UI)
            await expect(frame.locator("#history-list li")).to_contain_text("the assistant, for the user")
            await expect(frame.get_by_role("button", name="Approve")).to_be_enabled(timeout=UI)
            await frame.get_by_role("button", name="Approve").click()
            await expect(frame.locator("#state")).to_have_text("Completed", timeout=UI)
        final = await card(client, kickoff_id)
    decisions = final[0]["run"]["decisions"]
    assert [(d["approve"], d["by"], d["via"]) for d in decisions] == [(False, "model", "tool"), (True, "human", "app")]


EVIL = """# Heading one
<img src=x onerror="window.parent.postMessage('pwned', '*')">
<script>window.pwned = 1</script>
**bold** and *em* and `<b>code</b>` and ~~gone~~
[bad](javascript:alert(1)) [data](data:text/html,hi) [good](https://example.com/a?b=1)

- item <i>one</i>
- item two
  - nested <u>x</u>

> quoted **note**

```html
<iframe src="https://evil.example"></iframe>
```"""


async def test_card_renders_crew_output_as_safe_markdown_and_opens_links_through_the_host(tmp_path: Path) -> None:
    expect = _expect()
    run = {
        "crew": "untrusted",
        "state": "waiting_for_human",
        "progress": {"completed": 0, "total": 1, "current_task": "t", "current_agent": "A"},
        "pending": {"task_id": "t", "output": EVIL},
    }
    tool_result = {"content": [{"type": "text", "text": "…"}], "structuredContent": run}
    async with host_site() as site, connected("auto", apps=True) as (client, _), browser_page(site) as page:
        await expose_server(page, client, [])
        frame = await start_card(page, client, {}, tool_result)
        out = frame.locator("#review-output")
        await expect(out.locator("h3")).to_have_text("Heading one", timeout=UI)
        await expect(out).to_contain_text('<img src=x onerror="window.parent.postMessage')
        await expect(out).to_contain_text("<script>window.pwned = 1</script>")
        await expect(out.locator("img, script, i, b, iframe")).to_have_count(0)
        await expect(out.locator("strong").first).to_have_text("bold")
        await expect(out.locator("em")).to_have_text("em")
        await expect(out.locator("del")).to_have_text("gone")
        await expect(out.locator("p code")).to_have_text("<b>code</b>")
        await expect(out.locator("ul > li")).to_have_count(3)
        await expect(out.locator("ul ul > li")).to_have_text("nested <u>x</u>")
        await expect(out.locator("blockquote strong")).to_have_text("note")
        await expect(out.locator("pre code")).to_have_text('<iframe src="https://evil.example"></iframe>')
        await expect(out.locator("u")).to_have_count(0)
        await expect(out.locator("a")).to_have_count(1)
        await expect(out.locator("a")).to_have_attribute("href", "https://example.com/a?b=1")
        await expect(out).to_contain_text("[bad](javascript:alert(1))")
        # No kickoff_id, no review token: nothing to decide on and nothing called.
        await expect(frame.get_by_role("button", name="Approve")).to_be_disabled()
        await out.locator("a").click()
        await page.wait_for_function("() => window.openedLinks.length === 1", timeout=UI)
        assert await page.evaluate("() => window.openedLinks") == ["https://example.com/a?b=1"]
        assert await page.evaluate("() => window.hostCalls") == []
        assert await frame.locator("html").evaluate("() => window.pwned === undefined")


def _expect() -> Any:
    """Playwright's ``expect``, imported late: the module is collected (and deselected) where Playwright is absent."""
    from playwright.async_api import expect

    return expect
