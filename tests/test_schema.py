"""Published output schemas are portable: no $ref, no null branches, and real results still validate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from crew_mcp.schema import portable
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
