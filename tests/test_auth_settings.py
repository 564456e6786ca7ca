"""Auth configuration: the CREW_MCP_AUTH / CREW_MCP_OAUTH_* names, the [auth] table with [[auth.keys]], one-line
errors naming the variable or field, and the pure policy functions (scopes, crews, approvals)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.server.auth.provider import AccessToken

from crew_mcp.auth import (
    AuthConfig,
    Principal,
    allowed_crews,
    effective_scopes,
    may_approve,
    may_read,
    missing_scope,
    principal_from_token,
    scope_for_tool,
)
from crew_mcp.auth.keys import generate_key
from crew_mcp.errors import ConfigError
from crew_mcp.settings import load_settings

ISSUER = "https://idp.example.com/realms/team"
PUBLIC = "https://crew.example.com"
OAUTH_ENV = {"CREW_MCP_AUTH": "oauth", "CREW_MCP_OAUTH_ISSUER": ISSUER, "CREW_MCP_PUBLIC_URL": PUBLIC}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "crew-mcp.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(env: dict[str, str], path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, config_path=path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_auth_is_off_by_default() -> None:
    auth = load_settings(env={}).auth
    assert auth.mode == "none" and auth.scopes == [] and auth.keys == []


def test_oauth_from_the_environment_defaults_the_audience_to_the_public_mcp_url() -> None:
    env = {
        **OAUTH_ENV,
        "CREW_MCP_OAUTH_SCOPES": "crew:read, crew:run crew:approve",
        "CREW_MCP_OAUTH_JWKS_URL": ISSUER + "/certs",
    }
    auth = load_settings(env=env).auth
    assert (auth.mode, auth.issuer, auth.jwks_url) == ("oauth", ISSUER, ISSUER + "/certs")
    assert auth.resource_url == PUBLIC + "/mcp" and auth.expected_audience == PUBLIC + "/mcp"
    assert auth.scopes == ["crew:read", "crew:run", "crew:approve"]


def test_an_explicit_audience_wins_and_introspection_takes_client_credentials() -> None:
    env = {
        **OAUTH_ENV,
        "CREW_MCP_OAUTH_AUDIENCE": "https://api.crew.example.com",
        "CREW_MCP_OAUTH_INTROSPECTION_URL": ISSUER + "/introspect",
        "CREW_MCP_OAUTH_CLIENT_ID": "crew-mcp",
        "CREW_MCP_OAUTH_CLIENT_SECRET": "s3cret-value",
    }
    auth = load_settings(env=env).auth
    assert auth.expected_audience == "https://api.crew.example.com"
    assert auth.client_secret is not None and auth.client_secret.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(auth)


def test_the_auth_table_with_keys_approvals_crews_and_limits(tmp_path: Path) -> None:
    _, key_hash = generate_key()
    path = write(
        tmp_path,
        f"""
