"""Where the inbox keeps its state: the session store (one contract, three backends), session expiry, the cookie
attributes behind a public https URL, and replicas sharing sign-ins and sessions through Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import httpx2
import pytest
from inbox_support import csrf_of, serve_inbox, state
from oauth_provider import OAuthProvider

from crew_mcp.app import build_app
from crew_mcp.auth import generate_key, key_config_entry
from crew_mcp.errors import ConfigError, LedgerError
from crew_mcp.inbox.sessions import Sessions
from crew_mcp.inbox.store import MemoryStore, Store, open_store, store_url
from crew_mcp.ledger import sqlite_path
from crew_mcp.settings import load_settings


class Clock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Clock | None]]:
    """Each backend; memory and SQLite on a clock the test moves (Redis expires keys on its own clock)."""
    clock = Clock()
    if request.param == "redis":
        url = str(request.getfixturevalue("ledger_redis_url"))
        opened, moved = open_store(url), None
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 's.db'}"
        opened, moved = open_store(url, clock=clock), clock
    try:
        yield opened, moved
    finally:
        await opened.aclose()


async def test_the_store_contract(store: tuple[Store, Clock | None]) -> None:
    s, clock = store
    assert await s.get("a") is None and await s.take("a") is None
    await s.put("a", "1", 60)
    await s.put("a", "2", 60)  # replaced
    assert await s.get("a") == "2"
    assert await s.add("a", "3", 60) is False and await s.get("a") == "2"
    assert await s.add("b", "x", 60) is True and await s.get("b") == "x"
    assert await s.take("b") == "x" and await s.take("b") is None and await s.get("b") is None
    await s.delete("a")
    await s.delete("a")
    assert await s.get("a") is None
    if clock is not None:
        await s.put("c", "v", 10)
        clock.now += 9
        assert await s.get("c") == "v"
        clock.now += 2
        assert await s.get("c") is None and await s.take("c") is None
        assert await s.add("c", "w", 10) is True and await s.get("c") == "w"  # an expired entry does not block add


@pytest.mark.redis
async def test_redis_entries_carry_their_expiry(ledger_redis_url: str) -> None:
    import redis.asyncio

    s = open_store(ledger_redis_url)
    try:
        await s.put("k", "v", 30)
        await s.add("n", "v", 5)
    finally:
        await s.aclose()
    prefix = ledger_redis_url.split("prefix=", 1)[1]
    async with redis.asyncio.Redis.from_url(ledger_redis_url.split("?", 1)[0]) as r:
        assert 29_000 < await r.pttl(prefix + "k") <= 30_000
        assert 4_000 < await r.pttl(prefix + "n") <= 5_000


async def test_a_broken_sqlite_store_raises_ledger_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    s = open_store(f"sqlite:///{tmp_path / 'dir.db'}")
    with pytest.raises(LedgerError, match="inbox session store"):
        await s.get("a")
    with pytest.raises(LedgerError, match="Unsupported inbox sessions URL"):
        open_store("ftp://x")


def test_the_store_follows_the_ledger_unless_configured(tmp_path: Path) -> None:
    assert sqlite_path(store_url(None, f"sqlite:///{tmp_path}/ledger.db")) == tmp_path / "inbox-sessions.db"
    assert store_url(None, "redis://h:6379/0?prefix=team:") == "redis://h:6379/0?prefix=team%3Ainbox%3A"
    assert store_url(None, "redis://h:6379/0") == "redis://h:6379/0?prefix=crew-mcp%3Ainbox%3A"
    assert store_url(None, "memory://") == "memory://"
    assert store_url("redis://other/1", "memory://") == "redis://other/1"


async def test_sessions_expire_and_end_and_are_stored_by_hash() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    sessions = Sessions(store, lifetime=3600, clock=clock)
    sid, session = await sessions.create(principal="key:alice", name="alice", kind="key", scopes=["crew:read"])
    other, _ = await sessions.create(principal="key:alice", name="alice", kind="key")
    assert sid != other and len(sid) >= 43 and len(session.csrf) >= 43
    assert not any(sid in key for key in store._data)
    found = await sessions.find(sid)
    assert found is not None and found.principal == "key:alice" and found.csrf == session.csrf
    assert await sessions.find("made-up") is None and await sessions.find("x" * 300) is None
    clock.now += 3599
    assert await sessions.find(sid) is not None
    clock.now += 2
    assert await sessions.find(sid) is None
    await sessions.end(other)
    assert await sessions.find(other) is None
    lid = await sessions.start_login({"state": "s"})
    assert await sessions.login(lid) == {"state": "s"} and await sessions.finish_login(lid) == {"state": "s"}
    assert await sessions.finish_login(lid) is None


# ---------------------------------------------------------------------------------- a public deployment


def public_app(tmp_path: Path, public_url: str) -> tuple[httpx2.AsyncClient, str]:
    """crew-mcp as a deployment binds it (all interfaces, keys auth) behind ``public_url``, driven in-process."""
    key, digest = generate_key()
    config = tmp_path / "keys.toml"
    config.write_text(key_config_entry(digest, "alice", ["crew:read"]), encoding="utf-8")
    env = {
        "CREW_MCP_AUTH": "keys",
        "CREW_MCP_PUBLIC_URL": public_url,
        "CREW_MCP_LEDGER_URL": "memory://",
        "CREW_MCP_INBOX_SESSIONS_URL": "memory://",
    }
    settings = load_settings(env=env, config_path=str(config))
    app = build_app(settings, host="0.0.0.0", port=8000)  # built, never bound: driven in-process
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=public_url), key


async def test_behind_a_public_https_url_the_cookies_are_secure_and_host_prefixed(tmp_path: Path) -> None:
    browser, key = public_app(tmp_path, "https://crew.example.com")
    async with browser:
        form = await browser.get("/approvals/login")
        signin = [v for k, v in form.headers.multi_items() if k == "set-cookie"]
        assert len(signin) == 1 and signin[0].startswith("__Host-crew_mcp_signin=") and "Secure" in signin[0]
        answer = await browser.post(
            "/approvals/login",
            data={"csrf_token": csrf_of(form.text), "key": key},
            headers={"Origin": "https://crew.example.com"},
        )
        assert answer.status_code == 303
        session = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and "crew_mcp_inbox" in v)
        name, _, rest = session.partition("=")
        assert name == "__Host-crew_mcp_inbox"
        parts = {p.strip().lower() for p in rest.split(";")[1:]}
        assert {"httponly", "secure", "samesite=lax", "path=/"} <= parts and not any(
            p.startswith("domain") for p in parts
        )
        # The page at the public address, with an Origin of another address (even this server's own port) refused.
        page = await browser.get("/approvals")
        assert page.status_code == 200
        refused = await browser.post(
            "/approvals/logout",
            data={"csrf_token": csrf_of(page.text)},
            headers={"Origin": "http://crew.example.com"},
        )
        assert refused.status_code == 403


async def test_a_public_deployment_over_plain_http_is_refused_a_session(tmp_path: Path) -> None:
    browser, _ = public_app(tmp_path, "http://crew.example.com")
    async with browser:
        answer = await browser.get("/approvals")
        assert answer.status_code == 503 and "needs HTTPS" in answer.text and "set-cookie" not in answer.headers


# -------------------------------------------------------------------------------------------- replicas


@pytest.mark.redis
async def test_replicas_share_sign_ins_and_sessions_through_redis(
    oauth_provider: OAuthProvider, tmp_path: Path, ledger_redis_url: str
) -> None:
    env = {"CREW_MCP_INBOX_SESSIONS_URL": ledger_redis_url}
    replicas = [""]
    async with serve_inbox(tmp_path, "oauth", provider=oauth_provider, env=env, replicas=replicas) as d:
        (other,) = replicas
        oauth_provider.user = "alice"
        async with d.browser() as browser:
            # The sign-in starts on one replica (which registers the inbox's client) ...
            start = await browser.get("/approvals/login/start")
            back = await browser.get(start.headers["location"])
            # ... and the balancer sends the provider's redirect to the other, which finds the sign-in and the client.
            callback = back.headers["location"].replace(d.root, other)
            landed = await browser.get(callback)
            assert landed.status_code == 303, landed.text
            page = await browser.get(urljoin(other, "/approvals"))
            assert page.status_code == 200 and ">alice<" in page.text
            # One session, good on both replicas; a sign-out on one ends it on the other.
            assert (await state(browser))["viewer"]["name"] == "alice"
            async with httpx2.AsyncClient(base_url=other, cookies=browser.cookies) as on_other:
                assert (await on_other.get("/approvals/api/state")).status_code == 200
                out = await on_other.post(
                    "/approvals/logout", data={"csrf_token": csrf_of(page.text)}, headers={"Origin": d.root}
                )
                assert out.status_code == 303
            assert (await browser.get("/approvals/api/state")).status_code == 401
        assert len([c for c in oauth_provider.clients if c.startswith("dcr-")]) == 1
    assert not (tmp_path / "inbox-sessions.db").exists()  # everything went to Redis


def test_inbox_settings_come_from_the_inbox_table_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[inbox]\nsession_hours = 2\nclient_id = "from-file"\n', encoding="utf-8")
    env = {"CREW_MCP_INBOX_CLIENT_ID": "crew-inbox", "CREW_MCP_INBOX_CLIENT_SECRET": "s3cret-inbox-value"}
    settings = load_settings(env=env, config_path=str(config))
    inbox = settings.inbox
    assert (inbox.client_id, inbox.session_hours, inbox.poll_seconds, inbox.enabled) == ("crew-inbox", 2.0, 5.0, True)
    assert "s3cret-inbox-value" in settings.secrets() and "s3cret" not in repr(settings)
    with pytest.raises(ConfigError) as bad:
        load_settings(env={"CREW_MCP_INBOX_SESSIONS_URL": "ftp://x"})
    assert "CREW_MCP_INBOX_SESSIONS_URL" in str(bad.value) and "redis://" in str(bad.value)
