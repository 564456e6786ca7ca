"""The container image, run for real by a Docker engine (opt-in: ``make test-docker``, pytest marker ``docker``).

``make test-docker`` starts an engine if none answers (scripts/ensure-docker), builds the image
(scripts/build-image) and runs these tests against it; ``CREW_MCP_IMAGE`` names another image. Containers reach
nothing but themselves: stdio ones run with ``--network none``, HTTP ones with ``--network host`` on 127.0.0.1
and port 0 (crew-mcp binds only loopback addresses until it has remote authentication). The crews are the
built-in simulated ones. A missing engine or image fails these tests rather than skipping them: they only run
when asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from anyio.streams.text import TextReceiveStream
from hitl_support import ok
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from process_support import announced_url, tail

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("CREW_MCP_IMAGE", "crew-mcp:dev")
TRIP = {"budget": "1000 USD", "interests": "food, hikes", "duration": "7 days", "age": 35}
DOCKER_CALL = 30  # s: one tool call into a container (a cold image on a loaded machine)
TOOLS = {"list_crews", "list_inputs", "kickoff_crew", "get_status", "resume_with_feedback", "list_executions"}


def docker(*args: str) -> str:
    """Run a docker command; its stdout, or the test fails with its stderr."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"docker {' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image under test, which must exist already (make test-docker builds it)."""
    done = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"no image {IMAGE} ({done.stderr.strip()}); build it with `make test-docker`", pytrace=False)
    return IMAGE


@pytest.fixture
def volume() -> Iterator[str]:
    """A fresh named volume for /data, removed afterwards."""
    name = f"crew-mcp-test-{uuid.uuid4().hex[:12]}"
    docker("volume", "create", name)
    yield name
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True, check=False)


@asynccontextmanager
async def stdio_container(image: str, *docker_args: str) -> AsyncIterator[Client]:
    """``docker run -i --rm IMAGE`` (stdio, the image's default command) driven by the SDK's Client."""
    name = f"crew-mcp-test-{uuid.uuid4().hex[:12]}"
    args = ["run", "-i", "--rm", "--name", name, "--network", "none", *docker_args, image]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")}
    params = StdioServerParameters(command="docker", args=args, env=env)
    try:
        with anyio.fail_after(60):
            async with Client(stdio_client(params), mode="legacy") as client:
                yield client
    finally:
        await anyio.run_process(["docker", "rm", "--force", "--volumes", name], check=False)


def test_image_runs_as_a_numeric_non_root_user_with_a_healthcheck_and_the_ledger_on_a_volume(image: str) -> None:
    config = json.loads(docker("image", "inspect", image))[0]["Config"]
    assert config["User"] == "10001:10001"  # numeric, so Kubernetes can verify runAsNonRoot
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "/data" in config["Volumes"]
    assert "CREW_MCP_LEDGER_URL=sqlite:////data/ledger.db" in config["Env"]
    assert config["Entrypoint"][-1] == "crew-mcp" and config["Cmd"] == ["serve"]
    server = json.loads((ROOT / "manifests" / "server.json").read_text())
    assert config["Labels"]["io.modelcontextprotocol.server.name"] == server["name"]


async def test_stdio_container_lists_tools_and_runs_a_simulated_crew(image: str, volume: str) -> None:
    async with stdio_container(image, "-v", f"{volume}:/data") as client:
        with anyio.fail_after(30):
            tools = {t.name for t in (await client.list_tools()).tools}
        assert tools >= TOOLS
        crews = await ok(client, "list_crews", timeout=DOCKER_CALL)
        assert crews["simulated"] is True
        assert {"trip_planner", "research"} <= {c["name"] for c in crews["crews"]}
        run = await ok(client, "kickoff_crew", {"crew": "trip_planner", "inputs": TRIP}, timeout=DOCKER_CALL)
        assert run["kickoff_id"] and run["state"] == "running"


