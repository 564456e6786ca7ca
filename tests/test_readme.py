"""The README is tested: its Claude Desktop snippet runs, its Python example runs, its CLI lines parse."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from crew_mcp.cli import _parser
from crew_mcp.simulator import DEFAULT_TOKEN, Simulator, serve_simulator

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(marker: str, lang: str) -> str:
    text = README.read_text()
    start = text.index(marker)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no ```{lang} block after {marker}"
    return match.group(1)


@pytest.mark.slow
async def test_claude_desktop_snippet_runs_over_stdio_and_answers_a_tool_call(tmp_path: Path) -> None:
    config = json.loads(_block_after("<!-- claude-desktop-config", "json"))
    server = config["mcpServers"]["crewai"]
    command = shutil.which(server["command"], path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    assert command is not None, "the README's command is not installed"
    async with Simulator(clock="manual") as sim, serve_simulator(sim) as root:
        env = dict(server["env"])
        assert set(env) == {"CREW_MCP_CREW_URL", "CREW_MCP_CREW_TOKEN"}
        env["CREW_MCP_CREW_URL"] = f"{root}/trip_planner"
        env["CREW_MCP_CREW_TOKEN"] = DEFAULT_TOKEN
        env |= {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/l.db"}
        params = StdioServerParameters(command=command, args=server["args"], env=env)
        with anyio.fail_after(60):
            async with Client(params, mode="legacy") as client:
                result = await client.call_tool("list_inputs", {})
    assert not result.is_error
    assert result.structured_content is not None
    assert [i["name"] for i in result.structured_content["inputs"]] == ["budget", "interests", "duration", "age"]


async def test_python_client_example_runs_against_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    code = _block_after("<!-- python-client-example", "python")
    assert 'anyio.run(main, "https://your-crew-name.crewai.com", "your-crew-bearer-token")' in code
    body = code.replace('anyio.run(main, "https://your-crew-name.crewai.com", "your-crew-bearer-token")', "")
    namespace: dict[str, object] = {}
    exec(compile(body, "README.md", "exec"), namespace)
    main = namespace["main"]
    async with Simulator(clock="manual") as sim, serve_simulator(sim) as root:
        await main(f"{root}/research", DEFAULT_TOKEN)  # type: ignore[operator]
    out = capsys.readouterr().out
    assert "['topic']" in out
    assert "running" in out


def test_every_cli_line_in_the_readme_parses() -> None:
    block = _block_after("## Command line", "text")
    parser = _parser()
    for line in block.strip().splitlines():
        command = line.split("  ")[0].strip()
        for variant in _expand(command):
            argv = shlex.split(variant)[1:]
            parser.parse_args(argv)


def _expand(command: str) -> list[str]:
    """Turn the README's synopsis (``[opt]``, ``a|b``, ``X | Y``) into concrete command lines."""
    if " | " in command:
        head, tail = command.split(" | ", 1)
        prefix = head.rsplit(" ", 1)[0]
        return _expand(head) + _expand(f"{prefix} {tail}")
    concrete = re.sub(r"\[([^\]]*)\]", r"\1", command)
    concrete = re.sub(r"--(\w+)\|--\w+", r"--\1", concrete)
    substitutions = {
        "ID": "abc-123",
        "CREW": "trip_planner",
        "FILE": "crews.toml",
        "TEXT": "text",
        "key=value": "budget=1",
        "key:=JSON": "age:=35",
        "...": "",
        " C ": " c ",
        " X ": " x ",
        " S ": " running ",
    }
    for old, new in substitutions.items():
        concrete = concrete.replace(old, new)
    concrete = concrete.replace("--conversation C", "--conversation c")
    concrete = re.sub(r"--crew X\b", "--crew x", concrete)
    concrete = re.sub(r"--state S\b", "--state running", concrete)
    return [concrete]


def test_the_desktop_manifest_is_the_readme_snippet() -> None:
    manifest = README.parent / "manifests" / "claude_desktop_config.json"
    assert json.loads(manifest.read_text()) == json.loads(_block_after("<!-- claude-desktop-config", "json"))


def test_the_team_example_configures_a_server_that_serves_every_interface(tmp_path: Path) -> None:
    from crew_mcp.app import build_app
    from crew_mcp.settings import load_settings

    exports = _block_after("## Run it for a team", "bash")
    env = {"RESEARCH_TOKEN": "t1", "TRIP_PLANNER_TOKEN": "t2"}
    for line in exports.splitlines():
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("#", 1)[0].strip().split("=", 1)
            env[name] = value.strip('"')
    assert env["CREW_MCP_AUTH"] == "oauth" and "serve --http --host 0.0.0.0" in exports
    config = tmp_path / "team.toml"
    config.write_text(_block_after("<!-- team-config", "toml"), encoding="utf-8")
    settings = load_settings(env={**env, "CREW_MCP_LEDGER_URL": "memory://"}, config_path=str(config))
    auth = settings.auth
    assert auth.resource_url == "https://crew.example.com/mcp" and auth.scopes == [
        "crew:read",
        "crew:run",
        "crew:approve",
    ]
    assert auth.approval.owner is False and auth.approval.group == "crew-reviewers"
    assert auth.limits.kickoffs_per_minute == 10 and auth.limits.concurrent_waits == 2
    from crew_mcp.auth import ScopeGate

    assert isinstance(build_app(settings, host="0.0.0.0", port=8000).app, ScopeGate)  # protected, scopes and limits on
