"""Run a packed Claude Desktop bundle the way its manifest says a host runs it, and list its tools.

    .venv/bin/python scripts/check_bundle.py dist/crew-mcp-<version>.mcpb      (make bundle runs it)

The bundle is unpacked into a temporary directory; ``mcp_config`` gets ``${__dirname}`` and the user_config
values substituted as a host does (a field with a default gets its default, here an empty crew URL; the token,
which has none, stays an unexpanded placeholder, as a host may leave it), then the SDK's Client starts the command
over stdio (``uv run ...``, so uv installs crew-mcp from the bundle's pyproject.toml) and checks that the tools the
manifest names are served by the built-in simulated crews. Needs ``uv`` on PATH; it uses the Python it finds
(``UV_PYTHON_DOWNLOADS=never``: this check must not depend on downloading an interpreter).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

PASS_THROUGH = ("PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_CACHE_DIR", "UV_INDEX_URL", "UV_DEFAULT_INDEX")


def _substitute(value: str, dirname: str, user_config: dict[str, Any]) -> str:
    value = value.replace("${__dirname}", dirname)
    for key, option in user_config.items():
        if "default" in option:
            value = value.replace(f"${{user_config.{key}}}", str(option["default"]))
    return value


async def _check(bundle: Path, home: Path) -> None:
    root = home / "bundle"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root)
    manifest = json.loads((root / "manifest.json").read_text())
    config = manifest["server"]["mcp_config"]
    user_config = manifest.get("user_config", {})
    args = [_substitute(a, str(root), user_config) for a in config.get("args", [])]
    env = {k: v for k, v in os.environ.items() if k in PASS_THROUGH}
    env |= {"HOME": str(home), "UV_PYTHON_DOWNLOADS": "never"}
    env |= {k: _substitute(v, str(root), user_config) for k, v in config.get("env", {}).items()}
    params = StdioServerParameters(command=config["command"], args=args, env=env, cwd=str(home))
    start = time.perf_counter()
    with anyio.fail_after(600):  # the first run installs crew-mcp's dependencies
        async with Client(stdio_client(params)) as client:
            served = {t.name for t in (await client.list_tools()).tools}
            print(f"check-bundle: {config['command']} {' '.join(args)} answered in {time.perf_counter() - start:.1f} s")
            crews = await client.call_tool("list_crews", {})
    named = {t["name"] for t in manifest.get("tools", [])}
    if not named <= served:
        raise SystemExit(f"check-bundle: the manifest names tools the server does not list: {sorted(named - served)}")
    if crews.is_error or not (crews.structured_content or {}).get("simulated"):
        raise SystemExit(f"check-bundle: list_crews did not answer with the simulated crews: {crews.content}")
    print(f"check-bundle: {len(served)} tools listed, the manifest's {len(named)} among them; simulated crews served")


def main(bundle: str) -> None:
    """Unpack and run ``bundle``; exit non-zero with one line on failure."""
    with tempfile.TemporaryDirectory(prefix="crew-mcp-bundle-") as home:
        anyio.run(_check, Path(bundle), Path(home))


if __name__ == "__main__":
    main(sys.argv[1])
