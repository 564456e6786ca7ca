"""Exceptions raised by crew-mcp.

Every exception carries a message a person (or a model) can act on, and none ever contains a token.
The service raises the typed errors below; one boundary per surface turns them into what that surface shows
(:mod:`crew_mcp.boundary` for MCP tools and resources, :func:`exit_code` for the CLI).

```text
CrewMCPError
├── ConfigError                      bad configuration (file, crew and field named)
├── UsageError                       a request the caller can fix; the message says what to do
│   ├── InvalidInputError            a value refused before any request (a malformed kickoff_id, an input)
│   ├── InvalidInputsError           a crew's inputs are missing, unknown or of the wrong type
│   ├── UnknownCrewError             no such crew, or several and none named
│   ├── RunNotFoundError             no run with that id (or with no id: none in the conversation) for the caller
│   │   └── RunLostError             the ledger holds the run but its crew no longer knows it
│   ├── RunNotWaitingError           the run is not waiting for a human decision
│   ├── HumanOnlyError               the approval policy lets only a person decide
│   └── ApprovalDeniedError          the approval rules let others (an approvers group) decide on this run
├── UpstreamError                    a crew call failed, explained for the caller (``may_have_started``)
├── LedgerError                      the run ledger's backend failed or refused
└── CrewAPIError                     anything that went wrong talking to an AMP crew (the client's own tree)
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
    "ApprovalDeniedError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "CrewAPIError",
    "CrewMCPError",
    "HumanOnlyError",
    "InternalServerError",
    "InvalidInputError",
    "InvalidInputsError",
    "LedgerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunLostError",
    "RunNotFoundError",
    "RunNotWaitingError",
    "UnknownCrewError",
    "UnprocessableEntityError",
    "UpstreamError",
    "UsageError",
    "describe",
    "exit_code",
    "status_error",
]


class CrewMCPError(Exception):
    """Base class of every error crew-mcp raises on purpose."""


class ConfigError(CrewMCPError):
    """The configuration is unusable; the message names the file, the crew and the field."""


class UsageError(CrewMCPError):
    """A request that cannot be served as asked, which the caller (often a model) can fix.

    The message is a complete sentence telling the caller what to do instead.
    """


class InvalidInputError(UsageError, ValueError):
    """A value was refused before any request was sent (a malformed kickoff_id, an unencodable input)."""


class InvalidInputsError(UsageError):
    """A crew's inputs are missing, unknown or ill-typed; ``problems`` lists each one."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UnknownCrewError(UsageError):
    """No crew has that name, or several crews are configured and none was named."""


class RunNotFoundError(UsageError):
    """No run matches for this caller (another owner's run is reported exactly like an unknown one)."""


class RunLostError(RunNotFoundError):
    """The ledger holds the run, but its crew answers that it does not know it (expired, or another deployment)."""


class RunNotWaitingError(UsageError):
    """The run is not waiting for a human decision (finished, running, or never started)."""


class HumanOnlyError(UsageError):
    """The approval policy is ``human`` and a model tried to decide."""


class ApprovalDeniedError(UsageError):
    """The approval rules (``[auth.approval]``) do not let this caller decide on the run."""


