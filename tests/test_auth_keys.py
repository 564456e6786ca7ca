"""Static API keys: generated with enough entropy, stored only as hashes, verified in constant time, and never
echoed in a log line or an error."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx2
import pytest

from crew_mcp.auth import AuthConfig, KeyVerifier, build_verifier, generate_key, hash_key, key_config_entry
from crew_mcp.auth import principal_from_token as principal_of
from crew_mcp.errors import ConfigError
from crew_mcp.settings import load_settings


def test_a_new_key_is_prefixed_random_and_comes_with_its_hash() -> None:
    key, key_hash = generate_key()
    other, _ = generate_key()
    assert re.fullmatch(r"cmk_[A-Za-z0-9_-]{43}", key) and key != other
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", key_hash) and key_hash == hash_key(key)
    assert key.removeprefix("cmk_") not in key_hash


def keys_config(tmp_path: Path, *entries: str) -> AuthConfig:
    path = tmp_path / "crew-mcp.toml"
    path.write_text('[auth]\nmode = "keys"\n' + "".join(entries), encoding="utf-8")
    return load_settings(env={}, config_path=str(path)).auth


async def test_the_printed_config_entry_loads_and_its_key_verifies(tmp_path: Path) -> None:
    key, key_hash = generate_key()
    reader_key, reader_hash = generate_key()
    auth = keys_config(
        tmp_path,
        key_config_entry(key_hash, "ci-bot"),
        key_config_entry(reader_hash, 'dash "board"', ["crew:read"]),
    )
    async with httpx2.AsyncClient() as http:
        verifier = build_verifier(auth, http)
    assert isinstance(verifier, KeyVerifier)
    access = await verifier.verify_token(key)
    assert access is not None and access.subject == "ci-bot"
    assert access.scopes == ["crew:approve", "crew:read", "crew:run"]
    assert principal_of(access, auth).id == "key:ci-bot"
    reader = await verifier.verify_token(reader_key)
    assert reader is not None and reader.scopes == ["crew:read"]
    assert principal_of(reader, auth).id == 'key:dash "board"'


def test_a_config_entry_refuses_unknown_scopes() -> None:
    with pytest.raises(ValueError, match="crew:read"):
        key_config_entry(hash_key("cmk_x"), "bot", ["admin"])


async def test_unknown_keys_hashes_and_near_misses_are_refused_without_echo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, key_hash = generate_key()
    verifier = KeyVerifier(keys_config(tmp_path, key_config_entry(key_hash, "ci-bot")).keys)
    attempts = [generate_key()[0], key_hash, key[:-1], key + "x", key.upper(), ""]
    with caplog.at_level(logging.DEBUG):
        for attempt in attempts:
            assert await verifier.verify_token(attempt) is None
        assert await verifier.verify_token(key) is not None
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "not a configured API key" in text
    assert not any(a in text for a in attempts if a) and key not in text


def test_a_raw_key_pasted_as_hash_is_refused_without_echoing_it(tmp_path: Path) -> None:
    key, _ = generate_key()
    with pytest.raises(ConfigError) as info:
        keys_config(tmp_path, f'[[auth.keys]]\nhash = "{key}"\nprincipal = "bot"\n')
    assert "not its hash" in str(info.value)
    assert key not in str(info.value)


async def test_crew_mcp_keys_new_prints_the_key_once_and_config_lines_that_accept_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from crew_mcp.cli import main

    assert main(["keys", "new", "--principal", "ci-bot", "--scopes", "crew:read,crew:run", "--groups", "bots"]) == 0
    out = capsys.readouterr().out
    (key,) = re.findall(r"cmk_[A-Za-z0-9_-]{43}", out)
    assert out.count(key) == 1
    block = out[out.index("[[auth.keys]]") :]
    assert key not in block and hash_key(key) in block
    config = keys_config(tmp_path, block)
    verifier = KeyVerifier(config.keys)
    access = await verifier.verify_token(key)
    assert access is not None
    principal = principal_of(access, config)
    assert principal.id == "key:ci-bot" and principal.groups == {"bots"}
    assert principal.scopes == {"crew:read", "crew:run"}
    assert await verifier.verify_token(key + "x") is None


def test_crew_mcp_keys_new_refuses_an_unknown_scope_in_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    from crew_mcp.cli import main

    assert main(["keys", "new", "--principal", "ci-bot", "--scopes", "crew:write"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "cmk_" not in err
    assert err.startswith("crew-mcp: unknown scope crew:write; the scopes are crew:read, crew:run, crew:approve")
    assert err.count("\n") == 1
