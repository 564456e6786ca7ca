"""Shared pytest fixtures. Each area keeps its fixtures in its own clearly marked block."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

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
