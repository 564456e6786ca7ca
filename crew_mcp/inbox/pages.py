"""The inbox's HTML pages and static files.

The pages are two small templates (``page.html``, ``signin.html``) whose few values are HTML-escaped here; the
runs, outputs and history are drawn by ``inbox.js`` from ``/approvals/api/state`` with DOM calls only (crew output
goes through ``markdown.js``, the run card's renderer, which never parses HTML). No page has an inline script or
style, so the CSP needs no ``'unsafe-inline'`` and no nonce.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .security import WebGuard

__all__ = ["STATIC", "render_page", "render_signin", "static_file"]

STATIC: dict[str, tuple[str, str]] = {
    "inbox.js": ("crew_mcp.inbox", "text/javascript; charset=utf-8"),
    "inbox.css": ("crew_mcp.inbox", "text/css; charset=utf-8"),
    "icon.svg": ("crew_mcp.inbox", "image/svg+xml"),
    "markdown.js": ("crew_mcp.apps", "text/javascript; charset=utf-8"),
}
"""The static files the pages load, and where they live: the renderer is the run card's own."""


@functools.cache
def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def _render(template: str, status: int, **values: str) -> Response:
    page = Template(_read("crew_mcp.inbox", template)).substitute({k: html.escape(v) for k, v in values.items()})
    return WebGuard.protect(HTMLResponse(page, status_code=status))


def render_page(*, name: str, csrf: str, kind: str) -> Response:
    """The inbox page for a signed-in person (or the local user)."""
    initial = (name.strip()[:1] or "?").upper()
    return _render("page.html", 200, name=name, initial=initial, csrf=csrf, kind=kind)


def render_signin(
    *,
    status: int = 200,
    mode: str,
    message: str = "",
    tone: str = "info",
    csrf: str = "",
    provider: str = "",
) -> Response:
    """The sign-in page: a button to the identity provider (oauth) or a field for an API key (keys), with an
    optional message (signed out, an error, ...)."""
    return _render(
        "signin.html",
        status,
        mode=mode,
        message=message,
        tone=tone,
        csrf=csrf,
        provider=provider,
        message_hidden="" if message else "hidden",
        oauth_hidden="" if mode == "oauth" else "hidden",
        keys_hidden="" if mode == "keys" else "hidden",
    )


async def static_file(request: Request) -> Response:
    """One of :data:`STATIC` (anything else is 404); cached briefly, checked against its type."""
    name = request.path_params.get("name", "")
    found = STATIC.get(name)
    if found is None:
        return WebGuard.protect(Response("Not found", status_code=404, media_type="text/plain"))
    package, media_type = found
    response = Response(_read(package, name), media_type=media_type)
    response.headers["Cache-Control"] = "private, max-age=300"
    return WebGuard.protect(response)
