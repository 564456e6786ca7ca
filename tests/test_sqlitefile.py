"""What every SQLite file shares (crew_mcp.sqlitefile): transactions, busy detection and the busy-retry policy.

The retry policy is checked on the waits stamina plans (its retry hook), never on how long anything took.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from crew_mcp.errors import CrewMCPError, LedgerError
from crew_mcp.ledger import RunRecord
from crew_mcp.ledger.sqlite import SqliteLedger
from crew_mcp.simulator import SimulatorStateError
from crew_mcp.simulator.durable import SqliteStore
from crew_mcp.sqlitefile import SqliteFile, connect, is_busy, transaction


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


@pytest.fixture
def planned_waits() -> Iterator[list[float]]:
    waits: list[float] = []

    def record(details: RetryDetails) -> None:
        waits.append(details.wait_for)

    set_on_retry_hooks([record])
    try:
        yield waits
    finally:
        set_on_retry_hooks(None)


def _ledger_write(db: Path) -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
    ledger = SqliteLedger(db, busy_timeout=0.01, busy_retries=3)
    record = RunRecord(request_id="r1", crew="trip", conversation_id="c", owner="alice")
    return lambda: ledger.create(record), ledger.aclose


def _simulator_write(db: Path) -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
    store = SqliteStore(db, busy_timeout=0.01)
    return lambda: store.transact(lambda session: None), store.aclose


@pytest.mark.parametrize(
    ("write", "error"), [(_ledger_write, LedgerError), (_simulator_write, SimulatorStateError)], ids=["ledger", "sim"]
)
async def test_a_busy_write_is_retried_after_fixed_doubling_pauses_without_jitter(
    tmp_path: Path,
    planned_waits: list[float],
    write: Callable[[Path], tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]],
    error: type[CrewMCPError],
) -> None:
    # The pause is taken while the store's lock is held, so jitter would only make every other caller wait longer.
    db = tmp_path / "state.db"
    attempt, close = write(db)
    await attempt()  # creates the file and its schema
    holder = raw(db)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(error, match="locked"):
            await attempt()
    finally:
        holder.rollback()
        holder.close()
        await close()
    assert planned_waits == pytest.approx([0.05, 0.1, 0.2])


def test_a_transaction_is_rolled_back_when_its_operation_raises(tmp_path: Path) -> None:
    conn = connect(tmp_path / "t.db", busy_timeout=1.0, synchronous="FULL", not_wal=None)
    conn.execute("CREATE TABLE t (x INTEGER)")

    def half_done(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        raise ValueError("stop")

    with pytest.raises(ValueError, match="stop"):
        transaction(conn, half_done)
    assert not conn.in_transaction
    assert transaction(conn, lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    conn.close()


def test_a_lock_held_elsewhere_is_busy_and_other_errors_are_not(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    conn = connect(db, busy_timeout=0.01, synchronous="FULL", not_wal=None)
    holder = raw(db)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError) as locked:
            conn.execute("BEGIN IMMEDIATE")
    finally:
        holder.rollback()
        holder.close()
    with pytest.raises(sqlite3.OperationalError) as missing:
        conn.execute("SELECT * FROM nowhere")
    conn.close()
    assert is_busy(locked.value)
    assert not is_busy(missing.value)


def test_a_connection_that_cannot_use_wal_raises_the_callers_own_error() -> None:
    class NotWal(Exception):
        pass

    def opener() -> sqlite3.Connection:
        # ":memory:" answers journal_mode=WAL with "memory": a database that never becomes WAL.
        return connect(Path(":memory:"), busy_timeout=0.01, synchronous="FULL", not_wal=NotWal)

    db = SqliteFile(opener, error=lambda exc: LedgerError(str(exc)), retries=0)
    with pytest.raises(NotWal, match="memory"):
        db.call(lambda c: None, write=False)
