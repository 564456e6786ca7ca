"""A fleet on loopback for tests and benchmarks: ``crew-mcp serve --http`` replicas (real processes) sharing a Redis,
behind HAProxy (Debian's package) configured from the shipped manifests/haproxy/haproxy.cfg."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import Process
from hitl_support import eventually
from process_support import announced_url, free_port, reap, tail

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_HAPROXY = ROOT / "manifests" / "haproxy" / "haproxy.cfg"
STATE_KEY = "f" * 64  # a shared request-state key (test value)


def require_haproxy() -> str:
    """The haproxy binary; skip (fail under CI) when it is missing (scripts/ensure-haproxy installs it)."""
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)
    if found is None:
        reason = "haproxy is not installed (run scripts/ensure-haproxy)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the fleet tests", pytrace=False)
        pytest.skip(reason)
    return found


@asynccontextmanager
async def redis_server(port: int, workdir: Path, *, persistent: bool = False) -> AsyncIterator[Process]:
    """A private redis-server on 127.0.0.1:``port``, answering PING, stopped on exit. ``persistent``: it keeps its
    data across restarts (an append-only file in ``workdir``); else it keeps nothing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/ensure-redis installs it)", pytrace=False)
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir), "--save", ""]
    argv += ["--appendonly", "yes" if persistent else "no"]
    process = await anyio.open_process(argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with anyio.fail_after(10):
            while not await _redis_answers(port):  # noqa: ASYNC110 - another process
                await anyio.sleep(0.02)
        yield process
    finally:
        await reap(process)


async def _redis_answers(port: int) -> bool:
    try:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"PING\r\n")
            return (await stream.receive()).startswith(b"+PONG")
    except (OSError, anyio.EndOfStream):
        return False


def haproxy_config(port: int, servers: dict[str, str], timeouts: dict[str, str] | None = None) -> str:
    """The shipped configuration with its ``bind`` port and ``server`` lines replaced (and, for a test that needs
    it, some ``timeout`` lines), everything else as shipped."""
    text = SHIPPED_HAPROXY.read_text()
    for name, value in (timeouts or {}).items():
        text, n = re.subn(rf"(?m)^(\s*)timeout {name} \S+$", rf"\g<1>timeout {name} {value}", text)
        assert n == 1, f"the shipped config has no 'timeout {name}'"
    text = re.sub(r"(?m)^(\s*)bind \S+$", rf"\g<1>bind 127.0.0.1:{port}", text)
    lines = [f"    server {name} {address}" for name, address in servers.items()]
    text = re.sub(r"(?m)^\s*server .*\n?", "", text).rstrip() + "\n" + "\n".join(lines) + "\n"
    return text


@dataclass
class Replica:
    """One ``crew-mcp serve --http`` process."""

    name: str
    root: str
    process: Process
    log: Path
    replica_id: str = ""

    @property
    def mcp(self) -> str:
        return f"{self.root}/mcp"

    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass
class Fleet:
    """Replicas behind a balancer, sharing one Redis (``prefix``)."""

    balancer: str
    replicas: list[Replica]
    redis_url: str
    prefix: str
    env: dict[str, str]
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    @property
    def mcp(self) -> str:
        return f"{self.balancer}/mcp"

    def by_id(self, replica_id: str) -> Replica:
        return next(r for r in self.replicas if r.replica_id == replica_id)

    async def lease_holder(self, kickoff_id: str) -> str | None:
        import redis.asyncio

        async with redis.asyncio.Redis.from_url(self.redis_url.split("?", 1)[0], decode_responses=True) as r:
            value = await r.get(f"{self.prefix}fleet:lease:{kickoff_id}")
        return value if isinstance(value, str) else None


async def health(http: httpx2.AsyncClient, root: str) -> dict[str, Any]:
    """GET /healthz (asserts JSON)."""
    r = await http.get(f"{root}/healthz")
    body: dict[str, Any] = r.json()
    body["http_status"] = r.status_code
    return body


