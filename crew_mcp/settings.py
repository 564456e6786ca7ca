"""Settings: the only module that reads the environment and configuration files.

Sources, highest precedence first: command-line flags (applied by the CLI), ``CREW_MCP_*`` environment
variables, the TOML config file (``--config`` or ``CREW_MCP_CONFIG``), defaults. With no crew configured
anywhere, crew-mcp runs against its built-in simulator (the embedded default).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .auth.config import AuthConfig
from .crewconfig import (
    CrewConfig,
    InputConfig,
    StrictModel,
    TimeoutConfig,
)
from .errors import ConfigError
from .inbox.config import InboxConfig

__all__ = ["AuthConfig", "CrewConfig", "InputConfig", "Settings", "TimeoutConfig", "load_settings"]

logger = logging.getLogger(__name__)

ENV_PREFIX = "CREW_MCP_"
OFFICIAL_URL_ENV = "MCP_CREWAI_ENTERPRISE_SERVER_URL"
OFFICIAL_TOKEN_ENV = "MCP_CREWAI_ENTERPRISE_BEARER_TOKEN"  # noqa: S105 - a variable name, not a secret
NOTIFY_SECRET_MIN = 16
"""The shortest reviewer-notice signing secret accepted."""


class Settings(StrictModel):
    """Everything crew-mcp can be configured with. See the README's configuration reference."""

    crews: list[CrewConfig] = Field(default_factory=list)
    config_path: str | None = None
    ledger_url: str | None = None
    wait_cap_seconds: float = Field(default=45.0, ge=0, le=600)
    recommended_wait_seconds: float | None = Field(default=None, ge=0, le=600)
    answer_margin_seconds: float = Field(default=10.0, gt=0, le=120)
    adopt_runs: bool = True
    approval_policy: Literal["model", "human"] = "model"
    approval_expiry_seconds: float | None = Field(default=None, gt=0)
    approval_expiry_action: Literal["flag", "reject"] = "flag"
    public_url: str | None = None
    typed_tools_max: int = Field(default=5, ge=0)
    keep_input_values: bool = True
    retention_days: float = Field(default=30.0, gt=0)
    retention_max_records: int = Field(default=100_000, ge=1)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["text", "json"] = "text"
    metrics_token: SecretStr | None = None
    owner: str | None = None
    simulator_time_scale: float = Field(default=1.0, gt=0, le=100)
    notify_webhook_url: str | None = None
    notify_webhook_secret: SecretStr | None = None
    notify_slack_url: SecretStr | None = None
    notify_excerpt_chars: int = Field(default=500, ge=0, le=2800)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    inbox: InboxConfig = Field(default_factory=InboxConfig)
    # Fleet (docs/fleet.md): several replicas behind a balancer.
    fleet_url: str | None = None
    lease_seconds: float = Field(default=15.0, ge=1, le=600)
    request_state_keys: list[SecretStr] = Field(default_factory=list)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=600)
    status_fresh_seconds: float = Field(default=0.0, ge=0, le=5)

    @field_validator("request_state_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        return [k for k in (x.strip() for x in v.split(",")) if k] if isinstance(v, str) else v

    @field_validator("request_state_keys")
    @classmethod
    def _key_length(cls, v: list[SecretStr]) -> list[SecretStr]:
        if any(len(k.get_secret_value().encode()) < 32 for k in v):
            raise ValueError("each key must be at least 32 bytes (e.g. `openssl rand -hex 32`)")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("notify_webhook_url")
    @classmethod
    def _notify_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v or None

    @field_validator("notify_slack_url")
    @classmethod
    def _slack_url(cls, v: SecretStr | None) -> SecretStr | None:
        # The URL is itself the credential: the message never repeats it. Plain http only to this machine (tests).
        url = v.get_secret_value() if v is not None else ""
        if url and not re.match(r"^(https://[^\s/]+|http://(127\.0\.0\.1|localhost|\[::1\])[:/])", url):
            raise ValueError("must be the https:// incoming-webhook URL Slack gave you")
        return v if url else None

    def notify_problem(self) -> str | None:
        """Why the reviewer-notice settings are unusable, or None when they are fine."""
        secret = self.notify_webhook_secret.get_secret_value() if self.notify_webhook_secret else ""
        if self.notify_webhook_url and len(secret) < NOTIFY_SECRET_MIN:
            return (
                f"CREW_MCP_NOTIFY_WEBHOOK_URL needs CREW_MCP_NOTIFY_WEBHOOK_SECRET, at least {NOTIFY_SECRET_MIN} "
                "characters (e.g. `openssl rand -hex 32`): receivers check each notice's HMAC signature with it."
            )
        return None

    @field_validator("recommended_wait_seconds")
    @classmethod
    def _wait_within_cap(cls, v: float | None, info: ValidationInfo) -> float | None:
        cap = info.data.get("wait_cap_seconds")
        if v is not None and cap is not None and v > cap:
            raise ValueError(f"must not exceed the wait cap ({cap:g} s): a hint may not promise a wait the server cuts")
        return v

    @property
    def recommended_wait(self) -> int:
        """The wait next-step hints suggest: the configured one, else 30 s, never above the cap."""
        wanted = self.recommended_wait_seconds if self.recommended_wait_seconds is not None else 30.0
        return int(min(wanted, self.wait_cap_seconds))

    def answer_bound(self, wait_seconds: float) -> float:
        """The longest a tool call may take when asked to wait ``wait_seconds``: the capped wait plus the margin."""
        return min(max(wait_seconds, 0.0), self.wait_cap_seconds) + self.answer_margin_seconds

    def secrets(self) -> list[str]:
        """Every secret this configuration holds, for redaction everywhere (results, the ledger, logs): crew tokens,
        the passwords of every URL (crews, ledger, fleet, inbox sessions), the OAuth and inbox client secrets, the
        metrics token, the notice signing secret, the Slack webhook URL (itself a credential) and the request-state
        keys."""
        found = [c.token.get_secret_value() for c in self.crews if c.token is not None]
        urls = [c.url for c in self.crews] + [
            self.ledger_url or "",
            self.fleet_url or "",
            self.inbox.sessions_url or "",
        ]
        found += [urlsplit(url).password or "" for url in urls]
        held = (
            self.auth.client_secret,
            self.inbox.client_secret,
            self.metrics_token,
            self.notify_webhook_secret,
            self.notify_slack_url,
            *self.request_state_keys,
        )
        found += [s.get_secret_value() for s in held if s is not None]
        return [s for s in found if s]

    @property
    def simulated(self) -> bool:
        """True when no crew is configured and the built-in simulator's crews are served."""
        return not self.crews or all(c.simulated for c in self.crews)


_ENV_FIELDS: dict[str, str] = {
    "LEDGER_URL": "ledger_url",
    "WAIT_CAP": "wait_cap_seconds",
    "RECOMMENDED_WAIT": "recommended_wait_seconds",
    "ANSWER_MARGIN": "answer_margin_seconds",
    "ADOPT_RUNS": "adopt_runs",
    "APPROVAL_POLICY": "approval_policy",
    "APPROVAL_EXPIRY": "approval_expiry_seconds",
    "APPROVAL_EXPIRY_ACTION": "approval_expiry_action",
    "PUBLIC_URL": "public_url",
    "TYPED_TOOLS_MAX": "typed_tools_max",
    "KEEP_INPUT_VALUES": "keep_input_values",
    "RETENTION_DAYS": "retention_days",
    "RETENTION_MAX_RECORDS": "retention_max_records",
    "RETENTION_INTERVAL": "retention_interval_seconds",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
    "METRICS_TOKEN": "metrics_token",
    "OWNER": "owner",
    "SIMULATOR_TIME_SCALE": "simulator_time_scale",
    "NOTIFY_WEBHOOK_URL": "notify_webhook_url",
    "NOTIFY_WEBHOOK_SECRET": "notify_webhook_secret",
    "NOTIFY_SLACK_URL": "notify_slack_url",
    "NOTIFY_EXCERPT_CHARS": "notify_excerpt_chars",
    "FLEET_URL": "fleet_url",
    "LEASE_SECONDS": "lease_seconds",
    "REQUEST_STATE_KEYS": "request_state_keys",
    "SHUTDOWN_GRACE": "shutdown_grace_seconds",
    "STATUS_FRESH": "status_fresh_seconds",
}


def _where(loc: tuple[int | str, ...], crews: list[Any], origins: Mapping[str, str], env_crew: Any) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "crews" and parts[1].isdigit():
        i = int(parts[1])
        entry = crews[i] if i < len(crews) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        crew = f"crew {name!r}" if name else f"crew #{i + 1}"
        field = ".".join(parts[2:]) or "(the crew entry)"
        var = origins.get(f"crew.{parts[2]}") if entry is env_crew and len(parts) > 2 else None
        return f"{crew}, field {field!r}" + (f" (from {var})" if var else "")
    var = (origins.get(".".join(parts[:2])) or origins.get(parts[0])) if parts else None
    return f"field {'.'.join(parts)!r}" + (f" (from {var})" if var else "")


def _validate(
    data: dict[str, Any], source: str, origins: Mapping[str, str] | None = None, env_crew: Any = None
) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raw = data.get("crews")
        crews: list[Any] = raw if isinstance(raw, list) else []
        problems = "; ".join(
            f"{_where(e['loc'], crews, origins or {}, env_crew)}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"Invalid configuration in {source}: {problems}") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.") from None
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc.strerror}.") from None


