"""The inbox's web security: Host and Origin checks, CSRF tokens, cookies and response headers.

* **Host** must be one of the MCP endpoint's allowed hosts (:func:`crew_mcp.auth.transport_security`, passed in): a page
  reached through DNS rebinding gets 421, before anything is read or created.
* **Origin** of every POST must be the public URL's origin (or, on a loopback bind, this very loopback origin).
  A POST without one (``Origin: null``, as no-referrer form posts send) passes only with ``Sec-Fetch-Site:
  same-origin``; a POST with neither is refused.
* **CSRF**: every POST carries the session's synchronizer token (``X-CSRF-Token`` header or ``csrf_token`` form
  field), compared in constant time. SameSite=Lax alone would not do: sites ignore ports, so another web app on
  this machine (127.0.0.1:3000) is "same-site" with the inbox (127.0.0.1:8000) and its POSTs carry the cookie.
* **Cookies**: HttpOnly, SameSite=Lax, Path=/; Secure (and the ``__Host-`` name prefix) unless the server is
  reached over plain http on loopback.
* **Headers** on every inbox response: a CSP without inline script or style (``default-src 'none'``,
  ``script-src 'self'``, ``connect-src 'self'``, ``form-action 'self'``, ``frame-ancestors 'none'``,
  ``base-uri 'none'``), ``Referrer-Policy: no-referrer``, ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY``, ``Cross-Origin-Opener-Policy: same-origin``, and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import Response

from ..auth.wiring import is_loopback

__all__ = ["CSP", "WebGuard"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@dataclass(frozen=True)
class WebGuard:
    """The checks and cookie settings of one deployment (see the module docstring)."""

    hosts: tuple[str, ...]
    public_origin: str | None
    loopback: bool
    secure: bool
    problem: str = ""

    @classmethod
    def of(cls, public_url: str | None, host: str, security: TransportSecuritySettings) -> WebGuard:
        """The guard for a server bound to ``host`` and reached at ``public_url``, answering the Host names that
        ``security`` (the MCP endpoint's, from :func:`~crew_mcp.auth.transport_security`) allows."""
        hosts = tuple(security.allowed_hosts)
        origin = None
        if public_url:
            parts = urlsplit(public_url)
            origin = f"{parts.scheme}://{parts.netloc.lower().rpartition('@')[2]}"
        loopback = is_loopback(host)
        secure = not loopback or (public_url or "").startswith("https://")
        problem = ""
        if not loopback and not (public_url or "").startswith("https://"):
            # A session cookie over plain http to another machine could be read on the way: the inbox refuses.
            problem = (
                "The approvals inbox needs HTTPS when it is reached from other machines: set CREW_MCP_PUBLIC_URL to "
                "the https:// address people use (a reverse proxy can terminate TLS)."
            )
        return cls(hosts, origin, loopback, secure, problem)

    @property
    def session_cookie(self) -> str:
        """The session cookie's name (``__Host-`` prefixed when Secure: no Domain, Path=/, https only)."""
        return "__Host-crew_mcp_inbox" if self.secure else "crew_mcp_inbox"

    @property
    def login_cookie(self) -> str:
        """The cookie that ties a sign-in in progress to the browser that started it."""
        return "__Host-crew_mcp_signin" if self.secure else "crew_mcp_signin"

    def host_ok(self, request: Request) -> bool:
        """Whether the Host header is one this server answers to (DNS rebinding otherwise)."""
        host = request.headers.get("host", "").lower()
        if not host:
            return False
        for allowed in self.hosts:
            if host == allowed or (allowed.endswith(":*") and host.startswith(allowed[:-1])):
                return True
        return False

    def origin_ok(self, request: Request) -> bool:
        """Whether a POST comes from the inbox's own origin.

        Under ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` on a form post, even a same-origin one
        (the sign-in and sign-out forms). Such a post passes only with ``Sec-Fetch-Site: same-origin``, a header
        pages cannot set; a sandboxed frame elsewhere also sends ``Origin: null``, but never that.
        """
        origin = request.headers.get("origin")
        if origin in (None, "", "null"):
            return request.headers.get("sec-fetch-site") == "same-origin"
        if self.public_origin is not None and origin.lower() == self.public_origin:
            return True
        # On a loopback bind the page may be opened at http://127.0.0.1:<port> as well as at the public URL.
        if self.loopback:
            host = request.headers.get("host", "").lower()
            hostname = urlsplit(f"http://{host}").hostname or ""
            return is_loopback(hostname) and origin.lower() == f"http://{host}"
        return False

    @staticmethod
    def csrf_ok(expected: str, request: Request, form_value: str | None = None) -> bool:
        """Whether the request carries the session's CSRF token (header, else the form field)."""
        given = request.headers.get("x-csrf-token") or form_value or ""
        return bool(given) and hmac.compare_digest(given.encode(), expected.encode())

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        """Set an inbox cookie with the attributes above."""
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.secure, httponly=True, samesite="lax")

    def clear_cookie(self, response: Response, name: str) -> None:
        """Remove an inbox cookie from the browser."""
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="lax")

    @staticmethod
    def protect(response: Response) -> Response:
        """Add the security headers (and no-store) to an inbox response."""
        for name, value in _HEADERS.items():
            response.headers[name] = value
        response.headers.setdefault("Cache-Control", "no-store")
        return response
