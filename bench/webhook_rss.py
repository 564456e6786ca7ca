"""Memory of ``crew-mcp serve --http`` under forged webhook bodies (issue 10, defect 15).

``python -m bench.webhook_rss [--parallel 4] [--megabytes 200]`` starts the server (built-in simulated crews, so
webhooks are served) on 127.0.0.1, sends ``parallel`` chunked bodies of ``megabytes`` MB with a forged secret to
each webhook URL scheme, and prints the server's resident memory before and its peak (VmHWM) after each round.
Run it with ``PYTHONPATH`` pointing at another checkout to measure that one. Loopback only; bounded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import httpx2

MARKER = b"crew-mcp: serving MCP at "
CHUNK = 64 * 1024


def _memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024  # MB
    return fields


async def _forged(megabytes: int) -> AsyncIterator[bytes]:
    for _ in range(megabytes * 1024 * 1024 // CHUNK):
        yield b"x" * CHUNK


async def _round(url: str, path: str, parallel: int, megabytes: int) -> list[str]:
    outcomes: list[str] = []

    async def one() -> None:
        async with httpx2.AsyncClient(base_url=url, timeout=120) as http:
            try:
                answer = await http.post(path, content=_forged(megabytes), headers={"content-type": "application/json"})
                outcomes.append(str(answer.status_code))
            except httpx2.HTTPError as exc:  # the server answered early and closed mid-upload
                outcomes.append(type(exc).__name__)

    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:
            for _ in range(parallel):
                tg.start_soon(one)
    return outcomes


async def _announced(process: anyio.abc.Process) -> str:
    assert process.stdout is not None
    buffer = b""
    with anyio.fail_after(60):
        while MARKER not in buffer or b"\n" not in buffer.split(MARKER, 1)[1]:
            buffer += await process.stdout.receive()
    return buffer.split(MARKER, 1)[1].split(b"\n", 1)[0].decode().strip().removesuffix("/mcp")


async def main(parallel: int, megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HOME": tmp, "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp}/ledger.db"}
        command = [sys.executable, "-m", "crew_mcp", "serve", "--http", "--port", "0"]
        async with await anyio.open_process(command, env=env, cwd=tmp, stderr=None) as server:
            try:
                url = await _announced(server)
                async with httpx2.AsyncClient(base_url=url) as http:
                    assert (await http.get("/healthz")).status_code == 200
                print(f"idle: {_memory(server.pid)}")
                secret = "A" * 32
                paths = {"request-id URL": f"/webhooks/{'0' * 32}/{secret}/task", "old URL": f"/webhooks/{secret}/task"}
                for name, path in paths.items():
                    outcomes = await _round(url, path, parallel, megabytes)
                    print(f"{parallel} x {megabytes} MB to the {name}: {outcomes} -> {_memory(server.pid)}")
            finally:
                server.terminate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    anyio.run(main, args.parallel, args.megabytes)
