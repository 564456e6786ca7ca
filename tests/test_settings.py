"""Configuration: environment crews (ours and the official CrewAI MCP server's names), TOML files with several
crews, token_env resolution, and errors that name the file, the crew and the field."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crew_mcp.errors import ConfigError
from crew_mcp.settings import load_settings

URL = "https://trip-abc.crewai.com"


def write(tmp_path: Path, text: str, name: str = "crew-mcp.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(env: dict[str, str], path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, config_path=path)
    return str(info.value)


def test_no_crew_anywhere_means_simulated() -> None:
    settings = load_settings(env={})
    assert settings.crews == []
    assert settings.simulated


def test_env_crew_from_crew_mcp_variables() -> None:
    settings = load_settings(
        env={"CREW_MCP_CREW_URL": URL + "/", "CREW_MCP_CREW_TOKEN": "tok-1", "CREW_MCP_CREW_NAME": "trips"}
    )
    (crew,) = settings.crews
    assert (crew.name, crew.url) == ("trips", URL)
    assert crew.token is not None and crew.token.get_secret_value() == "tok-1"
    assert not settings.simulated


def test_official_crewai_enterprise_variables_are_a_drop_in_replacement() -> None:
    settings = load_settings(
        env={"MCP_CREWAI_ENTERPRISE_SERVER_URL": URL, "MCP_CREWAI_ENTERPRISE_BEARER_TOKEN": "tok-official"}
    )
    (crew,) = settings.crews
    assert crew.url == URL
    assert crew.token is not None and crew.token.get_secret_value() == "tok-official"


def test_crew_mcp_variables_win_over_the_official_names() -> None:
    settings = load_settings(
        env={
            "MCP_CREWAI_ENTERPRISE_SERVER_URL": "https://official.example",
            "MCP_CREWAI_ENTERPRISE_BEARER_TOKEN": "official",
            "CREW_MCP_CREW_URL": URL,
            "CREW_MCP_CREW_TOKEN": "ours",
        }
    )
    (crew,) = settings.crews
    assert crew.url == URL
    assert crew.token is not None and crew.token.get_secret_value() == "ours"


def test_a_token_without_a_url_is_refused_naming_the_variable() -> None:
    message = config_error({"CREW_MCP_CREW_TOKEN": "tok"})
    assert "CREW_MCP_CREW_URL" in message and "tok" not in message.replace("token", "")


def test_config_file_with_several_crews_resolves_token_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
wait_cap_seconds = 20
[[crews]]
name = "trip_planner"
url = "{URL}"
token_env = "TRIP_TOKEN"
description = "Plans trips"
status_path = "/status/{{kickoff_id}}"
[crews.inputs.budget]
description = "Total budget"
example = "1000 USD"
[crews.inputs.age]
type = "integer"
[crews.timeouts]
read = 10

[[crews]]
name = "research"
url = "https://research.example/"
token_env = "RESEARCH_TOKEN"
""",
    )
    settings = load_settings(env={"TRIP_TOKEN": "t-1", "RESEARCH_TOKEN": "r-2"}, config_path=path)
    trip, research = settings.crews
    assert settings.config_path == path
    assert settings.wait_cap_seconds == 20
    assert trip.token is not None and trip.token.get_secret_value() == "t-1"
    assert research.token is not None and research.token.get_secret_value() == "r-2"
    assert research.url == "https://research.example"
    assert trip.status_path == "/status/{kickoff_id}"
    assert trip.inputs["age"].type == "integer" and trip.inputs["budget"].example == "1000 USD"
    assert trip.timeouts.read == 10
    assert not settings.simulated


def test_config_file_is_found_through_crew_mcp_config_and_env_settings_override_it(tmp_path: Path) -> None:
    path = write(tmp_path, f'wait_cap_seconds = 20\n[[crews]]\nname = "a"\nurl = "{URL}"\ntoken_env = "T"\n')
    settings = load_settings(env={"CREW_MCP_CONFIG": path, "T": "x", "CREW_MCP_WAIT_CAP": "5"})
    assert settings.config_path == path
    assert settings.wait_cap_seconds == 5
    assert [c.name for c in settings.crews] == ["a"]


