"""The one place the verifiers talk HTTP to an authorization server: bounded time, JSON objects only.

Failures become :class:`FetchError` with a message that names the URL and the reason, never a token or a
client secret (tokens travel in request bodies, never in URLs).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

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
    json: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send one request (``data`` form-encoded or ``json`` as a JSON body) and return its JSON object body.

    Raises:
        FetchError: transport failure, timeout, a non-2xx status, an oversized or non-JSON-object body.
    """
    try:
        response = await http.request(
            method,
            url,
            data=data,
            json=json,
            headers={"Accept": "application/json", **(headers or {})},
            timeout=DEFAULT_TIMEOUT,
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


def basic_auth(client_id: str, secret: str) -> str:
    """The ``Authorization`` value that authenticates an OAuth client with HTTP Basic.

    RFC 6749 §2.3.1: the id and the secret are form-encoded before they are joined and Base64-encoded, so a colon
    or a percent sign in either reaches the authorization server intact.
    """
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may live: RFC 8414 (path inserted), then OpenID discovery (both forms)."""
    parts = urlsplit(issuer.rstrip("/"))
    root = f"{parts.scheme}://{parts.netloc}"
    path = parts.path
    urls = [f"{root}/.well-known/oauth-authorization-server{path}", f"{root}{path}/.well-known/openid-configuration"]
    if path:
        urls.append(f"{root}/.well-known/openid-configuration{path}")
    return urls


async def issuer_metadata(
    http: httpx2.AsyncClient, issuer: str, lacks: Callable[[dict[str, Any]], str | None]
) -> dict[str, Any]:
    """The first metadata document at :func:`metadata_urls` that describes ``issuer`` and has what its user needs.

    ``lacks`` says what a document misses (e.g. "names no jwks_uri"), or None when it will do.

    Raises:
        FetchError: no document will do; the message says why each was passed over.
    """
    failures: list[str] = []
    for url in metadata_urls(issuer):
        try:
            metadata = await request_json(http, "GET", url)
        except FetchError as exc:
            failures.append(str(exc))
            continue
        # RFC 8414 §3.3: metadata naming another issuer must not be used (mix-up defence).
        if not isinstance(metadata.get("issuer"), str) or not same_url(metadata["issuer"], issuer):
            failures.append(f"{url} describes issuer {metadata.get('issuer')!r}, not {issuer}")
            continue
        missing = lacks(metadata)
        if missing is None:
            return metadata
        failures.append(f"{url} {missing}")
    raise FetchError("no usable metadata for issuer " + issuer + ": " + "; ".join(failures))


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
