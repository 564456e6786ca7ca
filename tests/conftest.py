"""Shared pytest fixtures. Each area keeps its fixtures in its own clearly marked block."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

# ===================================================================================== async runner
# Every coroutine test runs under anyio's pytest plugin (it ships with anyio). Unlike pytest-asyncio, it runs
# an async fixture's setup and teardown in one task, which the MCP server's lifespan task groups require.


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Mark every coroutine test for anyio before anyio's own collection hook looks for the marker."""
    import inspect

    is_test = isinstance(collector, pytest.Module | pytest.Class) and collector.istestfunction(obj, name)
    if is_test and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ==================================================================================== ledger fixtures
# Owned by the run-ledger tests (tests/test_ledger_*.py). They use a real Redis on 127.0.0.1
# (scripts/ensure-redis): without one the Redis tests skip locally and FAIL when CI is set.


def _ledger_redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def require_redis() -> int:
    """The test Redis's port (``CREW_MCP_TEST_REDIS_PORT``, default 6379); skip, or fail under CI, if none answers."""
    port = int(os.environ.get("CREW_MCP_TEST_REDIS_PORT", "6379"))
    if not _ledger_redis_answers(port):
        reason = f"no Redis answers on 127.0.0.1:{port} (start one with scripts/ensure-redis)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the Redis tests", pytrace=False)
        pytest.skip(reason)
    return port


@pytest.fixture
def ledger_redis_url() -> Iterator[str]:
    """A redis:// ledger URL with a key prefix unique to this test; every key under it is deleted afterwards.

    Synchronous on purpose, so async fixtures can request it with ``request.getfixturevalue``.
    """
    port = require_redis()
    prefix = f"crew-mcp-test:{uuid.uuid4().hex}:"
    yield f"redis://127.0.0.1:{port}/0?prefix={prefix}"
    import redis

    with redis.Redis(host="127.0.0.1", port=port, db=0) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


# ================================================================================ end ledger fixtures


# ================================================================================= simulator fixtures
# Owned by the simulator tests (tests/test_simulator*.py); usable by anyone who needs a fake AMP in-process.
# httpx2.ASGITransport does NOT run the ASGI lifespan: with clock="manual" none is needed (advance() moves
# time and delivers webhooks). For the wall clock, or real sockets, use crew_mcp.simulator.serve_simulator.

from collections.abc import AsyncIterator  # noqa: E402

import httpx2  # noqa: E402 - kept inside this block on purpose
from sim_support import sim_http  # noqa: E402

from crew_mcp.simulator import Simulator  # noqa: E402


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The built-in crews on a manual clock (time moves only on ``await sim.advance(s)``)."""
    async with Simulator(clock="manual") as simulator:
        yield simulator


@pytest.fixture
async def sim_client(sim: Simulator) -> AsyncIterator[httpx2.AsyncClient]:
    """An in-process client of ``sim`` at ``http://sim`` with the right bearer token; a crew's base is ``/{name}``."""
    async with sim_http(sim) as client:
        yield client


# ============================================================================= end simulator fixtures


# ====================================================================================== auth fixtures
# Owned by the auth tests (tests/test_auth_*.py): a real OAuth authorization server on 127.0.0.1, port 0
# (tests/oauth_provider.py). Its `audience` starts empty: each test sets the resource it mints tokens for.

from oauth_provider import OAuthProvider, serve_provider  # noqa: E402


@pytest.fixture
async def oauth_provider() -> AsyncIterator[OAuthProvider]:
    """A running authorization server: ``issuer`` is its URL; ``mint()`` signs tokens; counters count requests."""
    async with serve_provider() as provider:
        yield provider


# ================================================================================== end auth fixtures
