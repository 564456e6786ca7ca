"""SQLite ledger: several processes on one file, schema migrations, locks, crash safety."""

from __future__ import annotations

import json
import random
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from crew_mcp.errors import LedgerError
from crew_mcp.ledger import RecordState, RunRecord
from crew_mcp.ledger.sqlite import SCHEMA_VERSION, SqliteLedger

pytestmark = pytest.mark.slow

WRITER = """
import sys, anyio
from crew_mcp.ledger import RunRecord
from crew_mcp.ledger.sqlite import SqliteLedger
from crew_mcp.models import ExecutionState, ExecutionStatus

async def main(path: str, tag: str, count: int, with_status: bool) -> None:
    ledger = SqliteLedger(path)
    for i in range(count):
        rid, kid = f"{tag}-{i}", f"k-{tag}-{i}"
        await ledger.create(RunRecord(request_id=rid, crew="trip", conversation_id=f"c-{i % 7}", owner=tag))
        await ledger.confirm(rid, kid)
        if with_status:
            await ledger.save_status(kid, ExecutionStatus(kickoff_id=kid, state=ExecutionState.COMPLETED))
        print(kid, flush=True)
    await ledger.aclose()

anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "status")
"""


def writer(path: Path, tag: str, count: int, *, status: bool) -> list[str]:
    return [sys.executable, "-c", WRITER, str(path), tag, str(count), "status" if status else "plain"]


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


