"""Measure the container image: its size, its cold start and an idle HTTP server's memory.

    .venv/bin/python scripts/measure_image.py [IMAGE]      (make test-docker runs it after the smoke tests)

Cold start is the wall time from spawning ``docker run -i --rm --network none IMAGE`` to the answer of the first
``tools/list`` over stdio (the MCP SDK's Client does the handshake in between), taken several times; the bare
cost of a container (``docker run --entrypoint /bin/true``) is measured too, to tell Docker's part from
crew-mcp's. Numbers go to stdout; nothing is asserted (speed is reported, never tested).
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

RUNS = 5
ENV = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")}


def _docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout.strip()


async def _cold_start(image: str) -> float:
    name = f"crew-mcp-measure-{uuid.uuid4().hex[:12]}"
    params = StdioServerParameters(
        command="docker", args=["run", "-i", "--rm", "--name", name, "--network", "none", image], env=ENV
    )
    start = time.perf_counter()
    try:
        with anyio.fail_after(120):
            async with Client(stdio_client(params)) as client:
                await client.list_tools()
                return time.perf_counter() - start
    finally:
        await anyio.run_process(["docker", "rm", "--force", "--volumes", name], check=False)


def _bare_container(image: str) -> float:
    start = time.perf_counter()
    _docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/true", image)
    return time.perf_counter() - start


def _idle_http_memory(image: str) -> str:
    """Memory of an idle ``serve --http`` container once it answers, as ``docker stats`` reports it."""
    name = f"crew-mcp-measure-{uuid.uuid4().hex[:12]}"
    _docker("run", "-d", "--rm", "--name", name, "--network", "host", image, "serve", "--http", "--port", "0")
    try:
        for _ in range(100):
            if "serving MCP at" in _docker("logs", name, check=False):
                break
            time.sleep(0.1)
        return _docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name)
    finally:
        _docker("rm", "--force", "--volumes", name, check=False)


def _compressed_size(image: str) -> int:
    """What a registry would store and a pull would fetch, roughly: the saved image, gzipped."""
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    return len(gzip.compress(saved, compresslevel=6))


def _fmt(samples: list[float]) -> str:
    return (
        f"median {statistics.median(samples):.2f} s (min {min(samples):.2f}, max {max(samples):.2f}, n={len(samples)})"
    )


def main(image: str) -> None:
    """Print the measurements for ``image``."""
    size = json.loads(_docker("image", "inspect", image))[0]["Size"]
    print(f"image {image}: {size / 1e6:.1f} MB uncompressed, {_compressed_size(image) / 1e6:.1f} MB gzipped")
    print(f"bare container start and exit: {_fmt([_bare_container(image) for _ in range(RUNS)])}")
    cold = [anyio.run(_cold_start, image) for _ in range(RUNS)]
    print(f"cold start, docker run -> first tools/list answered over stdio: {_fmt(cold)}")
    print(f"idle serve --http memory: {_idle_http_memory(image)}")
    print(f"docker engine {_docker('version', '--format', '{{.Server.Version}}')}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crew-mcp:dev")
