"""The reading store on PostgreSQL: `store.Store`'s logic on a `pgsql.PgConnection`.

Same schema (in PostgreSQL types), same transaction: `BEGIN IMMEDIATE` takes the
store's write lock, so several gateway instances (and their worker processes)
commit one at a time, as on SQLite, and `readings.id` grows in commit order. A
reading another instance stored meanwhile is caught by UNIQUE(device, seq): the
insert affects no row and the stored digest decides duplicate or equivocation.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable

from terrapin.gateway.pgsql import PgConnection
from terrapin.gateway.policy import Sequence, sequence_outcome
from terrapin.gateway.protocol.reasons import Flag, Reason
from terrapin.gateway.retry import disk_refuses
from terrapin.gateway.store import (
    _DUPLICATE,
    _STORED,
    REJECTED,
    SCHEMA,
    SCHEMA_VERSION,
    Outcome,
    Pending,
    Rejected,
    Store,
)

log = logging.getLogger("terrapin.gateway.store")


class PgStore(Store):
    def __init__(self, url: str, *, replay_window: int = 4096, max_rejections: int = 100_000):
        # Not Store.__init__: no file to make; the rest of the state is the same.
        self.url = url
        self.replay_window = replay_window
        self.max_rejections = max_rejections
        self._db = PgConnection(url)  # type: ignore[assignment]
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO gateway_meta VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._highest: dict[bytes, int] = dict(
                self._db.execute("SELECT device, MAX(seq) FROM readings GROUP BY device")
            )
        self._rejections_since_prune = 0
        self._audit: dict[bytes, tuple[float, float]] = {}
        self._devices: set[bytes] | None = None

    def commit(
        self, pending: list[Pending], rejected: Iterable[Rejected] = ()
    ) -> tuple[list[Outcome], list[Rejected]]:
        """Store.commit's rules in a handful of round trips instead of one per reading:
        under the write lock, read what is stored for this batch's (board, seq) and each
        board's highest seq, decide in memory (policy.sequence_outcome, as SQLite does),
        then insert the new readings in one pipelined executemany."""
        outcomes: list[Outcome] = []
        rejected = list(rejected)
        highest: dict[bytes, int] = {}
        db = self._db
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                # Nothing changes under us: every writer takes the same lock.
                stored, top_of = self._lookup(pending)
                rows: list[tuple] = []
                for p in pending:
                    top = highest.get(p.device, top_of.get(p.device))
                    verdict = sequence_outcome(
                        p.seq, p.digest, stored.get((p.device, p.seq)), top, self.replay_window
                    )
                    if verdict is Sequence.NEW:
                        rows.append(
                            (p.device, p.seq, p.digest, p.envelope, p.time, p.received_at, p.flags)
                        )
                        stored[(p.device, p.seq)] = p.digest
                        if top is None or p.seq > top:
                            highest[p.device] = p.seq
                        outcomes.append(_STORED)
                    elif verdict is Sequence.DUPLICATE:
                        outcomes.append(_DUPLICATE)
                    else:
                        if verdict is Sequence.EQUIVOCATION:
                            self._insert(rows)  # the flag goes on a row that exists
                            rows = []
                        outcomes.append(self._reject(p, verdict, top, rejected))
                self._insert(rows)
                audited = self._write_rejections(rejected) if rejected else 0
                since_prune = self._rejections_since_prune + audited
                if since_prune > 1000:
                    self._prune_rejections()
                    since_prune = 0
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._highest.update(highest)
            self._rejections_since_prune = since_prune
        return outcomes, rejected

    def _lookup(
        self, pending: list[Pending]
    ) -> tuple[dict[tuple[bytes, int], bytes], dict[bytes, int]]:
        """(digest stored per (board, seq) of the batch, highest stored seq per board)."""
        if not pending:
            return {}, {}
        devices = [p.device for p in pending]
        seqs = [p.seq for p in pending]
        found = self._db.execute(
            "SELECT r.device, r.seq, r.digest FROM readings r"
            " JOIN unnest(?::bytea[], ?::bigint[]) AS b(device, seq)"
            " ON r.device = b.device AND r.seq = b.seq",
            (devices, seqs),
        ).fetchall()
        tops = self._db.execute(
            "SELECT device, MAX(seq) FROM readings WHERE device = ANY(?) GROUP BY device",
            (list(set(devices)),),
        ).fetchall()
        return {(bytes(d), s): bytes(g) for d, s, g in found}, {bytes(d): t for d, t in tops}

    def _insert(self, rows: list[tuple]) -> None:
        if rows:
            self._db.executemany(
                "INSERT INTO readings(device, seq, digest, envelope, time, received_at, flags)"
                " VALUES (?,?,?,?,?,?,?)",
                rows,
            )

    def _reject(
        self, p: Pending, verdict: Sequence, top: int | None, rejected: list[Rejected]
    ) -> Outcome:
        if verdict is Sequence.EQUIVOCATION:
            reason = Reason.EQUIVOCATION
            self._db.execute(
                "UPDATE readings SET flags = flags | ? WHERE device=? AND seq=?",
                (int(Flag.EQUIVOCATED), p.device, p.seq),
            )
            self._db.execute(
                "UPDATE devices SET equivocations = equivocations + 1 WHERE address=?",
                (p.device,),
            )
            detail = "seq already stored with another digest"
        else:
            reason = Reason.STALE_SEQUENCE
            detail = f"seq {p.seq} < highest {top} - window {self.replay_window}"
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
        return Outcome(REJECTED, reason)

    def device_addresses(self) -> set[bytes]:
        """The allow-list; while the server is unreachable, the last one read (the
        policy refreshes it every few seconds; a restart must not stop the checks)."""
        try:
            self._devices = super().device_addresses()
        except sqlite3.OperationalError as exc:
            if self._devices is None or not disk_refuses(exc):
                raise
            log.warning("allow-list not refreshed (%s); using the last one read", exc)
        return set(self._devices)

    def size_bytes(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0
