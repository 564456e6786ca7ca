"""A real OAuth 2.1 authorization server for tests, served by uvicorn on 127.0.0.1 (port 0).

It signs real tokens with real keys (PyJWT + cryptography) and speaks the protocols crew-mcp and the MCP SDK's
OAuth client use: RFC 8414 metadata and OpenID discovery, a JWKS (RS256 and ES256, with key rotation),
``/authorize`` (authorization code + PKCE S256, auto-consent for one test user, RFC 9207 ``iss``), ``/token``
(authorization_code, refresh_token with rotation, client_credentials), ``/register`` (RFC 7591 dynamic client
registration) and ``/introspect`` (RFC 7662). ``mint()`` and friends make the bad tokens negative tests need.
Counters (``jwks_fetches``, ``introspections``) let tests see how often crew-mcp asked. ``user`` is who signs in
next; ``grantable`` limits the scopes a login grants, like a user policy.

The client side lives here too: :func:`sdk_oauth` is the MCP SDK's OAuth client with a scripted browser, usable
against this server or any provider that signs its user in without a form (tests/oidc/provider.mjs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote_plus, urlencode, urljoin, urlsplit

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from crew_mcp.simulator.serve import serve_app

Alg = Literal["RS256", "ES256"]
Fault = Literal["down", "bad_json"] | None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    """One key pair; ``published`` keys appear in the JWKS."""

    kid: str
    alg: Alg
    private: Any
    published: bool = True

    @classmethod
    def new(cls, alg: Alg = "RS256", *, published: bool = True) -> SigningKey:
        private: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if alg == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )
        return cls(f"{alg.lower()}-{secrets.token_hex(4)}", alg, private, published)

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        public = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}


@dataclass
class Client:
    client_id: str
    secret: str | None
    redirect_uris: list[str]
    scope: str | None = None


@dataclass
class OAuthProvider:
    """The server's state and its Starlette ``app``; ``issuer`` is known once it is served."""

    user: str = "alice"
    groups: list[str] = field(default_factory=lambda: ["reviewers"])
    scopes: list[str] = field(default_factory=lambda: ["crew:read", "crew:run", "crew:approve"])
    grantable: set[str] | None = None  # the scopes /authorize grants (None: whatever is asked), like a user policy
    audience: str = ""
    issuer_path: str = ""
    oidc_only: bool = False
    fault: Fault = None
    token_lifetime: int = 300
    issuer: str = ""
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.new("RS256")])
    clients: dict[str, Client] = field(default_factory=dict)
    metadata_fetches: int = 0
    jwks_fetches: int = 0
    introspections: int = 0
    _codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    _refresh: dict[str, dict[str, Any]] = field(default_factory=dict)
    _opaque: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------ test helpers

    def rotate(self, alg: Alg = "RS256", *, published: bool = True) -> SigningKey:
        """Sign from now on with a new key (old keys stay published, as during a real rotation)."""
        key = SigningKey.new(alg, published=published)
        self.keys.append(key)
        return key

    @property
    def signer(self) -> SigningKey:
        return self.keys[-1]

    def add_client(self, client_id: str, secret: str | None = None, redirect_uris: list[str] | None = None) -> Client:
        """A pre-registered client (confidential when it has a secret)."""
        client = Client(client_id, secret, redirect_uris or [])
        self.clients[client_id] = client
        return client

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """The claims of a good access token for ``audience``; ``None`` values delete a claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.user,
            "aud": self.audience,
            "iat": now,
            "exp": now + self.token_lifetime,
            "scope": " ".join(self.scopes),
            "client_id": "test-client",
            "groups": self.groups,
            "jti": secrets.token_hex(8),
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, *, key: SigningKey | None = None, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """A signed JWT (by the current key unless ``key``); keyword arguments override claims."""
        key = key or self.signer
        header = {"kid": key.kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(self.claims(**claims), key.private, algorithm=key.alg, headers=header)

    def mint_unsigned(self, **claims: Any) -> str:
        """An ``alg: none`` token with good claims (RFC 7519 §6 unsecured JWT)."""
        header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{_b64url(json.dumps(self.claims(**claims)).encode())}."

    def mint_hs256(self, secret: bytes, **claims: Any) -> str:
        """An HS256 token keyed with ``secret``: given the bytes of a published public key, the classic algorithm
        confusion attack. Built by hand because PyJWT rightly refuses to sign with a PEM key as HMAC secret."""
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.signer.kid}).encode())
        signing_input = f"{header}.{_b64url(json.dumps(self.claims(**claims)).encode())}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"

    @staticmethod
    def tamper(token: str) -> str:
        """The same token with its payload changed after signing (the signature no longer matches)."""
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["sub"] = "mallory"
        return f"{header}.{_b64url(json.dumps(claims).encode())}.{signature}"

    def opaque(self, *, active: bool = True, **claims: Any) -> str:
        """An opaque token this server will describe at /introspect."""
        token = "opq_" + secrets.token_urlsafe(24)
        self._opaque[token] = {"active": active, **self.claims(**claims)}
        return token

    # --------------------------------------------------------------------------------------- protocol

    def metadata(self) -> dict[str, Any]:
        root = self.issuer.removesuffix(self.issuer_path)
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{root}/authorize",
            "token_endpoint": f"{root}/token",
            "registration_endpoint": f"{root}/register",
            "introspection_endpoint": f"{root}/introspect",
            "jwks_uri": f"{root}/jwks",
            "scopes_supported": self.scopes,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }

    async def _rfc8414(self, request: Request) -> Response:
        self.metadata_fetches += 1
        if self.oidc_only:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(self.metadata())

    async def _oidc(self, request: Request) -> Response:
        self.metadata_fetches += 1
        return JSONResponse(self.metadata())

    async def _jwks(self, request: Request) -> Response:
        self.jwks_fetches += 1
        if self.fault == "down":
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        if self.fault == "bad_json":
            return Response("<html>maintenance</html>", media_type="text/html")
        return JSONResponse({"keys": [k.jwk() for k in self.keys if k.published]})

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        client = self.clients.get(q.get("client_id", ""))
        if client is None or q.get("redirect_uri") not in client.redirect_uris:
            return JSONResponse({"error": "invalid_request", "error_description": "unknown client or redirect"}, 400)
        problem = None
        if q.get("response_type") != "code":
            problem = "unsupported_response_type"
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problem = "invalid_request"
        params: dict[str, str] = {"state": q.get("state", ""), "iss": self.issuer}
        if problem is not None:
            params["error"] = problem
        else:
            code = secrets.token_urlsafe(24)
            self._codes[code] = {
                "client_id": client.client_id,
                "redirect_uri": q["redirect_uri"],
                "challenge": q["code_challenge"],
                "scope": self._grant(q.get("scope") or " ".join(self.scopes)),
                "resource": q.get("resource"),
                "sub": self.user,  # who "logged in" now: tests switch users between flows
                "groups": list(self.groups),
            }
            params["code"] = code
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode(params)}", status_code=302)

    def _grant(self, requested: str) -> str:
        asked = requested.split()
        return " ".join(s for s in asked if self.grantable is None or s in self.grantable)

    def _client_auth(self, request: Request, form: dict[str, str]) -> Client | None:
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            # RFC 6749 §2.3.1: both parts were form-encoded before they were joined
            client_id, _, secret = (
                unquote_plus(p) for p in base64.b64decode(authorization[6:]).decode().partition(":")
            )
            client = self.clients.get(client_id)
            return client if client is not None and client.secret == secret else None
        client = self.clients.get(form.get("client_id", ""))
        if client is None or client.secret != form.get("client_secret"):
            return None
        return client

    def _issue(
        self, sub: str, client_id: str, scope: str, audience: str, *, refresh: bool, groups: list[str] | None = None
    ) -> dict[str, Any]:
        token = self.mint(sub=sub, client_id=client_id, scope=scope, aud=audience, groups=groups or self.groups)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "scope": scope,
        }
        if refresh:
            rt = secrets.token_urlsafe(24)
            self._refresh[rt] = {
                "sub": sub,
                "client_id": client_id,
                "scope": scope,
                "audience": audience,
                "groups": groups or self.groups,
            }
            body["refresh_token"] = rt
        return body

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        client = self._client_auth(request, form)
        public = self.clients.get(form.get("client_id", ""))
        if client is None and public is not None and public.secret is None:
            client = public
        if client is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            code = self._codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            if (
                code is None
                or code["client_id"] != client.client_id
                or code["redirect_uri"] != form.get("redirect_uri")
                or _b64url(hashlib.sha256(verifier.encode()).digest()) != code["challenge"]
                or form.get("resource", code["resource"]) != code["resource"]
            ):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            audience = code["resource"] or self.audience
            issued = self._issue(
                code["sub"], client.client_id, code["scope"], audience, refresh=True, groups=code["groups"]
            )
            return JSONResponse(issued)
        if grant == "refresh_token":
            record = self._refresh.pop(form.get("refresh_token", ""), None)  # rotation: each one works once
            if record is None or record["client_id"] != client.client_id:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            issued = self._issue(
                record["sub"],
                client.client_id,
                record["scope"],
                record["audience"],
                refresh=True,
                groups=record["groups"],
            )
            return JSONResponse(issued)
        if grant == "client_credentials" and client.secret is not None:
            scope = form.get("scope") or " ".join(self.scopes)
            audience = form.get("resource") or self.audience
            return JSONResponse(self._issue(client.client_id, client.client_id, scope, audience, refresh=False))
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    async def _register(self, request: Request) -> Response:
        body = await request.json()
        uris = body.get("redirect_uris")
        if not isinstance(uris, list) or not uris:
            return JSONResponse({"error": "invalid_redirect_uri"}, status_code=400)
        method = body.get("token_endpoint_auth_method") or "client_secret_basic"
        client_id = "dcr-" + secrets.token_hex(6)
        secret = None if method == "none" else secrets.token_urlsafe(24)
        self.clients[client_id] = Client(client_id, secret, [str(u) for u in uris], body.get("scope"))
        answer = {**body, "client_id": client_id, "token_endpoint_auth_method": method}
        answer["client_id_issued_at"] = int(time.time())
        if secret is not None:
            answer.update(client_secret=secret, client_secret_expires_at=0)
        return JSONResponse(answer, status_code=201)

    async def _introspect(self, request: Request) -> Response:
        self.introspections += 1
        form = {k: str(v) for k, v in (await request.form()).items()}
        client = self._client_auth(request, form)
        if client is None or client.secret is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        token = form.get("token", "")
        record = self._opaque.get(token)
        if record is None:
            try:
                key = next(k for k in self.keys if k.kid == jwt.get_unverified_header(token).get("kid"))
                claims = jwt.decode(token, key.private.public_key(), [key.alg], options={"verify_aud": False})
                record = {"active": True, **claims}
            except (jwt.PyJWTError, StopIteration):
                record = {"active": False}
        if not record["active"] or record.get("exp", 0) < time.time():
            return JSONResponse({"active": False})
        return JSONResponse({**record, "token_type": "Bearer"})

    @property
    def app(self) -> Starlette:
        p = self.issuer_path
        return Starlette(
            routes=[
                Route(f"/.well-known/oauth-authorization-server{p}", self._rfc8414),
                Route(f"{p}/.well-known/openid-configuration", self._oidc),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
                Route("/register", self._register, methods=["POST"]),
                Route("/introspect", self._introspect, methods=["POST"]),
            ]
        )


@asynccontextmanager
async def serve_provider(provider: OAuthProvider | None = None) -> AsyncIterator[OAuthProvider]:
    """Serve ``provider`` (a default one if None) on 127.0.0.1, port 0; ``issuer`` is set while it runs."""
    provider = provider or OAuthProvider()
    app = provider.app
    async with serve_app(app) as root:
        provider.issuer = root + provider.issuer_path
        yield provider


# ------------------------------------------------------------------------------------------ the client side


class MemoryStorage:
    """The SDK OAuth client's token storage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


CALLBACK = "http://localhost/callback"


def sdk_oauth(url: str, storage: MemoryStorage) -> OAuthClientProvider:
    """The SDK's OAuth client with a "browser" that follows the authorization URL (keeping cookies, through any login
    and consent pages that sign the user in by themselves) until the provider redirects to the callback."""
    redirect: dict[str, str] = {}

    async def open_browser(authorization_url: str) -> None:
        location = authorization_url
        async with httpx2.AsyncClient() as browser:
            for _ in range(10):
                response = await browser.get(location)
                assert response.is_redirect, response.text
                location = urljoin(location, response.headers["location"])
                if location.startswith(CALLBACK):
                    break
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert "code" in query, f"the authorization server refused: {query}"
        redirect.clear()
        redirect.update(query)

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=redirect["code"], state=redirect["state"], iss=redirect.get("iss"))

    metadata = OAuthClientMetadata(redirect_uris=[CALLBACK], client_name="crew-mcp tests")
    return OAuthClientProvider(url, metadata, storage, redirect_handler=open_browser, callback_handler=callback)
