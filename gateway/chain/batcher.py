"""Batch stage: stored readings -> closed Merkle batches (in SQLite, ready to anchor).

A batch closes when `batch_size` readings are waiting, or when the oldest waiting
reading has waited `batch_seconds`. Readings go in by `readings.id` (arrival order), so
the same database always gives the same batches, roots and proofs. The batch's tree is
stored with it; `readings` is only read.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from terrapin.gateway.chain import merkle
from terrapin.gateway.chain import tables as store
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.retry import Failures, RetryPolicy

log = logging.getLogger(__name__)


class BatchError(TerrapinError, RuntimeError):
    """The batches table changed under the batcher (two batchers on one database)."""


class Batcher:
    def __init__(
        self,
        db_path: str | Path,
        *,
        batch_size: int = 1000,
        batch_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.db_path = db_path
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.clock = clock
        self.conn = store.connect(db_path)
        self.retry = RetryPolicy(attempts=5, first=1.0, cap=30.0)  # a bug
        self.last_error: str | None = None

    def close(self) -> None:
        self.conn.close()

    def _waiting(self) -> tuple[int, int, float | None]:
        """(last batched reading id, readings waiting, received_at of the oldest waiting)."""
        last = self.conn.execute("SELECT COALESCE(MAX(last_reading), 0) FROM batches").fetchone()[0]
        count, oldest = self.conn.execute(
            "SELECT COUNT(*), MIN(received_at) FROM readings WHERE id > ?", (last,)
        ).fetchone()
        return last, count, oldest

    def close_due(self, *, force: bool = False) -> list[store.Batch]:
        """Close every batch that is due now (all waiting readings if `force`)."""
        closed = []
        while True:
            _, count, oldest = self._waiting()
            if count == 0:
                break
            full = count >= self.batch_size
            old = oldest is not None and self.clock() - oldest >= self.batch_seconds
            if not (full or old or force):
                break
            closed.append(self._close_one())
        return closed

    def _close_one(self) -> store.Batch:
        """Read and hash outside the write lock (the ingest keeps writing meanwhile), then
        insert the batch in one short transaction."""
        conn = self.conn
        last = conn.execute("SELECT COALESCE(MAX(last_reading), 0) FROM batches").fetchone()[0]
        rows = conn.execute(
            "SELECT id, device, seq, digest FROM readings WHERE id > ? ORDER BY id LIMIT ?",
            (last, self.batch_size),
        ).fetchall()
        tree = merkle.build_tree([(bytes(d), s, bytes(g)) for _, d, s, g in rows])
        leaves = [(row[0], index) for row, index in zip(rows, tree.tree_index, strict=True)]
        now = self.clock()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now_last, batch_id = conn.execute(
                "SELECT COALESCE(MAX(last_reading), 0), COALESCE(MAX(id) + 1, 0) FROM batches"
            ).fetchone()
            if now_last != last:  # another batcher on this file: never two of them
                raise BatchError(f"batches changed under the batcher (last reading {now_last})")
            conn.execute(
                "INSERT INTO batches(id, root, count, first_reading, last_reading, created_at, "
                "status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    batch_id,
                    tree.root,
                    len(rows),
                    rows[0][0],
                    rows[-1][0],
                    now,
                    store.PENDING,
                ),
            )
            conn.execute(
                "INSERT INTO batch_trees(batch_id, nodes) VALUES (?, ?)", (batch_id, tree.to_blob())
            )
            conn.executemany(
                "INSERT INTO batch_leaves(reading_id, batch_id, tree_index) VALUES (?, ?, ?)",
                [(reading_id, batch_id, index) for reading_id, index in leaves],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("batch %d closed: %d readings, root 0x%s", batch_id, len(rows), tree.root.hex())
        return store.Batch(
            batch_id,
            tree.root,
            len(rows),
            rows[0][0],
            rows[-1][0],
            now,
            store.PENDING,
            None,
            None,
            None,
        )

    def status(self) -> dict[str, object]:
        """For /api/status: batches closed, readings waiting."""
        try:
            _, waiting, oldest = self._waiting()
            closed = self.conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        except sqlite3.OperationalError as exc:
            return {"error": str(exc)}
        return {
            "batches": closed,
            "waiting": waiting,
            "oldest_waiting_s": None if oldest is None else round(self.clock() - oldest, 1),
            "batch_size": self.batch_size,
            "batch_seconds": self.batch_seconds,
            "error": self.last_error,
        }

    def run(self, shutdown: threading.Event, interval: float = 1.0) -> None:
        """Stage loop: close due batches until `shutdown` is set. A busy or full
        database is waited out; any other error is retried `self.retry.attempts`
        times (a batch is one transaction: all of it or nothing), then GaveUp
        ends run() and with it the gateway."""
        failures = Failures("batcher: closing a batch", self.retry, log)
        while not shutdown.is_set():
            wait = interval
            try:
                self.close_due()
                failures.succeeded()
                self.last_error = None
            except Exception as exc:
                self.last_error = failures.describe(exc)
                wait = failures.unexpected(exc, wait)  # GaveUp after the last attempt
            shutdown.wait(wait)
