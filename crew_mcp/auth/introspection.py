"""Verify opaque access tokens by asking the authorization server (RFC 7662 token introspection).

crew-mcp authenticates to the introspection endpoint with its own client credentials (HTTP Basic,
``CREW_MCP_OAUTH_CLIENT_ID`` / ``CREW_MCP_OAUTH_CLIENT_SECRET``) and accepts the token only when the answer
says ``active``, names this server in ``aud`` (RFC 8707), the configured issuer in ``iss`` (when present)
and an ``exp`` still ahead. Accepted answers are cached briefly, keyed by a SHA-256 of the token, so the
token itself is never held as a key and a busy client does not cost one round trip per request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx2
from mcp.server.auth.provider import AccessToken

from .config import AuthConfig, effective_scopes
from .fetch import FetchError, basic_auth, request_json, same_url
from .jwt import scopes_of

__all__ = ["CACHE_SECONDS", "CACHE_SIZE", "IntrospectionVerifier"]

log = logging.getLogger("crew_mcp.auth")

CACHE_SECONDS = 60.0
"""How long an "active" answer is reused: a revoked token stays usable at most this long."""
CACHE_SIZE = 10_000


class IntrospectionVerifier:
    """mcp's ``TokenVerifier`` for opaque tokens, backed by an RFC 7662 introspection endpoint.

    ``http`` is owned by the caller; ``now`` (epoch seconds) is injectable for tests.
    """

    def __init__(
        self,
        config: AuthConfig,
        http: httpx2.AsyncClient,
        *,
        now: Callable[[], float] = time.time,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        if config.introspection_url is None or config.client_id is None or config.client_secret is None:
            raise ValueError("IntrospectionVerifier needs an introspection URL and client credentials")
        if config.expected_audience is None:
            raise ValueError("IntrospectionVerifier needs an audience")
        self._config = config
        self._url = config.introspection_url
        self._audience = config.expected_audience
        self._http = http
        self._now = now
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, AccessToken]] = {}
        self._authorization = basic_auth(config.client_id, config.client_secret.get_secret_value())

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's :class:`AccessToken` when the authorization server vouches for it, else None."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._now()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answer = await request_json(
                self._http,
                "POST",
                self._url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self._authorization},
            )
        except FetchError as exc:
            log.warning("cannot introspect a bearer token: %s", exc)
            return None
        reason = self._refusal(answer, now)
        if reason is not None:
            log.info("bearer token refused: %s", reason)
            return None
        access = AccessToken(
            token=token,
            client_id=str(answer.get("client_id") or ""),
            scopes=sorted(effective_scopes(scopes_of(answer))),
            expires_at=int(answer["exp"]) if isinstance(answer.get("exp"), int | float) else None,
            resource=self._audience,
            subject=str(answer["sub"]),
            claims={k: v for k, v in answer.items() if k != "active"} | {"iss": answer.get("iss") or self._issuer},
        )
        self._remember(key, access, now)
        return access

    @property
    def _issuer(self) -> str | None:
        return self._config.issuer

    def _refusal(self, answer: dict[str, Any], now: float) -> str | None:
        if answer.get("active") is not True:
            return "the authorization server says it is not active"
        if not isinstance(answer.get("sub"), str) or not answer["sub"]:
            return "the introspection answer names no subject"
        audiences = answer.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
        if not any(isinstance(a, str) and same_url(a, self._audience) for a in audiences):
            return f"issued for {audiences!r}, not for {self._audience}"
        issuer = answer.get("iss")
        if (
            self._issuer is not None
            and issuer is not None
            and not (isinstance(issuer, str) and same_url(issuer, self._issuer))
        ):
            return f"issued by {issuer!r}, not {self._issuer}"
        if issuer is None and self._issuer is None:
            return "neither the answer nor the configuration names the issuer"
        exp = answer.get("exp")
        if isinstance(exp, int | float) and exp + self._config.leeway_seconds <= now:
            return "expired"
        nbf = answer.get("nbf")
        if isinstance(nbf, int | float) and nbf - self._config.leeway_seconds > now:
            return "not valid yet"
        return None

    def _remember(self, key: str, access: AccessToken, now: float) -> None:
        until = now + self._cache_seconds
        if access.expires_at is not None:
            until = min(until, float(access.expires_at))
        if len(self._cache) >= CACHE_SIZE:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (until, access)
