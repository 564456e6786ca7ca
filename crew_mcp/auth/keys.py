"""Static API keys for small deployments without an identity provider (``CREW_MCP_AUTH=keys``).

A key is ``cmk_`` + 32 random bytes (URL-safe base64). The config file stores only ``sha256:<hex>`` of it,
with the principal and scopes it stands for. SHA-256 rather than a slow password hash on purpose: a slow
hash protects low-entropy secrets people choose; these keys carry 256 random bits, so no guessing attack
on a leaked hash is feasible, and a fast hash keeps every request cheap. Hashes are compared in constant
time. A key never appears in a log line, an error or a result.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence

from mcp.server.auth.provider import AccessToken

from .config import ALL_SCOPES, KEYS_ISSUER, ApiKeyConfig, effective_scopes

__all__ = ["KEY_PREFIX", "KeyVerifier", "generate_key", "hash_key", "key_config_entry"]

log = logging.getLogger("crew_mcp.auth")

KEY_PREFIX = "cmk_"
"""Marks a crew-mcp key, so secret scanners and people can tell one apart from an OAuth token."""


def hash_key(key: str) -> str:
    """The ``sha256:<hex>`` form of ``key`` that the config file stores."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new random key and its hash: show the key once to its holder, put the hash in the config file."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def key_config_entry(key_hash: str, principal: str, scopes: Sequence[str] = (), groups: Sequence[str] = ()) -> str:
    """The ``[[auth.keys]]`` TOML block for a hash (what ``crew-mcp keys new`` prints for the operator to paste).

    Raises:
        ValueError: an unknown scope, or an empty or unprintable principal or group.
    """
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; the scopes are {', '.join(ALL_SCOPES)}")
    if not principal or not principal.isprintable():
        raise ValueError("the principal must be a non-empty printable name")
    if any(not g or not g.isprintable() for g in groups):
        raise ValueError("each group must be a non-empty printable name")
    lines = ["[[auth.keys]]", f'hash = "{key_hash}"', f"principal = {_toml_string(principal)}"]
    if scopes:
        lines.append("scopes = [" + ", ".join(_toml_string(s) for s in scopes) + "]")
    if groups:
        lines.append("groups = [" + ", ".join(_toml_string(g) for g in groups) + "]")
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class KeyVerifier:
    """mcp's ``TokenVerifier`` for static keys: a bearer token is accepted when its hash is configured."""

    def __init__(self, keys: Sequence[ApiKeyConfig]) -> None:
        self._keys = list(keys)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The key's :class:`AccessToken` (principal ``key:<name>``), or None for an unknown key."""
        digest = hash_key(token)
        found: ApiKeyConfig | None = None
        for entry in self._keys:  # no early exit: the time taken does not depend on which entry matched
            if hmac.compare_digest(digest, entry.hash):
                found = entry
        if found is None:
            log.info("bearer token refused: not a configured API key")
            return None
        return AccessToken(
            token=token,
            client_id=f"key:{found.principal}",
            scopes=sorted(effective_scopes(found.scopes)),
            subject=found.principal,
            claims={"iss": KEYS_ISSUER, "sub": found.principal, "groups": list(found.groups)},
        )
