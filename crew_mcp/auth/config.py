"""Authentication and authorization configuration, scopes, principals, and the pure policy functions.

Everything here is data and pure functions: no I/O, no clock, no environment. ``settings.py`` builds an
:class:`AuthConfig` from the ``[auth]`` table and the ``CREW_MCP_AUTH`` / ``CREW_MCP_OAUTH_*`` variables.

Scopes (the public contract, see docs/auth.md):

```text
crew:read     list crews, read inputs, runs, statuses and pending approvals (your own runs)
crew:run      start runs (kickoff_crew, run_<crew>); implies crew:read
crew:approve  answer a human-input step (resume_with_feedback); implies crew:read
```

Principals (the owner string recorded on every run):

```text
oauth:<iss>#<sub>     a token from the authorization server <iss> (RFC 8414 issuers carry no fragment, so the
                      first "#" always separates them; <sub> is unique per issuer, hence both)
key:<name>            a static API key from [[auth.keys]]
```
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

if TYPE_CHECKING:  # settings.py imports this module; importing mcp here would slow every CLI command
    from mcp.server.auth.provider import AccessToken

__all__ = [
    "ALL_SCOPES",
    "KEYS_ISSUER",
    "SCOPE_APPROVE",
    "SCOPE_READ",
    "SCOPE_RUN",
    "ApiKeyConfig",
    "ApprovalConfig",
    "AuthConfig",
    "AuthMode",
    "CrewAccessRule",
    "LimitsConfig",
    "Principal",
    "allowed_crews",
    "effective_scopes",
    "is_approver",
    "may_approve",
    "may_read",
    "missing_scope",
    "principal_from_token",
    "readable_id",
    "scope_for_tool",
]

SCOPE_READ = "crew:read"
SCOPE_RUN = "crew:run"
SCOPE_APPROVE = "crew:approve"
ScopeName = Literal["crew:read", "crew:run", "crew:approve"]
ALL_SCOPES: tuple[ScopeName, ...] = ("crew:read", "crew:run", "crew:approve")
# The MCP spec asks servers to honour scope hierarchies: whoever may start or approve a run must be able to
# follow it, so both broader scopes carry crew:read.
_IMPLIED: dict[str, tuple[str, ...]] = {SCOPE_RUN: (SCOPE_READ,), SCOPE_APPROVE: (SCOPE_READ,)}
# Tools named here need the scope; any other tool (run_<crew>, the typed kickoff tools) starts a run.
_TOOL_SCOPES: dict[str, str] = {
    "list_crews": SCOPE_READ,
    "list_inputs": SCOPE_READ,
    "get_status": SCOPE_READ,
    "list_executions": SCOPE_READ,
    "list_pending_approvals": SCOPE_READ,
    "kickoff_crew": SCOPE_RUN,
    "cancel_run": SCOPE_RUN,
    "resume_with_feedback": SCOPE_APPROVE,
    "app_run_view": SCOPE_READ,
    "app_decide": SCOPE_APPROVE,
}

KEYS_ISSUER = "crew-mcp:keys"
"""The ``iss`` claim a static-key :class:`AccessToken` carries, so the SDK's (client_id, iss, sub) triple and
:func:`principal_from_token` treat keys like any other issuer."""

AuthMode = Literal["none", "oauth", "keys"]
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_URL_RE = re.compile(r"^https?://[^\s/#?]+[^\s#]*$")
_FORBIDDEN_ALGS = ("none", "HS256", "HS384", "HS512")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeyConfig(_Strict):
    """One static API key: only its SHA-256 hash is stored (``crew-mcp`` prints the line to paste)."""

    hash: str
    principal: str = Field(min_length=1, max_length=200)
    scopes: list[ScopeName] = Field(default_factory=lambda: list(ALL_SCOPES))
    groups: list[str] = Field(default_factory=list)

    @field_validator("hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        if v.startswith("cmk_"):
            raise ValueError("holds a key, not its hash; store only the 'sha256:...' line `crew-mcp` printed")
        if not _HASH_RE.match(v):
            raise ValueError("must be 'sha256:' followed by 64 lower-case hex digits")
        return v


class ApprovalConfig(_Strict):
    """Who may decide on a run waiting for a human: its owner, and/or members of an approvers group."""

    owner: bool = True
    group: str | None = None


class CrewAccessRule(_Strict):
    """Crews a principal, or the members of a group, may use. ``"*"`` stands for every crew."""

    principal: str | None = None
    group: str | None = None
    crews: list[str]

    @model_validator(mode="after")
    def _one_subject(self) -> CrewAccessRule:
        if (self.principal is None) == (self.group is None):
            raise ValueError("each crew access rule names exactly one of 'principal' or 'group'")
        return self


class LimitsConfig(_Strict):
    """Limits of ``serve --http``; ``None`` turns one off.

    ``kickoffs_per_minute`` and ``concurrent_waits`` count per principal (so only with authentication on); the
    session and body limits apply to every HTTP caller.
    """

    kickoffs_per_minute: float | None = Field(default=30.0, gt=0)
    concurrent_waits: int | None = Field(default=4, ge=1)
    session_idle_seconds: float | None = Field(default=1800.0, gt=0)
    max_sessions: int | None = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)


class AuthConfig(_Strict):
    """How callers of ``serve --http`` authenticate, and what each principal may do.

    ``resource_url`` is this server's MCP endpoint (``CREW_MCP_PUBLIC_URL`` + ``/mcp``, filled by settings);
    ``audience`` is what the ``aud`` claim must contain, by default ``resource_url`` (RFC 8707). An
    identity provider that insists on its own API identifier (``api://crew-mcp``) sets ``audience`` to it.
    """

    mode: AuthMode = "none"
    issuer: str | None = None
    audience: str | None = None
    resource_url: str | None = None
    jwks_url: str | None = None
    introspection_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scopes: list[ScopeName] = Field(default_factory=list)
    leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    principal_claim: str = "sub"
    groups_claim: str = "groups"
    keys: list[ApiKeyConfig] = Field(default_factory=list)
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    crew_access: list[CrewAccessRule] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, v: Any) -> Any:
        # CREW_MCP_OAUTH_SCOPES is one string; accept commas too, as people write both.
        return v.replace(",", " ").split() if isinstance(v, str) else v

    @field_validator("audience")
    @classmethod
    def _audience(cls, v: str | None) -> str | None:
        # Not necessarily a URL: Entra ID audiences look like api://<app>, Auth0 takes any identifier.
        if v is not None and (not v or any(c.isspace() for c in v)):
            raise ValueError("must be a non-empty identifier without spaces (this server's URL by default)")
        return v

    @field_validator("issuer", "resource_url", "jwks_url", "introspection_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not _URL_RE.match(v):
            raise ValueError("must be an http:// or https:// URL without a fragment")
        return v

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, v: list[str]) -> list[str]:
        refused = [a for a in v if a in _FORBIDDEN_ALGS or a.lower() == "none"]
        if refused:
            raise ValueError(f"{', '.join(refused)} cannot verify tokens signed with an issuer's public key")
        if not v:
            raise ValueError("name at least one algorithm, e.g. RS256")
        return v

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.mode == "oauth" and self.issuer is None:
            raise ValueError("CREW_MCP_AUTH=oauth needs the authorization server: set CREW_MCP_OAUTH_ISSUER")
        if self.mode == "keys" and not self.keys:
            raise ValueError("CREW_MCP_AUTH=keys needs at least one [[auth.keys]] entry in the config file")
        if self.introspection_url is not None and (self.client_id is None or self.client_secret is None):
            raise ValueError("introspection needs CREW_MCP_OAUTH_CLIENT_ID and CREW_MCP_OAUTH_CLIENT_SECRET")
        return self

    @property
    def enforced_scopes(self) -> tuple[str, ...]:
        """The scopes checked per operation: the configured ones; in keys mode all (each key names its own)."""
        return ALL_SCOPES if self.mode == "keys" else tuple(self.scopes)

    @property
    def expected_audience(self) -> str | None:
        """The value the ``aud`` claim must contain."""
        return self.audience or self.resource_url


# --------------------------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the owner string of its runs, its groups and its effective scopes."""

    id: str
    scopes: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    client_id: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return []


def effective_scopes(granted: Iterable[str]) -> frozenset[str]:
    """``granted`` plus every scope a granted one implies (crew:run and crew:approve imply crew:read)."""
    scopes = set(granted)
    for scope in list(scopes):
        scopes.update(_IMPLIED.get(scope, ()))
    return frozenset(scopes)


def principal_from_token(token: AccessToken, config: AuthConfig) -> Principal:
    """The :class:`Principal` an :class:`AccessToken` from one of crew-mcp's verifiers stands for.

    Raises:
        ValueError: the token carries no issuer or no principal claim (a verifier never returns one).
    """
    claims = token.claims or {}
    issuer = claims.get("iss")
    keyed = issuer == KEYS_ISSUER
    name = claims.get("sub" if keyed else config.principal_claim)
    if not isinstance(issuer, str) or not issuer or not isinstance(name, str) or not name:
        raise ValueError("the token names no issuer or principal")
    owner = f"key:{name}" if keyed else f"oauth:{issuer}#{name}"
    groups = frozenset(_strings(claims.get("groups" if keyed else config.groups_claim)))
    return Principal(owner, effective_scopes(token.scopes), groups, token.client_id, claims)


def readable_id(principal_id: str) -> str:
    """The part of a principal id (an owner string) a person recognises: the subject of ``oauth:{issuer}#{subject}``,
    the name of ``key:{name}``; any other id whole."""
    return principal_id.rpartition("#")[2].removeprefix("key:") or principal_id


# --------------------------------------------------------------------------------------------- policy


def scope_for_tool(tool: str) -> str:
    """The scope a tool call needs (unknown tools are the per-crew kickoff tools, so crew:run)."""
    return _TOOL_SCOPES.get(tool, SCOPE_RUN)


def starts_run(tool: str) -> bool:
    """True for the tools that start a (billed) run: the ones the kickoff rate limit counts. Stopping a run is
    never limited: someone past the limit must still be able to stop what they started."""
    return tool == "kickoff_crew" or (tool not in _TOOL_SCOPES and scope_for_tool(tool) == SCOPE_RUN)


def missing_scope(principal: Principal, needed: str, config: AuthConfig) -> str | None:
    """``needed`` when the deployment enforces that scope and the principal lacks it, else None.

    Only configured scopes are enforced: with none configured, any valid token may do everything on its own
    runs (many identity providers make custom scopes hard). Static keys always carry their own scopes.
    """
    if needed not in config.enforced_scopes or needed in principal.scopes:
        return None
    return needed


def allowed_crews(principal: Principal, config: AuthConfig) -> frozenset[str] | None:
    """The crews ``principal`` may see and use; None means every crew (no ``[[auth.crew_access]]`` rules).

    With rules, a principal gets the union of the rules naming it or one of its groups, and nothing else.
    """
    if not config.crew_access:
        return None
    crews: set[str] = set()
    for rule in config.crew_access:
        if rule.principal == principal.id or (rule.group is not None and rule.group in principal.groups):
            if "*" in rule.crews:
                return None
            crews.update(rule.crews)
    return frozenset(crews)


def is_approver(principal: Principal, config: AuthConfig) -> bool:
    """Whether ``principal`` is in the approvers group, and so may decide on anyone's run."""
    return config.approval.group is not None and config.approval.group in principal.groups


def may_approve(principal: Principal, record_owner: str, config: AuthConfig) -> bool:
    """Whether ``principal`` may decide on a run owned by ``record_owner`` (scopes are checked apart)."""
    return (config.approval.owner and principal.id == record_owner) or is_approver(principal, config)


def may_read(principal: Principal, record_owner: str, config: AuthConfig, *, awaiting_approval: bool) -> bool:
    """Whether ``principal`` may see a run: its own, or another's while it waits for a decision they may make.

    Anything else must get the same "not found" as an unknown kickoff_id.
    """
    if principal.id == record_owner:
        return True
    return awaiting_approval and may_approve(principal, record_owner, config)
