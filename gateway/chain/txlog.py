"""The anchorer's record: every write to `chain_txs` and to a batch's anchoring state.

Each function is one SQLite transaction, so a crash leaves either the old or the new
state. The anchorer decides; this module only writes what it decided.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from terrapin.gateway.chain import tables as store


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass(frozen=True)
class Attempt:
    """One signed anchoring transaction for a batch."""

    id: int
    nonce: int
    tx_hash: bytes
    raw: bytes
    max_fee: int
    priority_fee: int
    status: str
    sent_at: float | None


def attempts(conn: sqlite3.Connection, batch_id: int) -> list[Attempt]:
    """The batch's live attempts (signed, sent or replaced), oldest first."""
    rows = conn.execute(
        "SELECT id, nonce, tx_hash, raw, max_fee, priority_fee, status, sent_at "
        "FROM chain_txs WHERE batch_id = ? AND status IN (?, ?, ?) ORDER BY id",
        (batch_id, store.SIGNED, store.TX_SENT, store.REPLACED),
    ).fetchall()
    return [Attempt(i, n, bytes(h), bytes(r), mf, pf, s, t) for i, n, h, r, mf, pf, s, t in rows]


def mined_tx(conn: sqlite3.Connection, batch_id: int) -> tuple[int, bytes] | None:
    row = conn.execute(
        "SELECT id, tx_hash FROM chain_txs WHERE batch_id = ? AND status = ?",
        (batch_id, store.MINED),
    ).fetchone()
    return (row[0], bytes(row[1])) if row else None


def find_tx(conn: sqlite3.Connection, tx_hash: bytes) -> int | None:
    row = conn.execute("SELECT id FROM chain_txs WHERE tx_hash = ?", (tx_hash,)).fetchone()
    return row[0] if row else None


def record(
    conn: sqlite3.Connection,
    *,
    batch_id: int,
    chain_id: int,
    contract: str,
    sender: str,
    nonce: int,
    tx_hash: bytes,
    raw: bytes,
    max_fee: int,
    priority_fee: int,
    now: float,
    replaces: int | None = None,
    status: str = store.SIGNED,
) -> int:
    """Write a signed transaction (before it is broadcast) and put its batch in flight."""
    with _transaction(conn):
        if replaces is not None:
            conn.execute("UPDATE chain_txs SET status = ? WHERE id = ?", (store.REPLACED, replaces))
        cur = conn.execute(
            "INSERT INTO chain_txs(batch_id, chain_id, contract, sender, nonce, tx_hash, raw, "
            "max_fee, priority_fee, created_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch_id,
                chain_id,
                contract,
                sender,
                nonce,
                tx_hash,
                raw,
                max_fee,
                priority_fee,
                now,
                status,
            ),
        )
        conn.execute(
            "UPDATE batches SET status = ?, tx_hash = ? WHERE id = ?",
            (store.SENT, tx_hash, batch_id),
        )
    return int(cur.lastrowid or 0)


def mark_sent(conn: sqlite3.Connection, tx_id: int, sent_at: float) -> None:
    """The node accepted it (sent_at 0: treat as stuck at once, e.g. refused underpriced)."""
    conn.execute(
        "UPDATE chain_txs SET status = ?, sent_at = ? WHERE id = ?", (store.TX_SENT, sent_at, tx_id)
    )


def mark_failed(conn: sqlite3.Connection, batch_id: int, tx_id: int) -> None:
    with _transaction(conn):
        conn.execute("UPDATE chain_txs SET status = ? WHERE id = ?", (store.FAILED, tx_id))
        set_batch_status(conn, batch_id, store.PENDING)


def mark_mined(
    conn: sqlite3.Connection, batch_id: int, tx_id: int, receipt: Any, now: float
) -> None:
    """`tx_id` carried the batch in the receipt's block; other attempts are replaced."""
    block_hash = bytes(receipt["blockHash"])
    with _transaction(conn):
        conn.execute(
            "UPDATE chain_txs SET status = ? WHERE batch_id = ? AND status IN (?, ?, ?)",
            (store.REPLACED, batch_id, store.SIGNED, store.TX_SENT, store.MINED),
        )
        conn.execute(
            "UPDATE chain_txs SET status = ?, block_number = ?, block_hash = ?, gas_used = ? "
            "WHERE id = ?",
            (store.MINED, receipt["blockNumber"], block_hash, receipt["gasUsed"], tx_id),
        )
        conn.execute(
            "UPDATE batches SET status = ?, tx_hash = ?, block_number = ?, block_hash = ?, "
            "anchored_at = ? WHERE id = ?",
            (
                store.ANCHORED,
                bytes(receipt["transactionHash"]),
                receipt["blockNumber"],
                block_hash,
                now,
                batch_id,
            ),
        )


def unanchor(conn: sqlite3.Connection, batch_id: int, now: float) -> None:
    """The batch's block left the chain: its transaction is in flight again."""
    with _transaction(conn):
        conn.execute(
            "UPDATE chain_txs SET status = ?, sent_at = ?, block_number = NULL, "
            "block_hash = NULL WHERE batch_id = ? AND status = ?",
            (store.TX_SENT, now, batch_id, store.MINED),
        )
        conn.execute(
            "UPDATE batches SET status = ?, block_number = NULL, block_hash = NULL, "
            "anchored_at = NULL WHERE id = ?",
            (store.SENT, batch_id),
        )


def abandon(conn: sqlite3.Connection, batch_id: int) -> None:
    """Give up the batch's attempts (their nonce went elsewhere); the batch starts over."""
    with _transaction(conn):
        conn.execute(
            "UPDATE chain_txs SET status = ? WHERE batch_id = ? AND status IN (?, ?, ?)",
            (store.ABANDONED, batch_id, store.SIGNED, store.TX_SENT, store.REPLACED),
        )
        set_batch_status(conn, batch_id, store.PENDING)


def set_batch_status(conn: sqlite3.Connection, batch_id: int, status: str) -> None:
    conn.execute("UPDATE batches SET status = ? WHERE id = ?", (status, batch_id))


def restart_on(conn: sqlite3.Connection, ident: str) -> None:
    """A different chain or contract: every batch is to be anchored again there."""
    with _transaction(conn):
        conn.execute(
            "UPDATE chain_txs SET status = ? WHERE status IN (?, ?, ?, ?)",
            (store.ABANDONED, store.SIGNED, store.TX_SENT, store.MINED, store.REPLACED),
        )
        conn.execute(
            "UPDATE batches SET status = ?, tx_hash = NULL, block_number = NULL, "
            "block_hash = NULL, anchored_at = NULL",
            (store.PENDING,),
        )
        store.set_meta(conn, "anchor", ident)
