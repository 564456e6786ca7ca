"""CrewClient: the async REST client of one CrewAI AMP crew.

It is the only code in crew-mcp that touches httpx2 for AMP calls, and every request goes through one
choke point, :meth:`CrewClient._request`, which turns transport failures, non-2xx answers and malformed
2xx bodies into the classes of :mod:`crew_mcp.errors`. Retries follow the retry-safety rules of
:mod:`crew_mcp.retry`: ``GET`` calls retry on connection errors, timeouts, 429 and 5xx; ``POST /kickoff``,
``/resume`` and ``/stop`` are sent again only when the request provably never left (connection refused, DNS), because a
second kickoff costs the user money.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import stamina

from . import __version__
from .bodies import EXCERPT_CHARS, Bodies
from .crewconfig import StatusPathMode
from .errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigError,
    CrewAPIError,
    InvalidInputError,
    NotFoundError,
    status_error,
)
from .ids import REQUEST_ID_META_KEY, KickoffResult, is_kickoff_id, validate_kickoff_id
from .inputs import encode_inputs
from .logs import bound
from .models import (
    ExecutionStatus,
    InputsResponse,
    KickoffResponse,
    ResumeRequest,
    ResumeResponse,
    StopResponse,
    WebhookUrls,
)
from .normalize import normalize_status
from .redact import Redactor
from .retry import MAX_RETRY_AFTER, parse_retry_after, retry_hook
from .telemetry import NO_TELEMETRY, Telemetry, endpoint_of

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUTS",
    "MAX_RETRY_AFTER",
    "REQUEST_ID_META_KEY",
    "CrewClient",
    "KickoffResult",
    "StatusPathMode",
    "Timeouts",
    "validate_kickoff_id",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed for each phase of a call; ``total`` bounds the whole call including retries."""

    connect: float
    read: float
    write: float
    total: float


DEFAULT_TIMEOUTS = Timeouts(connect=5.0, read=30.0, write=30.0, total=60.0)
DEFAULT_MAX_RETRIES = 4

_STATUS_PATHS: tuple[str, str] = ("/status/{kickoff_id}", "/{kickoff_id}/status")

# Backoff between retries of safe calls: 0.5 s, 1 s, 2 s, ... capped, plus up to 1 s of jitter.
_WAIT_INITIAL = 0.5
_WAIT_MAX = 8.0
_WAIT_JITTER = 1.0
# Never reached the service, so even a POST may be sent again.
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)


