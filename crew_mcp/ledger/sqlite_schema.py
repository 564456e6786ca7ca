"""The SQLite ledger's schema and its migrations: ``PRAGMA user_version`` says which steps a file has had.

Step ``n`` of :data:`MIGRATIONS` moves a file from version ``n`` to ``n + 1``; :func:`migrate` runs the missing
steps in one transaction when the ledger opens a file, and refuses a file written by a newer crew-mcp.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime

from crew_mcp.errors import LedgerError
from crew_mcp.ledger.records import micros
from crew_mcp.sqlitefile import transaction

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]


def _v1_create_runs(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE runs ("
        " request_id TEXT PRIMARY KEY, kickoff_id TEXT UNIQUE, owner TEXT NOT NULL,"
        " conversation_id TEXT NOT NULL, crew TEXT NOT NULL, state TEXT NOT NULL,"
        " created_at INTEGER NOT NULL, data TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX runs_by_conversation ON runs (owner, conversation_id, created_at)")


def _v2_add_updated_at(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE runs ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0")
    rows = conn.execute("SELECT request_id, data FROM runs").fetchall()
    conn.executemany(
        "UPDATE runs SET updated_at = ? WHERE request_id = ?",
        [(micros(datetime.fromisoformat(json.loads(data)["updated_at"])), rid) for rid, data in rows],
    )
    conn.execute("CREATE INDEX runs_by_owner ON runs (owner, created_at)")
    conn.execute("CREATE INDEX runs_by_state ON runs (owner, state, created_at)")
    conn.execute("CREATE INDEX runs_by_created ON runs (created_at)")
    conn.execute("CREATE INDEX runs_by_updated ON runs (updated_at)")


def _v3_may_have_started(conn: sqlite3.Connection) -> None:
    """Uncertain kickoffs used to be stored as ``kickoff_failed`` with "a run may have started" in their error: give
    them the state that says so, so they are never taken for failed-and-safe."""
    rows = conn.execute("SELECT request_id, data FROM runs WHERE state = 'kickoff_failed'").fetchall()
    for request_id, data in rows:
        record = json.loads(data)
        if "may have started" in str(record.get("error") or ""):
            record["state"] = "may_have_started"
            conn.execute(
                "UPDATE runs SET state = 'may_have_started', data = ? WHERE request_id = ?",
                (json.dumps(record), request_id),
            )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _v1_create_runs,
    _v2_add_updated_at,
    _v3_may_have_started,
)
SCHEMA_VERSION = len(MIGRATIONS)
"""The ``PRAGMA user_version`` this code writes; step ``n`` of the migrations moves a file from ``n`` to ``n+1``."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file's schema to :data:`SCHEMA_VERSION` in one transaction; return the version found.

    Safe when several processes open a new file at once: the version is re-read under the write lock.

    Raises:
        LedgerError: the file was written by a newer crew-mcp.
        sqlite3.Error: the file could not be read or written.
    """
    found = _user_version(conn)
    if found == SCHEMA_VERSION:
        return found
    _check_version(found)
    return transaction(conn, _upgrade)


def _upgrade(conn: sqlite3.Connection) -> int:
    found = _user_version(conn)
    _check_version(found)
    for step in MIGRATIONS[found:]:
        step(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_version(found: int) -> None:
    if found > SCHEMA_VERSION:
        raise LedgerError(
            f"The ledger file has schema version {found}, newer than this crew-mcp understands ({SCHEMA_VERSION}); "
            "upgrade crew-mcp or point it at another ledger file."
        )
