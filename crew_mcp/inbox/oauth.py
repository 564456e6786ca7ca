"""Signing people in to the inbox: crew-mcp as an OAuth client of the MCP endpoint's own identity provider.

Authorization code with PKCE (S256), the ``state`` and PKCE verifier kept server-side with the sign-in (see
:mod:`crew_mcp.inbox.sessions`), RFC 8707 ``resource`` = this server's MCP resource URL (so the token is one the
MCP endpoint would accept), RFC 9207 ``iss`` checked when the provider sends it. The token is verified by the very
verifier the MCP endpoint uses and turned into the same :class:`~crew_mcp.auth.Principal`; then it is dropped.

The client is ``CREW_MCP_INBOX_CLIENT_ID`` (with ``CREW_MCP_INBOX_CLIENT_SECRET`` for a confidential client:
HTTP Basic at the token endpoint), else one crew-mcp registers itself (RFC 7591) as a public client, whose id is
kept in the shared store so every replica uses the same registration.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx2
from mcp.server.auth.provider import TokenVerifier

from ..auth.config import AuthConfig, Principal, principal_from_token, readable_id
from ..auth.fetch import FetchError, basic_auth, issuer_metadata, request_json, same_url
from .config import InboxConfig
from .store import Store

__all__ = ["CLIENT_NAME", "OAuthSignIn", "SignInError", "challenge_of", "display_name"]

log = logging.getLogger("crew_mcp.inbox")

CLIENT_NAME = "crew-mcp approvals inbox"
METADATA_MAX_AGE = 3600.0
_REGISTRATION_SECONDS = 30 * 86400.0
"""How long a registered client id is reused before crew-mcp registers again (providers may expire them)."""


class SignInError(Exception):
    """Signing in failed; the message is a sentence for the person, naming no token, code or secret."""


def challenge_of(verifier: str) -> str:
    """The PKCE S256 code challenge of ``verifier``."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def display_name(principal: Principal) -> str:
    """What the page calls a person: a human-readable claim when the token has one, else the subject."""
    for claim in ("preferred_username", "name", "email"):
        value = principal.claims.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip()[:80]
    return readable_id(principal.id)[:80]


@dataclass
class _Endpoints:
    authorization: str
    token: str
    registration: str | None
    fetched_at: float


