"""Signing in and out of the inbox, in each of the three modes.

```text
GET  /approvals              the page; no session: oauth → the provider's sign-in, keys → the key form,
                             none (loopback) → a session for the local user, made on the spot
GET  /approvals/login        the sign-in page (a message after signing out or a failed sign-in)
GET  /approvals/login/start  oauth: remember state + PKCE verifier server-side, set the sign-in cookie, 302 to
                             the provider's authorization endpoint
GET  /approvals/callback     oauth: the sign-in cookie's record must match ``state`` (and ``iss``); redeem the
                             code, verify the token, make a session, 303 to the inbox
POST /approvals/login        keys: the key from the form (with the form's token and the sign-in cookie)
POST /approvals/logout       end the session (CSRF-checked like every POST)
```

Signing in always makes a new session id (no fixation); the sign-in cookie lives at most ten minutes and a
sign-in record is redeemed once. Errors are sentences for the person; codes, tokens and keys are never shown or
logged.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..auth.config import SCOPE_READ, Principal, principal_from_token
from ..auth.keys import KeyVerifier
from ..identity import default_owner
from .config import INBOX_PATH
from .context import InboxContext, read_body
from .oauth import OAuthSignIn, SignInError, display_name
from .pages import render_page, render_signin
from .security import WebGuard
from .sessions import LOGIN_SECONDS, new_token

__all__ = ["SignIn"]

log = logging.getLogger("crew_mcp.inbox")

_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")
_MAX_FORM = 8192


def _redirect(url: str, status: int = 303) -> Response:
    return WebGuard.protect(RedirectResponse(url, status_code=status))


class SignIn:
    """The sign-in and sign-out routes' handlers (see the module docstring)."""

    def __init__(self, ctx: InboxContext, *, oauth: OAuthSignIn | None, keys: KeyVerifier | None) -> None:
        self.ctx = ctx
        self.oauth = oauth
        self.keys = keys

    @property
    def provider(self) -> str:
        """The identity provider's host, as the sign-in button names it."""
        issuer = self.ctx.settings.auth.issuer or ""
        return urlsplit(issuer).netloc or issuer

    async def page(self, request: Request) -> Response:
        """``GET /approvals``: the inbox, or the way to sign in."""
        ctx = self.ctx
        sid, session = await ctx.session(request)
        if session is None:
            if ctx.mode == "oauth":
                return _redirect(f"{INBOX_PATH}/login/start")
            if ctx.mode == "keys":
                return _redirect(f"{INBOX_PATH}/login")
            owner = default_owner(ctx.settings.owner)
            sid, session = await ctx.sessions.create(principal=owner, name=owner.removeprefix("local:"), kind="local")
            response = render_page(name=session.name, csrf=session.csrf, kind=session.kind)
            ctx.guard.set_cookie(response, ctx.guard.session_cookie, sid, int(ctx.sessions.lifetime))
            return response
        if not ctx.may_read(session):
            return self._no_access(session.name)
        return render_page(name=session.name, csrf=session.csrf, kind=session.kind)

    async def login_page(self, request: Request) -> Response:
        """``GET /approvals/login``: the sign-in page, with a word on why it is shown."""
        if self.ctx.mode == "none":
            return _redirect(INBOX_PATH)
        message = "You are signed out." if request.query_params.get("signed_out") else ""
        return await self._signin_page(request, message=message, tone="success" if message else "info")

    async def start(self, request: Request) -> Response:
        """``GET /approvals/login/start``: off to the identity provider."""
        if self.oauth is None:
            return _redirect(f"{INBOX_PATH}/login")
        state, code_verifier = new_token(), new_token()
        try:
            url = await self.oauth.authorization_url(state=state, code_verifier=code_verifier)
        except SignInError as exc:
            return render_signin(status=503, mode="oauth", message=str(exc), tone="danger", provider=self.provider)
        lid = await self.ctx.sessions.start_login({"state": state, "verifier": code_verifier})
        response = _redirect(url, 302)
        self.ctx.guard.set_cookie(response, self.ctx.guard.login_cookie, lid, int(LOGIN_SECONDS))
        return response

    async def callback(self, request: Request) -> Response:
        """``GET /approvals/callback``: the identity provider sends the browser back with a code (or an error)."""
        ctx, q = self.ctx, request.query_params
        if self.oauth is None:
            return _redirect(f"{INBOX_PATH}/login")
        login = await ctx.sessions.finish_login(request.cookies.get(ctx.guard.login_cookie))
        expected, given = str((login or {}).get("state", "")), q.get("state", "")
        if login is None or not given or not hmac.compare_digest(given.encode(), expected.encode()):
            return self._failed(
                400, "This sign-in expired or was started in another browser tab or window; sign in again."
            )
        error = q.get("error")
        if error:
            said = error if _ERROR_CODE.match(error) else "an error"
            return self._failed(401, f"The identity provider did not sign you in ({said}); sign in again.")
        try:
            self.oauth.check_issuer(q.get("iss"))
            principal = await self.oauth.redeem(q.get("code", ""), str(login.get("verifier", "")))
        except SignInError as exc:
            return self._failed(401, str(exc))
        return await self._signed_in(principal, "oauth")

    async def key_login(self, request: Request) -> Response:
        """``POST /approvals/login``: sign in with an API key (keys mode)."""
        ctx = self.ctx
        if self.keys is None:
            return _redirect(f"{INBOX_PATH}/login")
        lid = request.cookies.get(ctx.guard.login_cookie)
        login = await ctx.sessions.login(lid)
        form = await _form(request)
        if (
            login is None
            or not ctx.guard.origin_ok(request)
            or not WebGuard.csrf_ok(str(login.get("csrf", "")), request, form.get("csrf_token"))
        ):
            return await self._signin_page(
                request,
                status=403,
                message="This sign-in form expired or came from another site; try again.",
                tone="danger",
            )
        access = await self.keys.verify_token(form.get("key", "").strip())
        if access is None:
            return await self._signin_page(
                request, status=401, message="That key is not one of this server's API keys.", tone="danger"
            )
        return await self._signed_in(principal_from_token(access, ctx.settings.auth), "key", login=lid)

    async def logout(self, request: Request) -> Response:
        """``POST /approvals/logout``: end this browser's session."""
        ctx = self.ctx
        sid, session = await ctx.session(request)
        form = await _form(request)
        if session is None:
            return _redirect(f"{INBOX_PATH}/login?signed_out=1" if ctx.mode != "none" else INBOX_PATH)
        if not ctx.guard.origin_ok(request) or not WebGuard.csrf_ok(session.csrf, request, form.get("csrf_token")):
            return WebGuard.protect(Response("Refused: this request did not come from the inbox page.", 403))
        await ctx.sessions.end(sid)
        log.info("inbox: %s signed out", session.principal)
        response = _redirect(f"{INBOX_PATH}/login?signed_out=1" if ctx.mode != "none" else INBOX_PATH)
        ctx.guard.clear_cookie(response, ctx.guard.session_cookie)
        return response

    async def _signed_in(
        self, principal: Principal, kind: Literal["oauth", "key"], *, login: str | None = None
    ) -> Response:
        """A session for ``principal`` and the way into the inbox; or, without crew:read, no session and why.

        ``login`` (the key form's sign-in record) is spent only on success, so a refused person may try another key.
        """
        ctx = self.ctx
        sid, session = await ctx.sessions.create(
            principal=principal.id,
            name=display_name(principal),
            kind=kind,
            scopes=sorted(principal.scopes),
            groups=sorted(principal.groups),
        )
        if not ctx.may_read(session):
            await ctx.sessions.end(sid)
            return self._no_access(session.name)
        if login is not None:
            await ctx.sessions.finish_login(login)
        log.info("inbox: %s signed in (%s)", principal.id, "API key" if kind == "key" else kind)
        response = _redirect(INBOX_PATH)
        ctx.guard.set_cookie(response, ctx.guard.session_cookie, sid, int(ctx.sessions.lifetime))
        ctx.guard.clear_cookie(response, ctx.guard.login_cookie)
        return response

    async def _signin_page(
        self, request: Request, *, status: int = 200, message: str = "", tone: str = "info"
    ) -> Response:
        csrf = ""
        response_cookie: str | None = None
        if self.ctx.mode == "keys":
            csrf = new_token()
            response_cookie = await self.ctx.sessions.start_login({"csrf": csrf})
        response = render_signin(
            status=status, mode=self.ctx.mode, message=message, tone=tone, csrf=csrf, provider=self.provider
        )
        if response_cookie is not None:
            self.ctx.guard.set_cookie(response, self.ctx.guard.login_cookie, response_cookie, int(LOGIN_SECONDS))
        return response

    def _failed(self, status: int, message: str) -> Response:
        response = render_signin(status=status, mode="oauth", message=message, tone="danger", provider=self.provider)
        self.ctx.guard.clear_cookie(response, self.ctx.guard.login_cookie)
        return response

    def _no_access(self, name: str) -> Response:
        return render_signin(
            status=403,
            mode="none",  # signing in again would not help: only the message
            message=f"You are signed in as {name}, but your account may not read runs here (it lacks the "
            f"{SCOPE_READ} scope). Ask the person who runs crew-mcp for access.",
            tone="danger",
            provider=self.provider,
        )


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form (sign-in, sign-out); anything larger or of another type reads as empty."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await read_body(request, _MAX_FORM)
    if body is None:
        return {}
    try:
        return dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=10))
    except ValueError:  # more fields than any of the inbox's forms has
        return {}