async def test_two_processes_write_one_file_concurrently_without_errors(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(tag: str) -> None:
        results[tag] = await anyio.run_process(writer(db, tag, 200, status=True), check=False)

    with anyio.fail_after(25):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a")
            tg.start_soon(run, "b")

    for tag in ("a", "b"):
        done = results[tag]
        assert done.returncode == 0, done.stderr.decode()
        # A busy file is waited for and retried (stamina announces each retry); nothing else may be said.
        said = [line for line in done.stderr.decode().splitlines() if line != "stamina.retry_scheduled"]
        assert said == []
    ledger = SqliteLedger(db)
    try:
        for tag in ("a", "b"):
            records = await ledger.list(owner=tag, limit=1000)
            assert len(records) == 200
            assert {r.state for r in records} == {RecordState.COMPLETED}
    finally:
        await ledger.aclose()


async def test_a_confirmed_record_survives_kill_9_of_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    kill_after = random.randint(3, 40)
    buffer = b""
    with anyio.fail_after(20):
        async with await anyio.open_process(writer(db, "w", 100_000, status=False)) as proc:
            assert proc.stdout is not None
            async for chunk in proc.stdout:
                buffer += chunk
                if buffer.count(b"\n") >= kill_after:
                    proc.kill()
                    break
            async for chunk in proc.stdout:
                buffer += chunk
            assert await proc.wait() == -9
    printed = buffer.decode().split()
    assert len(printed) >= kill_after

    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("SELECT request_id, kickoff_id, state, data FROM runs").fetchall()
    records = {RunRecord.model_validate_json(data).kickoff_id: (rid, state) for rid, _, state, data in rows}
    assert all(records.get(kid, (None, None))[1] == "running" for kid in printed)
    unconfirmed = [rid for rid, kid, state, _ in rows if kid is None]
    assert len(unconfirmed) <= 1, "only the run being kicked off at the kill may be unconfirmed"
    assert all(state in ("running", "unconfirmed") for _, _, state, _ in rows)


_V1_SCHEMA = (
    "CREATE TABLE runs ( request_id TEXT PRIMARY KEY, kickoff_id TEXT UNIQUE, owner TEXT NOT NULL,"
    " conversation_id TEXT NOT NULL, crew TEXT NOT NULL, state TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX runs_by_conversation ON runs (owner, conversation_id, created_at)",
    "PRAGMA user_version = 1",
)


async def test_opening_a_version_1_file_migrates_it_and_keeps_its_records(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    record = RunRecord(request_id="r1", kickoff_id="k1", crew="trip", conversation_id="c", owner="alice")
    with raw(db) as conn:
        for statement in _V1_SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("r1", "k1", "alice", "c", "trip", "unconfirmed", 1, record.model_dump_json()),
        )

    ledger = SqliteLedger(db)
    try:
        assert await ledger.get("k1", owner="alice") == record
        assert await ledger.list(owner="alice") == [record]
    finally:
        await ledger.aclose()

    with raw(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        (updated,) = conn.execute("SELECT updated_at FROM runs").fetchone()
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert updated == int(record.updated_at.timestamp() * 1_000_000)
    assert {"runs_by_owner", "runs_by_state", "runs_by_updated"} <= indexes


async def test_an_old_file_gets_its_uncertain_kickoffs_marked_may_have_started(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    failed = "crew 'trip' failed to start the run with HTTP 502. No run was started."
    uncertain = "crew 'trip' timed out. The request may have reached the crew, so a run may have started; ..."
    rows = [
        RunRecord(request_id=rid, crew="trip", conversation_id="c", owner="alice", state="kickoff_failed", error=err)
        for rid, err in (("r-failed", failed), ("r-maybe", uncertain))
    ]
    with raw(db) as conn:
        for statement in _V1_SCHEMA:
            conn.execute(statement)
        for i, r in enumerate(rows):
            data = r.model_dump_json(exclude={"started_outside"})  # as an older crew-mcp wrote it
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (r.request_id, None, "alice", "c", "trip", "kickoff_failed", i, data),
            )

    ledger = SqliteLedger(db)
    try:
        states = {r.request_id: r.state.value for r in await ledger.list(owner="alice")}
        maybe = await ledger.list(owner="alice", state="may_have_started")
    finally:
        await ledger.aclose()
    assert states == {"r-failed": "kickoff_failed", "r-maybe": "may_have_started"}
    assert [r.request_id for r in maybe] == ["r-maybe"]


async def test_an_empty_version_0_file_gets_the_current_schema(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    raw(db).close()

    ledger = SqliteLedger(db)
    try:
        await ledger.create(RunRecord(request_id="r1", crew="trip", conversation_id="c", owner="alice"))
    finally:
        await ledger.aclose()

    with raw(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_file_from_a_newer_crew_mcp_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    with raw(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    ledger = SqliteLedger(db)

    with pytest.raises(LedgerError, match="schema version 99, newer"):
        await ledger.list(owner="alice")
    await ledger.aclose()


async def test_a_file_that_is_not_a_database_raises_ledger_error(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not a database, just some text that is long enough" * 20)
    ledger = SqliteLedger(db)

    with pytest.raises(LedgerError, match=r"junk\.db failed: file is not a database"):
        await ledger.list(owner="alice")
    await ledger.aclose()


async def test_an_unreadable_record_fails_its_owner_and_reads_as_absent_to_anyone_else(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = SqliteLedger(db)
    await ledger.create(RunRecord(request_id="r1", crew="trip", conversation_id="c", owner="alice"))
    await ledger.confirm("r1", "k1")
    with raw(db) as conn:
        conn.execute("UPDATE runs SET data = '{\"broken\": true}' WHERE request_id = 'r1'")
    conn.close()
    try:
        assert await ledger.get("k1", owner="bob") is None
        assert await ledger.get_request("r1", owner="bob") is None
        for owner in ("alice", None):
            with pytest.raises(LedgerError, match="unreadable record"):
                await ledger.get("k1", owner=owner)
            with pytest.raises(LedgerError, match="unreadable record"):
                await ledger.get_request("r1", owner=owner)
    finally:
        await ledger.aclose()


async def test_an_uncreatable_path_raises_ledger_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    ledger = SqliteLedger(tmp_path / "a-file" / "ledger.db")

    with pytest.raises(LedgerError, match="Cannot create the SQLite ledger"):
        await ledger.list(owner="alice")
    await ledger.aclose()


async def test_a_new_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "deep" / "dir" / "ledger.db")
    await ledger.list(owner="alice")
    await ledger.aclose()

    assert stat.S_IMODE((tmp_path / "deep" / "dir" / "ledger.db").stat().st_mode) == 0o600


async def test_a_lock_held_beyond_the_timeout_raises_ledger_error_and_the_loop_keeps_running(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = SqliteLedger(db, busy_timeout=0.2, busy_retries=1)
    await ledger.list(owner="alice")
    holder = raw(db)
    holder.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tick)
                with pytest.raises(LedgerError, match="stayed locked by another process"):
                    await ledger.create(RunRecord(request_id="r1", crew="trip", conversation_id="c", owner="alice"))
                tg.cancel_scope.cancel()
    finally:
        holder.rollback()
        holder.close()
        await ledger.aclose()
    assert ticks >= 10, "the event loop must keep running while SQLite waits for a lock"


async def test_a_busy_write_is_retried_until_the_lock_is_released(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = SqliteLedger(db, busy_timeout=0.1, busy_retries=4)
    await ledger.list(owner="alice")
    holder = raw(db)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.25, holder.rollback)
    release.start()
    try:
        with anyio.fail_after(5):
            await ledger.create(RunRecord(request_id="r1", crew="trip", conversation_id="c", owner="alice"))
        assert len(await ledger.list(owner="alice")) == 1
    finally:
        release.join()
        holder.close()
        await ledger.aclose()


async def test_rows_keep_indexed_copies_of_the_record_fields(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = SqliteLedger(db)
    await ledger.create(RunRecord(request_id="r1", crew="trip", conversation_id="c", owner="alice"))
    await ledger.confirm("r1", "k1")
    await ledger.aclose()

    with raw(db) as conn:
        row = conn.execute(
            "SELECT request_id, kickoff_id, owner, conversation_id, crew, state, data FROM runs"
        ).fetchone()
    assert row[:6] == ("r1", "k1", "alice", "c", "trip", "running")
    assert json.loads(row[6])["kickoff_id"] == "k1"


async def test_prune_deletes_a_backlog_in_batches_keeping_exactly_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    import crew_mcp.ledger.sqlite as backend

    monkeypatch.setattr(backend, "PRUNE_BATCH", 7)
    ledger = SqliteLedger(tmp_path / "l.db")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    records = [
        RunRecord(
            request_id=f"r{i:03d}", crew="c", conversation_id="x", owner="o", created_at=base + timedelta(minutes=i)
        )
        for i in range(60)
    ]
    await ledger.create_many(records)
    writes: list[int] = []
    original = ledger._write

    async def counting(op):  # type: ignore[no-untyped-def]
        result = await original(op)
        writes.append(result)
        return result

    monkeypatch.setattr(ledger, "_write", counting)
    deleted = await ledger.prune(max_age=timedelta(days=36500), max_count=25)
    kept = await ledger.list(owner="o", limit=100)
    await ledger.aclose()
    assert deleted == 35
    assert [r.request_id for r in kept] == [f"r{i:03d}" for i in range(59, 34, -1)]
    assert max(writes) <= 7
    assert len(writes) >= 35 // 7