def _resolve_tokens(crews: list[Any], env: Mapping[str, str], source: str) -> None:
    """Replace ``token_env = "VAR"`` by the variable's value; warn about literal tokens in a file."""
    for i, crew in enumerate(crews):
        if not isinstance(crew, dict):
            continue
        label = f"crew {crew.get('name', f'#{i + 1}')!r}"
        var = crew.pop("token_env", None)
        if var is not None:
            if not isinstance(var, str) or not var:
                raise ConfigError(f"Invalid configuration in {source}: {label}, field 'token_env': must be a name.")
            if "token" in crew:
                raise ConfigError(f"Invalid configuration in {source}: {label} sets both 'token' and 'token_env'.")
            if var not in env:
                raise ConfigError(
                    f"Invalid configuration in {source}: {label}, field 'token_env': "
                    f"environment variable {var} is not set."
                )
            crew["token"] = env[var]
        elif "token" in crew:
            logger.warning(
                '%s: %s has a literal token in the file; prefer token_env = "VAR" so the file holds no secret',
                source,
                label,
            )


def _env_crew(env: Mapping[str, str]) -> dict[str, Any] | None:
    url = env.get(ENV_PREFIX + "CREW_URL") or env.get(OFFICIAL_URL_ENV)
    token = env.get(ENV_PREFIX + "CREW_TOKEN") or env.get(OFFICIAL_TOKEN_ENV)
    if not url:
        if token:
            raise ConfigError(
                f"A crew token is set but no crew URL: set {ENV_PREFIX}CREW_URL (or {OFFICIAL_URL_ENV}) too."
            )
        return None
    crew: dict[str, Any] = {"name": env.get(ENV_PREFIX + "CREW_NAME", "crew"), "url": url}
    if token:
        crew["token"] = token
    if env.get(ENV_PREFIX + "CREW_DESCRIPTION"):
        crew["description"] = env[ENV_PREFIX + "CREW_DESCRIPTION"]
    if env.get(ENV_PREFIX + "STATUS_PATH"):
        crew["status_path"] = env[ENV_PREFIX + "STATUS_PATH"]
    return crew


