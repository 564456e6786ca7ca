"""The approvals inbox served as a deployment serves it, for test_inbox*.py.

crew-mcp's HTTP app (``build_app``) under uvicorn on 127.0.0.1 (port 0), configured from the environment and a
TOML file like a deployment, over the simulator's crews (in-process, manual clock: tasks of duration 0 finish at
once), with a SQLite ledger file (so the inbox's sessions live in ``inbox-sessions.db`` beside it). Three modes:
``oauth`` against the test authorization server (tests/oauth_provider.py), ``keys`` with two API keys, ``none`` (the
local user). Runs are started through the MCP endpoint, with the same identity the inbox signs people in as.
:func:`sign_in` walks the whole OAuth redirect flow with an httpx2 client that keeps cookies, like a browser.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import anyio
import httpx2
from hitl_support import loopback_socket, serve_on, service_opener
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from oauth_provider import OAuthProvider
from team_support import ALL_SCOPES, APPROVAL_TOML, TEAM_TOML

from crew_mcp.app import build_app
from crew_mcp.auth import generate_key, key_config_entry
from crew_mcp.service import CrewService
from crew_mcp.settings import Settings, load_settings
from crew_mcp.simulator import CrewSpec, InputSpec, Simulator, TaskSpec

BRIEF = """## {market}: a brief for {audience}

**Bottom line:** demand grows about *12 % a year*; two suppliers hold most of the market.

### What we found
- Prices fell 18 % since 2024 (`cost per kWh`).
- Grid operators buy first; households follow.
- Source: [IEA outlook](https://www.iea.org/reports)

### Risks
1. Lithium supply
2. Permitting delays"""

SUMMARY = """**{market}** is worth entering in 2027 through grid-operator contracts.

| Option | Cost | Risk |
|---|---|---|
| Partner | low | medium |
| Build | high | low |"""


def brief_crew() -> CrewSpec:
    """Research, a brief a person reviews, and a summary; each task is instant on the simulator's clock."""
    return CrewSpec(
        name="market_brief",
        description="Researches a market and writes a brief; an editor reviews the brief.",
        inputs=[
            InputSpec(name="market", description="The market to study"),
            InputSpec(name="audience", description="Who reads the brief"),
        ],
        tasks=[
            TaskSpec(id="research", agent="Market Researcher", duration=0, output="Sources and figures on {market}."),
            TaskSpec(id="brief", agent="Analyst", duration=0, human_input=True, output=BRIEF),
            TaskSpec(id="summary", agent="Editor", duration=0, output=SUMMARY),
        ],
    )


def slow_crew() -> CrewSpec:
    """A crew that works for an hour of simulated time (a run that can be stopped while it runs)."""
    return CrewSpec(
        name="deep_research",
        description="Researches for a long time.",
        inputs=[InputSpec(name="topic", description="What to research")],
        tasks=[TaskSpec(id="dig", agent="Researcher", duration=3600, output="Findings on {topic}.")],
    )


@dataclass
class Deployment:
    """A running crew-mcp with its inbox: where it is, what is behind it, and how people reach it."""

    root: str
    mode: str
    settings: Settings
    sim: Simulator
    services: list[CrewService]
    provider: OAuthProvider | None = None
    keys: dict[str, str] = field(default_factory=dict)
    app: Any = None  # the served ASGI app, for requests no HTTP client sends (tests/test_inbox.py)

    @property
    def inbox(self) -> str:
        return self.root + "/approvals"

    @property
    def service(self) -> CrewService:
        return self.services[-1]

    def bearer(self, user: str, *, groups: list[str] | None = None) -> str:
        """A credential for ``user`` at the MCP endpoint: a minted token (oauth) or their API key (keys)."""
        if self.mode == "keys":
            return self.keys[user]
        assert self.provider is not None
        return self.provider.mint(sub=user, groups=groups or [])

    @asynccontextmanager
    async def mcp(self, user: str = "") -> AsyncIterator[Client]:
        """An MCP client for ``user`` (none: the local user)."""
        headers = {"Authorization": f"Bearer {self.bearer(user)}"} if self.mode != "none" else {}
        with anyio.fail_after(30):
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(self.root + "/mcp", http_client=http), mode="auto") as client,
            ):
                yield client

    async def kickoff(self, user: str = "", crew: str = "market_brief", **inputs: str) -> str:
        """Start a run as ``user`` through the MCP endpoint; its kickoff_id."""
        inputs = inputs or {"market": "Grid batteries", "audience": "the board"}
        async with self.mcp(user) as client:
            result = await client.call_tool("kickoff_crew", {"crew": crew, "inputs": inputs})
        assert not result.is_error, result.content
        assert result.structured_content is not None
        kickoff_id = result.structured_content["kickoff_id"]
        assert isinstance(kickoff_id, str)
        return kickoff_id

    def browser(self, **kw: Any) -> httpx2.AsyncClient:
        """An HTTP client that keeps cookies, like a browser tab on the inbox."""
        return httpx2.AsyncClient(base_url=self.root, timeout=20, **kw)


