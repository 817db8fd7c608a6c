"""`terrapin gateway migrate --to postgresql://...`: a SQLite gateway's database to PostgreSQL.

Every table of the file (the store's, the chain's, the rewards', and any other a
stage added) is created on the target from its own CREATE statement through the
dialect (`pgsql.translate`), then copied in one transaction: a migration that
fails leaves the target as it was. Row counts are compared before COMMIT, and the
identity sequences are moved past the copied ids, so new readings continue the
same `id` order the batcher relies on. The gateway must be stopped meanwhile.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.pgsql import PgConnection, is_url, redact_url

CHUNK = 5000  # rows per INSERT round trip
_IF_NOT_EXISTS = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\s+(?!IF\s+NOT\s+EXISTS)", re.I)


class MigrateError(TerrapinError):
    """The migration cannot start or did not copy everything (nothing was committed)."""


def _if_not_exists(sql: str) -> str:
    return _IF_NOT_EXISTS.sub(lambda m: m[0] + "IF NOT EXISTS ", sql, count=1)


def _tables(src: sqlite3.Connection) -> list[tuple[str, str]]:
    return src.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    ).fetchall()


def _indexes(src: sqlite3.Connection) -> list[str]:
    rows = src.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    return [r[0] for r in rows]


def migrate(
    db_path: str | Path, url: str, *, progress: Callable[[str], None] = lambda _line: None
) -> dict[str, int]:
    """Copy every table of the SQLite file `db_path` into the empty database at `url`.
    Returns rows copied per table."""
    if not is_url(url):
        raise MigrateError(f"--to {url!r} is not a postgresql:// URL")
    if not Path(db_path).is_file():
        raise MigrateError(f"no gateway database at {db_path}", hint="pass --config or --db")
    src = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True)
    dst = PgConnection(url)
    try:
        tables = _tables(src)
        if not tables:
            raise MigrateError(f"{db_path} holds no tables: not a gateway database")
        dst.execute("BEGIN IMMEDIATE")
        try:
            copied = _copy_all(src, dst, tables, progress)
            dst.execute("COMMIT")
        except BaseException:
            dst.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise MigrateError(f"migration to {redact_url(url)} failed: {exc}") from None
    finally:
        src.close()
        dst.close()
    return copied


def _copy_all(
    src: sqlite3.Connection,
    dst: PgConnection,
    tables: list[tuple[str, str]],
    progress: Callable[[str], None],
) -> dict[str, int]:
    for _name, sql in tables:
        dst.executescript(_if_not_exists(sql))
    for sql in _indexes(src):
        dst.executescript(_if_not_exists(sql))
    for name, _sql in tables:
        (already,) = dst.execute(f"SELECT COUNT(*) FROM {name}").fetchone()
        if already and name != "gateway_meta":
            raise MigrateError(
                f"the target already holds {already} rows in {name}",
                hint="migrate into a new, empty database",
            )
    copied: dict[str, int] = {}
    for name, _sql in tables:
        copied[name] = _copy_table(src, dst, name, progress)
    return copied


def _copy_table(
    src: sqlite3.Connection, dst: PgConnection, name: str, progress: Callable[[str], None]
) -> int:
    cur = src.execute(f"SELECT * FROM {name}")
    columns = [c[0] for c in cur.description]
    marks = ",".join("?" * len(columns))
    verb = "INSERT OR IGNORE" if name == "gateway_meta" else "INSERT"  # init wrote the version
    insert = f"{verb} INTO {name}({', '.join(columns)}) VALUES ({marks})"
    total = 0
    for rows in _chunks(cur):
        dst.executemany(insert, rows)
        total += len(rows)
        progress(f"{name}: {total:,} rows")
    (want,) = src.execute(f"SELECT COUNT(*) FROM {name}").fetchone()
    (have,) = dst.execute(f"SELECT COUNT(*) FROM {name}").fetchone()
    if have < want:
        raise MigrateError(f"{name}: {have} rows on the target, {want} in the file")
    if "id" in columns:  # new rows continue after the copied ids
        dst.execute(
            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'),"
            f" (SELECT COALESCE(MAX(id), 0) + 1 FROM {name}), false)"
        )
    progress(f"{name}: {total:,} rows copied")
    return total


def _chunks(cur: sqlite3.Cursor) -> Iterator[list[tuple]]:
    while rows := cur.fetchmany(CHUNK):
        yield rows
