"""Published schemas are portable (no $ref, no null branches), their defaults are valid, and resources match tools."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hitl_support import MODES, OWNER, in_memory, read_json
from pydantic import BaseModel

from crew_mcp.schema import portable, valid_defaults
from crew_mcp.settings import CrewConfig, InputConfig, Settings
from crew_mcp.views import RunView


class _Leaf(BaseModel):
    name: str | None = None


class _Tree(BaseModel):
    leaf: _Leaf
    maybe: _Leaf | None = None
    kids: list[_Tree] = []
    either: int | str | None = None


def _nodes(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [node, *(n for v in node.values() for n in _nodes(v))]
    if isinstance(node, list):
        return [n for v in node for n in _nodes(v)]
    return []


def test_refs_are_inlined_and_null_branches_dropped_keeping_other_unions() -> None:
    out = portable(_Tree.model_json_schema(mode="serialization"))
    assert out["properties"]["leaf"]["properties"]["name"]["type"] == "string"
    assert out["properties"]["maybe"]["type"] == "object"
    assert out["properties"]["either"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert not any(n.get("type") == "null" for n in _nodes(out))


def test_recursive_definitions_stay_as_references_with_their_defs() -> None:
    out = portable(_Tree.model_json_schema(mode="serialization"))
    assert out["properties"]["kids"]["items"] == {"$ref": "#/$defs/_Tree"}
    assert set(out["$defs"]) == {"_Tree"}


def test_the_run_view_schema_has_no_references_or_nulls() -> None:
    out = portable(RunView.model_json_schema(mode="serialization"))
    assert "$defs" not in out
    assert not any("$ref" in n or n.get("type") == "null" for n in _nodes(out))
    assert "kickoff_id" not in out.get("required", [])


# ------------------------------------------------------- every published default is valid against its own type


def _subschemas(node: Any, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every subschema of ``node`` with its path: only schema positions (a property *named* default is not one)."""
    if not isinstance(node, dict):
        return []
    out = [(path, node)]
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, item in enumerate(node.get(key) or ()):
            out += _subschemas(item, f"{path}/{key}/{i}")
    for key in ("properties", "$defs", "patternProperties"):
        for name, item in (node.get(key) or {}).items():
            out += _subschemas(item, f"{path}/{key}/{name}")
    for key in ("items", "additionalProperties", "not", "contains"):
        out += _subschemas(node.get(key), f"{path}/{key}")
    return out


def _typed_crews() -> Settings:
    """A configured crew with every kind of declared input: optional without default, enum, typed defaults."""
    inputs = {
        "city": InputConfig(description="where"),
        "nights": InputConfig(type="integer", required=False),
        "budget": InputConfig(type="number", default=100.5, example=250),
        "pace": InputConfig(enum=["slow", "fast"], default="slow"),
        "pets": InputConfig(type="boolean", required=False, example=True),
        "tags": InputConfig(type="array", required=False, example=["a"]),
    }
    return Settings(
        owner=OWNER, crews=[CrewConfig(name="trips", url="http://sim.invalid/trips", token="t", inputs=inputs)]
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("configured", [False, True], ids=["simulated", "configured"])
async def test_every_declared_default_is_valid_against_its_own_schema(mode: str, configured: bool) -> None:
    # fastmcp 2.x fills declared defaults into absent keys and validates what it built (issue 10, defect 3).
    async with in_memory(mode, _typed_crews() if configured else None) as env:
        tools = (await env.client.list_tools()).tools
    assert any(t.name.startswith("run_") for t in tools)
    bad: list[str] = []
    checked = 0
    for tool in tools:
        for kind, schema in (("input", tool.input_schema), ("output", tool.output_schema or {})):
            for path, node in _subschemas(schema):
                if "default" not in node:
                    continue
                checked += 1
                own = {k: v for k, v in node.items() if k != "default"}
                try:
                    jsonschema.validate(node["default"], own)
                except jsonschema.ValidationError as exc:
                    bad.append(f"{tool.name} {kind} {path}: default {node['default']!r}: {exc.message}")
    assert checked > 20  # the walk reaches the defaults that are there
    assert bad == []


def test_a_null_default_is_dropped_where_null_is_not_allowed_and_kept_where_it_is() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "default": None},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "c": {"type": "integer", "default": 3},
            "d": {"type": "integer", "default": True},
            "e": {"enum": ["x", "y"], "default": "z"},
            "f": {"type": "array", "items": {"type": "string", "default": None}},
        },
    }
    out = valid_defaults(schema)
    props = out["properties"]
    assert "default" not in props["a"] and props["b"]["default"] is None and props["c"]["default"] == 3
    assert "default" not in props["d"] and "default" not in props["e"] and "default" not in props["f"]["items"]
    assert schema["properties"]["a"]["default"] is None  # the input is left as it was


# ------------------------------------------------------------- a resource and its tool say the same thing


def _keys(value: Any, path: str = "") -> set[str]:
    if isinstance(value, dict):
        return {f"{path}/{k}" for k in value} | {p for k, v in value.items() for p in _keys(v, f"{path}/{k}")}
    if isinstance(value, list):
        return {p for v in value for p in _keys(v, f"{path}[]")}
    return set()


@pytest.mark.parametrize("mode", MODES)
async def test_a_resource_and_the_tool_that_reads_the_same_thing_give_the_same_keys(mode: str) -> None:
    async with in_memory(mode, Settings(owner=OWNER)) as env:
        kid = await env.kickoff("research", {"topic": "tides"}, conversation_id="c1")
        await env.sim.advance(3600)  # waits for review: pending output, progress
        pairs: list[tuple[str, dict[str, Any], str]] = [
            ("list_crews", {}, "crew://crews"),
            ("list_inputs", {"crew": "research"}, "crew://research/inputs"),
            ("get_status", {"kickoff_id": kid}, f"crew://executions/{kid}"),
            ("list_executions", {"conversation_id": "c1", "limit": 200}, "crew://conversations/c1"),
            ("list_pending_approvals", {}, "crew://approvals"),
        ]
        for tool, args, uri in pairs:
            structured = await env.call(tool, args)
            resource = await read_json(env.client, uri)
            assert "null" not in json.dumps(resource), uri  # empty fields left out, as in tool results
            assert _keys(resource) == _keys(structured), (tool, uri)
