"""The web approvals inbox of ``crew-mcp serve --http``, at ``/approvals`` (docs/inbox.md).

A person's pending approvals across all conversations (and, for approvers, the runs they may decide on), each
with its output as safe Markdown; approve, or reject with feedback; stop a run; a history of decisions and stops;
live by polling. Sign-in goes through the MCP endpoint's own identity provider (authorization code + PKCE), an API
key (``CREW_MCP_AUTH=keys``), or, on loopback without authentication, nobody: the local user.

```text
config.py    InboxConfig ([inbox], CREW_MCP_INBOX_*), imported by settings.py: pydantic only
store.py     the server-side key-value store with expiry: memory, SQLite, Redis
sessions.py  sessions and sign-ins in progress (opaque ids in cookies, SHA-256 keys in the store)
oauth.py     crew-mcp as an OAuth client: discovery, dynamic registration, PKCE, code redemption
security.py  Host/Origin checks, CSRF, cookie attributes, security headers
context.py   a session → the Caller the service gets (by="human", via="inbox")
state.py     the page's data (GET /approvals/api/state)
signin.py    sign-in and sign-out routes;  api.py  state, decide, stop;  pages.py  HTML and static files
app.py       build_inbox(): the routes build_app mounts
```

This package's ``__init__`` imports nothing, so ``settings.py`` (every CLI command) pays only for ``config``.
"""
