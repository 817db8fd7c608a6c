"""Schema versions of the gateway database, and the upgrades between them.

The version lives in SQLite's header (`PRAGMA user_version`), readable without
any table; `gateway_meta.schema_version` says the same for people reading the
tables. Databases written before versions were recorded have user_version 0
and a `readings` table: they are version 1 (`store.SCHEMA`, as of 16278b8).

`migrate()` runs when the store opens the file (store.py's one hook), inside
one BEGIN IMMEDIATE transaction: it reads the version again under the write
lock (a second process opening the file at the same moment waits, then finds
nothing to do), applies every step above it in order and stamps the new
version, or rolls everything back. A database newer than this code knows is
refused before anything touches it: an older gateway must not guess.

Adding a step: write `_to_N(conn)` (plain statements; no executescript, which
commits), add it to STEPS, and keep a database written by version N-1 under
gateway/tests/fixtures/ to test the step from.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from terrapin.gateway.errors import TerrapinError

log = logging.getLogger("terrapin.gateway.migrations")


class SchemaError(TerrapinError):
    """The database's schema version is not one this gateway can use."""

    exit_code = 2


def _to_2(conn: sqlite3.Connection) -> None:
    """Version 2: the version moves into the SQLite header, and every upgrade is recorded."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, from_version INTEGER NOT NULL, applied_at REAL NOT NULL)"
    )


# version -> the step that makes it from the version below.
STEPS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _to_2}
CURRENT = max(STEPS)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def version(conn: sqlite3.Connection) -> int:
    """The schema version of the open database (0: empty, no gateway tables yet)."""
    stamped = conn.execute("PRAGMA user_version").fetchone()[0]
    if stamped:
        return int(stamped)
    return 1 if _has_table(conn, "readings") else 0


def _where(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return row[2] if row and row[2] else "the database"


def _create(conn: sqlite3.Connection, schema: str) -> None:
    for statement in schema.split(";"):
        if statement.strip():
            conn.execute(statement)


def migrate(conn: sqlite3.Connection, base_schema: str) -> int:
    """Bring the database to CURRENT in one transaction; returns the version it had.

    `base_schema` is version 1's tables (store.SCHEMA), created on an empty file.
    Raises SchemaError for a database newer than CURRENT."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = version(conn)
        if found > CURRENT:
            raise SchemaError(
                f"{_where(conn)} has schema version {found}; this gateway knows up to {CURRENT}",
                hint="a newer terrapin wrote it: upgrade terrapin (docs/GATEWAY.md, Upgrade), "
                "or restore a backup made by this version",
            )
        if found == CURRENT:
            conn.execute("COMMIT")
            return found
        if found == 0:
            _create(conn, base_schema)
        for target in range(max(found, 1) + 1, CURRENT + 1):
            STEPS[target](conn)
            conn.execute(
                "INSERT OR REPLACE INTO schema_migrations VALUES (?, ?, ?)",
                (target, target - 1, time.time()),
            )
        conn.execute(
            "INSERT OR REPLACE INTO gateway_meta VALUES ('schema_version', ?)", (str(CURRENT),)
        )
        conn.execute(f"PRAGMA user_version = {CURRENT:d}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if found:
        log.warning("%s: schema upgraded from version %d to %d", _where(conn), found, CURRENT)
    return found
