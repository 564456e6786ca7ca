"""IntrospectionVerifier (RFC 7662) against the real test authorization server: active tokens accepted, inactive,
foreign-audience, foreign-issuer and unauthenticated introspection refused; answers cached by token hash."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from oauth_provider import OAuthProvider

from crew_mcp.auth import AuthConfig, IntrospectionVerifier, build_verifier

RESOURCE = "https://crew.example.com/mcp"
SECRET = "introspection-secret-value"


@pytest.fixture
async def provider(oauth_provider: OAuthProvider) -> OAuthProvider:
    oauth_provider.audience = RESOURCE
    oauth_provider.add_client("crew-mcp", SECRET)
    return oauth_provider


def config(provider: OAuthProvider, **overrides: Any) -> AuthConfig:
    values: dict[str, Any] = {
        "mode": "oauth",
        "issuer": provider.issuer,
        "resource_url": RESOURCE,
        "introspection_url": provider.issuer + "/introspect",
        "client_id": "crew-mcp",
        "client_secret": SECRET,
    }
    return AuthConfig.model_validate(values | overrides)


@asynccontextmanager
async def verifier(
    provider: OAuthProvider, now: Callable[[], float] = time.time, **overrides: Any
) -> AsyncIterator[IntrospectionVerifier]:
    async with httpx2.AsyncClient() as http:
        yield IntrospectionVerifier(config(provider, **overrides), http, now=now)


async def test_an_active_opaque_token_is_accepted(provider: OAuthProvider) -> None:
    token = provider.opaque(scope="crew:run", client_id="claude")
    async with verifier(provider) as v:
        access = await v.verify_token(token)
    assert access is not None
    assert (access.subject, access.client_id, access.resource) == ("alice", "claude", RESOURCE)
    assert access.scopes == ["crew:read", "crew:run"]
    assert access.claims is not None and access.claims["iss"] == provider.issuer and "active" not in access.claims


@pytest.mark.parametrize(
    ("case", "claims"),
    [
        ("inactive", {"active": False}),
        ("wrong-audience", {"aud": "https://other-mcp.example.com/mcp"}),
        ("no-audience", {"aud": None}),
        ("wrong-issuer", {"iss": "https://evil.example.com"}),
        ("expired", {"exp": int(time.time()) - 600}),
        ("no-subject", {"sub": None}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_tokens_the_server_does_not_vouch_for_are_refused(
    provider: OAuthProvider, case: str, claims: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    token = provider.opaque(**claims)
    with caplog.at_level(logging.INFO, logger="crew_mcp.auth"):
        async with verifier(provider) as v:
            assert await v.verify_token(token) is None
    assert any("refused" in r.getMessage() for r in caplog.records)
    assert not any(token in r.getMessage() for r in caplog.records)


async def test_an_unknown_token_is_refused(provider: OAuthProvider) -> None:
    async with verifier(provider) as v:
        assert await v.verify_token("opq_never-issued") is None


async def test_wrong_client_credentials_refuse_the_token_and_never_log_the_secret(
    provider: OAuthProvider, caplog: pytest.LogCaptureFixture
) -> None:
    token = provider.opaque()
    with caplog.at_level(logging.DEBUG):
        async with verifier(provider, client_secret="wrong-secret-value") as v:
            assert await v.verify_token(token) is None
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "HTTP 401" in text
    assert "wrong-secret-value" not in text and token not in text


async def test_answers_are_cached_briefly_by_token_hash(provider: OAuthProvider) -> None:
    clock = [time.time()]
    token = provider.opaque()
    async with verifier(provider, now=lambda: clock[0]) as v:
        assert await v.verify_token(token) is not None
        assert await v.verify_token(token) is not None
        assert provider.introspections == 1
        assert token not in repr(v._cache.keys())  # keyed by a hash, never by the token
        clock[0] += 61
        assert await v.verify_token(token) is not None
        assert provider.introspections == 2
        assert await v.verify_token(provider.opaque(active=False)) is None
        assert await v.verify_token(provider.opaque(active=False)) is None
    assert provider.introspections == 4


async def test_the_cache_never_outlives_the_token(provider: OAuthProvider) -> None:
    now = time.time()
    clock = [now]
    token = provider.opaque(exp=int(now) + 10)
    async with verifier(provider, now=lambda: clock[0]) as v:
        assert await v.verify_token(token) is not None
        clock[0] += 11
        assert await v.verify_token(token) is not None  # asked again (within leeway, the server still says yes)
    assert provider.introspections == 2


async def test_with_introspection_configured_jwts_are_still_verified_locally(provider: OAuthProvider) -> None:
    async with httpx2.AsyncClient() as http:
        v = build_verifier(config(provider), http)
        assert v is not None
        assert await v.verify_token(provider.mint()) is not None
        assert await v.verify_token(provider.opaque()) is not None
    assert provider.jwks_fetches == 1 and provider.introspections == 1