def test_env_crew_is_added_to_the_file_crews(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[crews]]\nname = "a"\nurl = "{URL}"\ntoken_env = "T"\n')
    settings = load_settings(env={"T": "x", "CREW_MCP_CREW_URL": "https://b.example"}, config_path=path)
    assert [c.name for c in settings.crews] == ["a", "crew"]


def test_a_literal_token_in_the_file_is_accepted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, f'[[crews]]\nname = "lit"\nurl = "{URL}"\ntoken = "secret-in-file"\n')
    with caplog.at_level(logging.WARNING, logger="crew_mcp.settings"):
        settings = load_settings(env={}, config_path=path)
    assert settings.crews[0].token is not None
    (record,) = [r for r in caplog.records if r.name == "crew_mcp.settings"]
    message = record.getMessage()
    assert path in message and "'lit'" in message and "token_env" in message
    assert "secret-in-file" not in message


def test_token_env_naming_a_missing_variable_names_file_crew_field_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[crews]]\nname = "trip"\nurl = "{URL}"\ntoken_env = "TRIP_TOKEN"\n')
    message = config_error({}, path)
    assert path in message and "'trip'" in message and "token_env" in message and "TRIP_TOKEN" in message


def test_token_and_token_env_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[crews]]\nname = "trip"\nurl = "{URL}"\ntoken = "x"\ntoken_env = "T"\n')
    message = config_error({"T": "y"}, path)
    assert path in message and "'trip'" in message and "token_env" in message


@pytest.mark.parametrize(
    ("body", "crew", "field"),
    [
        (f'name = "trip"\nurl = "{URL}"\ncolour = "red"', "'trip'", "'colour'"),
        ('name = "trip"\nurl = "ftp://trip.example"', "'trip'", "'url'"),
        (f'name = "Trip-Planner"\nurl = "{URL}"', "'Trip-Planner'", "'name'"),
        (f'name = "trip"\nurl = "{URL}"\nstatus_path = "/somewhere"', "'trip'", "'status_path'"),
        (f'name = "trip"\nurl = "{URL}"\n[crews.inputs.age]\ntype = "int"', "'trip'", "'inputs.age.type'"),
        (f'name = "trip"\nurl = "{URL}"\n[crews.timeouts]\nconnect = -1', "'trip'", "'timeouts.connect'"),
        (f'url = "{URL}"', "crew #1", "'name'"),
    ],
    ids=["unknown-field", "bad-url", "bad-name", "bad-status-path", "bad-input-type", "bad-timeout", "no-name"],
)
def test_invalid_crew_entry_names_file_crew_and_field(tmp_path: Path, body: str, crew: str, field: str) -> None:
    path = write(tmp_path, "[[crews]]\n" + body + "\n")
    message = config_error({}, path)
    assert path in message and crew in message and field in message
    assert "\n" not in message


def test_unknown_top_level_field_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "wait_cap = 3\n")
    message = config_error({}, path)
    assert path in message and "'wait_cap'" in message


def test_duplicate_crew_names_are_refused_naming_the_name(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[crews]]\nname = "trip"\nurl = "{URL}"\n[[crews]]\nname = "trip"\nurl = "{URL}"\n')
    message = config_error({}, path)
    assert path in message and "unique" in message and "trip" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[[crews]\nname = \n")
    message = config_error({}, path)
    assert path in message and "TOML" in message


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nowhere.toml")
    message = config_error({}, path)
    assert path in message and "does not exist" in message


@pytest.mark.parametrize("crews", ['crews = "trip"', "crews = [1]"], ids=["not-a-list", "not-a-table"])
def test_malformed_crews_with_an_env_crew_is_a_config_error_not_a_crash(tmp_path: Path, crews: str) -> None:
    path = write(tmp_path, crews + "\n")
    message = config_error({"CREW_MCP_CREW_URL": URL}, path)
    assert path in message and "crews" in message


def test_env_crew_with_a_bad_url_names_the_variable() -> None:
    message = config_error({"CREW_MCP_CREW_URL": "trip.example"})
    assert "CREW_MCP_CREW_URL" in message and "'url'" in message


def test_bad_env_setting_names_the_variable() -> None:
    message = config_error({"CREW_MCP_WAIT_CAP": "soon"})
    assert "CREW_MCP_WAIT_CAP" in message
