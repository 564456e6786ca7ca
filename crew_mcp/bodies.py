"""Reading what a crew answered: JSON, models, error bodies and excerpts — always with the token redacted.

A 2xx answer whose body is not what the AMP API promises (an HTML page, invalid JSON, the wrong shape)
becomes :class:`~crew_mcp.errors.APIResponseValidationError` with a short, redacted excerpt.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx2
from pydantic import BaseModel, ValidationError

from .errors import APIResponseValidationError
from .redact import Redactor

__all__ = ["EXCERPT_CHARS", "Bodies"]

EXCERPT_CHARS = 200
"""How much of an unexpected body an error message quotes."""

_M = TypeVar("_M", bound=BaseModel)


class Bodies:
    """Parses one crew's responses (``crew`` names it in messages)."""

    def __init__(self, redactor: Redactor, *, crew: str | None) -> None:
        self._redactor = redactor
        self._crew = crew
        self.where = f"crew {crew!r}" if crew else "the crew"

    def redact(self, value: Any) -> Any:
        """Remove the token from what the service sent back (an echoing proxy must not leak it)."""
        return self._redactor.redact(value)

    def error_body(self, response: httpx2.Response) -> dict[str, Any]:
        """The JSON object of an error answer, or ``{}`` when it is not one."""
        try:
            body = response.json()
        except ValueError:
            return {}
        return self.redact(body) if isinstance(body, dict) else {}

    def json(self, response: httpx2.Response, method: str, path: str, note: str = "") -> Any:
        """The parsed body.

        Raises:
            APIResponseValidationError: it is not JSON.
        """
        try:
            data = response.json()
        except ValueError:
            raise self.invalid(response, method, path, f"is not JSON{note}") from None
        return self.redact(data) if self._redactor.may_contain(response.content) else data

    def model(self, response: httpx2.Response, model: type[_M], method: str, path: str, note: str = "") -> _M:
        """The body as ``model``.

        Raises:
            APIResponseValidationError: it is not JSON, or not that model.
        """
        body = self.json(response, method, path, note)
        try:
            return model.model_validate(body)
        except ValidationError:
            raise self.invalid(response, method, path, f"is not a valid {model.__name__}{note}") from None

    def invalid(self, response: httpx2.Response, method: str, path: str, why: str) -> APIResponseValidationError:
        """The error for a 2xx answer whose body ``why`` (e.g. "is not JSON")."""
        excerpt = self.excerpt(response)
        return APIResponseValidationError(
            f"{method} {path} on {self.where} answered HTTP {response.status_code} but the body {why}: {excerpt!r}",
            status_code=response.status_code,
            body_excerpt=excerpt,
            crew=self._crew,
            method=method,
            path=path,
        )

    def excerpt(self, response: httpx2.Response) -> str:
        """The start of the body on one line, redacted."""
        text = " ".join(response.text.split())
        return str(self.redact(text))[:EXCERPT_CHARS]
