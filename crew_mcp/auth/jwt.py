"""Verify signed JWT access tokens locally against the authorization server's published keys (JWKS).

Checks, in order: a JOSE header whose ``alg`` is on the allow-list (never ``none``, never HS*: an issuer's
keys are public, so an HMAC "signature" keyed with one proves nothing), a key from the JWKS (matched by
``kid``, key type and algorithm; an unknown ``kid`` triggers one rate-limited refresh, for key rotation),
the signature, ``exp``/``nbf``/``iat`` with a small leeway, ``iss`` equal to the configured issuer, and an
``aud`` containing this server's resource URL (RFC 8707). The JWKS location comes from
``CREW_MCP_OAUTH_JWKS_URL`` or from the issuer's metadata (RFC 8414, then OpenID Connect discovery).

A refused token is logged with its reason at INFO, never with the token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken

from .config import AuthConfig, effective_scopes
from .fetch import FetchError, issuer_metadata, request_json, same_url

__all__ = ["JWKS_MAX_AGE", "JWKS_MIN_REFRESH_INTERVAL", "JWTVerifier", "scopes_of"]

log = logging.getLogger("crew_mcp.auth")

JWKS_MIN_REFRESH_INTERVAL = 30.0
"""Seconds between two JWKS fetches at most: a flood of tokens with made-up ``kid`` s must not become a
flood of requests to the authorization server."""
JWKS_MAX_AGE = 3600.0
"""Keys older than this are refetched (and kept if the refetch fails: an outage must not lock everyone out)."""

_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class _Refused(Exception):
    """The token is not acceptable; the message is the reason, safe to log."""


def scopes_of(claims: dict[str, Any]) -> list[str]:
    """Granted scopes: ``scope`` (RFC 9068/8693, space-separated) or ``scp`` (a list, or a string)."""
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return []


class _KeySet:
    """The issuer's JWKS, fetched lazily, cached, refreshed on demand at most every ``min_interval`` seconds."""

    def __init__(
        self, config: AuthConfig, http: httpx2.AsyncClient, clock: Callable[[], float], min_interval: float
    ) -> None:
        self._config = config
        self._http = http
        self._clock = clock
        self._min_interval = min_interval
        self._jwks_url = config.jwks_url
        self._keys: list[dict[str, Any]] | None = None
        self._parsed: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._lock = anyio.Lock()

    async def key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        stale = self._keys is None or self._clock() - self._fetched_at > JWKS_MAX_AGE
        if stale:
            await self._refresh()
        found = self._cached(kid, alg)
        if found is None and not stale:
            await self._refresh()  # maybe a rotated-in key: at most one fetch per interval, however many callers
            found = self._cached(kid, alg)
        if found is None:
            if self._keys is None:
                raise _Refused("the authorization server's keys are not available")
            raise _Refused(f"no published key matches kid {kid!r} and alg {alg}")
        return found

    def _cached(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        # Building a key from its JWK (an RSA modulus especially) costs more than verifying with it. Only
        # published keys are remembered: caching misses would let made-up kids grow this without bound.
        found = self._parsed.get((kid, alg))
        if found is None:
            found = _pick(self._keys or [], kid, alg)
            if found is not None:
                self._parsed[(kid, alg)] = found
        return found

    async def _refresh(self) -> None:
        seen = self._attempted_at
        async with self._lock:
            if self._attempted_at != seen:
                return  # another caller fetched while this one waited for the lock
            now = self._clock()
            if seen is not None and now - seen < self._min_interval:
                return
            self._attempted_at = now
            try:
                url = self._jwks_url or await self._discover()
                self._jwks_url = url
                body = await request_json(self._http, "GET", url)
            except FetchError as exc:
                log.warning("cannot fetch the authorization server's keys: %s", exc)
                return
            keys = body.get("keys")
            if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
                log.warning("the JWKS at %s has no 'keys' list", url)
                return
            self._keys = keys
            self._parsed = {}
            self._fetched_at = now
            log.info("fetched %d key(s) from %s", len(keys), url)

    async def _discover(self) -> str:
        metadata = await issuer_metadata(self._http, self._config.issuer or "", _lacks_jwks_uri)
        jwks_uri: str = metadata["jwks_uri"]
        return jwks_uri


def _lacks_jwks_uri(metadata: dict[str, Any]) -> str | None:
    jwks_uri = metadata.get("jwks_uri")
    return None if isinstance(jwks_uri, str) and jwks_uri.startswith(("https://", "http://")) else "names no jwks_uri"


def _pick(keys: list[dict[str, Any]], kid: str | None, alg: str) -> jwt.PyJWK | None:
    kty = _KEY_TYPES.get(alg[:2])
    usable = [k for k in keys if k.get("kty") == kty and k.get("use", "sig") == "sig" and k.get("alg", alg) == alg]
    matches = [k for k in usable if k.get("kid") == kid] if kid is not None else usable
    if len(matches) != 1:
        return None  # unknown kid, or no kid and several candidates: guessing would be a wrong answer
    try:
        return jwt.PyJWK(matches[0], algorithm=alg)
    except jwt.PyJWTError:
        return None


class JWTVerifier:
    """mcp's ``TokenVerifier`` for signed JWT access tokens (RFC 9068 and the common IdP variants).

    ``http`` is owned by the caller. ``clock`` (monotonic seconds) paces JWKS refreshes; tests inject one.
    """

    def __init__(
        self,
        config: AuthConfig,
        http: httpx2.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_refresh_interval: float = JWKS_MIN_REFRESH_INTERVAL,
    ) -> None:
        if config.issuer is None or config.expected_audience is None:
            raise ValueError("JWTVerifier needs an issuer and an audience")
        self._config = config
        self._issuer = config.issuer
        self._audience = config.expected_audience
        self._keys = _KeySet(config, http, clock, min_refresh_interval)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's :class:`AccessToken`, or None when it is not acceptable (the reason is logged)."""
        try:
            return await self._verify(token)
        except _Refused as exc:
            log.info("bearer token refused: %s", exc)
            return None

    async def _verify(self, token: str) -> AccessToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Refused("not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._config.algorithms:
            raise _Refused(f"algorithm {alg!r} is not allowed (allowed: {', '.join(self._config.algorithms)})")
        kid = header.get("kid")
        key = await self._keys.key(kid if isinstance(kid, str) else None, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                leeway=self._config.leeway_seconds,
                options={"verify_aud": False, "verify_iss": False, "require": ["exp", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise _Refused(str(exc)) from None
        if not isinstance(claims["iss"], str) or not same_url(claims["iss"], self._issuer):
            raise _Refused(f"issued by {claims['iss']!r}, not {self._issuer}")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
        if not any(isinstance(a, str) and same_url(a, self._audience) for a in audiences):
            raise _Refused(f"issued for {audiences!r}, not for {self._audience}")
        client_id = claims.get("client_id") or claims.get("azp") or claims.get("cid") or ""
        return AccessToken(
            token=token,
            client_id=str(client_id),
            scopes=sorted(effective_scopes(scopes_of(claims))),
            expires_at=int(claims["exp"]),
            resource=self._audience,
            subject=str(claims["sub"]),
            claims=claims,
        )
