"""SSE priming events on the wire (issue 12, deliverable 4): every 2025-era POST stream starts with an event that
carries an ``id`` and a ``retry`` field, and every later event has an id, so a client whose connection drops during
a wait knows where to resume (``Last-Event-ID``) and when to reconnect.

The bytes are read raw with httpx2 from crew-mcp's HTTP app under uvicorn on 127.0.0.1, in front of the simulator
served for real; the crew pauses for review at once, so the streamed wait ends without any time passing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
from hitl_support import instant_review_crew, loopback_socket, serve_on

from crew_mcp.app import build_app
from crew_mcp.fleet.events import RETRY_MS
from crew_mcp.settings import load_settings
from crew_mcp.simulator import Simulator, serve_simulator

LEGACY = "2025-11-25"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def sse_events(raw: bytes) -> list[dict[str, str]]:
    """The events of an SSE body: each a mapping of field name to value (``data`` lines joined)."""
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value
        if fields:
            events.append(fields)
    return events


async def test_a_streamed_wait_starts_with_a_priming_event_carrying_an_id_and_a_retry(tmp_path: Path) -> None:
    crew = instant_review_crew()
    async with Simulator([crew], clock="manual") as sim, serve_simulator(sim) as sim_root:
        config = tmp_path / "crews.toml"
        config.write_text(f'[[crews]]\nname = "{crew.name}"\nurl = "{sim_root}/{crew.name}"\ntoken_env = "T"\n')
        settings = load_settings(
            env={"T": "sim-token", "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db"}, config_path=str(config)
        )
        sock = loopback_socket()
        app = build_app(settings, host="127.0.0.1", port=sock.getsockname()[1])
        async with serve_on(app, sock) as root, httpx2.AsyncClient(base_url=root, timeout=20) as http:
            init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
            hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}
            opened = await http.post("/mcp", json=hello, headers=HEADERS)
            assert opened.status_code == 200, opened.text
            session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": LEGACY}
            ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await http.post("/mcp", json=ready, headers={**HEADERS, **session})).status_code == 202
            arguments: dict[str, Any] = {"crew": crew.name, "inputs": {}, "wait_seconds": 30}
            params = {"name": "kickoff_crew", "arguments": arguments, "_meta": {"progressToken": "wait-1"}}
            wait = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}
            with anyio.fail_after(20):
                async with http.stream("POST", "/mcp", json=wait, headers={**HEADERS, **session}) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    raw = b"".join([chunk async for chunk in response.aiter_raw()])

    events = sse_events(raw)
    priming, *rest = events
    assert priming.get("id") and priming.get("retry") == str(RETRY_MS) and priming.get("data", "") == "", priming
    messages = [json.loads(e["data"]) for e in rest]
    assert any(m.get("method") == "notifications/progress" for m in messages), messages  # the wait was streamed
    assert messages[-1]["id"] == 2 and messages[-1]["result"]["structuredContent"]["state"] == "waiting_for_human"
    ids = [e.get("id") for e in events]
    assert all(ids) and len(set(ids)) == len(ids), events  # every event can be resumed after
