"""A crew's inputs: the catalogue the model reads, and the one check-and-encode step before a kickoff.

AMP's ``GET /inputs`` gives names only; :func:`merge_inputs` adds what the configuration says about each
(description, type, enum, default, example). :func:`validate_inputs` checks what a caller gave against
that catalogue and encodes it for AMP in one pass; nothing downstream checks or encodes it again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from .crewconfig import InputConfig
from .errors import InvalidInputError, InvalidInputsError

__all__ = ["InputInfo", "encode_input_value", "encode_inputs", "merge_inputs", "validate_inputs"]


class InputInfo(InputConfig):
    """One crew input as the model should see it: its name plus what the configuration says about it."""

    name: str


def merge_inputs(names: list[str], configured: Mapping[str, InputConfig]) -> list[InputInfo]:
    """API names first (in API order), then inputs only the configuration knows about."""
    out: list[InputInfo] = []
    for name in [*names, *(n for n in configured if n not in names)]:
        conf = configured.get(name)
        out.append(InputInfo(name=name, **conf.model_dump()) if conf else InputInfo(name=name))
    return out


def validate_inputs(
    crew: str, infos: list[InputInfo], given: Mapping[str, Any], *, allow_extra: bool = False
) -> dict[str, str]:
    """Check ``given`` against the crew's inputs (defaults filled in) and encode every value for AMP.

    Raises:
        InvalidInputsError: missing, unknown, or ill-typed inputs, each named with what it should be.
    """
    known = {i.name: i for i in infos}
    values: dict[str, Any] = {i.name: i.default for i in infos if i.default is not None}
    values.update(given)
    problems: list[str] = []
    missing = [i for i in infos if i.required and i.name not in values]
    if missing:
        described = "; ".join(f"{i.name} ({i.description})" if i.description else i.name for i in missing)
        problems.append(f"Missing required inputs: {described}.")
    unknown = sorted(set(given) - set(known))
    if unknown and not allow_extra:
        problems.append(f"Unknown inputs: {', '.join(unknown)}. Crew {crew!r} takes: {', '.join(known) or '(none)'}.")
    encoded: dict[str, str] = {}
    for name, value in values.items():
        info = known.get(name)
        problem = _check_value(info, value) if info is not None else None
        if problem is None:
            try:
                encoded[name] = encode_input_value(name, value)
            except InvalidInputError as exc:
                problem = str(exc)
        if problem:
            problems.append(problem)
    if problems:
        message = " ".join([*problems, f"Call list_inputs(crew={crew!r}) for details."])
        raise InvalidInputsError(message, problems=problems)
    return encoded


def encode_input_value(name: str, value: Any) -> str:
    """Turn one input value into the string AMP takes.

    The rule: strings pass unchanged; booleans become ``"true"``/``"false"``; integers and finite floats
    become their decimal text (``3``, ``2.5``); objects and lists become compact JSON text. ``None``,
    non-finite numbers and anything else are refused with :class:`InvalidInputError`.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"Input {name!r} is {value}, which is not a usable number.")
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, dict | list):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"Input {name!r} cannot be written as JSON text: {exc}.") from None
    if value is None:
        raise InvalidInputError(f"Input {name!r} is null; give it a value (an empty string is allowed).")
    raise InvalidInputError(f"Input {name!r} has an unsupported type {type(value).__name__}.")


def encode_inputs(inputs: Mapping[str, Any]) -> dict[str, str]:
    """Encode every input value with :func:`encode_input_value` (strings, the common case, pass as they are)."""
    return {str(k): v if isinstance(v, str) else encode_input_value(str(k), v) for k, v in inputs.items()}


def _check_value(info: InputInfo, value: Any) -> str | None:
    if info.enum and str(value) not in info.enum:
        return f"Input {info.name!r} must be one of {', '.join(info.enum)} (got {value!r})."
    check = _CHECKS.get(info.type)
    if check is not None and not check(value):
        return f"Input {info.name!r} must be of type {info.type} (got {value!r})."
    return None


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("-").isdigit())


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return True
    if not isinstance(v, str):
        return False
    try:
        float(v)
    except ValueError:
        return False
    return True


def _is_json(kind: type) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if isinstance(v, kind):
            return True
        if not isinstance(v, str):
            return False
        try:
            return isinstance(json.loads(v), kind)
        except ValueError:
            return False

    return check


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "integer": _is_int,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool) or (isinstance(v, str) and v.lower() in ("true", "false")),
    "object": _is_json(dict),
    "array": _is_json(list),
}
