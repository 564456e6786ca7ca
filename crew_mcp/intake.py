"""Reading the body of a request to a route crew-mcp serves itself (webhooks, the approvals inbox): capped.

A body is read up to a limit and never further, whether its ``Content-Length`` announces more (nothing is read) or
it streams past the limit in chunks. A ``Content-Length`` that is not a number announces nothing: the stream is
still capped.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

__all__ = ["ClientDisconnect", "TooLarge", "read_capped"]


class TooLarge(Exception):
    """The body is longer than the limit (declared or as sent); it was not read further."""


async def read_capped(request: Request, limit: int) -> bytes:
    """The request's body, of at most ``limit`` bytes.

    Raises:
        TooLarge: the body is longer than ``limit``.
        ClientDisconnect: the client went away before the body was complete.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge
    return bytes(body)
