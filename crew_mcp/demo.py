"""``crew-mcp demo``: the whole flow, in a terminal, through a real MCP connection.

It starts ``crew-mcp serve`` (stdio) against the built-in simulator as a subprocess, connects the MCP
SDK's ``Client`` to it, and walks a run of the ``research`` crew: list inputs, kick off, progress, a
pause for review, a rejection with feedback, the re-run, an approval, and the final result.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

__all__ = ["run_demo"]

CREW = "research"
TOPIC = "How MCP servers make AI crews usable from chat"
REJECT_FEEDBACK = "Add a short section on costs and name one risk."
APPROVE_FEEDBACK = "Looks good, ship it."
_SCRUB = ("CREW_MCP_CREW_URL", "CREW_MCP_CREW_TOKEN", "CREW_MCP_CONFIG", "MCP_CREWAI_ENTERPRISE_SERVER_URL")


class DemoError(Exception):
    """The run did not go the way the demo expects."""


def _say(title: str, body: str = "") -> None:
    print(f"\n\033[1m▶ {title}\033[0m" if sys.stdout.isatty() else f"\n> {title}", flush=True)
    if body:
        print(textwrap.indent(body.strip(), "  "), flush=True)


def _server(ledger_dir: str, time_scale: float) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.setdefault("CREW_MCP_LEDGER_URL", f"sqlite:///{Path(ledger_dir) / 'demo-ledger.db'}")
    env["CREW_MCP_SIMULATOR_TIME_SCALE"] = str(time_scale)
    env["CREW_MCP_OWNER"] = "demo"
    return StdioServerParameters(command=sys.executable, args=["-m", "crew_mcp", "serve"], env=env)


async def _call(client: Client, tool: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args, **kw)
    text = "".join(getattr(c, "text", "") for c in result.content)
    if result.is_error or result.structured_content is None:
        raise DemoError(f"{tool} failed: {text}")
    data: dict[str, Any] = result.structured_content
    return data


async def _progress(progress: float, total: float | None, message: str | None) -> None:
    done = f"[{int(progress)}/{int(total)}] " if total else ""
    print(f"    … {done}{message or ''}", flush=True)


async def _wait_until(client: Client, kickoff_id: str, wanted: str) -> dict[str, Any]:
    for _ in range(20):
        run = await _call(
            client, "get_status", {"kickoff_id": kickoff_id, "wait_seconds": 30}, progress_callback=_progress
        )
        if run["state"] == wanted:
            return run
        if run["state"] not in ("running", "unknown"):
            raise DemoError(f"expected {wanted}, the run is {run['state']}: {run.get('error') or ''}")
    raise DemoError(f"the run never reached {wanted}")


async def _walkthrough(client: Client) -> None:
    crews = await _call(client, "list_crews", {})
    _say("list_crews", "\n".join(f"{c['name']}: {c['description']}" for c in crews["crews"]))
    inputs = await _call(client, "list_inputs", {"crew": CREW})
    _say(f"list_inputs(crew={CREW!r})", "\n".join(f"{i['name']}: {i['description']}" for i in inputs["inputs"]))

    run = await _call(client, "kickoff_crew", {"crew": CREW, "inputs": {"topic": TOPIC}, "conversation_id": "demo"})
    kickoff_id = run["kickoff_id"]
    _say(f"kickoff_crew → kickoff_id {kickoff_id}", f"state: {run['state']}")

    _say("get_status(wait_seconds=30): following progress until the crew asks for review")
    run = await _wait_until(client, kickoff_id, "waiting_for_human")
    _say(f"paused for review of task {run['pending']['task_id']}", run["pending"].get("output") or "")

    _say(f"resume_with_feedback(approve=false, feedback={REJECT_FEEDBACK!r})")
    await _call(
        client, "resume_with_feedback", {"kickoff_id": kickoff_id, "approve": False, "feedback": REJECT_FEEDBACK}
    )
    run = await _wait_until(client, kickoff_id, "waiting_for_human")
    revised = run["pending"].get("output") or ""
    _say("the crew re-ran the task with the feedback; revised output", revised)
    if REJECT_FEEDBACK not in revised:
        raise DemoError("the revised output does not reflect the feedback")

    _say(f"resume_with_feedback(approve=true, feedback={APPROVE_FEEDBACK!r})")
    await _call(
        client, "resume_with_feedback", {"kickoff_id": kickoff_id, "approve": True, "feedback": APPROVE_FEEDBACK}
    )
    run = await _wait_until(client, kickoff_id, "completed")
    _say("completed: final output", (run.get("output") or {}).get("text") or "")

    runs = await _call(client, "list_executions", {"conversation_id": "demo", "limit": 5})
    _say(
        "list_executions(conversation_id='demo')",
        "\n".join(f"{r['kickoff_id']}: {r['state']}" for r in runs["executions"]),
    )


async def run_demo(time_scale: float = 1.0) -> int:
    """Run the walkthrough; 0 when every step behaved as expected."""
    print("crew-mcp demo: a crew run with a human review, driven through a real MCP connection")
    print("(server: `crew-mcp serve` over stdio, built-in simulated crews; no CrewAI account needed)")
    with tempfile.TemporaryDirectory(prefix="crew-mcp-demo-") as tmp:
        try:
            with anyio.fail_after(300):
                async with Client(_server(tmp, time_scale), mode="legacy") as client:
                    await _walkthrough(client)
        except DemoError as exc:
            print(f"\ndemo failed: {exc}", file=sys.stderr)
            return 1
        except TimeoutError:
            print("\ndemo failed: it took longer than 5 minutes", file=sys.stderr)
            return 1
    print("\nDone: inputs → kickoff → progress → review → rejection → re-run → approval → result.")
    return 0