class UpstreamError(CrewMCPError):
    """A call to a crew failed; the message explains it for the caller.

    Attributes:
        crew: the crew's name.
        may_have_started: for a kickoff: True when the request may have reached the crew (a run may exist),
            False when it provably did not; None for calls that start nothing.
        configuration: True when only the person running crew-mcp can fix it (the crew refused the token).
        retry_after: seconds to wait before trying again, when the crew said so.
    """

    def __init__(
        self,
        message: str,
        *,
        crew: str | None = None,
        may_have_started: bool | None = None,
        configuration: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.crew = crew
        self.may_have_started = may_have_started
        self.configuration = configuration
        self.retry_after = retry_after

    @classmethod
    def from_api(
        cls,
        exc: CrewAPIError,
        *,
        crew: str | None,
        action: str,
        note: str = "",
        may_have_started: bool | None = None,
    ) -> UpstreamError:
        """The caller's sentence for a failed ``action`` (e.g. "read the run's status") on ``crew``, plus ``note``."""
        name = f"crew {crew!r}" if crew else "the crew"
        auth = isinstance(exc, AuthenticationError | PermissionDeniedError)
        retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
        message = _sentence(exc, name, action) + (f" {note}" if note else "")
        return cls(message, crew=crew, may_have_started=may_have_started, configuration=auth, retry_after=retry_after)


def _sentence(exc: CrewAPIError, name: str, action: str) -> str:
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return (
            f"{name} refused crew-mcp's token (HTTP {exc.status_code}). This is a configuration problem you cannot fix "
            "from chat: ask the user to check the crew's token in the crew-mcp configuration (`crew-mcp doctor`)."
        )
    if isinstance(exc, UnprocessableEntityError) and exc.missing_inputs:
        return f"{name} says required inputs are missing: {', '.join(exc.missing_inputs)}. Call list_inputs."
    if isinstance(exc, RateLimitError):
        wait = f" about {int(exc.retry_after)} s" if exc.retry_after else " a minute"
        return f"{name} is rate limiting crew-mcp; wait{wait} and try again."
    if isinstance(exc, APIResponseValidationError):
        return (
            f"{name} answered with something that is not the CrewAI AMP API (HTTP {exc.status_code}). "
            "Ask the user to check the crew's URL in the crew-mcp configuration."
        )
    tries = f" ({exc.attempts} attempts)" if exc.attempts > 1 else ""
    if isinstance(exc, APIConnectionError):
        # Worded by what happened: whether the request left, and how many attempts there were.
        if not exc.sent:
            return (
                f"{name} could not be reached to {action}{tries}: the connection was never made, so nothing was "
                "sent. Check the crew's URL and the network, or try again in a minute."
            )
        if isinstance(exc, APITimeoutError):
            return f"{name} did not answer in time when asked to {action}{tries}."
        return f"The connection to {name} broke after the request to {action} was sent{tries}."
    if isinstance(exc, APIStatusError):
        said = exc.body.get("message") or exc.body.get("error") or ""
        said = f" ({said})" if said else ""
        return f"{name} failed to {action} with HTTP {exc.status_code}{said}{tries}."
    return f"{name} failed to {action}: {exc}"


class LedgerError(CrewMCPError):
    """The run ledger's backend failed (database locked beyond its timeout, Redis unreachable, ...)."""


class CrewAPIError(CrewMCPError):
    """Something went wrong talking to a crew's AMP API.

    Attributes:
        crew: the configured crew name, when known.
        method: the HTTP method of the failed call.
        path: the URL path of the failed call (never the query string, never the token).
        attempts: how many times the request was tried (set by the client when it gives up).
    """

    def __init__(self, message: str, *, crew: str | None = None, method: str | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.crew = crew
        self.method = method
        self.path = path
        self.attempts = 1


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
    return cls(
        message, status_code=status_code, body=body, retry_after=retry_after, crew=crew, method=method, path=path
    )


def describe(exc: CrewMCPError) -> str:
    """The one sentence every surface (a model, a terminal, a script) shows for ``exc``; never a secret."""
    if isinstance(exc, LedgerError):
        return f"crew-mcp's run ledger is unavailable ({exc}). The crew itself is unaffected; ask the user to check it."
    if isinstance(exc, CrewAPIError):  # a client error that escaped the service: still say it plainly
        return str(UpstreamError.from_api(exc, crew=exc.crew, action="answer"))
    return str(exc)


_USAGE_EXIT = (ConfigError, InvalidInputError, InvalidInputsError, UnknownCrewError)


def exit_code(exc: CrewMCPError) -> int:
    """The CLI's exit status for ``exc``: 2 for bad usage or configuration, 1 for a failed operation."""
    return 2 if isinstance(exc, _USAGE_EXIT) else 1
