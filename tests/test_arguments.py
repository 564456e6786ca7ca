"""Tool arguments: typed run_<crew> tools take what kickoff_crew takes, and any argument a tool rejects is said as
one sentence naming the argument and what it takes (issue 10, defect 5), in both protocol eras."""

from __future__ import annotations

from typing import Any

import pytest
from hitl_support import MODES, OWNER, in_memory
from pydantic import BaseModel, Field, ValidationError

from crew_mcp.arguments import describe_invalid_arguments, takes
from crew_mcp.settings import Settings

TRIP = {"budget": "1000 USD", "interests": "food, hikes", "duration": "7 days", "age": 35}
RAW = ("validation error", "errors.pydantic.dev", "Arguments\n", "input_value", "type=")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_typed_tool_takes_numbers_and_booleans_for_text_inputs_like_kickoff_crew(mode: str) -> None:
    # Inspector's --tool-arg budget=100 sends an integer; kickoff_crew encodes it as "100", so must run_<crew>.
    given = {"budget": 100, "interests": True, "duration": 7.5, "age": "35"}
    async with in_memory(mode, Settings(owner=OWNER)) as env:
        typed = await env.call("run_trip_planner", given)
        generic = await env.call("kickoff_crew", {"crew": "trip_planner", "inputs": given})
        records = [await env.service.ledger.get(r["kickoff_id"], owner=None) for r in (typed, generic)]
    assert [r.inputs if r else None for r in records] == [
        {"budget": "100", "interests": "true", "duration": "7.5", "age": "35"}
    ] * 2


async def test_a_typed_tool_still_publishes_the_declared_types(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER)) as env:
        tools = {t.name: t for t in (await env.client.list_tools()).tools}
    props = tools["run_trip_planner"].input_schema["properties"]
    assert props["budget"]["type"] == "string" and props["age"]["type"] == "integer"
    assert not any("anyOf" in p for p in props.values())


@pytest.mark.parametrize(
    ("tool", "args", "named", "what"),
    [
        ("run_trip_planner", {**TRIP, "age": "old"}, "'age'", "takes an integer"),
        ("run_trip_planner", {"budget": "1", "interests": "x", "duration": "1 day"}, "'age'", "is required"),
        ("get_status", {"wait_seconds": -1}, "'wait_seconds'", "a number from 0 to 600"),
        ("get_status", {"kickoff_id": {"id": 1}}, "'kickoff_id'", "takes text"),
        ("kickoff_crew", {"inputs": [1, 2]}, "'inputs'", "takes an object"),
        ("resume_with_feedback", {}, "'kickoff_id'", "is required and takes text"),
        ("resume_with_feedback", {"kickoff_id": "k", "approve": "perhaps"}, "'approve'", "true or false"),
        ("list_executions", {"limit": 0}, "'limit'", "an integer from 1 to 200"),
        ("list_inputs", {"crew": ["a"]}, "'crew'", "takes text"),
    ],
)
async def test_any_rejected_argument_is_one_sentence_naming_it_and_what_it_takes(
    mode: str, tool: str, args: dict[str, Any], named: str, what: str
) -> None:
    async with in_memory(mode, Settings(owner=OWNER)) as env:
        text = await env.error(tool, args)
    assert not any(raw in text for raw in RAW), text
    assert named in text and what in text and tool in text, text
    assert "\n" not in text and text.endswith(".") and text.count(". ") == 0, text


async def test_several_rejected_arguments_are_listed_in_one_sentence(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER)) as env:
        text = await env.error("get_status", {"kickoff_id": 7, "wait_seconds": "soon"})
    assert text.startswith("Arguments of get_status: ") and "'kickoff_id' takes text (got 7)" in text, text
    assert "'wait_seconds' takes a number from 0 to 600 (got \"soon\")" in text, text


class _Model(BaseModel):
    count: int = Field(ge=1)
    name: str


def test_the_sentence_uses_the_published_schema_and_cuts_long_values() -> None:
    schema = {"properties": {"count": {"type": "integer", "minimum": 1}, "name": {"type": "string"}}}
    with pytest.raises(ValidationError) as caught:
        _Model.model_validate({"count": 0, "name": "x" * 500})
    text = describe_invalid_arguments("tool", caught.value, schema)
    assert text.startswith("Argument 'count' of tool takes an integer at least 1 (got 0)"), text
    with pytest.raises(ValidationError) as caught:
        _Model.model_validate({"count": 1, "name": ["y" * 500]})
    text = describe_invalid_arguments("tool", caught.value, schema)
    assert text.startswith("Argument 'name' of tool takes text (got [\"yyy") and len(text) < 120, text


def test_what_a_schema_takes_in_words() -> None:
    assert takes({"enum": ["a", "b"]}) == 'one of "a", "b"'
    assert takes({"anyOf": [{"type": "object"}, {"type": "array"}]}) == "an object or a list"
    assert takes({"type": "number", "exclusiveMinimum": 0}) == "a number above 0"
    assert takes({"type": "integer", "maximum": 9}) == "an integer at most 9"
    assert takes({}) == "a value"
