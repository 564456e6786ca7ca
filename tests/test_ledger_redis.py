"""Redis ledger specifics: key layout, index clean-up, prefixes, failures that never leak a password."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
import redis

from crew_mcp.errors import LedgerError
from crew_mcp.ledger import RunRecord, open_ledger
from crew_mcp.ledger.redis import RedisLedger, redact_url


def record(rid: str, *, owner: str = "alice", conversation: str = "c") -> RunRecord:
    return RunRecord(request_id=rid, crew="trip", conversation_id=conversation, owner=owner)


def keys_and_members(url: str) -> tuple[set[str], set[str]]:
    """Every key under the URL's prefix, and every member of every sorted set there."""
    parts = urlsplit(url)
    prefix = parse_qs(parts.query)["prefix"][0]
    with redis.Redis(host="127.0.0.1", port=parts.port or 6379, decode_responses=True) as client:
        keys = set(client.scan_iter(match=f"{prefix}*"))
        members = {m for k in keys if client.type(k) == "zset" for m in client.zrange(k, 0, -1)}
    return {k.removeprefix(prefix) for k in keys}, members


def test_redact_url_hides_the_password_and_the_query() -> None:
    assert redact_url("redis://user:hunter2@db:6379/0?prefix=x") == "redis://user:***@db:6379/0"
    assert redact_url("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"
    assert redact_url("redis://db:6379/0") == "redis://db:6379/0"


async def test_an_unreachable_redis_raises_ledger_error_without_the_password() -> None:
    ledger = open_ledger("redis://user:hunter2@127.0.0.1:1/0?prefix=t:")

    with anyio.fail_after(10), pytest.raises(LedgerError) as caught:
        await ledger.list(owner="alice")

    message = str(caught.value)
    assert "hunter2" not in message
    assert "redis://user:***@127.0.0.1:1/0" in message
    assert "onnect" in message
    await ledger.aclose()


def test_an_invalid_redis_url_raises_ledger_error() -> None:
    with pytest.raises(LedgerError, match="Invalid Redis ledger URL"):
        open_ledger("redis://127.0.0.1:notaport/0")


@pytest.mark.redis
async def test_records_and_indexes_live_under_the_prefix(ledger_redis_url: str) -> None:
    ledger = open_ledger(ledger_redis_url)
    await ledger.create(record("r1"))
    await ledger.confirm("r1", "k1")
    await ledger.aclose()

    keys, _ = keys_and_members(ledger_redis_url)

    assert keys == {
        "run:r1",
        "kickoff:k1",
        "idx:created",
        "idx:updated",
        "idx:owner:alice",
        "idx:conv:alice:c",
        "idx:state:alice:running",
        "idx:anystate:running",
    }


@pytest.mark.redis
async def test_prune_removes_index_entries_too(ledger_redis_url: str) -> None:
    ledger = open_ledger(ledger_redis_url)
    for n in range(5):
        await ledger.create(record(f"r{n}", conversation=f"c{n % 2}"))
        await ledger.confirm(f"r{n}", f"k{n}")

    assert await ledger.prune(max_age=timedelta(days=1), max_count=0) == 5
    await ledger.aclose()

    assert keys_and_members(ledger_redis_url) == (set(), set())


@pytest.mark.redis
async def test_a_colon_in_an_owner_cannot_mix_two_conversations(ledger_redis_url: str) -> None:
    ledger = open_ledger(ledger_redis_url)
    await ledger.create(record("r1", owner="a:b", conversation="c"))
    await ledger.create(record("r2", owner="a", conversation="b:c"))

    assert [r.request_id for r in await ledger.list(owner="a:b", conversation_id="c")] == ["r1"]
    assert [r.request_id for r in await ledger.list(owner="a", conversation_id="b:c")] == ["r2"]
    await ledger.aclose()


@pytest.mark.redis
async def test_two_prefixes_are_two_separate_ledgers(ledger_redis_url: str) -> None:
    one = open_ledger(ledger_redis_url)
    two = open_ledger(ledger_redis_url + "other:")
    assert isinstance(two, RedisLedger)
    try:
        await one.create(record("r1"))
        await two.create(record("r1"))

        assert len(await one.list(owner="alice")) == 1
        assert await two.prune(max_age=timedelta(0), max_count=0) == 1
        assert len(await one.list(owner="alice")) == 1
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.redis
async def test_bulk_create_refuses_existing_records_and_stores_the_rest_of_nothing(ledger_redis_url: str) -> None:
    ledger = open_ledger(ledger_redis_url)
    assert isinstance(ledger, RedisLedger)
    await ledger.create_many([record(f"r{n}") for n in range(3)])

    with pytest.raises(LedgerError, match="already exists"):
        await ledger.create_many([record("r9"), record("r1")])

    assert sorted(r.request_id for r in await ledger.list(owner="alice")) == ["r0", "r1", "r2"]
    await ledger.aclose()
