"""Exceptions raised by crew-mcp.

Every exception carries a message a person (or a model) can act on, and none ever contains a token.

```text
CrewMCPError
├── ConfigError                      bad configuration (file, crew and field named)
├── InvalidInputError                a value crew-mcp refuses before any request (kickoff_id, inputs)
├── UsageError                       a request that cannot be served as asked; the message says what to do
├── LedgerError                      the run ledger's backend failed or refused
└── CrewAPIError                     anything that went wrong talking to an AMP crew
    ├── APIConnectionError           the request never got an answer (DNS, refused, reset)
    │   └── APITimeoutError          connect, read or total time ran out
    ├── APIResponseValidationError   a 2xx answer that is not what the API promises (HTML, bad JSON, shape)
    └── APIStatusError               a non-2xx answer; one subclass per status
        ├── BadRequestError              400
        ├── AuthenticationError          401
        ├── PermissionDeniedError        403
        ├── NotFoundError                404
        ├── ConflictError                409
        ├── UnprocessableEntityError     422 (``missing_inputs``)
        ├── RateLimitError               429
        └── InternalServerError          5xx
```
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "CrewAPIError",
    "CrewMCPError",
    "InternalServerError",
    "InvalidInputError",
    "LedgerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
    "UsageError",
    "status_error",
]


class CrewMCPError(Exception):
    """Base class of every error crew-mcp raises on purpose."""


class ConfigError(CrewMCPError):
    """The configuration is unusable; the message names the file, the crew and the field."""


class InvalidInputError(CrewMCPError, ValueError):
    """A value was refused before any request was sent (a malformed kickoff_id, an unencodable input)."""


class UsageError(CrewMCPError):
    """A request that cannot be served as asked (unknown crew, missing inputs, run not waiting, ...).

    The message is a complete sentence telling the caller (often a model) what to do instead.
    """


class LedgerError(CrewMCPError):
    """The run ledger's backend failed (database locked beyond its timeout, Redis unreachable, ...)."""


class CrewAPIError(CrewMCPError):
    """Something went wrong talking to a crew's AMP API.

    Attributes:
        crew: the configured crew name, when known.
        method: the HTTP method of the failed call.
        path: the URL path of the failed call (never the query string, never the token).
    """

    def __init__(self, message: str, *, crew: str | None = None, method: str | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.crew = crew
        self.method = method
        self.path = path


class APIConnectionError(CrewAPIError):
    """No answer came back: the connection could not be made or was dropped.

    Attributes:
        sent: False only when the request provably never reached the service (connect failed, pool
            timeout), which is what makes retrying a POST safe.
    """

    def __init__(self, message: str, *, sent: bool = True, **kw: Any):
        super().__init__(message, **kw)
        self.sent = sent


class APITimeoutError(APIConnectionError):
    """The connect, read or total timeout ran out."""


class APIResponseValidationError(CrewAPIError):
    """A successful status whose body is not what the AMP API promises (an HTML page, invalid JSON, wrong shape)."""

    def __init__(self, message: str, *, status_code: int, body_excerpt: str = "", **kw: Any):
        super().__init__(message, **kw)
        self.status_code = status_code
        self.body_excerpt = body_excerpt


class APIStatusError(CrewAPIError):
    """The crew answered with a non-2xx status.

    Attributes:
        status_code: the HTTP status.
        body: the parsed JSON body (``{}`` when it was not JSON).
        retry_after: seconds from a ``Retry-After`` header, already capped, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
        **kw: Any,
    ):
        super().__init__(message, **kw)
        self.status_code = status_code
        self.body = body or {}
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the request was refused as invalid (for /resume: the run is not waiting for human input)."""


class AuthenticationError(APIStatusError):
    """401: the crew's bearer token is missing, wrong or revoked: a configuration problem."""


class PermissionDeniedError(APIStatusError):
    """403: the token is valid but may not do this (a user-scoped token on an organization crew)."""


class NotFoundError(APIStatusError):
    """404: the kickoff_id (or task, or the crew URL itself) does not exist."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the execution's current state."""


class UnprocessableEntityError(APIStatusError):
    """422: validation failed; ``missing_inputs`` lists the required inputs that were not given."""

    @property
    def missing_inputs(self) -> list[str]:
        details = self.body.get("details")
        missing = details.get("missing_inputs") if isinstance(details, dict) else None
        return [str(m) for m in missing] if isinstance(missing, list) else []


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` says how long to wait when the service said so."""


class InternalServerError(APIStatusError):
    """5xx: the crew's service failed."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

_STATUS_HINTS: dict[type[APIStatusError], str] = {
    AuthenticationError: "check the crew's bearer token in the crew-mcp configuration",
    PermissionDeniedError: "the token is valid but not allowed to do this; use the crew's organization token",
    RateLimitError: "the crew is rate limited; try again later",
    InternalServerError: "the crew's service failed; try again later",
}


def status_error(
    status_code: int,
    body: dict[str, Any] | None,
    *,
    crew: str | None,
    method: str,
    path: str,
    retry_after: float | None = None,
) -> APIStatusError:
    """Build the one exception class that matches ``status_code``, with an actionable message.

    The message quotes the service's own ``error``/``message`` fields (never headers, never the token).
    """
    cls = _STATUS_CLASSES.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    body = body or {}
    detail = " ".join(str(body[k]) for k in ("error", "message") if isinstance(body.get(k), str | int | float))
    where = f"crew {crew!r}" if crew else "the crew"
    message = f"{method} {path} on {where} failed with HTTP {status_code}"
    if detail:
        message += f": {detail}"
    hint = _STATUS_HINTS.get(cls)
    if hint:
        message += f" ({hint})"
    return cls(
        message, status_code=status_code, body=body, retry_after=retry_after, crew=crew, method=method, path=path
    )
