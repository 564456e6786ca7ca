"""Entry point of the Claude Desktop bundle: ``crew-mcp serve`` over stdio.

The host runs it with the bundle's dependencies installed by uv (``server.type = "uv"``) and the crew URL and
token from the bundle's ``user_config`` in ``CREW_MCP_CREW_URL`` / ``CREW_MCP_CREW_TOKEN``.
"""

from __future__ import annotations

import os
import sys

from crew_mcp.cli import main

# An optional field the user left empty may reach us as "" or, from a host that does not substitute it, as the
# placeholder itself; both mean "not set" (no URL: the built-in simulated crews).
for name in ("CREW_MCP_CREW_URL", "CREW_MCP_CREW_TOKEN"):
    if os.environ.get(name, "").startswith("${user_config.") or os.environ.get(name) == "":
        os.environ.pop(name, None)

sys.exit(main(["serve"]))