class CrewClient:
    """Async client of one AMP crew: ``inputs``, ``kickoff``, ``status``, ``resume``, ``stop`` and ``health``.

    One pooled :class:`httpx2.AsyncClient` serves the client's whole life; close it with :meth:`aclose`
    or ``async with``. ``transport`` replaces the network (``httpx2.ASGITransport``, ``httpx2.MockTransport``).

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL, or ``status_path``/``max_retries`` is invalid.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        name: str | None = None,
        status_path: StatusPathMode = "auto",
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        url = httpx2.URL(base_url)
        if url.scheme not in {"http", "https"} or not url.host:
            raise ConfigError(
                f"Crew {name!r}: the base URL must be an http(s) URL such as https://my-crew.crewai.com "
                f"(got scheme {url.scheme!r})."
            )
        if status_path != "auto" and status_path not in _STATUS_PATHS:
            raise ConfigError(f"Crew {name!r}: status_path must be 'auto' or one of {', '.join(_STATUS_PATHS)}.")
        if max_retries < 0:
            raise ConfigError(f"Crew {name!r}: max_retries must be 0 or more.")
        self.name = name
        self._token = token or None
        self._redactor = Redactor(self._token, url.password or None)
        self._bodies = Bodies(self._redactor, crew=name)
        self._mode: StatusPathMode = status_path
        self._learned: str | None = None
        self._probe_lock = anyio.Lock()
        self._timeouts = timeouts
        self._max_retries = max_retries
        self._origin = f"{url.scheme}://{url.netloc.decode('ascii').rpartition('@')[2]}"
        headers = {"User-Agent": f"crew-mcp/{__version__}", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self._http_options: dict[str, Any] = {
            "base_url": url.copy_with(query=None, fragment=None),
            "headers": headers,
            "timeout": httpx2.Timeout(
                connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.connect
            ),
            "transport": transport,
            "follow_redirects": False,
        }
        self._pool: httpx2.AsyncClient | None = None
        self._closed = False
        self.telemetry: Telemetry = NO_TELEMETRY  # set by the service (telemetry.attach) to count requests

    @property
    def _http(self) -> httpx2.AsyncClient:
        """The pooled client, built on first use: its TLS context costs ~25 ms, which server start-up should not pay."""
        if self._pool is None:
            if self._closed:
                raise RuntimeError("CrewClient is closed")
            self._pool = httpx2.AsyncClient(**self._http_options)
        return self._pool

    async def __aenter__(self) -> CrewClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        self._closed = True
        if self._pool is not None:
            await self._pool.aclose()

    def redact(self, value: Any) -> Any:
        """``value`` (text or parsed JSON the crew sent, e.g. a webhook payload) without this crew's secrets."""
        return self._redactor.redact(value)

    @property
    def learned_status_path(self) -> str | None:
        """The status path template this crew answered 200 on (auto mode), or the configured one."""
        return self._mode if self._mode != "auto" else self._learned

    async def inputs(self) -> list[str]:
        """The crew's required input names (``GET /inputs``).

        Raises:
            CrewAPIError: a subclass for the failure: connection, timeout, status or malformed body.
        """
        with self._deadline("GET", "/inputs") as deadline:
            response = await self._send("GET", "/inputs", safe=True, deadline=deadline)
        return self._bodies.model(response, InputsResponse, "GET", "/inputs").inputs

    async def kickoff(
        self,
        inputs: Mapping[str, Any],
        *,
        meta: Mapping[str, Any] | None = None,
        webhooks: WebhookUrls | None = None,
        request_id: str | None = None,
    ) -> KickoffResult:
        """Start a run (``POST /kickoff``); the request id is sent as ``meta["crew_mcp_request_id"]``.

        Raises:
            InvalidInputError: an input value or ``meta`` cannot be encoded (nothing was sent).
            UnprocessableEntityError: required inputs are missing (see ``missing_inputs``).
            CrewAPIError: another failure; a kickoff is never sent twice unless it provably never arrived.
        """
        merged = dict(meta or {})
        given = merged.get(REQUEST_ID_META_KEY)
        rid = request_id or (given if isinstance(given, str) and given else uuid.uuid4().hex)
        merged[REQUEST_ID_META_KEY] = rid
        try:
            json.dumps(merged)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"meta must be JSON-serializable: {exc}.") from None
        body: dict[str, Any] = {"inputs": encode_inputs(dict(inputs)), "meta": merged}
        if webhooks is not None:
            body.update(webhooks.wire())
        with self._deadline("POST", "/kickoff") as deadline, bound(kickoff_request_id=rid):
            response = await self._send("POST", "/kickoff", body=body, safe=False, deadline=deadline)
        parsed = self._bodies.model(response, KickoffResponse, "POST", "/kickoff", note=f" (request id {rid})")
        if not is_kickoff_id(parsed.kickoff_id):
            # Never stored nor put in a URL: an id like "../../inputs" would make later reads hit another route.
            raise self._bodies.invalid(response, "POST", "/kickoff", f"has no usable kickoff_id (request id {rid})")
        return KickoffResult(kickoff_id=parsed.kickoff_id, request_id=rid)

    async def status(self, kickoff_id: str) -> ExecutionStatus:
        """The normalized status of one run; ``state=not_found`` when the crew does not know the id.

        Raises:
            InvalidInputError: ``kickoff_id`` is malformed (nothing was sent).
            CrewAPIError: a subclass for any other failure.
        """
        validate_kickoff_id(kickoff_id)
        with self._deadline("GET", "/status") as deadline:
            known = self.learned_status_path
            if known is not None:
                return await self._status_at(known, kickoff_id, deadline, probing=False)
            async with self._probe_lock:
                if self._learned is None:
                    return await self._probe_status(kickoff_id, deadline)
            return await self._status_at(self._learned, kickoff_id, deadline, probing=False)

    async def resume(
        self,
        kickoff_id: str,
        *,
        task_id: str,
        feedback: str,
        approve: bool,
        webhooks: WebhookUrls | None = None,
    ) -> ResumeResponse:
        """Approve or reject a paused task (``POST /resume``); webhook URLs must be sent again every time.

        Raises:
            InvalidInputError: ``kickoff_id`` is malformed (nothing was sent).
            BadRequestError: the run is not waiting for human input.
            CrewAPIError: a subclass for any other failure.
        """
        validate_kickoff_id(kickoff_id)
        request = ResumeRequest(kickoff_id=kickoff_id, task_id=task_id, human_feedback=feedback, is_approve=approve)
        body = request.model_dump(by_alias=True, exclude_none=True)
        if webhooks is not None:
            body.update(webhooks.wire())
        with self._deadline("POST", "/resume") as deadline:
            response = await self._send("POST", "/resume", body=body, safe=False, deadline=deadline)
        return self._bodies.model(response, ResumeResponse, "POST", "/resume")

    async def stop(self, kickoff_id: str) -> StopResponse:
        """Stop a running or paused run (``POST /stop/{kickoff_id}``, a newer AMP endpoint).

        Raises:
            InvalidInputError: ``kickoff_id`` is malformed (nothing was sent).
            BadRequestError: the run has finished (``body["detail"]`` names its state).
            APIStatusError: 404 or 405 from a deployment without the endpoint; 404 also for an unknown run.
            CrewAPIError: a subclass for any other failure.
        """
        path = f"/stop/{validate_kickoff_id(kickoff_id)}"
        with self._deadline("POST", "/stop") as deadline:
            response = await self._send("POST", path, safe=False, deadline=deadline)
        return self._bodies.model(response, StopResponse, "POST", path)

    async def health(self) -> str:
        """The body of ``GET /`` (``Healthy``): a cheap check of the URL and the token.

        Raises:
            APIResponseValidationError: the answer is an HTML page or empty (probably the wrong URL).
            CrewAPIError: a subclass for any other failure.
        """
        with self._deadline("GET", "/") as deadline:
            response = await self._send("GET", "", safe=True, deadline=deadline)
        text = str(self._bodies.redact(response.text.strip()))
        if "json" in response.headers.get("content-type", ""):
            with contextlib.suppress(ValueError):
                value = json.loads(text)
                text = value.strip() if isinstance(value, str) else text
        if not text or text.startswith("<") or "html" in response.headers.get("content-type", ""):
            raise self._bodies.invalid(response, "GET", "/", "is not a health answer (is the base URL the crew's URL?)")
        return text

    async def _probe_status(self, kickoff_id: str, deadline: float) -> ExecutionStatus:
        """Auto mode's first status call: try each path once, remember the first that answers 200."""
        json_404 = False
        last: NotFoundError | None = None
        for template in _STATUS_PATHS:
            try:
                status = await self._status_at(template, kickoff_id, deadline, probing=True)
            except NotFoundError as exc:
                json_404 = json_404 or bool(exc.body)
                last = exc
                continue
            self._learned = template
            return status
        assert last is not None  # both paths were tried and each raised NotFoundError
        if json_404:
            return normalize_status(kickoff_id, {**last.body, "state": "NOT FOUND"})
        raise last

    async def _status_at(self, template: str, kickoff_id: str, deadline: float, *, probing: bool) -> ExecutionStatus:
        path = template.format(kickoff_id=kickoff_id)
        try:
            response = await self._send("GET", path, safe=True, deadline=deadline)
        except NotFoundError as exc:
            if probing or not exc.body:
                raise
            return normalize_status(kickoff_id, {**exc.body, "state": "NOT FOUND"})
        body = self._bodies.json(response, "GET", path)
        if not isinstance(body, dict):
            raise self._bodies.invalid(response, "GET", path, "is not a JSON object")
        status = normalize_status(kickoff_id, body)
        if status.raw_state is None:
            # No state word at all: not a status body (a proxy's JSON, another API), never "still working".
            raise self._bodies.invalid(response, "GET", path, "is not a run status (it has no state or status)")
        return status

    @contextlib.contextmanager
    def _deadline(self, method: str, path: str) -> Iterator[float]:
        """Bound a whole call, retries included, by ``timeouts.total``."""
        try:
            with anyio.fail_after(self._timeouts.total) as scope:
                yield scope.deadline
        except TimeoutError:
            raise APITimeoutError(
                f"{method} {path} on {self._bodies.where} took longer than {self._timeouts.total:g} s in total "
                "(retries included); the crew may be overloaded, try again later",
                crew=self.name,
                method=method,
                path=path,
            ) from None

    async def _send(
        self, method: str, path: str, *, body: dict[str, Any] | None = None, safe: bool, deadline: float
    ) -> httpx2.Response:
        """Send through :meth:`_request` with retries allowed by the call's retry safety."""

        tries = 0
        try:
            async for attempt in stamina.retry_context(
                on=retry_hook(safe=safe, deadline=deadline),
                attempts=self._max_retries + 1,
                timeout=None,
                wait_initial=_WAIT_INITIAL,
                wait_max=_WAIT_MAX,
                wait_jitter=_WAIT_JITTER,
            ):
                with attempt:
                    tries = attempt.num
                    if attempt.num > 1:
                        self.telemetry.retry(self.name or "-", endpoint_of(path))
                    return await self._request(method, path, body)
        except CrewAPIError as exc:
            exc.attempts = max(tries, 1)  # messages say "after N attempts" only when there were several
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> httpx2.Response:
        """The one place that talks HTTP: returns a 2xx response or raises a :mod:`crew_mcp.errors` class."""
        call: dict[str, Any] = {"crew": self.name, "method": method, "path": path or "/"}
        said, where = f"{method} {path or '/'}", self._bodies.where
        started = time.perf_counter()
        outcome = "error"
        tracked = self.telemetry.upstream_call(self.name, method, path)
        try:
            try:
                response = await self._http.request(method, path, json=body, headers=tracked.headers)
            except _NOT_SENT as exc:
                cls = APIConnectionError if isinstance(exc, httpx2.ConnectError) else APITimeoutError
                raise cls(
                    f"{said}: could not connect to {where} at {self._origin} ({type(exc).__name__}); check the "
                    "crew URL and the network",
                    sent=False,
                    **call,
                ) from None
            except httpx2.TimeoutException as exc:
                raise APITimeoutError(
                    f"{said}: {where} did not answer in time ({type(exc).__name__})", **call
                ) from None
            except httpx2.HTTPError as exc:
                detail = self._bodies.redact(str(exc))[:EXCERPT_CHARS]
                raise APIConnectionError(
                    f"{said}: the connection to {where} failed after sending ({type(exc).__name__}: {detail})",
                    **call,
                ) from None
            outcome = str(response.status_code)
            if response.is_success:
                return response
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise status_error(response.status_code, self._bodies.error_body(response), retry_after=retry_after, **call)
        finally:
            tracked.end(outcome)
            ms = (time.perf_counter() - started) * 1000
            logger.debug("%s %s %s %s %.1fms", self.name or "-", method, path or "/", outcome, ms)
