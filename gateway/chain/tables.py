"""The chain stages' own tables in the gateway's SQLite file.

`readings` and `devices` belong to the gateway store: these modules only SELECT them.
Everything here is created with CREATE TABLE IF NOT EXISTS, so the batcher and the
anchorer can start before or after the store.

batches        one row per closed batch; `id` is the on-chain batch id (0, 1, 2, ...)
batch_trees    the batch's Merkle tree, OpenZeppelin flat layout, 32 bytes a node
batch_leaves   reading id -> (batch, node index of its leaf): a proof is read from the
               stored tree without rebuilding it
chain_txs      every anchoring transaction, written (with its raw signed bytes) BEFORE
               it is sent
chain_meta     which chain and contract the anchoring state refers to
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from terrapin.gateway.chain import merkle
from terrapin.gateway.pgsql import PgConnection, is_url

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    count INTEGER NOT NULL,
    first_reading INTEGER NOT NULL,
    last_reading INTEGER NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    tx_hash BLOB,
    block_number INTEGER,
    block_hash BLOB,
    anchored_at REAL
);
CREATE TABLE IF NOT EXISTS batch_trees (
    batch_id INTEGER PRIMARY KEY,
    nodes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_leaves (
    reading_id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL,
    tree_index INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS batch_leaves_batch ON batch_leaves(batch_id);
CREATE TABLE IF NOT EXISTS chain_txs (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL,
    chain_id INTEGER NOT NULL,
    contract TEXT NOT NULL,
    sender TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    tx_hash BLOB NOT NULL UNIQUE,
    raw BLOB NOT NULL,
    max_fee INTEGER NOT NULL,
    priority_fee INTEGER NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL,
    status TEXT NOT NULL,
    block_number INTEGER,
    block_hash BLOB,
    gas_used INTEGER
);
CREATE INDEX IF NOT EXISTS chain_txs_batch ON chain_txs(batch_id);
CREATE TABLE IF NOT EXISTS chain_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Batch states: pending (closed, not on chain) -> sent (a tx is out) -> anchored (mined,
# block recorded) -> confirmed (`confirmations` deep). A reorg sends anchored back to sent.
PENDING, SENT, ANCHORED, CONFIRMED = "pending", "sent", "anchored", "confirmed"
# Transaction states. signed: recorded, maybe not yet broadcast.
SIGNED, TX_SENT, MINED, REPLACED, REORGED, FAILED, ABANDONED = (
    "signed",
    "sent",
    "mined",
    "replaced",
    "reorged",
    "failed",
    "abandoned",
)


def connect(db_path: str | Path) -> sqlite3.Connection:
    """A connection to the gateway file with the chain tables present."""
    if is_url(db_path):  # PostgreSQL ([store] url): the same SQL through a dialect
        pg = PgConnection(str(db_path), fenced=True)  # writes only under the anchorer lease
        pg.executescript(SCHEMA)
        return pg  # type: ignore[return-value]
    # A stage makes its connection where it is built and uses it in its own thread.
    conn = sqlite3.connect(
        str(db_path), timeout=30.0, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


@dataclass(frozen=True)
class Batch:
    id: int
    root: bytes
    count: int
    first_reading: int
    last_reading: int
    created_at: float
    status: str
    tx_hash: bytes | None
    block_number: int | None
    block_hash: bytes | None


_BATCH_COLUMNS = (
    "id, root, count, first_reading, last_reading, created_at, status, tx_hash, "
    "block_number, block_hash"
)


def get_batch(conn: sqlite3.Connection, batch_id: int) -> Batch | None:
    row = conn.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,)).fetchone()
    return Batch(*row) if row else None


def batches(conn: sqlite3.Connection, *statuses: str) -> list[Batch]:
    if statuses:
        marks = ",".join("?" * len(statuses))
        query = f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status IN ({marks}) ORDER BY id"
        rows = conn.execute(query, statuses).fetchall()
    else:
        rows = conn.execute(f"SELECT {_BATCH_COLUMNS} FROM batches ORDER BY id").fetchall()
    return [Batch(*row) for row in rows]


@dataclass(frozen=True)
class LeafProof:
    """Where one reading sits in its batch, and the proof to the batch root."""

    reading_id: int
    batch: Batch
    tree_index: int
    leaf: bytes
    proof: list[bytes]


def leaf_proof(conn: sqlite3.Connection, reading_id: int) -> LeafProof | None:
    """The stored proof for a reading, or None if it is not in a batch yet.

    Reads only the leaf and its siblings from the stored tree (blob I/O), so a proof from
    a 100,000-leaf batch costs ~17 small reads, not a rebuild."""
    row = conn.execute(
        "SELECT batch_id, tree_index FROM batch_leaves WHERE reading_id = ?", (reading_id,)
    ).fetchone()
    if row is None:
        return None
    batch_id, tree_index = row
    batch = get_batch(conn, batch_id)
    if batch is None:
        raise merkle.MerkleError(f"reading {reading_id} points at missing batch {batch_id}")
    size = 2 * batch.count - 1
    if not hasattr(conn, "blobopen"):  # PostgreSQL: read the nodes the proof needs
        return _leaf_proof_by_query(conn, batch, reading_id, tree_index, size)
    with conn.blobopen("batch_trees", "nodes", batch_id, readonly=True) as blob:
        if len(blob) != size * merkle.HASH_SIZE:
            raise merkle.MerkleError(f"stored tree of batch {batch_id} has the wrong size")

        def node_at(i: int) -> bytes:
            blob.seek(i * merkle.HASH_SIZE)
            return blob.read(merkle.HASH_SIZE)

        leaf = node_at(tree_index)
        proof = merkle.proof_from_nodes(node_at, size, tree_index)
    return LeafProof(reading_id, batch, tree_index, leaf, proof)


def _leaf_proof_by_query(
    conn: sqlite3.Connection, batch: Batch, reading_id: int, tree_index: int, size: int
) -> LeafProof:
    row = conn.execute(
        "SELECT octet_length(nodes) FROM batch_trees WHERE batch_id = ?", (batch.id,)
    ).fetchone()
    if row is None or row[0] != size * merkle.HASH_SIZE:
        raise merkle.MerkleError(f"stored tree of batch {batch.id} has the wrong size")

    def node_at(i: int) -> bytes:
        return bytes(
            conn.execute(
                "SELECT substring(nodes from ? for ?) FROM batch_trees WHERE batch_id = ?",
                (i * merkle.HASH_SIZE + 1, merkle.HASH_SIZE, batch.id),
            ).fetchone()[0]
        )

    leaf = node_at(tree_index)
    return LeafProof(
        reading_id, batch, tree_index, leaf, merkle.proof_from_nodes(node_at, size, tree_index)
    )


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM chain_meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO chain_meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
