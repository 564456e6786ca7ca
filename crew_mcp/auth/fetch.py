"""The one place the verifiers talk HTTP to an authorization server: bounded time, JSON objects only.

Failures become :class:`FetchError` with a message that names the URL and the reason, never a token or a
client secret (tokens travel in request bodies, never in URLs).
"""

from __future__ import annotations

from typing import Any

import httpx2

DEFAULT_TIMEOUT = httpx2.Timeout(5.0, connect=3.0)
"""An authorization server that takes longer than this cannot vouch for a caller in time."""
MAX_BODY = 1_000_000
"""Metadata, a JWKS and an introspection answer are a few kilobytes; anything far larger is not one."""


class FetchError(Exception):
    """The authorization server could not be reached or did not answer with a JSON object."""


async def request_json(
    http: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send one request and return its JSON object body.

    Raises:
        FetchError: transport failure, timeout, a non-2xx status, an oversized or non-JSON-object body.
    """
    try:
        response = await http.request(
            method, url, data=data, headers={"Accept": "application/json", **(headers or {})}, timeout=DEFAULT_TIMEOUT
        )
    except httpx2.TimeoutException:
        raise FetchError(f"{url} did not answer in time") from None
    except httpx2.HTTPError as exc:
        raise FetchError(f"{url} cannot be reached ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise FetchError(f"{url} answered HTTP {response.status_code}")
    if len(response.content) > MAX_BODY:
        raise FetchError(f"{url} answered with {len(response.content)} bytes, more than any metadata")
    try:
        body = response.json()
    except ValueError:
        raise FetchError(f"{url} did not answer with JSON") from None
    if not isinstance(body, dict):
        raise FetchError(f"{url} did not answer with a JSON object")
    return body


def same_url(a: str, b: str) -> bool:
    """Issuer and resource comparison: exact, except that a trailing slash and scheme/host case do not matter.

    Auth0 issuers end in "/" and people configure them without; RFC 8707 canonical URIs lower-case the
    scheme and host.
    """
    return _canonical(a) == _canonical(b)


def _canonical(url: str) -> str:
    url = url.rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"
