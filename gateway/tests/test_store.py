"""The store: group commit, idempotent inserts, equivocation, stale, rejections.

Every test runs on both backends (SQLite file, PostgreSQL database): `where` is
the store's location, `Store(where)` opens it through `storebase.open_store`."""

from __future__ import annotations

import sqlite3

import pytest

from terrapin.gateway.pgsql import PgConnection, is_url
from terrapin.gateway.protocol.reasons import Flag, Reason
from terrapin.gateway.store import DUPLICATE, REJECTED, STORED, Pending, Rejected
from terrapin.gateway.storebase import open_store as Store


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    if request.param == "sqlite":
        return tmp_path / "g.db"
    return request.getfixturevalue("postgres_url")


def raw_connection(where):
    """Another writer: a plain connection to the same store."""
    if is_url(where):
        return PgConnection(where, autocommit=False)
    return sqlite3.connect(where)


A, B = b"\xaa" * 20, b"\xbb" * 20


def P(dev, seq, digest=b"\x01" * 32, flags=0):
    return Pending(dev, seq, digest, b"env" + bytes([seq % 256]), 1000 + seq, 1.0, flags)


def test_commit_outcomes(where):
    s = Store(where, replay_window=10)
    s.add_device(A)
    out, rej = s.commit([P(A, 1), P(A, 2), P(A, 2), P(B, 1)])
    assert [o.status for o in out] == [STORED, STORED, DUPLICATE, STORED]
    assert rej == []
    # Again: duplicates; another digest: equivocation; far below: stale.
    out, rej = s.commit([P(A, 1), P(A, 2, b"\x02" * 32), P(A, 100)])
    assert [o.status for o in out] == [DUPLICATE, REJECTED, STORED]
    assert out[1].reason == Reason.EQUIVOCATION
    out, rej = s.commit([P(A, 50), P(A, 95), P(A, 1)])
    assert [(o.status, o.reason) for o in out] == [
        (REJECTED, Reason.STALE_SEQUENCE),
        (STORED, None),
        (DUPLICATE, None),  # stored long ago: a duplicate, not stale
    ]
    assert s.count_readings() == 5
    assert s.reading(A, 2)["flags"] & Flag.EQUIVOCATED
    assert s.devices()[0].equivocations == 1
    reasons = sorted(r["reason"] for r in s.rejections())
    assert reasons == [Reason.EQUIVOCATION, Reason.STALE_SEQUENCE]
    s.close()
    # Reopened: the highest seq per board comes back from the readings.
    s = Store(where, replay_window=10)
    assert s.highest_seq(A) == 100
    out, _ = s.commit([P(A, 80)])
    assert out[0].reason == Reason.STALE_SEQUENCE
    s.close()


def test_rejections_are_kept_and_settings_are_wal_full(where):
    s = Store(where)
    s.commit([], [Rejected("t", Reason.BAD_SIGNATURE, b"x" * 5000, 1.0, A, 3, "detail")])
    row = s.rejections()[0]
    assert row["reason"] == Reason.BAD_SIGNATURE and len(row["envelope"]) == 2048
    assert s.count_readings() == 0
    s.close()
    if is_url(where):
        return
    db = sqlite3.connect(where)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = [r[1] for r in db.execute("PRAGMA table_info(readings)")]
    assert cols == ["id", "device", "seq", "digest", "envelope", "time", "received_at", "flags"]


def test_devices(where):
    s = Store(where)
    assert s.add_device(A, label="kitchen")
    assert not s.add_device(A)
    s.set_pubkey(A, b"\x04" + b"\x01" * 64)
    assert s.devices()[0].pubkey and s.devices()[0].label == "kitchen"
    assert s.device_addresses() == {A}
    assert s.remove_device(A) and not s.remove_device(A)
    s.close()


def test_another_writer_and_out_of_order_batches(where):
    s = Store(where)
    out, _ = s.commit([P(A, 1), P(A, 2), P(B, 7)])
    assert [o.status for o in out] == [STORED] * 3 and s.highest_seq(A) == 2
    # Another writer stored (A, 3) behind this store's back: the insert's
    # row count gives it away, and the stored digest decides.
    other = raw_connection(where)
    other.execute(
        "INSERT INTO readings(device, seq, digest, envelope, time, received_at)"
        " VALUES (?,?,?,?,?,?)",
        (A, 3, b"\x01" * 32, b"x", 0, 0.0),
    )
    other.commit()
    out, _ = s.commit([P(A, 3), P(A, 4)])
    assert [o.status for o in out] == [DUPLICATE, STORED]
    # Out of order and repeated inside one batch.
    out, _ = s.commit([P(A, 9), P(A, 8), P(A, 9)])
    assert [o.status for o in out] == [STORED, STORED, DUPLICATE]
    assert s.count_readings() == 7
    s.close()


def test_a_flood_of_rejections_writes_bounded_bytes(where):
    from terrapin.gateway.store import AUDIT_BURST, MAX_REJECTED_BYTES

    s = Store(where)
    env = b"x" * 5000
    for batch in range(20):
        rejected = [
            Rejected("t" * 10_000, Reason.BAD_SIGNATURE, env, 100.0, A, batch * 1000 + i)
            for i in range(1000)
        ]
        s.commit([], rejected)
    s.commit([], [Rejected("t", Reason.BAD_SIGNATURE, env, 100.0, B, 1)])  # another board
    rows = s.rejections(limit=10_000)
    assert len(rows) == AUDIT_BURST + 1  # 20,000 from A: a sample; B still gets its row
    assert all(len(r["envelope"]) <= MAX_REJECTED_BYTES and len(r["topic"]) <= 128 for r in rows)
    counts = {(r["device"], r["reason"]): r["count"] for r in s.rejection_counts()}
    assert counts == {(A, Reason.BAD_SIGNATURE): 20_000, (B, Reason.BAD_SIGNATURE): 1}
    size = s.size_bytes()
    s.close()
    if is_url(where):
        return  # a fresh PostgreSQL database alone is ~8 MB: the row counts above say it
    size = sum(p.stat().st_size for p in where.parent.iterdir())
    assert size < 2_000_000, size  # 20,000 full rows would be ~140 MB


def test_audit_rows_refill_with_time(where):
    from terrapin.gateway.store import AUDIT_BURST, AUDIT_PER_MINUTE

    s = Store(where)
    flood = [Rejected("t", Reason.BAD_SIGNATURE, b"e", 0.0, A, i) for i in range(100)]
    s.commit([], flood)
    later = [Rejected("t", Reason.BAD_SIGNATURE, b"e", 60.0, A, 1000 + i) for i in range(100)]
    s.commit([], later)
    assert len(s.rejections(limit=1000)) == AUDIT_BURST + AUDIT_PER_MINUTE
    s.close()