async def start_replica(stack: AsyncExitStack, name: str, env: dict[str, str], workdir: Path) -> Replica:
    """Start one replica (killed when ``stack`` closes) and wait until its service answers /healthz."""
    log = workdir / f"{name}.log"
    errlog = stack.enter_context(log.open("wb"))
    process = await anyio.open_process(
        [sys.executable, "-m", "crew_mcp", "serve", "--http", "--port", "0"],
        env=env,
        cwd=str(workdir),
        stderr=errlog,
    )
    stack.push_async_callback(reap, process, stop=None)
    with anyio.fail_after(30):
        root = (await announced_url(process, log)).removesuffix("/mcp")
    async with httpx2.AsyncClient(timeout=5) as http:

        async def answer() -> dict[str, Any]:
            try:
                return await health(http, root)
            except httpx2.TransportError:
                return {"http_status": None}  # not listening yet

        body = await eventually(answer, lambda b: b["http_status"] == 200, timeout=30)
    return Replica(name, root, process, log, replica_id=body["replica"])


async def start_haproxy(
    stack: AsyncExitStack, port: int, replicas: list[Replica], workdir: Path, timeouts: dict[str, str] | None = None
) -> str:
    """HAProxy on ``port`` in front of ``replicas``; returns once every replica answered through it."""
    binary = require_haproxy()
    servers = {r.name: r.root.removeprefix("http://") for r in replicas}
    config = workdir / "haproxy.cfg"
    config.write_text(haproxy_config(port, servers, timeouts))
    log = stack.enter_context((workdir / "haproxy.log").open("wb"))
    process = await anyio.open_process([binary, "-db", "-f", str(config)], stdout=log, stderr=log)
    stack.push_async_callback(reap, process, stop=None)
    root = f"http://127.0.0.1:{port}"
    seen: set[str] = set()
    async with httpx2.AsyncClient(timeout=5) as http:
        with anyio.fail_after(30):
            while len(seen) < len(replicas):
                if process.returncode is not None:
                    raise AssertionError(f"haproxy exited:\n{tail(workdir / 'haproxy.log')}")
                try:
                    body = await health(http, root)
                    if body["http_status"] == 200:
                        seen.add(body["replica"])
                except (httpx2.TransportError, ValueError):
                    pass
                await anyio.sleep(0.02)
    return root


def crews_toml(sim_root: str, crews: list[str]) -> str:
    return "".join(f'[[crews]]\nname = "{n}"\nurl = "{sim_root}/{n}"\ntoken_env = "SIM_TOKEN"\n\n' for n in crews)


@asynccontextmanager
async def fleet(
    workdir: Path,
    redis_url: str,
    sim_root: str,
    *,
    replicas: int = 3,
    crews: list[str],
    timeouts: dict[str, str] | None = None,
    **env: str,
) -> AsyncIterator[Fleet]:
    """``replicas`` crew-mcp processes on ``redis_url`` behind HAProxy; the simulator's webhooks go through it."""
    require_haproxy()
    (workdir / "crews.toml").write_text(crews_toml(sim_root, crews))
    port = free_port()
    prefix = dict(p.split("=", 1) for p in redis_url.split("?", 1)[1].split("&"))["prefix"]
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    full = {
        **base,
        "PYTHONUNBUFFERED": "1",
        "SIM_TOKEN": "sim-token",
        "CREW_MCP_CONFIG": str(workdir / "crews.toml"),
        "CREW_MCP_LEDGER_URL": redis_url,
        "CREW_MCP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CREW_MCP_OWNER": "fleet",
        "CREW_MCP_LEASE_SECONDS": "2",
        "CREW_MCP_SHUTDOWN_GRACE": "3",
        "CREW_MCP_REQUEST_STATE_KEYS": STATE_KEY,
        "CREW_MCP_LOG_LEVEL": "WARNING",
        **env,
    }
    async with AsyncExitStack() as stack:
        started: list[Replica] = []

        async def one(i: int) -> None:
            started.append(await start_replica(stack, f"r{i + 1}", full, workdir))

        async with anyio.create_task_group() as tg:
            for i in range(replicas):
                tg.start_soon(one, i)
        started.sort(key=lambda r: r.name)
        balancer = await start_haproxy(stack, port, started, workdir, timeouts)
        yield Fleet(balancer, started, redis_url, prefix, full, stack)