def load_settings(env: Mapping[str, str] | None = None, config_path: str | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from a config file, the environment and explicit overrides.

    Raises:
        ConfigError: the file is missing or invalid, or a value is unusable; the message names the
            file, the crew and the field.
    """
    env = os.environ if env is None else env
    path = config_path or env.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    source = "the environment"
    if path:
        file_path = Path(path).expanduser()
        data = _read_file(file_path)
        source = str(file_path)
        data["config_path"] = str(file_path)
        crews = data.get("crews", [])
        if isinstance(crews, list):
            _resolve_tokens(crews, env, source)
    env_crew = _env_crew(env)
    origins: dict[str, str] = {}
    if env_crew is not None:
        file_crews = data.get("crews", [])
        if isinstance(file_crews, list):
            keep = [c for c in file_crews if not (isinstance(c, dict) and c.get("name") == env_crew["name"])]
            data["crews"] = [*keep, env_crew]
        url_var = ENV_PREFIX + "CREW_URL" if env.get(ENV_PREFIX + "CREW_URL") else OFFICIAL_URL_ENV
        origins.update(
            {"crew.url": url_var, "crew.name": ENV_PREFIX + "CREW_NAME", "crew.status_path": ENV_PREFIX + "STATUS_PATH"}
        )
    for suffix, field in _ENV_FIELDS.items():
        if ENV_PREFIX + suffix in env:
            data[field] = env[ENV_PREFIX + suffix]
            origins[field] = ENV_PREFIX + suffix
    _table_env(data, env, origins, "auth", _AUTH_ENV)
    _table_env(data, env, origins, "inbox", _INBOX_ENV)
    data.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in overrides.items():
        if v is not None:
            origins.pop(k, None)
    settings = _validate(data, source, origins, env_crew)
    names = [c.name for c in settings.crews]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"Invalid configuration in {source}: crew names must be unique; repeated: {', '.join(dupes)}")
    _auth_resource(settings, source)
    problem = settings.notify_problem()
    if problem:
        raise ConfigError(f"Invalid configuration in {source}: {problem}")
    return settings


# ------------------------------------------------------------------------------------ auth (serve --http)
# CREW_MCP_AUTH and CREW_MCP_OAUTH_* fill the [auth] table (crew_mcp/auth/config.py); the names are public.

_AUTH_ENV: dict[str, str] = {
    "AUTH": "mode",
    "OAUTH_ISSUER": "issuer",
    "OAUTH_AUDIENCE": "audience",
    "OAUTH_JWKS_URL": "jwks_url",
    "OAUTH_INTROSPECTION_URL": "introspection_url",
    "OAUTH_CLIENT_ID": "client_id",
    "OAUTH_CLIENT_SECRET": "client_secret",
    "OAUTH_SCOPES": "scopes",
}


# The approvals inbox (crew_mcp/inbox/config.py), the [inbox] table.
_INBOX_ENV: dict[str, str] = {
    "INBOX_ENABLED": "enabled",
    "INBOX_CLIENT_ID": "client_id",
    "INBOX_CLIENT_SECRET": "client_secret",
    "INBOX_SESSIONS_URL": "sessions_url",
    "INBOX_SESSION_HOURS": "session_hours",
    "INBOX_POLL_SECONDS": "poll_seconds",
}


def _table_env(
    data: dict[str, Any], env: Mapping[str, str], origins: dict[str, str], table: str, names: Mapping[str, str]
) -> None:
    found = {field: ENV_PREFIX + suffix for suffix, field in names.items() if ENV_PREFIX + suffix in env}
    values = data.setdefault(table, {})
    if not found or not isinstance(values, dict):
        return  # a malformed table is reported by validation
    for field, var in found.items():
        values[field] = env[var]
        origins[f"{table}.{field}"] = var


def _auth_resource(settings: Settings, source: str) -> None:
    """This server's resource URL (RFC 8707) is its public URL + /mcp; OAuth cannot work without one."""
    auth = settings.auth
    if auth.resource_url is None and settings.public_url is not None:
        auth.resource_url = settings.public_url + "/mcp"
    if auth.mode == "oauth" and auth.resource_url is None:
        raise ConfigError(
            f"Invalid configuration in {source}: CREW_MCP_AUTH=oauth needs this server's public URL, "
            "the resource its tokens are issued for: set CREW_MCP_PUBLIC_URL (e.g. https://crew.example.com)."
        )