[auth]
mode = "keys"
[auth.approval]
owner = false
group = "reviewers"
[auth.limits]
kickoffs_per_minute = 5
[[auth.keys]]
hash = "{key_hash}"
principal = "ci-bot"
scopes = ["crew:run"]
groups = ["bots"]
[[auth.crew_access]]
group = "bots"
crews = ["research"]
""",
    )
    auth = load_settings(env={}, config_path=path).auth
    (key,) = auth.keys
    assert (key.hash, key.principal, key.scopes, key.groups) == (key_hash, "ci-bot", ["crew:run"], ["bots"])
    assert auth.approval.group == "reviewers" and not auth.approval.owner
    assert auth.limits.kickoffs_per_minute == 5 and auth.limits.concurrent_waits == 4


def test_environment_overrides_the_auth_table(tmp_path: Path) -> None:
    path = write(tmp_path, f'public_url = "{PUBLIC}"\n[auth]\nmode = "oauth"\nissuer = "https://old.example"\n')
    auth = load_settings(env={"CREW_MCP_OAUTH_ISSUER": ISSUER}, config_path=path).auth
    assert auth.issuer == ISSUER


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({"CREW_MCP_AUTH": "ldap"}, ["CREW_MCP_AUTH", "'auth.mode'"]),
        ({**OAUTH_ENV, "CREW_MCP_OAUTH_ISSUER": "idp.example.com"}, ["CREW_MCP_OAUTH_ISSUER", "http"]),
        ({**OAUTH_ENV, "CREW_MCP_OAUTH_SCOPES": "crew:admin"}, ["CREW_MCP_OAUTH_SCOPES", "crew:read"]),
        ({"CREW_MCP_AUTH": "oauth", "CREW_MCP_PUBLIC_URL": PUBLIC}, ["CREW_MCP_OAUTH_ISSUER"]),
        ({"CREW_MCP_AUTH": "oauth", "CREW_MCP_OAUTH_ISSUER": ISSUER}, ["CREW_MCP_PUBLIC_URL"]),
        ({"CREW_MCP_AUTH": "keys"}, ["[[auth.keys]]"]),
        ({**OAUTH_ENV, "CREW_MCP_OAUTH_INTROSPECTION_URL": ISSUER + "/i"}, ["CREW_MCP_OAUTH_CLIENT_SECRET"]),
    ],
    ids=["bad-mode", "bad-issuer", "unknown-scope", "no-issuer", "no-public-url", "keys-without-keys", "no-secret"],
)
def test_bad_auth_environment_is_one_line_naming_what_to_fix(env: dict[str, str], needles: list[str]) -> None:
    message = config_error(env)
    assert all(n in message for n in needles), message


def test_a_client_secret_never_appears_in_an_error() -> None:
    env = {**OAUTH_ENV, "CREW_MCP_OAUTH_CLIENT_SECRET": "s3cret-value", "CREW_MCP_OAUTH_INTROSPECTION_URL": "nope"}
    assert "s3cret-value" not in config_error(env)


@pytest.mark.parametrize(
    ("table", "needles"),
    [
        ('algorithms = ["HS256"]', ["'auth.algorithms'", "HS256"]),
        ('algorithms = ["none"]', ["'auth.algorithms'", "none"]),
        ('mode = "keys"\n[[auth.keys]]\nhash = "cmk_abc"\nprincipal = "a"', ["'auth.keys.0.hash'", "not its hash"]),
        ('mode = "keys"\n[[auth.keys]]\nhash = "md5:00"\nprincipal = "a"', ["'auth.keys.0.hash'", "sha256:"]),
        ('[[auth.crew_access]]\ncrews = ["a"]', ["'auth.crew_access.0'", "exactly one"]),
        ("colour = 1", ["'auth.colour'"]),
    ],
    ids=["hmac-alg", "alg-none", "raw-key", "bad-hash", "rule-without-subject", "unknown-field"],
)
def test_bad_auth_table_names_file_and_field(tmp_path: Path, table: str, needles: list[str]) -> None:
    path = write(tmp_path, "[auth]\n" + table + "\n")
    message = config_error({}, path)
    assert path in message and all(n in message for n in needles), message


# ------------------------------------------------------------------------------------------ policy


def token(claims: dict[str, object], scopes: list[str] | None = None) -> AccessToken:
    return AccessToken(token="t", client_id="app", scopes=scopes or [], subject="s", claims=claims)


def test_principal_is_issuer_and_subject_and_keys_have_their_own_form() -> None:
    config = AuthConfig()
    alice = principal_from_token(token({"iss": ISSUER, "sub": "u-1", "groups": ["reviewers"]}), config)
    assert alice.id == f"oauth:{ISSUER}#u-1" and alice.groups == {"reviewers"}
    bot = principal_from_token(token({"iss": "crew-mcp:keys", "sub": "ci-bot", "groups": []}), config)
    assert bot.id == "key:ci-bot"
    other_idp = principal_from_token(token({"iss": "https://other.example", "sub": "u-1"}), config)
    assert other_idp.id != alice.id


def test_principal_and_group_claims_are_configurable() -> None:
    config = AuthConfig(principal_claim="oid", groups_claim="roles")
    who = principal_from_token(token({"iss": ISSUER, "sub": "x", "oid": "o-9", "roles": "a b"}), config)
    assert who.id == f"oauth:{ISSUER}#o-9" and who.groups == {"a", "b"}
    with pytest.raises(ValueError, match="principal"):
        principal_from_token(token({"iss": ISSUER, "sub": "x"}), config)


def test_run_and_approve_imply_read() -> None:
    assert effective_scopes(["crew:run"]) == {"crew:run", "crew:read"}
    assert effective_scopes(["crew:approve", "openid"]) == {"crew:approve", "crew:read", "openid"}


def test_tools_map_to_scopes() -> None:
    assert scope_for_tool("get_status") == "crew:read"
    assert scope_for_tool("kickoff_crew") == scope_for_tool("run_trip_planner") == "crew:run"
    assert scope_for_tool("resume_with_feedback") == "crew:approve"


def test_only_configured_scopes_are_enforced() -> None:
    reader = Principal("oauth:x#r", scopes=effective_scopes(["crew:read"]))
    assert missing_scope(reader, "crew:run", AuthConfig()) is None
    config = AuthConfig(scopes=["crew:run"])
    assert missing_scope(reader, "crew:run", config) == "crew:run"
    assert missing_scope(reader, "crew:approve", config) is None
    assert (
        missing_scope(
            reader, "crew:run", AuthConfig(mode="keys", keys=[{"hash": "sha256:" + "0" * 64, "principal": "k"}])
        )
        == "crew:run"
    )
    runner = Principal("oauth:x#w", scopes=effective_scopes(["crew:run"]))
    assert missing_scope(runner, "crew:read", AuthConfig(scopes=["crew:read", "crew:run"])) is None


def test_crews_are_limited_per_principal_or_group() -> None:
    alice = Principal("oauth:x#alice", groups=frozenset({"research"}))
    bob = Principal("oauth:x#bob")
    assert allowed_crews(alice, AuthConfig()) is None
    config = AuthConfig.model_validate(
        {
            "crew_access": [
                {"group": "research", "crews": ["research"]},
                {"principal": "oauth:x#alice", "crews": ["trip_planner"]},
                {"principal": "oauth:x#admin", "crews": ["*"]},
            ]
        }
    )
    assert allowed_crews(alice, config) == frozenset({"research", "trip_planner"})
    assert allowed_crews(bob, config) == frozenset()
    assert allowed_crews(Principal("oauth:x#admin"), config) is None


def test_owner_and_approvers_group_may_approve_and_read_pending_runs() -> None:
    owner, reviewer, stranger = "oauth:x#alice", Principal("oauth:x#rita", groups=frozenset({"reviewers"})), "oauth:x#s"
    alice = Principal(owner)
    default = AuthConfig()
    assert may_approve(alice, owner, default) and not may_approve(reviewer, owner, default)
    both = AuthConfig.model_validate({"approval": {"group": "reviewers"}})
    assert may_approve(alice, owner, both) and may_approve(reviewer, owner, both)
    group_only = AuthConfig.model_validate({"approval": {"owner": False, "group": "reviewers"}})
    assert not may_approve(alice, owner, group_only) and may_approve(reviewer, owner, group_only)
    assert may_read(alice, owner, group_only, awaiting_approval=False)
    assert may_read(reviewer, owner, both, awaiting_approval=True)
    assert not may_read(reviewer, owner, both, awaiting_approval=False)
    assert not may_read(Principal(stranger), owner, both, awaiting_approval=True)


# ------------------------------------------------------------------------------------------ package surface


def test_every_public_name_resolves() -> None:
    import crew_mcp.auth

    for name in crew_mcp.auth.__all__:
        assert getattr(crew_mcp.auth, name) is not None
    with pytest.raises(AttributeError):
        _ = crew_mcp.auth.nothing_here


def test_loading_settings_does_not_import_the_sdk_or_the_jose_library() -> None:
    import subprocess
    import sys

    code = "import sys, crew_mcp.settings; print(sorted(m for m in ('mcp', 'jwt', 'httpx2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_each_tool_needs_the_scope_of_what_it_does_and_only_starting_runs_is_rate_limited() -> None:
    from crew_mcp.auth.config import scope_for_tool, starts_run

    assert [scope_for_tool(t) for t in ("get_status", "app_run_view", "cancel_run", "app_decide", "run_trips")] == [
        "crew:read",
        "crew:read",
        "crew:run",
        "crew:approve",
        "crew:run",
    ]
    # Someone past the kickoff limit must still be able to stop what they started.
    assert [starts_run(t) for t in ("kickoff_crew", "run_trips", "cancel_run", "resume_with_feedback")] == [
        True,
        True,
        False,
        False,
    ]
