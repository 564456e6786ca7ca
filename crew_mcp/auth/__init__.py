"""Authentication for ``crew-mcp serve --http``: OAuth 2.1 resource server, static API keys, limits.

What the HTTP app calls (docs/auth.md has the whole story):

```python
verifier = build_verifier(settings.auth, http)            # None when CREW_MCP_AUTH=none
mcp = MCPServer(..., token_verifier=GateVerified(verifier), auth=auth_settings(settings.auth))  # the gate's answer
app = mcp.streamable_http_app(transport_security=transport_security(settings.public_url, host), ...)
routes = protected_resource_routes(settings.auth)           # RFC 9728 at both well-known forms (shadows the SDK's)
app = ScopeGate(app, verifier=verifier, config=settings.auth, limiter=Limiter(settings.auth.limits), ...)
principal = principal_from_token(get_access_token(), settings.auth)     # inside a tool
```

Names are imported on first use: ``settings.py`` needs only :mod:`crew_mcp.auth.config`, and every CLI command
imports settings, so the SDK, Starlette and the JOSE library load only when a server actually uses them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import (
    ALL_SCOPES,
    SCOPE_APPROVE,
    SCOPE_READ,
    SCOPE_RUN,
    AuthConfig,
    Principal,
    allowed_crews,
    effective_scopes,
    is_approver,
    may_approve,
    may_read,
    missing_scope,
    principal_from_token,
    scope_for_tool,
)

if TYPE_CHECKING:
    from .gate import GateVerified, ScopeGate
    from .introspection import IntrospectionVerifier
    from .jwt import JWTVerifier
    from .keys import KeyVerifier, generate_key, hash_key, key_config_entry
    from .limits import Decision, Limiter
    from .wiring import auth_settings, build_verifier, is_loopback, protected_resource_routes, transport_security

__all__ = [
    "ALL_SCOPES",
    "SCOPE_APPROVE",
    "SCOPE_READ",
    "SCOPE_RUN",
    "AuthConfig",
    "Decision",
    "GateVerified",
    "IntrospectionVerifier",
    "JWTVerifier",
    "KeyVerifier",
    "Limiter",
    "Principal",
    "ScopeGate",
    "allowed_crews",
    "auth_settings",
    "build_verifier",
    "effective_scopes",
    "generate_key",
    "hash_key",
    "is_approver",
    "is_loopback",
    "key_config_entry",
    "may_approve",
    "may_read",
    "missing_scope",
    "principal_from_token",
    "protected_resource_routes",
    "scope_for_tool",
    "transport_security",
]

_LAZY = {
    "IntrospectionVerifier": "introspection",
    "JWTVerifier": "jwt",
    "KeyVerifier": "keys",
    "generate_key": "keys",
    "hash_key": "keys",
    "key_config_entry": "keys",
    "Decision": "limits",
    "Limiter": "limits",
    "GateVerified": "gate",
    "ScopeGate": "gate",
    "auth_settings": "wiring",
    "build_verifier": "wiring",
    "is_loopback": "wiring",
    "protected_resource_routes": "wiring",
    "transport_security": "wiring",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
