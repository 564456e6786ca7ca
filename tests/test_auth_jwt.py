"""JWTVerifier against a real authorization server on 127.0.0.1: discovery, JWKS caching and rate-limited refresh
on rotation, and every way a token must be refused (each logged with its reason, never with the token)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from oauth_provider import OAuthProvider, serve_provider
from process_support import free_port

from crew_mcp.auth import AuthConfig, JWTVerifier, principal_from_token

RESOURCE = "https://crew.example.com/mcp"


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def verifier(
    provider: OAuthProvider, clock: Callable[[], float] = time.monotonic, **config: Any
) -> AsyncIterator[JWTVerifier]:
    settings = AuthConfig(mode="oauth", issuer=provider.issuer, resource_url=RESOURCE, **config)
    async with httpx2.AsyncClient() as http:
        yield JWTVerifier(settings, http, clock=clock)


@pytest.fixture
async def provider(oauth_provider: OAuthProvider) -> OAuthProvider:
    oauth_provider.audience = RESOURCE
    return oauth_provider


async def test_a_good_token_gives_subject_client_scopes_expiry_and_resource(provider: OAuthProvider) -> None:
    token = provider.mint(scope="crew:run openid")
    async with verifier(provider) as v:
        access = await v.verify_token(token)
    assert access is not None
    assert (access.subject, access.client_id, access.resource) == ("alice", "test-client", RESOURCE)
    assert access.scopes == ["crew:read", "crew:run", "openid"]
    assert access.expires_at is not None and access.expires_at > time.time()
    assert access.claims is not None and access.claims["iss"] == provider.issuer
    principal = principal_from_token(access, AuthConfig())
    assert principal.id == f"oauth:{provider.issuer}#alice" and principal.groups == {"reviewers"}
    assert provider.metadata_fetches == 1 and provider.jwks_fetches == 1


async def test_scp_lists_an_audience_list_and_es256_keys_are_understood(provider: OAuthProvider) -> None:
    key = provider.rotate("ES256")
    token = provider.mint(key=key, scope=None, scp=["crew:approve"], aud=["https://api.other.example", RESOURCE])
    async with verifier(provider) as v:
        access = await v.verify_token(token)
    assert access is not None and access.scopes == ["crew:approve", "crew:read"]


async def test_discovery_falls_back_to_openid_configuration_for_an_issuer_with_a_path() -> None:
    async with serve_provider(OAuthProvider(issuer_path="/realms/team", oidc_only=True, audience=RESOURCE)) as p:
        async with verifier(p) as v:
            assert await v.verify_token(p.mint()) is not None
        assert p.metadata_fetches == 2  # RFC 8414 answered 404, then OpenID discovery


async def test_a_configured_jwks_url_skips_discovery(provider: OAuthProvider) -> None:
    async with verifier(provider, jwks_url=provider.issuer + "/jwks") as v:
        assert await v.verify_token(provider.mint()) is not None
    assert provider.metadata_fetches == 0 and provider.jwks_fetches == 1


def public_pem(provider: OAuthProvider) -> bytes:
    key: Any = provider.signer.private.public_key()
    pem: bytes = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem


BAD_TOKENS: dict[str, Callable[[OAuthProvider], str]] = {
    "wrong-audience": lambda p: p.mint(aud="test-client"),
    "another-resource": lambda p: p.mint(aud="https://other-mcp.example.com/mcp"),
    "no-audience": lambda p: p.mint(aud=None),
    "wrong-issuer": lambda p: p.mint(iss="https://evil.example.com"),
    "expired": lambda p: p.mint(exp=int(time.time()) - 120),
    "not-yet-valid": lambda p: p.mint(nbf=int(time.time()) + 120),
    "no-expiry": lambda p: p.mint(exp=None),
    "no-subject": lambda p: p.mint(sub=None),
    "bad-signature": lambda p: p.tamper(p.mint()),
    "unknown-kid": lambda p: p.mint(key=p.rotate(published=False)),
    "alg-none": lambda p: p.mint_unsigned(),
    "hs256-with-the-public-key": lambda p: p.mint_hs256(public_pem(p)),
    "kid-of-another-key-type": lambda p: p.mint(key=p.keys[0], headers={"kid": p.rotate("ES256").kid}),
    "not-a-jwt": lambda p: "not.a.jwt",
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_tokens_are_refused_and_logged_without_the_token(
    provider: OAuthProvider, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = provider.mint()
    token = BAD_TOKENS[case](provider)
    async with verifier(provider) as v:
        assert await v.verify_token(good) is not None  # the same verifier accepts a good one
        with caplog.at_level(logging.INFO, logger="crew_mcp.auth"):
            assert await v.verify_token(token) is None
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals, "every refusal is logged with its reason"
    assert not any(token in r.getMessage() for r in caplog.records)


async def test_algorithms_outside_the_allow_list_are_refused(provider: OAuthProvider) -> None:
    token = provider.mint(key=provider.rotate("ES256"))
    async with verifier(provider, algorithms=["RS256"]) as v:
        assert await v.verify_token(token) is None


async def test_expiry_and_not_before_allow_a_small_clock_skew(provider: OAuthProvider) -> None:
    now = int(time.time())
    async with verifier(provider, leeway_seconds=30) as v:
        assert await v.verify_token(provider.mint(exp=now - 5)) is not None
        assert await v.verify_token(provider.mint(nbf=now + 5)) is not None
        assert await v.verify_token(provider.mint(exp=now - 60)) is None


async def test_an_unknown_kid_refreshes_the_keys_once_and_accepts_the_rotated_key(provider: OAuthProvider) -> None:
    clock = Clock()
    async with verifier(provider, clock) as v:
        assert await v.verify_token(provider.mint()) is not None
        clock.now += 31
        rotated = provider.rotate("ES256")
        tokens = [provider.mint(key=rotated, sub=f"user-{i}") for i in range(5)]
        results: list[object] = []

        async def check(token: str) -> None:
            results.append(await v.verify_token(token))

        async with anyio.create_task_group() as tg:
            for token in tokens:
                tg.start_soon(check, token)
        assert all(r is not None for r in results) and len(results) == 5
        assert provider.jwks_fetches == 2  # five callers with a new kid, one refresh
        assert await v.verify_token(provider.mint(key=provider.keys[0])) is not None  # the old key still works
    assert provider.jwks_fetches == 2


async def test_refreshes_for_unknown_kids_are_rate_limited(provider: OAuthProvider) -> None:
    clock = Clock()
    async with verifier(provider, clock) as v:
        assert await v.verify_token(provider.mint()) is not None
        unknown = provider.rotate(published=False)
        for _ in range(10):
            clock.now += 1
            assert await v.verify_token(provider.mint(key=unknown)) is None
        assert provider.jwks_fetches == 1  # ten made-up kids within 30 s: no refresh
        clock.now += 30
        assert await v.verify_token(provider.mint(key=unknown)) is None
        assert provider.jwks_fetches == 2
        unknown.published = True  # the issuer publishes it late: picked up at the next allowed refresh
        assert await v.verify_token(provider.mint(key=unknown)) is None
        clock.now += 30
        assert await v.verify_token(provider.mint(key=unknown)) is not None
        assert provider.jwks_fetches == 3


async def test_metadata_naming_another_issuer_is_not_used(provider: OAuthProvider) -> None:
    token = provider.mint()
    configured = provider.issuer
    provider.issuer = configured + "/impostor"  # the metadata now claims to describe another issuer
    async with httpx2.AsyncClient() as http:
        v = JWTVerifier(AuthConfig(mode="oauth", issuer=configured, resource_url=RESOURCE), http)
        assert await v.verify_token(token) is None
    assert provider.jwks_fetches == 0


@pytest.mark.parametrize("fault", ["down", "bad_json", "refused"])
async def test_an_unusable_authorization_server_means_refusal_logged_without_the_token(
    provider: OAuthProvider, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = provider.mint()
    jwks_url = f"http://127.0.0.1:{free_port()}/jwks" if fault == "refused" else None
    if fault != "refused":
        provider.fault = fault  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="crew_mcp.auth"):
        async with verifier(provider, jwks_url=jwks_url) as v:
            assert await v.verify_token(token) is None
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "cannot fetch the authorization server's keys" in messages
    assert token not in messages


async def test_keys_survive_an_outage_after_they_were_fetched(provider: OAuthProvider) -> None:
    clock = Clock()
    async with verifier(provider, clock) as v:
        assert await v.verify_token(provider.mint()) is not None
        provider.fault = "down"
        clock.now += 7200  # past the cache's age: the refetch fails, the cached keys stay
        assert await v.verify_token(provider.mint()) is not None
    assert provider.jwks_fetches == 2


async def test_an_identity_provider_api_identifier_can_be_the_audience(provider: OAuthProvider) -> None:
    async with verifier(provider, audience="api://crew-mcp") as v:
        access = await v.verify_token(provider.mint(aud="api://crew-mcp"))
        assert access is not None and access.resource == "api://crew-mcp"
        assert await v.verify_token(provider.mint()) is None  # the resource URL is then not the audience
