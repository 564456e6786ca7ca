"""Tool arguments a model sent wrong, said as one sentence: which argument, and what it takes.

mcp 2.3 checks a call's arguments against the tool's signature before the tool runs and, when they do not fit,
hands the model pydantic's report ("2 validation errors for run_trip_plannerArguments ... For further
information visit https://errors.pydantic.dev/..."). :func:`describe_invalid_arguments` says the same from the
tool's published input schema, in the words the rest of crew-mcp's errors use.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

__all__ = ["describe_invalid_arguments", "takes"]

_GOT_MAX = 60


def describe_invalid_arguments(tool: str, error: ValidationError, schema: dict[str, Any] | None) -> str:
    """One sentence naming each argument of ``tool`` that ``error`` rejected and what it takes (from ``schema``)."""
    properties: dict[str, Any] = (schema or {}).get("properties") or {}
    problems: dict[str, str] = {}  # argument name -> what is wrong with it, said after the name
    for detail in error.errors(include_url=False):
        loc = detail.get("loc") or ()
        name = str(loc[0]) if loc else ""
        if name in problems:
            continue
        node = properties.get(name)
        what = takes(node) if isinstance(node, dict) else "a valid value"
        if not name:
            problems[name] = f"must be an object of the tool's parameters (got {_got(detail)})"
        elif detail.get("type") == "missing":
            about = f" ({node['description']})" if isinstance(node, dict) and node.get("description") else ""
            problems[name] = f"is required and takes {what}{about}"
        elif node is None:
            problems[name] = "is not one of its parameters"
        else:
            problems[name] = f"takes {what} (got {_got(detail)})"
    if len(problems) == 1:
        ((name, problem),) = problems.items()
        subject = f"Argument {name!r} of {tool}" if name else f"The arguments of {tool}"
        return f"{subject} {problem}."
    listed = "; ".join(f"{name!r} {problem}" for name, problem in problems.items())
    return f"Arguments of {tool}: {listed or 'they do not match its parameters'}."


def takes(node: dict[str, Any]) -> str:
    """What a JSON Schema ``node`` accepts, in words ("a number from 0 to 600", "one of 'a', 'b'")."""
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in node["enum"])
    options = node.get("anyOf") or node.get("oneOf")
    if isinstance(options, list) and options:
        return " or ".join(takes(o) for o in options if isinstance(o, dict))
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(takes({**node, "type": k}) for k in kind)
    match kind:
        case "string":
            return "text"
        case "integer" | "number":
            return ("an integer" if kind == "integer" else "a number") + _range(node)
        case "boolean":
            return "true or false"
        case "object":
            return "an object"
        case "array":
            return "a list"
        case "null":
            return "null"
    return "a value"


def _range(node: dict[str, Any]) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    if node.get("exclusiveMinimum") is not None:
        low = None
        lower = f"above {_num(node['exclusiveMinimum'])}"
    else:
        lower = ""
    if low is not None and high is not None:
        return f" from {_num(low)} to {_num(high)}"
    parts = [p for p in (lower, f"at least {_num(low)}" if low is not None else "") if p]
    if high is not None:
        parts.append(f"at most {_num(high)}")
    elif node.get("exclusiveMaximum") is not None:
        parts.append(f"below {_num(node['exclusiveMaximum'])}")
    return (" " + " and ".join(parts)) if parts else ""


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _got(detail: Any) -> str:
    try:
        text = json.dumps(detail.get("input"), ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = type(detail.get("input")).__name__
    return text if len(text) <= _GOT_MAX else text[: _GOT_MAX - 1] + "…"
