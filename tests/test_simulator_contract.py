"""The simulator speaks the published AMP contract: every response validates against the reference specs.

``documented`` crews are checked with openapi-core against ``crewai-amp-openapi.yaml`` (crews are mounted at
``/{crew}``, so the spec's server is set to ``http://sim/{crew}``); ``taskstatus`` status bodies are checked
with openapi-schema-validator's OAS 3.0 validator against the ``TaskStatus`` schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator
from sim_support import sim_http

from crew_mcp.simulator import Simulator, builtin_crews

REFERENCE = Path(__file__).resolve().parent / "contracts"
UNKNOWN_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
TRIP_INPUTS = {"budget": "1000 USD", "interests": "food", "duration": "7 days", "age": "35"}


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    spec = yaml.safe_load((REFERENCE / "crewai-amp-openapi.yaml").read_text(encoding="utf-8"))
    spec["servers"] = [{"url": f"http://sim/{crew.name}"} for crew in builtin_crews()]
    return OpenAPI.from_dict(spec)


@pytest.fixture(scope="module")
def taskstatus() -> OAS30Validator:
    schema = yaml.safe_load((REFERENCE / "crewai-amp-taskstatus.yaml").read_text(encoding="utf-8"))["TaskStatus"]
    OAS30Validator.check_schema(schema)
    return OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER)


class Checked:
    """An in-process client of a simulator whose every response is validated against the OpenAPI document."""

    def __init__(self, client: httpx2.AsyncClient, openapi: OpenAPI) -> None:
        self.client = client
        self.openapi = openapi
        self.checked: list[tuple[str, str, int]] = []

    async def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        content = json.dumps(body).encode() if body is not None else b""
        response = await self.client.request(method, path, content=content or None, headers=headers)
        request = MockRequest("http://sim", method.lower(), path, data=content)
        reply = MockResponse(response.content, status_code=response.status_code)
        self.openapi.validate_response(request, reply)
        self.checked.append((method, path.split("/")[2], response.status_code))
        return response.json()


@pytest.fixture
async def documented(openapi: OpenAPI) -> Any:
    crews = [c.model_copy(update={"shape": "documented"}) for c in builtin_crews()]
    async with Simulator(crews, clock="manual") as sim, sim_http(sim) as client:
        yield sim, Checked(client, openapi)


async def test_documented_mode_matches_the_openapi(documented: tuple[Simulator, Checked]) -> None:
    sim, api = documented
    assert (await api.call("GET", "/trip_planner/inputs"))["inputs"] == ["budget", "interests", "duration", "age"]
    kid = (await api.call("POST", "/trip_planner/kickoff", {"inputs": TRIP_INPUTS, "meta": {"a": 1}}))["kickoff_id"]
    assert (await api.call("GET", f"/trip_planner/status/{kid}"))["status"] == "running"
    await sim.advance(10)
    assert (await api.call("GET", f"/trip_planner/status/{kid}"))["status"] == "completed"

    kid = (await api.call("POST", "/research/kickoff", {"inputs": {"topic": "t"}}))["kickoff_id"]
    await sim.advance(4)
    assert (await api.call("GET", f"/research/status/{kid}"))["status"] == "running"  # paused, as documented
    resume = {"execution_id": kid, "task_id": "write_task", "human_feedback": "more", "is_approve": False}
    assert (await api.call("POST", "/research/resume", resume))["status"] == "retrying"
    await sim.advance(2)
    assert (await api.call("POST", "/research/resume", {**resume, "is_approve": True}))["status"] == "completed"

    kid = await api.call("POST", "/content_pipeline/kickoff", {"inputs": {"topic": "t", "audience": "a"}})
    resume = {"execution_id": kid["kickoff_id"], "task_id": "outline", "human_feedback": "", "is_approve": True}
    await sim.advance(2)
    assert (await api.call("POST", "/content_pipeline/resume", resume))["status"] == "resumed"

    kid = (await api.call("POST", "/flaky/kickoff", {"inputs": {"topic": "t"}}))["kickoff_id"]
    await sim.advance(3)
    assert (await api.call("GET", f"/flaky/status/{kid}"))["status"] == "error"

    # Errors.
    bad_token = {"Authorization": "Bearer wrong"}
    for method, path in (("GET", "/flaky/inputs"), ("POST", "/flaky/kickoff"), ("POST", "/flaky/resume")):
        assert (await api.call(method, path, {}, headers=bad_token))["error"] == "Unauthorized"
    assert (await api.call("GET", f"/flaky/status/{UNKNOWN_ID}", headers=bad_token))["error"] == "Unauthorized"
    assert (await api.call("GET", f"/flaky/status/{UNKNOWN_ID}"))["error"] == "Execution not found"
    assert (await api.call("POST", "/flaky/kickoff", {"inputs": {}}))["details"] == {"missing_inputs": ["topic"]}
    assert (await api.call("POST", "/flaky/kickoff", {"nothing": 1}))["error"] == "Invalid Request"
    resume = {"execution_id": UNKNOWN_ID, "task_id": "t", "human_feedback": "", "is_approve": True}
    assert (await api.call("POST", "/flaky/resume", resume))["error"] == "Not Found"
    resume["execution_id"] = kid
    assert (await api.call("POST", "/flaky/resume", resume))["error"] == "Invalid Request"
    sim.faults("flaky").fail_next(1, status=500)
    assert (await api.call("GET", "/flaky/inputs"))["error"] == "Internal Server Error"

    statuses = {(method, route, code) for method, route, code in api.checked}
    assert {code for _, _, code in statuses} == {200, 400, 401, 404, 422, 500}


async def test_taskstatus_mode_matches_the_taskstatus_schema(
    sim: Simulator, sim_client: httpx2.AsyncClient, taskstatus: OAS30Validator
) -> None:
    seen: set[str] = set()

    async def check(crew: str, kid: str) -> dict[str, Any]:
        for path in (f"/{crew}/status/{kid}", f"/{crew}/{kid}/status"):
            body: dict[str, Any] = (await sim_client.get(path)).json()
            taskstatus.validate(body)
            seen.add(body["state"])
        return body

    trip = (await sim_client.post("/trip_planner/kickoff", json={"inputs": TRIP_INPUTS})).json()["kickoff_id"]
    research = (await sim_client.post("/research/kickoff", json={"inputs": {"topic": "t"}})).json()["kickoff_id"]
    flaky = (await sim_client.post("/flaky/kickoff", json={"inputs": {"topic": "t"}})).json()["kickoff_id"]
    for kid, crew in ((trip, "trip_planner"), (research, "research"), (flaky, "flaky")):
        await check(crew, kid)
    await sim.advance(2)
    await check("trip_planner", trip)
    await sim.advance(3)
    for kid, crew in ((trip, "trip_planner"), (research, "research"), (flaky, "flaky")):
        await check(crew, kid)
    assert seen == {"RUNNING", "PAUSED", "SUCCESS", "FAILED"}
