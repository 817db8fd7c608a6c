"""The reading store: SQLite in WAL mode with synchronous=FULL.

One `commit()` is one transaction for many readings (group commit); its
per-reading outcomes are returned only after COMMIT, so an ACK sent on them is
never ahead of the disk. Inserts are idempotent: UNIQUE(device, seq) plus the
sequence rules in `policy.sequence_outcome` decide stored / duplicate /
equivocation / stale inside the transaction.

Other stages open the same file with `open_db()` and create their own tables;
they may SELECT `readings` and `devices` but never ALTER them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from terrapin.gateway import migrations
from terrapin.gateway.policy import Sequence, sequence_outcome
from terrapin.gateway.protocol.reasons import Flag, Reason

SCHEMA_VERSION = 1
MAX_REJECTED_BYTES = 2048  # rejected envelopes are kept for audit, cut to this size
MAX_TOPIC_CHARS = 128  # and their topic, cut to this (a reading topic is 57)
# Audit rows (the envelope itself) per board: a bucket of AUDIT_BURST rows that
# refills AUDIT_PER_MINUTE a minute. Every rejection is also counted, one row
# per (board, reason), in rejection_counts. So a flood of rejections writes a
# bounded number of bytes per board and minute, whatever its message rate.
AUDIT_BURST = 20
AUDIT_PER_MINUTE = 6

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    device BLOB NOT NULL,
    seq INTEGER NOT NULL,
    digest BLOB NOT NULL,
    envelope BLOB NOT NULL,
    time INTEGER NOT NULL,
    received_at REAL NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0,
    UNIQUE(device, seq)
);
CREATE TABLE IF NOT EXISTS devices (
    address BLOB PRIMARY KEY,
    pubkey BLOB NULL,
    added_at REAL,
    label TEXT NOT NULL DEFAULT '',
    equivocations INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    device BLOB NULL,
    seq INTEGER NULL,
    reason INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    envelope BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_device ON rejections(device, seq);
CREATE TABLE IF NOT EXISTS rejection_counts (
    device BLOB NOT NULL,
    reason INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (device, reason)
);
CREATE TABLE IF NOT EXISTS gateway_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def open_db(path: str | Path, *, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection with the project's settings (WAL, FULL sync, busy timeout)."""
    conn = sqlite3.connect(
        str(path), timeout=timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


@dataclass(slots=True)
class Pending:
    """A verified reading waiting for its transaction."""

    device: bytes
    seq: int
    digest: bytes
    envelope: bytes
    time: int
    received_at: float
    flags: int = 0


@dataclass(slots=True)
class Rejected:
    """A rejected envelope, kept for audit."""

    topic: str
    reason: Reason
    envelope: bytes
    received_at: float
    device: bytes | None = None
    seq: int | None = None
    detail: str = ""


STORED = "stored"
DUPLICATE = "duplicate"
REJECTED = "rejected"


@dataclass(slots=True, frozen=True)
class Outcome:
    status: str  # STORED | DUPLICATE | REJECTED
    reason: Reason | None = None


_STORED = Outcome(STORED)
_DUPLICATE = Outcome(DUPLICATE)


@dataclass(slots=True, frozen=True)
class Device:
    address: bytes
    pubkey: bytes | None
    added_at: float | None
    label: str
    equivocations: int


class Store:
    def __init__(
        self, path: str | Path, *, replay_window: int = 4096, max_rejections: int = 100_000
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.replay_window = replay_window
        self.max_rejections = max_rejections
        self._db = open_db(self.path)
        self._lock = threading.Lock()
        with self._lock:
            migrations.migrate(self._db, SCHEMA)  # refuse a newer schema, upgrade an older one
            self._db.executescript(SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO gateway_meta VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._highest: dict[bytes, int] = dict(
                self._db.execute("SELECT device, MAX(seq) FROM readings GROUP BY device")
            )
        self._rejections_since_prune = 0
        self._audit: dict[bytes, tuple[float, float]] = {}  # board -> (audit tokens, at)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- readings ---------------------------------------------------------------

    def commit(
        self, pending: list[Pending], rejected: Iterable[Rejected] = ()
    ) -> tuple[list[Outcome], list[Rejected]]:
        """Store many readings in one transaction.

        Returns one Outcome per pending reading (after COMMIT) and the list of
        all rejections written (those passed in plus sequence-rule ones).
        """
        outcomes: list[Outcome] = []
        rejected = list(rejected)
        highest = dict()  # updates applied after COMMIT
        db = self._db
        window = self.replay_window
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                for p in pending:
                    top = highest.get(p.device, self._highest.get(p.device))
                    stored = None
                    if top is not None and p.seq <= top:
                        stored = self._digest_of(p.device, p.seq)
                    verdict = sequence_outcome(p.seq, p.digest, stored, top, window)
                    if verdict is Sequence.NEW:
                        cur = db.execute(
                            "INSERT OR IGNORE INTO readings"
                            "(device, seq, digest, envelope, time, received_at, flags)"
                            " VALUES (?,?,?,?,?,?,?)",
                            (p.device, p.seq, p.digest, p.envelope, p.time, p.received_at, p.flags),
                        )
                        if cur.rowcount == 1:
                            outcomes.append(_STORED)
                            if top is None or p.seq > top:
                                highest[p.device] = p.seq
                            continue
                        # Raced with another writer: decide on what is there now.
                        stored = self._digest_of(p.device, p.seq)
                        verdict = sequence_outcome(p.seq, p.digest, stored, top, window)
                    if verdict is Sequence.DUPLICATE:
                        outcomes.append(_DUPLICATE)
                        continue
                    if verdict is Sequence.EQUIVOCATION:
                        reason = Reason.EQUIVOCATION
                        db.execute(
                            "UPDATE readings SET flags = flags | ? WHERE device=? AND seq=?",
                            (int(Flag.EQUIVOCATED), p.device, p.seq),
                        )
                        db.execute(
                            "UPDATE devices SET equivocations = equivocations + 1 WHERE address=?",
                            (p.device,),
                        )
                        detail = "seq already stored with another digest"
                    else:
                        reason = Reason.STALE_SEQUENCE
                        detail = f"seq {p.seq} < highest {top} - window {window}"
                    outcomes.append(Outcome(REJECTED, reason))
                    rejected.append(
                        Rejected(
                            topic="",
                            reason=reason,
                            envelope=p.envelope,
                            received_at=p.received_at,
                            device=p.device,
                            seq=p.seq,
                            detail=detail,
                        )
                    )
                audited = self._write_rejections(rejected) if rejected else 0
                since_prune = self._rejections_since_prune + audited
                if since_prune > 1000:
                    self._prune_rejections()
                    since_prune = 0
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite rolls back by itself on some errors
                    db.execute("ROLLBACK")
                raise
            # Only memory from here on: a commit that raised changed nothing on
            # disk, so the caller may simply call it again.
            self._highest.update(highest)
            self._rejections_since_prune = since_prune
        return outcomes, rejected

    def _write_rejections(self, rejected: list[Rejected]) -> int:
        """Count every rejection per (board, reason); keep the envelope of a sample
        (AUDIT_BURST / AUDIT_PER_MINUTE per board). Returns the audit rows written.
        (A transaction that rolls back still spends the sample's tokens: at worst
        one audit row fewer, never a count.)"""
        counts: dict[tuple[bytes, int], list] = {}
        rows = []
        for r in rejected:
            key = (r.device or b"", int(r.reason))
            c = counts.get(key)
            if c is None:
                counts[key] = [1, r.received_at, r.received_at]
            else:
                c[0] += 1
                c[1] = min(c[1], r.received_at)
                c[2] = max(c[2], r.received_at)
            if self._audit_token(key[0], r.received_at):
                rows.append(
                    (
                        r.received_at,
                        r.topic[:MAX_TOPIC_CHARS],
                        r.device,
                        r.seq,
                        int(r.reason),
                        r.detail[:200],
                        bytes(r.envelope[:MAX_REJECTED_BYTES]),
                    )
                )
        self._db.executemany(
            "INSERT INTO rejection_counts(device, reason, count, first_at, last_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT(device, reason) DO UPDATE SET"
            " count = count + excluded.count, last_at = max(last_at, excluded.last_at)",
            [(d, reason, n, first, last) for (d, reason), (n, first, last) in counts.items()],
        )
        if rows:
            self._db.executemany(
                "INSERT INTO rejections"
                "(received_at, topic, device, seq, reason, detail, envelope)"
                " VALUES (?,?,?,?,?,?,?)",
                rows,
            )
        return len(rows)

    def _audit_token(self, board: bytes, now: float) -> bool:
        tokens, at = self._audit.get(board, (float(AUDIT_BURST), now))
        tokens = min(float(AUDIT_BURST), tokens + max(0.0, now - at) * AUDIT_PER_MINUTE / 60.0)
        if tokens < 1.0:
            self._audit[board] = (tokens, max(at, now))
            return False
        self._audit[board] = (tokens - 1.0, max(at, now))
        return True

    def _digest_of(self, device: bytes, seq: int) -> bytes | None:
        row = self._db.execute(
            "SELECT digest FROM readings WHERE device=? AND seq=?", (device, seq)
        ).fetchone()
        return row[0] if row else None

    def _prune_rejections(self) -> None:
        self._db.execute(
            "DELETE FROM rejections WHERE id <= (SELECT MAX(id) FROM rejections) - ?",
            (self.max_rejections,),
        )

    def highest_seq(self, device: bytes) -> int | None:
        return self._highest.get(device)

    def count_readings(self, device: bytes | None = None) -> int:
        with self._lock:
            if device is None:
                return self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
            return self._db.execute(
                "SELECT COUNT(*) FROM readings WHERE device=?", (device,)
            ).fetchone()[0]

    def reading(self, device: bytes, seq: int) -> dict | None:
        with self._lock:
            cur = self._db.execute("SELECT * FROM readings WHERE device=? AND seq=?", (device, seq))
            row = cur.fetchone()
            return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None

    def readings(self, *, after_id: int = 0, limit: int = 1000) -> Iterator[dict]:
        """Readings in arrival order (id > after_id): what a batcher consumes."""
        with self._lock:
            cur = self._db.execute(
                "SELECT * FROM readings WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            )
            names = [c[0] for c in cur.description]
            rows = cur.fetchall()
        for row in rows:
            yield dict(zip(names, row, strict=True))

    def rejections(self, *, limit: int = 100) -> list[dict]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM rejections ORDER BY id DESC LIMIT ?", (limit,))
            names = [c[0] for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def rejection_counts(self) -> list[dict]:
        """Every rejection counted per (board, reason): count, first_at, last_at."""
        with self._lock:
            cur = self._db.execute(
                "SELECT device, reason, count, first_at, last_at FROM rejection_counts"
                " ORDER BY count DESC"
            )
            names = [c[0] for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # --- devices (the allow-list) -----------------------------------------------

    def add_device(self, address: bytes, pubkey: bytes | None = None, label: str = "") -> bool:
        """Add a board; returns False when it was already there (pubkey/label updated)."""
        if len(address) != 20:
            raise ValueError("a board address is 20 bytes")
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO devices(address, pubkey, added_at, label) VALUES (?,?,?,?)",
                (address, pubkey, time.time(), label),
            )
            if cur.rowcount == 0:
                if pubkey is not None:
                    self._db.execute(
                        "UPDATE devices SET pubkey=? WHERE address=?", (pubkey, address)
                    )
                if label:
                    self._db.execute("UPDATE devices SET label=? WHERE address=?", (label, address))
                return False
            return True

    def remove_device(self, address: bytes) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM devices WHERE address=?", (address,)).rowcount == 1

    def set_pubkey(self, address: bytes, pubkey: bytes) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE devices SET pubkey=? WHERE address=? AND pubkey IS NULL", (pubkey, address)
            )

    def devices(self) -> list[Device]:
        with self._lock:
            rows = self._db.execute(
                "SELECT address, pubkey, added_at, label, equivocations"
                " FROM devices ORDER BY added_at"
            ).fetchall()
        return [Device(*row) for row in rows]

    def device_addresses(self) -> set[bytes]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT address FROM devices")}

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total
