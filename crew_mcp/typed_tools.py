"""Typed ``run_<crew>`` tools: one parameter per declared input, so hosts can render a form for a crew.

A crew gets one when its inputs are declared in the configuration (or it is a built-in simulated crew), up to
``typed_tools_max`` crews, and only when every input name is usable as a parameter name.

Each parameter is published with its declared type, and takes what ``kickoff_crew`` takes for that input: a text
input also takes numbers and booleans (Inspector's ``--tool-arg budget=100`` sends an integer), encoded as
:func:`~crew_mcp.inputs.encode_input_value` does; an object or list input also takes its JSON text.
"""

import inspect
import json
import keyword
import logging
from collections.abc import Callable
from operator import getitem
from typing import Annotated, Any, Literal, Optional

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult
from pydantic import BeforeValidator, Field, WithJsonSchema

from .apps import CARD_TOOL_META
from .boundary import caller, guard, progress, result
from .crews import input_config
from .errors import InvalidInputError
from .inputs import encode_input_value
from .runtime import Runtime
from .settings import Settings
from .tools import CONVERSATION_DOC, STARTS
from .views import RunView

__all__ = ["register_typed_tools"]

logger = logging.getLogger(__name__)

_PY_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict[str, Any],
    "array": list[Any],
}


def _as_text(value: Any) -> Any:
    """A number, boolean, object or list given for a text input, as the text ``kickoff_crew`` would send."""
    if value is None or isinstance(value, str):
        return value
    try:
        return encode_input_value("value", value)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None


def _from_json_text(kind: type) -> Callable[[Any], Any]:
    """JSON text of an object or list, for an object or list input (as ``kickoff_crew`` accepts it)."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except (ValueError, RecursionError):
                return value
            return parsed if isinstance(parsed, kind) else value
        return value

    return parse


_LENIENT: dict[str, Callable[[Any], Any]] = {
    "string": _as_text,
    "object": _from_json_text(dict),
    "array": _from_json_text(list),
}


def _typed_crews(settings: Settings) -> list[tuple[str, str, list[Any]]]:
    """(crew, description, inputs) for crews that get a typed ``run_<crew>`` tool."""
    if settings.crews:
        chosen = [c for c in settings.crews if c.typed_tool or (c.typed_tool is None and c.inputs)]
        chosen = [c for c in chosen if c.typed_tool or len(chosen) <= settings.typed_tools_max]
        return [(c.name, c.description, [(n, i) for n, i in c.inputs.items()]) for c in chosen if c.inputs]
    from .simulator import builtin_crews

    specs = builtin_crews()[: settings.typed_tools_max]
    return [(s.name, f"[simulated] {s.description}", [(i.name, input_config(i)) for i in s.inputs]) for s in specs]


def _usable_names(crew: str, inputs: list[Any]) -> bool:
    """A typed tool needs every input name to be a parameter name; otherwise the crew keeps only kickoff_crew."""
    bad = [n for n, _ in inputs if not n.isidentifier() or keyword.iskeyword(n) or n == "ctx"]
    if bad:
        logger.warning("crew %s gets no run_%s tool: input names %s are not usable as parameters", crew, crew, bad)
    return not bad


def register_typed_tools(mcp: MCPServer, settings: Settings, rt: Runtime) -> None:
    """Add a ``run_<crew>`` tool for each crew whose inputs are declared (up to ``typed_tools_max``)."""
    for crew, description, inputs in _typed_crews(settings):
        if not _usable_names(crew, inputs):
            continue
        tool_name = f"run_{crew}"
        fn = _typed_tool(settings, rt, crew, inputs)
        fn.__name__ = tool_name
        mcp.add_tool(
            fn,
            name=tool_name,
            title=f"Run crew {crew}",
            description=f"Start the {crew} crew: {description}".rstrip(": ")
            + ". Returns the kickoff_id; follow it with get_status.",
            annotations=STARTS,
            meta=CARD_TOOL_META,
        )
        rt.typed_tools[crew] = tool_name


def _typed_tool(settings: Settings, rt: Runtime, crew: str, inputs: list[Any]) -> Callable[..., Any]:
    names = {n for n, _ in inputs}
    params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    for name, conf in sorted(inputs, key=lambda item: not (item[1].required and item[1].default is None)):
        base: Any = getitem(Literal, tuple(conf.enum)) if conf.enum else _PY_TYPES[conf.type]
        lenient = _as_text if conf.enum else _LENIENT.get(conf.type)
        if lenient is not None:  # validation only: the published schema stays the declared type
            base = getitem(Annotated, (base, BeforeValidator(lenient)))
        examples = [conf.example] if conf.example is not None else None
        ann: Any = getitem(Annotated, (base, Field(description=conf.description or name, examples=examples)))
        default: Any = inspect.Parameter.empty
        if not conf.required or conf.default is not None:
            default = conf.default
        if default is None:  # optional with no default: a plain typed schema, absent means "not given"
            schema: dict[str, Any] = {"type": conf.type, "description": conf.description or name}
            if conf.enum:
                schema["enum"] = list(conf.enum)
            ann = getitem(Annotated, (getitem(Optional, base), WithJsonSchema(schema)))
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default))
        annotations[name] = ann
    extras: list[tuple[str, Any, Any]] = [
        ("conversation_id", Annotated[str, Field(description=CONVERSATION_DOC)], ""),
        ("wait_seconds", Annotated[float, Field(ge=0, le=600, description="Wait up to this long")], 0.0),
    ]
    for name, ann, default in extras:
        if name not in names:
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default))
            annotations[name] = ann
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
    annotations["ctx"] = Context

    async def run_typed(**kwargs: Any) -> CallToolResult:
        ctx: Context = kwargs.pop("ctx")
        conversation_id = kwargs.pop("conversation_id", "") if "conversation_id" not in names else ""
        wait = float(kwargs.pop("wait_seconds", 0.0)) if "wait_seconds" not in names else 0.0
        values = {k: v for k, v in kwargs.items() if v is not None}
        who = caller(settings, ctx, str(conversation_id))
        async with rt.wait_slot(who, wait, starting=True):
            work = rt.require().kickoff(crew, values, who, wait_seconds=wait, on_update=progress(ctx))
            return result(await guard(work))

    run_typed.__signature__ = inspect.Signature(params, return_annotation=Annotated[CallToolResult, RunView])  # type: ignore[attr-defined]
    run_typed.__annotations__ = {**annotations, "return": Annotated[CallToolResult, RunView]}
    return run_typed
