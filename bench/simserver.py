"""The AMP simulator as its own process for the benchmarks: ``python -m bench.simserver CREWS.json``.

Prints its root URL on stdout, then serves (uvicorn on 127.0.0.1, a free port, wall clock) until terminated.
"""

from __future__ import annotations

import sys

import anyio

from crew_mcp.simulator import Simulator, load_crews, serve_simulator

from .common import TOKEN


async def main(path: str) -> None:
    sim = Simulator(load_crews(path), token=TOKEN)
    async with serve_simulator(sim) as root:
        print(root, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
