"""The fault proxy does what it says: each fault, before and after forwarding, seen by a plain httpx2 client.

The upstream is the simulator served by uvicorn on loopback; "after forwarding" is proven by the simulator's
own request count and kickoff_ids, "before" by their staying unchanged. Nothing here asserts on time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx2
import pytest
from faultproxy import Fault, FaultProxy
from sim_support import closed_port_url

from crew_mcp.simulator import DEFAULT_TOKEN, Simulator, serve_simulator

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
KICKOFF = "/research/kickoff"
INPUTS = {"inputs": {"topic": "t"}}


@dataclass
class Rig:
    sim: Simulator
    proxy: FaultProxy
    client: httpx2.AsyncClient

    def kickoffs(self) -> int:
        return len(self.sim.kickoff_ids("research"))

    def reached(self, method: str = "POST", route: str = "/kickoff") -> int:
        return self.sim.count("research", method, route)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    timeout = httpx2.Timeout(5.0, read=2.0)
    with anyio.fail_after(30):
        async with (
            Simulator(clock="manual") as sim,
            serve_simulator(sim) as upstream,
            FaultProxy(upstream) as proxy,
            httpx2.AsyncClient(base_url=proxy.url, headers=AUTH, timeout=timeout) as client,
        ):
            yield Rig(sim, proxy, client)


async def test_requests_pass_through_untouched_on_one_kept_alive_connection(rig: Rig) -> None:
    assert rig.proxy.url.startswith("http://127.0.0.1:")
    response = await rig.client.post(KICKOFF, json=INPUTS)
    kid = response.json()["kickoff_id"]
    assert rig.sim.kickoff_ids("research") == [kid]
    response = await rig.client.get(f"/research/status/{kid}?x=1")
    assert (response.status_code, response.json()["state"]) == (200, "RUNNING")
    response = await rig.client.get("/research/")
    assert (response.status_code, response.text, response.headers["content-type"]) == (
        200,
        "Healthy",
        "text/plain; charset=utf-8",
    )
    assert (await rig.client.get("/nocrew/inputs")).status_code == 404  # upstream errors pass through too
    assert [(s.method, s.path, s.fault, s.forwarded) for s in rig.proxy.seen] == [
        ("POST", KICKOFF, "pass", True),
        ("GET", f"/research/status/{kid}", "pass", True),
        ("GET", "/research/", "pass", True),
        ("GET", "/nocrew/inputs", "pass", True),
    ]
    assert json.loads(rig.proxy.seen[0].body) == INPUTS


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(500, None), (502, None), (503, 7.0), (429, 2.5), (401, None), (404, None)],
    ids=["500", "502", "503", "429", "401", "404"],
)
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_status_faults(rig: Rig, status: int, retry_after: float | None, after: bool) -> None:
    rig.proxy.on("POST", KICKOFF, Fault.http(status, retry_after=retry_after, after=after))
    response = await rig.client.post(KICKOFF, json=INPUTS)
    assert response.status_code == status
    assert response.headers.get("retry-after") == (None if retry_after is None else f"{retry_after:g}")
    assert response.json()["message"] == "Injected by the fault proxy"
    # After forwarding the crew ran the kickoff; before, it never heard of it.
    assert (rig.reached(), rig.kickoffs()) == ((1, 1) if after else (0, 0))
    assert rig.proxy.count("POST", KICKOFF, forwarded=after) == 1
    assert rig.proxy.seen[-1].fault == f"http {status} {'after' if after else 'before'}"
    # One shot: the next request goes through.
    assert (await rig.client.post(KICKOFF, json=INPUTS)).status_code == 200
    assert rig.kickoffs() == (2 if after else 1)


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_unreadable_200s(rig: Rig, after: bool) -> None:
    rig.proxy.on("POST", KICKOFF, Fault.html(after=after))
    rig.proxy.on("POST", KICKOFF, Fault.invalid_json(after=after))
    rig.proxy.on("POST", KICKOFF, Fault.wrong_shape([{"kickoff": 1}], after=after))

    html = await rig.client.post(KICKOFF, json=INPUTS)
    assert (html.status_code, html.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert html.text.startswith("<!doctype html>")
    invalid = await rig.client.post(KICKOFF, json=INPUTS)
    assert (invalid.status_code, invalid.headers["content-type"]) == (200, "application/json")
    with pytest.raises(json.JSONDecodeError):
        invalid.json()
    shaped = await rig.client.post(KICKOFF, json=INPUTS)
    assert (shaped.status_code, shaped.json()) == (200, [{"kickoff": 1}])
    assert (rig.reached(), rig.kickoffs()) == ((3, 3) if after else (0, 0))


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_reset_mid_response(rig: Rig, after: bool) -> None:
    rig.proxy.on("POST", KICKOFF, Fault.reset(after=after))
    with pytest.raises(httpx2.ReadError):
        await rig.client.post(KICKOFF, json=INPUTS)
    assert (rig.reached(), rig.kickoffs()) == ((1, 1) if after else (0, 0))
    assert (await rig.client.post(KICKOFF, json=INPUTS)).status_code == 200  # a new connection works


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_truncated_body(rig: Rig, after: bool) -> None:
    rig.proxy.on("POST", KICKOFF, Fault.truncate(after=after))
    with pytest.raises(httpx2.RemoteProtocolError):
        await rig.client.post(KICKOFF, json=INPUTS)
    assert (rig.reached(), rig.kickoffs()) == ((1, 1) if after else (0, 0))


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_stall_answers_nothing_until_the_client_gives_up(rig: Rig, after: bool) -> None:
    rig.proxy.on("POST", KICKOFF, Fault.stall(after=after))
    with pytest.raises(httpx2.ReadTimeout):
        await rig.client.post(KICKOFF, json=INPUTS, timeout=httpx2.Timeout(5.0, read=0.3))
    assert (rig.reached(), rig.kickoffs()) == ((1, 1) if after else (0, 0))


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_trickle_sends_the_whole_answer_a_few_bytes_at_a_time(rig: Rig, after: bool) -> None:
    rig.proxy.on("POST", KICKOFF, Fault.trickle(chunk=7, interval=0.005, after=after))
    pieces: list[bytes] = []
    async with rig.client.stream("POST", KICKOFF, json=INPUTS) as response:
        async for piece in response.aiter_raw():
            pieces.append(piece)
    body = json.loads(b"".join(pieces))
    assert len(pieces) > 1  # it came in pieces, and whole
    if after:
        assert rig.sim.kickoff_ids("research") == [body["kickoff_id"]]
    else:
        assert (body, rig.reached()) == ({"status": "ok"}, 0)


async def test_rules_match_method_and_path_globs_for_a_number_of_requests(rig: Rig) -> None:
    kid = (await rig.client.post(KICKOFF, json=INPUTS)).json()["kickoff_id"]
    rig.proxy.on("GET", "/research/status/*", Fault.http(503), times=2)
    rig.proxy.on("*", "/research/status/*", Fault.passthrough())
    rig.proxy.on("*", "/research/status/*", Fault.http(500, after=True), times=None)
    codes = [(await rig.client.get(f"/research/status/{kid}")).status_code for _ in range(5)]
    assert codes == [503, 503, 200, 500, 500]
    assert rig.reached("GET", "/status") == 3
    assert rig.proxy.count("GET", "/research/status/*") == 5
    assert rig.proxy.count("GET", "/research/status/*", forwarded=False) == 2
    assert (await rig.client.get("/research/inputs")).status_code == 200  # other routes are untouched
    rig.proxy.clear()
    assert (await rig.client.get(f"/research/status/{kid}")).status_code == 200


async def test_an_unreachable_upstream_is_a_502_and_not_forwarded() -> None:
    with anyio.fail_after(10):
        async with (
            FaultProxy(closed_port_url().removesuffix("/hook")) as proxy,
            httpx2.AsyncClient(base_url=proxy.url) as client,
        ):
            response = await client.post(KICKOFF, json=INPUTS)
    assert (response.status_code, response.json()["error"]) == (502, "Bad Gateway")
    assert (proxy.seen[0].forwarded, proxy.seen[0].error is not None) == (False, True)


async def test_an_upstream_that_drops_the_connection_is_passed_on_broken(rig: Rig) -> None:
    rig.sim.faults("research").drop_next(1, after_processing=True)
    with pytest.raises(httpx2.TransportError):
        await rig.client.post(KICKOFF, json=INPUTS)
    assert (rig.kickoffs(), rig.proxy.seen[0].forwarded) == (1, True)


def test_the_upstream_must_be_an_http_root() -> None:
    with pytest.raises(ValueError, match="upstream"):
        FaultProxy("https://example.com")
