"""What the HTTP app calls to switch authentication on: the verifier, mcp's AuthSettings, RFC 9728 routes, and
the Host/Origin allow-lists (see docs/auth.md for the order of the calls).

Kept apart from :mod:`crew_mcp.auth.config` because it imports the MCP SDK and Starlette, which
``settings.py`` (imported by every CLI command) must not pay for.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import httpx2
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import cors_middleware
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.auth import ProtectedResourceMetadata
from starlette.routing import Route

from ..errors import ConfigError
from .config import SCOPE_READ, AuthConfig
from .introspection import IntrospectionVerifier
from .jwt import JWTVerifier
from .keys import KeyVerifier

__all__ = ["auth_settings", "build_verifier", "is_loopback", "protected_resource_routes", "transport_security"]


class _ByShape:
    """JWS-shaped tokens (three dot-separated parts) are verified locally, anything else is introspected."""

    def __init__(self, jwt: JWTVerifier, opaque: IntrospectionVerifier) -> None:
        self._jwt = jwt
        self._opaque = opaque

    async def verify_token(self, token: str) -> AccessToken | None:
        verifier = self._jwt if token.count(".") == 2 else self._opaque
        return await verifier.verify_token(token)


def build_verifier(config: AuthConfig, http: httpx2.AsyncClient | None = None) -> TokenVerifier | None:
    """The token verifier for ``config``; None when authentication is off.

    ``http`` is the caller's client (kept open for the server's lifetime) for metadata, JWKS and introspection;
    only OAuth needs one (keys are checked locally).

    Raises:
        ValueError: OAuth without ``http``.
    """
    if config.mode == "keys":
        return KeyVerifier(config.keys)
    if config.mode == "none":
        return None
    if http is None:
        raise ValueError("an OAuth verifier needs an HTTP client for the identity provider")
    jwt = JWTVerifier(config, http)
    if config.introspection_url is None:
        return jwt
    return _ByShape(jwt, IntrospectionVerifier(config, http))


def auth_settings(config: AuthConfig) -> AuthSettings | None:
    """mcp's :class:`AuthSettings` for ``config``; None when authentication is off.

    In oauth mode the SDK then serves RFC 9728 metadata at ``/.well-known/oauth-protected-resource/mcp``
    and answers a missing or refused token with 401 and ``WWW-Authenticate: Bearer ... resource_metadata=``.
    ``required_scopes`` is crew:read when that scope is enforced (crew:run and crew:approve imply it), so
    the metadata advertises the scope every session needs; the others are asked for by step-up.

    Keys mode has no authorization server: no metadata is published (``resource_server_url`` stays unset)
    and ``issuer_url`` is a placeholder the SDK requires but, without metadata, never shows.
    """
    if config.mode == "none":
        return None
    required = [SCOPE_READ] if SCOPE_READ in config.enforced_scopes else None
    if config.mode == "keys":
        return AuthSettings.model_validate(
            {"issuer_url": "http://localhost", "resource_server_url": None, "required_scopes": required}
        )
    resource = _resource(config)
    # The verifiers check `aud` themselves. The SDK's own check compares AccessToken.resource with the
    # resource URL, which only holds when the audience *is* that URL; an IdP API identifier is not.
    same = config.expected_audience == resource
    # Strings, not AnyHttpUrl: the SDK's models keep an empty path empty, and RFC 8414 issuer comparison is
    # exact, so "https://idp.example" must not become "https://idp.example/".
    return AuthSettings.model_validate(
        {
            "issuer_url": config.issuer,
            "resource_server_url": resource,
            "required_scopes": required,
            "validate_token_resource": same,
        }
    )


def protected_resource_routes(config: AuthConfig) -> list[Route]:
    """RFC 9728 metadata at both well-known forms, ``/.well-known/oauth-protected-resource`` and the path-suffixed
    one the ``WWW-Authenticate`` challenges point at; empty unless in oauth mode. Put them before the MCP app.

    ``scopes_supported`` lists every enforced scope. The SDK's own route lists only the session-wide required
    scope, and a client registers (RFC 7591) with the scopes it finds there; a strict authorization server then
    refuses that client a broader scope on step-up (``invalid_scope``), so these routes shadow the SDK's.
    """
    if config.mode != "oauth":
        return []
    resource = _resource(config)
    metadata = ProtectedResourceMetadata.model_validate(
        {
            "resource": resource,
            "authorization_servers": [config.issuer],
            "scopes_supported": list(config.enforced_scopes) or None,
        }
    )
    handler = ProtectedResourceMetadataHandler(metadata)
    endpoint = cors_middleware(handler.handle, ["GET", "OPTIONS"])
    root = "/.well-known/oauth-protected-resource"
    paths = dict.fromkeys([root, root + urlsplit(resource).path.rstrip("/")])
    return [Route(path, endpoint=endpoint, methods=["GET", "OPTIONS"]) for path in paths]


def _resource(config: AuthConfig) -> str:
    if config.resource_url is None:
        raise ConfigError(
            "OAuth needs this server's public URL: set CREW_MCP_PUBLIC_URL (e.g. https://crew.example.com)."
        )
    return config.resource_url


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_security(public_url: str | None, host: str) -> TransportSecuritySettings:
    """Host/Origin allow-lists against DNS rebinding, derived from the public URL and the bind address.

    The public URL's host (with and without its default port) and origin are allowed; loopback names too
    when the server binds a loopback address.

    Raises:
        ConfigError: a non-loopback bind address without a public URL (nothing to derive the lists from).
    """
    hosts: list[str] = []
    origins: list[str] = []
    if public_url is not None:
        parts = urlsplit(public_url)
        default_port = 443 if parts.scheme == "https" else 80
        netloc = parts.netloc.lower().rpartition("@")[2]
        hosts.append(netloc)
        if parts.port is None:
            hosts.append(f"{netloc}:{default_port}")
        elif parts.port == default_port:
            hosts.append(netloc.rsplit(":", 1)[0])
        origins.append(f"{parts.scheme}://{netloc}")
    if is_loopback(host):
        hosts += ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        origins += ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    elif public_url is None:
        raise ConfigError(
            f"Serving on {host} needs the address people reach it at, to refuse DNS-rebinding requests: "
            "set CREW_MCP_PUBLIC_URL (e.g. https://crew.example.com)."
        )
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)