class OAuthSignIn:
    """The authorization-code flow against ``config.issuer``, redirecting back to ``redirect_uri``."""

    def __init__(
        self,
        config: AuthConfig,
        inbox: InboxConfig,
        *,
        http: httpx2.AsyncClient,
        verifier: TokenVerifier,
        store: Store,
        redirect_uri: str,
    ) -> None:
        assert config.issuer is not None
        self.config = config
        self.inbox = inbox
        self.redirect_uri = redirect_uri
        self._issuer = config.issuer
        self._http = http
        self._verifier = verifier
        self._store = store
        self._endpoints: _Endpoints | None = None
        self._client_id: str | None = inbox.client_id

    @property
    def scope(self) -> str:
        """The scopes asked for: the enforced ones (crew:read to see, crew:approve to decide, crew:run to stop)."""
        return " ".join(self.config.enforced_scopes)

    async def authorization_url(self, *, state: str, code_verifier: str) -> str:
        """Where to send the browser to sign in.

        Raises:
            SignInError: the provider's metadata cannot be read, or no client can be had.
        """
        endpoints = await self._discover()
        params = {
            "response_type": "code",
            "client_id": await self._client(endpoints),
            "redirect_uri": self.redirect_uri,
            "state": state,
            "code_challenge": challenge_of(code_verifier),
            "code_challenge_method": "S256",
        }
        if self.config.resource_url:
            params["resource"] = self.config.resource_url
        if self.scope:
            params["scope"] = self.scope
        joiner = "&" if "?" in endpoints.authorization else "?"
        return f"{endpoints.authorization}{joiner}{urlencode(params)}"

    def check_issuer(self, iss: str | None) -> None:
        """RFC 9207: an ``iss`` on the redirect must be the configured issuer (a mix-up otherwise).

        Raises:
            SignInError: it names another issuer.
        """
        if iss is not None and not same_url(iss, self._issuer):
            raise SignInError("The sign-in came back from another identity provider than this server's; sign in again.")

    async def redeem(self, code: str, code_verifier: str) -> Principal:
        """Exchange the authorization code for a token, verify it like the MCP endpoint does, and return who it names.

        Raises:
            SignInError: the exchange failed or the token is not one this server accepts.
        """
        endpoints = await self._discover()
        client_id = await self._client(endpoints)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
        }
        if self.config.resource_url:
            form["resource"] = self.config.resource_url
        headers: dict[str, str] = {}
        secret = (
            self.inbox.client_secret.get_secret_value() if self.inbox.client_id and self.inbox.client_secret else ""
        )
        if secret:
            headers["Authorization"] = basic_auth(client_id, secret)
        else:
            form["client_id"] = client_id
        try:
            body = await request_json(self._http, "POST", endpoints.token, data=form, headers=headers)
        except FetchError as exc:
            log.info("inbox sign-in: the token endpoint refused the code: %s", exc)
            raise SignInError("The identity provider did not accept the sign-in; sign in again.") from None
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise SignInError("The identity provider answered without an access token; sign in again.")
        access = await self._verifier.verify_token(token)
        if access is None:
            audience = self.config.expected_audience or "this server"
            raise SignInError(
                f"The identity provider's token is not one this server accepts (it must be issued by {self._issuer} "
                f"for {audience}); ask the person who runs crew-mcp to check the provider's settings."
            )
        try:
            return principal_from_token(access, self.config)
        except ValueError:
            raise SignInError(
                "The identity provider's token names no user; crew-mcp cannot tell who you are."
            ) from None

    async def _discover(self) -> _Endpoints:
        cached = self._endpoints
        if cached is not None and time.monotonic() - cached.fetched_at < METADATA_MAX_AGE:
            return cached
        try:
            meta = await issuer_metadata(self._http, self._issuer, _lacks_endpoints)
        except FetchError as exc:
            log.info("inbox sign-in: %s", exc)
            raise SignInError(
                f"crew-mcp cannot read the sign-in settings of {self._issuer} (its OAuth metadata did not answer); "
                "try again in a minute."
            ) from None
        reg = meta.get("registration_endpoint")
        registration = reg if isinstance(reg, str) else None
        self._endpoints = _Endpoints(
            meta["authorization_endpoint"], meta["token_endpoint"], registration, time.monotonic()
        )
        return self._endpoints

    async def _client(self, endpoints: _Endpoints) -> str:
        if self._client_id is not None:
            return self._client_id
        key = "client:" + hashlib.sha256(f"{self._issuer}\n{self.redirect_uri}".encode()).hexdigest()
        known = await self._store.get(key)
        if known is None:
            if endpoints.registration is None:
                raise SignInError(
                    "Signing in to the inbox needs an OAuth client at the identity provider: set "
                    "CREW_MCP_INBOX_CLIENT_ID (redirect URI " + self.redirect_uri + "), or allow dynamic client "
                    "registration."
                )
            registered = await self._register(endpoints.registration)
            # Two replicas may register at once: the first stored wins, and everyone uses that one.
            await self._store.add(key, registered, _REGISTRATION_SECONDS)
            known = await self._store.get(key) or registered
        self._client_id = known
        return known

    async def _register(self, url: str) -> str:
        metadata: dict[str, Any] = {
            "client_name": CLIENT_NAME,
            "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        if self.scope:
            metadata["scope"] = self.scope
        try:
            body = await request_json(self._http, "POST", url, json=metadata)
        except FetchError as exc:
            log.warning("inbox sign-in: client registration failed: %s", exc)
            body = {}
        client_id = body.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise SignInError(
                "The identity provider refused to register crew-mcp's inbox as a client: set CREW_MCP_INBOX_CLIENT_ID "
                f"to a client registered with the redirect URI {self.redirect_uri}."
            )
        log.info("inbox sign-in: registered OAuth client %s at %s", client_id, url)
        return client_id


def _lacks_endpoints(metadata: dict[str, Any]) -> str | None:
    endpoints = (metadata.get("authorization_endpoint"), metadata.get("token_endpoint"))
    return None if all(isinstance(e, str) for e in endpoints) else "names no authorization and token endpoints"