@asynccontextmanager
async def serve_inbox(
    tmp_path: Path,
    mode: str = "oauth",
    *,
    provider: OAuthProvider | None = None,
    toml: str = TEAM_TOML,
    env: dict[str, str] | None = None,
    replicas: list[str] | None = None,
) -> AsyncIterator[Deployment]:
    """crew-mcp with its inbox on loopback (see the module docstring); ``provider`` for oauth.

    ``replicas``: one more server of the same deployment per entry (same settings, public URL, ledger file and
    crews), as replicas behind a balancer are; each entry is replaced by that server's root URL.
    """
    sim = Simulator([brief_crew(), slow_crew()], clock="manual")
    services: list[CrewService] = []
    sock = loopback_socket()
    root = f"http://127.0.0.1:{sock.getsockname()[1]}"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    base = {"CREW_MCP_PUBLIC_URL": root, "CREW_MCP_LEDGER_URL": ledger, "CREW_MCP_LOG_LEVEL": "DEBUG"}
    keys: dict[str, str] = {}
    text = ""
    if mode == "oauth":
        assert provider is not None
        base |= {"CREW_MCP_AUTH": "oauth", "CREW_MCP_OAUTH_ISSUER": provider.issuer}
        provider.audience = root + "/mcp"
        text = toml
    elif mode == "keys":
        base["CREW_MCP_AUTH"] = "keys"
        for user, groups in (("alice", []), ("bob", []), ("robin", ["crew-reviewers"])):
            key, digest = generate_key()
            keys[user] = key
            text += key_config_entry(digest, user, ALL_SCOPES, groups) + "\n"
        text += APPROVAL_TOML
    config = tmp_path / "crew-mcp.toml"
    config.write_text(text, encoding="utf-8")
    settings = load_settings(env={**base, **(env or {})}, config_path=str(config))
    opener = service_opener(sim, services, ledger_url=ledger)
    app = build_app(settings, host="127.0.0.1", port=sock.getsockname()[1], opener=opener)
    async with sim, serve_on(app, sock), AsyncExitStack() as stack:
        for i in range(len(replicas or [])):
            other = loopback_socket()
            replica = build_app(settings, host="127.0.0.1", port=other.getsockname()[1], opener=opener)
            assert replicas is not None
            replicas[i] = await stack.enter_async_context(serve_on(replica, other))
        yield Deployment(root, mode, settings, sim, services, provider, keys, app)


async def sign_in(
    deployment: Deployment, browser: httpx2.AsyncClient, user: str, groups: list[str] | None = None
) -> httpx2.Response:
    """Sign ``user`` in to the inbox the way a browser does, and return the inbox page it lands on.

    oauth: ``GET /approvals`` and every redirect after it, through the provider's ``/authorize`` (which signs in
    whoever ``provider.user`` names) and back to ``/approvals/callback``; keys: the key form.
    """
    if deployment.mode == "keys":
        form = await browser.get("/approvals/login")
        token = csrf_of(form.text)
        answer = await browser.post(
            "/approvals/login",
            data={"csrf_token": token, "key": deployment.keys[user]},
            headers={"Origin": deployment.root},
        )
        assert answer.status_code == 303, answer.text
        return await browser.get(answer.headers["location"])
    assert deployment.provider is not None
    deployment.provider.user = user
    deployment.provider.groups = groups or []
    response = await browser.get("/approvals")
    for _ in range(10):
        if not response.is_redirect:
            break
        response = await browser.get(urljoin(str(response.url), response.headers["location"]))
    return response


def csrf_of(page: str) -> str:
    """The CSRF token a page carries (the meta tag of the inbox, the hidden field of a form)."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', page) or re.search(
        r'name="csrf_token" value="([^"]+)"', page
    )
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def decide(
    deployment: Deployment,
    browser: httpx2.AsyncClient,
    token: str,
    item: dict[str, Any],
    *,
    approve: bool,
    feedback: str = "",
) -> httpx2.Response:
    """POST a decision on a pending item as the page does (same origin, the page's CSRF token)."""
    body = {
        "kickoff_id": item["kickoff_id"],
        "task_id": item["task_id"],
        "approve": approve,
        "feedback": feedback,
        "fingerprint": item["fingerprint"],
    }
    headers = {"Origin": deployment.root, "X-CSRF-Token": token}
    return await browser.post("/approvals/api/decide", json=body, headers=headers)


async def state(browser: httpx2.AsyncClient) -> dict[str, Any]:
    """The inbox's data, as the page reads it."""
    response = await browser.get("/approvals/api/state")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data
