"""Schema versions: an older database is upgraded in one transaction, a newer one refused."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from terrapin.gateway import migrations
from terrapin.gateway.migrations import SchemaError
from terrapin.gateway.store import Pending, Store
from terrapin.tools.cli.main import main

FIXTURE = Path(__file__).parent / "fixtures" / "schema1.db"  # written by 16278b8


def _rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _snapshot(db: Path) -> dict[str, list[tuple]]:
    tables = ("readings", "devices", "rejections", "batches", "batch_leaves", "chain_txs")
    return {t: _rows(db, f"SELECT * FROM {t} ORDER BY rowid") for t in tables}


def test_a_database_of_today_is_upgraded_and_keeps_every_row(tmp_path):
    db = tmp_path / "gateway.db"
    shutil.copy(FIXTURE, db)
    assert _rows(db, "PRAGMA user_version") == [(0,)]  # before versions were recorded
    before = _snapshot(db)
    assert len(before["readings"]) == 6 and len(before["chain_txs"]) == 1

    store = Store(db)
    try:
        assert store.count_readings() == 6
        board = store.devices()[0].address
        assert store.highest_seq(board) == 3
        envelope = store.reading(board, 3)["envelope"]
        out, _ = store.commit([Pending(board, 4, b"\x04" * 32, envelope, 0, 2.0e9)])
        assert out[0].status == "stored"
    finally:
        store.close()

    assert _rows(db, "PRAGMA user_version") == [(migrations.CURRENT,)]
    meta = _rows(db, "SELECT value FROM gateway_meta WHERE key = 'schema_version'")
    assert meta == [(str(migrations.CURRENT),)]
    applied = _rows(db, "SELECT version, from_version, applied_at FROM schema_migrations")
    assert [(v, f) for v, f, _ in applied] == [(2, 1)]
    after = _snapshot(db)
    after["readings"] = after["readings"][:-1]  # the one stored above
    assert after == before  # nothing of the old rows changed

    Store(db).close()  # opened again: nothing more to do
    assert _rows(db, "SELECT version, from_version, applied_at FROM schema_migrations") == applied


def test_a_new_database_starts_at_the_current_version(tmp_path):
    Store(tmp_path / "g.db").close()
    assert _rows(tmp_path / "g.db", "PRAGMA user_version") == [(migrations.CURRENT,)]


def test_a_newer_database_is_refused_untouched(tmp_path, capsys):
    db = tmp_path / "gateway.db"
    shutil.copy(FIXTURE, db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {migrations.CURRENT + 5}")
    conn.close()
    with pytest.raises(SchemaError, match=f"schema version {migrations.CURRENT + 5}; this"):
        Store(db)
    assert _rows(db, "PRAGMA user_version") == [(migrations.CURRENT + 5,)]
    assert not _rows(db, "SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'")
    assert _snapshot(db)["readings"] == _snapshot(FIXTURE)["readings"]
    # What the operator sees: one line and a hint, exit code 2, no traceback.
    (tmp_path / "gateway.toml").write_text('[store]\npath = "gateway.db"\n')
    code = main(["gateway", "device", "list", "--config", str(tmp_path / "gateway.toml")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[0].startswith(f"error: {db}") and "upgrade terrapin" in err


def test_a_failing_step_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    db = tmp_path / "gateway.db"
    shutil.copy(FIXTURE, db)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        conn.execute("DROP TABLE readings")
        raise sqlite3.OperationalError("disk I/O error")  # as a full disk would say

    monkeypatch.setitem(migrations.STEPS, 3, broken)
    monkeypatch.setattr(migrations, "CURRENT", 3)
    with pytest.raises(sqlite3.OperationalError):
        Store(db)
    assert _rows(db, "PRAGMA user_version") == [(0,)]
    names = {r[0] for r in _rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "readings" in names and not names & {"half_done", "schema_migrations"}
    assert len(_snapshot(db)["readings"]) == 6
