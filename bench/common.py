"""Shared pieces of the benchmarks: the simulator process, server launchers, statistics and reporting."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TOKEN = "bench-sim-token"
OWNER = "bench"

# Zero-latency crews: `hold` stays running for hours, `instant` completes at once, `short` is a realistic quick run.
BENCH_CREWS: list[dict[str, Any]] = [
    {
        "name": "hold",
        "inputs": [{"name": "topic"}],
        "tasks": [{"id": "long_task", "agent": "Worker", "duration": 36000.0}],
    },
    {
        "name": "instant",
        "inputs": [{"name": "topic"}],
        "tasks": [{"id": "quick_task", "agent": "Worker", "duration": 0.0, "output": "Done with {topic}."}],
    },
    {
        "name": "short",
        "inputs": [{"name": "topic"}],
        "tasks": [
            {"id": "research_task", "agent": "Researcher", "duration": 1.5},
            {"id": "write_task", "agent": "Writer", "duration": 1.5, "output": "Report on {topic}."},
        ],
    },
]


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


@dataclass
class Figure:
    """One line of the summary: what was measured, against which baseline, the ratio and the target."""

    name: str
    value: str
    baseline: str
    ratio: str
    target: str
    met: bool | None  # None: informational, no target


@dataclass
class Section:
    title: str
    body: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ processes


def base_env() -> dict[str, str]:
    """What every spawned server gets: the stdio client does not inherit os.environ, so pass it explicitly."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Upstream:
    """The simulator process: its root URL and a config file describing its crews to crew-mcp."""

    root: str
    workdir: Path

    def crew_url(self, crew: str) -> str:
        return f"{self.root}/{crew}"

    def crew_mcp_env(self, ledger: Path | None = None) -> dict[str, str]:
        """Environment for a crew-mcp server configured with the bench crews and its own SQLite ledger."""
        ledger = ledger or Path(tempfile.mkdtemp(prefix="ledger-", dir=self.workdir)) / "ledger.db"
        return {
            **base_env(),
            "CREW_MCP_CONFIG": str(self.workdir / "crews.toml"),
            "BENCH_SIM_TOKEN": TOKEN,
            "CREW_MCP_LEDGER_URL": f"sqlite:///{ledger}",
            "CREW_MCP_OWNER": OWNER,
            "CREW_MCP_LOG_LEVEL": "WARNING",
        }

    def baseline_env(self) -> dict[str, str]:
        return {**base_env(), "BENCH_CREW_URL": self.crew_url("hold"), "BENCH_CREW_TOKEN": TOKEN}

    async def counts(self) -> dict[str, dict[str, int]]:
        """Requests the simulator received, by crew then ``"METHOD /route"`` (its control API)."""
        async with httpx2.AsyncClient() as http:
            r = await http.get(f"{self.root}/_sim/counts", headers={"Authorization": f"Bearer {TOKEN}"})
            r.raise_for_status()
            data: dict[str, dict[str, int]] = r.json()["counts"]
            return data

    async def status_requests(self, crew: str) -> int:
        return (await self.counts()).get(crew, {}).get("GET /status", 0)


def _write_config(workdir: Path, root: str) -> None:
    lines = []
    for crew in BENCH_CREWS:
        lines += [
            "[[crews]]",
            f'name = "{crew["name"]}"',
            f'url = "{root}/{crew["name"]}"',
            'token_env = "BENCH_SIM_TOKEN"',
            "[crews.inputs.topic]",
            'description = "What to work on"',
            "",
        ]
    (workdir / "crews.toml").write_text("\n".join(lines))


@contextmanager
def simulator() -> Iterator[Upstream]:
    """Serve the AMP simulator with the bench crews in its own process (uvicorn on 127.0.0.1, port 0)."""
    with tempfile.TemporaryDirectory(prefix="crew-mcp-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "sim_crews.json").write_text(json.dumps({"crews": BENCH_CREWS}))
        proc = subprocess.Popen(
            [PY, "-m", "bench.simserver", str(workdir / "sim_crews.json")],
            cwd=ROOT,
            env=base_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            root = proc.stdout.readline().strip()
            if not root.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"the simulator did not start (said {root!r})")
            _write_config(workdir, root)
            yield Upstream(root=root, workdir=workdir)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def crew_mcp_stdio(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=PY, args=["-m", "crew_mcp", "serve"], cwd=str(ROOT), env=env)


def baseline_stdio(kind: str, env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=PY, args=["-m", "bench.baselines", kind], cwd=str(ROOT), env=env)


@dataclass
class HttpServer:
    url: str
    proc: subprocess.Popen[str]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)


@asynccontextmanager
async def http_server(args: list[str], env: dict[str, str]) -> AsyncIterator[HttpServer]:
    """Start a server that prints ``...serving MCP at http://127.0.0.1:PORT/mcp`` on its first stdout line."""
    proc = subprocess.Popen([PY, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert proc.stdout is not None
        stdout = proc.stdout
        line = await anyio.to_thread.run_sync(stdout.readline)
        url = line.strip().rsplit(" ", 1)[-1]
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"{args} did not start (said {line!r})")
        async with httpx2.AsyncClient() as http:  # wait until the lifespan has run
            health = url.removesuffix("/mcp") + "/healthz"
            for _ in range(200):
                try:
                    if (await http.get(health)).status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.05)
        yield HttpServer(url=url, proc=proc)
    finally:
        proc.terminate()
        try:
            await anyio.to_thread.run_sync(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def children() -> set[int]:
    """This process's direct children (the stdio servers the SDK client spawned)."""
    out: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            out.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    import platform

    import mcp

    version = getattr(mcp, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("mcp")
    return (
        f"{os.cpu_count()} CPU ({cpu}){mem}; Linux {platform.release()}; Python {platform.python_version()}; "
        f"mcp {version}; load average at start {load}"
    )