async def test_the_ledger_outlives_the_container_on_a_shared_volume(image: str, volume: str) -> None:
    same_owner = ("-v", f"{volume}:/data", "-e", "CREW_MCP_OWNER=docker-test")
    async with stdio_container(image, *same_owner) as first:
        started = await ok(
            first, "kickoff_crew", {"crew": "research", "inputs": {"topic": "tides"}}, timeout=DOCKER_CALL
        )
    async with stdio_container(image, *same_owner) as second:
        listed = await ok(second, "list_executions", timeout=DOCKER_CALL)
    assert started["kickoff_id"] in [r["kickoff_id"] for r in listed["executions"]]
    assert "ledger.db" in docker(
        "run", "--rm", "--network", "none", "-v", f"{volume}:/data", "--entrypoint", "ls", image
    )


@asynccontextmanager
async def http_container(image: str, log: Path) -> AsyncIterator[tuple[str, str]]:
    """``serve --http`` on 127.0.0.1, port 0, host network; yields (container name, root URL)."""
    name = f"crew-mcp-test-{uuid.uuid4().hex[:12]}"
    # A short health interval so the HEALTHCHECK verdict comes within the test's bound.
    cmd = ["docker", "run", "--rm", "--name", name, "--network", "host", "--health-interval", "1s", image]
    cmd += ["serve", "--http", "--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as errors:
        process = await anyio.open_process(cmd, stderr=errors)
        try:
            with anyio.fail_after(60):
                url = await announced_url(process, log)
            yield name, url.removesuffix("/mcp")
        finally:
            await anyio.run_process(["docker", "stop", "--time", "5", name], check=False)
            with anyio.move_on_after(15):
                await process.wait()
            await process.aclose()


async def test_http_container_answers_healthz_lists_tools_in_both_eras_and_turns_healthy(
    image: str, tmp_path: Path
) -> None:
    log = tmp_path / "container.log"
    async with http_container(image, log) as (name, root):
        async with httpx2.AsyncClient() as http:
            with anyio.fail_after(30):
                health = await http.get(f"{root}/healthz")
        assert health.status_code == 200, tail(log)
        assert health.json()["status"] == "ok"
        for mode in ("auto", "legacy"):
            with anyio.fail_after(30):
                async with Client(f"{root}/mcp", mode=mode) as client:
                    assert {t.name for t in (await client.list_tools()).tools} >= TOOLS
        assert await health_verdict(name) == "healthy"


async def health_verdict(name: str) -> str:
    """The container's first HEALTHCHECK verdict, from Docker's event stream (replayed from its start)."""
    started = (await anyio.run_process(["docker", "inspect", "--format", "{{.State.StartedAt}}", name])).stdout
    cmd = ["docker", "events", "--since", started.decode().strip(), "--filter", f"container={name}"]
    cmd += ["--filter", "event=health_status", "--format", "{{.Status}}"]
    async with await anyio.open_process(cmd) as events:
        assert events.stdout is not None
        buffer = ""
        with anyio.fail_after(60):
            async for chunk in TextReceiveStream(events.stdout):
                buffer += chunk
                if "\n" in buffer:
                    events.terminate()
                    return buffer.split("\n", 1)[0].removeprefix("health_status:").strip()
    raise AssertionError(f"docker events ended without a health verdict for {name}")


async def test_the_deploy_docs_claude_desktop_snippet_runs_the_image(image: str, volume: str) -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    start = text.index("<!-- docker-desktop-config")
    block = text[
        text.index("```json\n", start) + len("```json\n") : text.index("```", text.index("```json\n", start) + 7)
    ]
    server = json.loads(block)["mcpServers"]["crewai"]
    assert server["command"] == "docker"
    args = list(server["args"])
    assert args[:3] == ["run", "-i", "--rm"] and args[-1] == "crew-mcp:dev"
    # The image under test, a throwaway volume, no network, and no crew configured (the -e names are passed on
    # unset): the simulated crews.
    args[-1:] = [image]
    args[args.index("crew-mcp-data:/data")] = f"{volume}:/data"
    args[1:1] = ["--network", "none"]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")}
    params = StdioServerParameters(command="docker", args=args, env=env)
    with anyio.fail_after(60):
        async with Client(stdio_client(params), mode="legacy") as client:
            crews = await ok(client, "list_crews", timeout=DOCKER_CALL)
    assert crews["simulated"] is True
