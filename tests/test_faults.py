"""The fault suite: every upstream fault by every tool that calls upstream, through a real fault-injecting proxy.

crew-mcp talks over loopback to ``tests/faultproxy.py``, which forwards to the simulator served by uvicorn; the proxy
breaks one route the way the case says, either before forwarding (the crew never hears of it) or after (the crew
acted; only its answer is broken). Each case asserts what the model is told (started / may have started / not
started, or the status as last known), the ledger's record, and how many requests reached the proxy and the crew.

Time: a case that can only end by running out of time (a stall, a trickle, a read retried through 5xx) runs with a
short answer margin (``MARGIN``) and says so with that number ("within 0.3 s"): that is how the bound is asserted,
no clock is read here. Every other case runs with a margin it never needs (``ROOMY``), so a loaded machine cannot
turn a clear answer into a timeout. ``anyio.fail_after`` only keeps a broken case from hanging the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from faultproxy import Fault, FaultProxy
from hitl_support import OWNER, instant_review_crew
from mcp import Client, MCPError

from crew_mcp.ledger import RecordState, RunRecord
from crew_mcp.runtime import Runtime
from crew_mcp.server import build_server
from crew_mcp.settings import CrewConfig, Settings, TimeoutConfig
from crew_mcp.simulator import DEFAULT_TOKEN, Simulator, builtin_crews, serve_simulator

MARGIN = 0.3
ROOMY = 10.0
WAIT_CAP = 0.5
TIMEOUTS = TimeoutConfig(connect=0.5, read=1.0, total=1.5)
GUARD = 15.0
"""Seconds after which a case is called hung (far above every configured limit; never a timing assertion)."""

FaultMaker = Callable[[bool], Fault]
FAULTS: dict[str, FaultMaker] = {
    "500": lambda after: Fault.http(500, after=after),
    "502": lambda after: Fault.http(502, after=after),
    "503": lambda after: Fault.http(503, retry_after=1, after=after),
    "429": lambda after: Fault.http(429, retry_after=1, after=after),
    "reset": lambda after: Fault.reset(after=after),
    "truncated": lambda after: Fault.truncate(after=after),
    "html": lambda after: Fault.html(after=after),
    "invalid_json": lambda after: Fault.invalid_json(after=after),
    "wrong_shape": lambda after: Fault.wrong_shape(after=after),
    "stall": lambda after: Fault.stall(after=after),
    "trickle": lambda after: Fault.trickle(chunk=1, interval=0.05, after=after),
    "401": lambda after: Fault.http(401, after=after),
    "404": lambda after: Fault.http(404, after=after),
}
REFUSED = {"401", "404"}
"""The crew itself refuses: the request is not forwarded (a real crew answers these without acting)."""
UNREADABLE = {"html", "invalid_json", "wrong_shape"}
SLOW = {"stall", "trickle"}
RETRIED = {"500", "502", "503", "429", "reset", "truncated"}
"""Faults a read is tried again after (with back-off), so only the bound ends them."""
BOUND = f"within {MARGIN:g} s"


@dataclass
class Answer:
    """What a tool call gave the host: a result, a tool error (the model reads it) or a protocol error."""

    error: bool
    host_error: bool
    text: str
    data: dict[str, Any]


@dataclass
class Rig:
    sim: Simulator
    proxy: FaultProxy
    client: Client
    runtime: Runtime

    async def ask(self, tool: str, args: dict[str, Any] | None = None) -> Answer:
        try:
            with anyio.fail_after(GUARD):
                r = await self.client.call_tool(tool, args or {})
        except MCPError as exc:  # what only the operator can fix (a refused crew token)
            return Answer(True, True, str(exc), {})
        text = "".join(getattr(c, "text", "") for c in r.content)
        return Answer(r.is_error, False, text, r.structured_content or {})

    async def records(self) -> list[RunRecord]:
        assert self.runtime.service is not None
        return await self.runtime.service.ledger.list(owner=OWNER, limit=50)

    def proxied(self, method: str, path: str) -> int:
        return self.proxy.count(method, path)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[tuple[Simulator, str]]:
    """One simulator (wall clock: runs move on their own) under uvicorn for the whole module."""
    async with Simulator([*builtin_crews(), instant_review_crew()]) as sim, serve_simulator(sim) as root:
        yield sim, root


@asynccontextmanager
async def rig_for(sim: Simulator, root: str, *, margin: float) -> AsyncIterator[Rig]:
    """A fresh proxy and a fresh crew-mcp (memory ledger, short limits) behind it; the proxy closes first, so
    requests still held (stall, trickle) end at once instead of at their timeouts."""
    async with FaultProxy(root) as proxy:
        crews = [
            CrewConfig(name=name, url=f"{proxy.url}/{name}", token=DEFAULT_TOKEN, timeouts=TIMEOUTS)
            for name in ("research", "instant")
        ]
        settings = Settings(
            crews=crews,
            ledger_url="memory://",
            owner=OWNER,
            wait_cap_seconds=WAIT_CAP,
            answer_margin_seconds=margin,
        )
        runtime = Runtime()
        async with Client(build_server(settings, runtime=runtime)) as client:
            try:
                yield Rig(sim, proxy, client, runtime)
            finally:
                await proxy.aclose()


@pytest.fixture
def upstream_rig(upstream: tuple[Simulator, str]) -> Callable[[bool], AbstractAsyncContextManager[Rig]]:
    """Opens a rig whose margin is tight (``bounded``: the case ends by running out of time) or roomy."""

    def open_rig(bounded: bool) -> AbstractAsyncContextManager[Rig]:
        return rig_for(*upstream, margin=MARGIN if bounded else ROOMY)

    return open_rig


OpenRig = Callable[[bool], AbstractAsyncContextManager[Rig]]


async def _running(rig: Rig) -> str:
    run = await rig.ask("kickoff_crew", {"crew": "research", "inputs": {"topic": "faults"}})
    assert not run.error and run.data["state"] == "running", run.text
    return str(run.data["kickoff_id"])


async def _paused(rig: Rig) -> str:
    run = await rig.ask("kickoff_crew", {"crew": "instant", "inputs": {}})
    kid = str(run.data["kickoff_id"])
    for _ in range(50):
        if (await rig.ask("get_status", {"kickoff_id": kid})).data.get("state") == "waiting_for_human":
            return kid
        await anyio.sleep(0.02)
    raise AssertionError("the instant crew never paused")


# ---------------------------------------------------------------------------------------------- list_inputs


@pytest.mark.parametrize("fault", FAULTS)
async def test_list_inputs(upstream_rig: OpenRig, fault: str) -> None:
    async with upstream_rig(fault in RETRIED | SLOW) as rig:
        await _list_inputs(rig, fault)


async def _list_inputs(rig: Rig, fault: str) -> None:
    rig.proxy.on("GET", "/research/inputs", FAULTS[fault](False), times=None)
    started = len(rig.sim.kickoff_ids("research"))

    answer = await rig.ask("list_inputs", {"crew": "research"})

    assert answer.error
    if fault == "401":
        assert answer.host_error and "refused crew-mcp's token (HTTP 401)" in answer.text
    elif fault == "404":
        assert "failed to list its inputs with HTTP 404" in answer.text
    elif fault in UNREADABLE:
        assert "is not the CrewAI AMP API (HTTP 200)" in answer.text
    else:  # retried as a safe read until the bound
        assert f"did not answer GET /inputs {BOUND}. Nothing was started" in answer.text
    assert rig.proxied("GET", "/research/inputs") >= 1
    assert (await rig.records(), len(rig.sim.kickoff_ids("research"))) == ([], started)


# --------------------------------------------------------------------------------------------- kickoff_crew


@pytest.mark.parametrize("fault", FAULTS)
async def test_kickoff_crew(upstream_rig: OpenRig, fault: str) -> None:
    async with upstream_rig(fault in SLOW) as rig:
        await _kickoff_crew(rig, fault)


async def _kickoff_crew(rig: Rig, fault: str) -> None:
    assert not (await rig.ask("list_inputs", {"crew": "research"})).error  # cached: the fault hits the POST
    after = fault not in REFUSED
    rig.proxy.on("POST", "/research/kickoff", FAULTS[fault](after))
    started = len(rig.sim.kickoff_ids("research"))

    answer = await rig.ask("kickoff_crew", {"crew": "research", "inputs": {"topic": "faults"}, "wait_seconds": 5})

    [record] = await rig.records()
    assert rig.proxied("POST", "/research/kickoff") == 1, "a kickoff is never sent twice"
    assert len(rig.sim.kickoff_ids("research")) - started == (1 if after else 0)
    if fault in REFUSED:  # not started
        assert answer.error and "No run was started." in answer.text
        assert answer.host_error == (fault == "401")
        assert record.state is RecordState.KICKOFF_FAILED
        return
    # may have started: a result with the request id and what the user can do, never "failed and safe"
    assert not answer.error and answer.data["state"] == "may_have_started" and "kickoff_id" not in answer.data
    assert record.request_id in answer.text and "Do not start another run" in answer.data["next_step"]
    assert "No run was started" not in answer.text and "nothing to follow up" not in answer.text
    if fault in SLOW:  # the bound answered; the POST goes on and records the run when its answer comes
        assert f"has not answered {BOUND}. So a run may have started" in answer.text
        assert record.state is RecordState.UNCONFIRMED
    else:
        assert "So a run may have started" in answer.text and "It was not sent again" in answer.text
        assert record.state is RecordState.MAY_HAVE_STARTED
        if fault in UNREADABLE:
            assert "received the kickoff request and answered HTTP 200, but its answer could not be read" in answer.text


# --------------------------------------------------------------------------------------------- get_status


@pytest.mark.parametrize("wait", [0, 5], ids=["no-wait", "wait"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_get_status(upstream_rig: OpenRig, fault: str, wait: float) -> None:
    async with upstream_rig(fault in RETRIED | SLOW) as rig:
        await _get_status(rig, fault, wait)


async def _get_status(rig: Rig, fault: str, wait: float) -> None:
    kid = await _running(rig)
    # Both status paths, so auto mode's probe of the other one meets the fault too.
    rig.proxy.on("GET", "/research/*status*", FAULTS[fault](False), times=None)

    answer = await rig.ask("get_status", {"kickoff_id": kid, "wait_seconds": wait})

    [record] = await rig.records()
    assert rig.proxied("GET", "/research/*status*") >= 1
    assert record.kickoff_id == kid
    if fault == "401":
        assert answer.host_error and "refused crew-mcp's token (HTTP 401)" in answer.text
    elif fault == "404":  # the crew does not know a run the ledger holds: an error with a next step
        assert answer.error and f"no longer knows run {kid}" in answer.text and "start a new run" in answer.text
        assert record.state is RecordState.NOT_FOUND
    elif fault in UNREADABLE:  # understood as "not understood", never as "still working"
        assert answer.error and "is not the CrewAI AMP API (HTTP 200)" in answer.text
        assert "still working" not in answer.text and record.state is RecordState.RUNNING
    else:  # no usable answer in time: the handle, the last known status, and the next step
        assert not answer.error and answer.data["kickoff_id"] == kid and answer.data["state"] == "running"
        limit = WAIT_CAP if wait else MARGIN  # a wait ends at the cap; a plain read at the margin
        assert f"gave no usable answer to a status read within {limit:g} s" in answer.text
        assert f"get_status(kickoff_id={kid!r}" in answer.data["next_step"]
        assert record.state is RecordState.RUNNING


# ----------------------------------------------------------------------------------- resume_with_feedback


@pytest.mark.parametrize("fault", FAULTS)
async def test_resume_with_feedback(upstream_rig: OpenRig, fault: str) -> None:
    async with upstream_rig(fault in SLOW) as rig:
        await _resume_with_feedback(rig, fault)


async def _resume_with_feedback(rig: Rig, fault: str) -> None:
    kid = await _paused(rig)
    after = fault not in REFUSED
    rig.proxy.on("POST", "/instant/resume", FAULTS[fault](after))
    resumed = rig.sim.count("instant", "POST", "/resume")

    answer = await rig.ask("resume_with_feedback", {"kickoff_id": kid, "approve": True, "feedback": "ok"})

    [record] = await rig.records()
    assert rig.proxied("POST", "/instant/resume") == 1, "a decision is never sent twice"
    assert rig.sim.count("instant", "POST", "/resume") - resumed == (1 if after else 0)
    if fault in REFUSED:  # not applied: nothing recorded, the run still waits
        assert answer.error and answer.host_error == (fault == "401")
        assert ("The decision was not applied" if fault == "401" else "knows no task 'check'") in answer.text
        assert record.decisions == [] and record.state is RecordState.WAITING_FOR_HUMAN
    elif fault in SLOW:  # the bound answered; the decision is recorded when the crew answers
        assert not answer.error and answer.data["outcome"] == "sent"
        assert f"has not answered {BOUND}" in answer.text and "Do not send the decision again" in answer.text
        assert record.decisions == []
    else:  # the crew acted; a lost or unreadable answer is settled by reading the run's status
        assert not answer.error and answer.data["outcome"] == "applied", answer.text
        if fault != "wrong_shape":  # any JSON object is a valid /resume answer
            assert "The run has moved on since, so the crew applied the decision" in answer.text
        assert [d.outcome for d in record.decisions] == ["applied"]


# -------------------------------------------------------------------------------- list_pending_approvals


@pytest.mark.parametrize("fault", FAULTS)
async def test_list_pending_approvals(upstream_rig: OpenRig, fault: str) -> None:
    async with upstream_rig(fault in RETRIED | SLOW) as rig:
        await _list_pending_approvals(rig, fault)


async def _list_pending_approvals(rig: Rig, fault: str) -> None:
    paused = await _paused(rig)
    running = await _running(rig)
    rig.proxy.on("GET", "/research/*status*", FAULTS[fault](False), times=None)

    answer = await rig.ask("list_pending_approvals")

    # Re-reading the running run failed or ran out of time; the listing still answers from the ledger.
    assert not answer.error, answer.text
    assert [a["kickoff_id"] for a in answer.data["approvals"]] == [paused]
    assert rig.proxied("GET", "/research/*status*") >= 1
    states = {r.kickoff_id: r.state for r in await rig.records()}
    expected = RecordState.NOT_FOUND if fault == "404" else RecordState.RUNNING
    assert states == {paused: RecordState.WAITING_FOR_HUMAN, running: expected}
