"""The proof bundle of one stored, anchored reading, from the gateway's database.

`make_bundle(db_path, device, seq)` gathers what `terrapin verify` needs without
this gateway: the envelope, the board's public key, the Merkle proof and the
anchoring transaction (format in terrapin.gateway.chain.bundle, docs/PROTOCOL.md).
Used by `terrapin proof` and the demo.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from terrapin.gateway.chain import bundle
from terrapin.gateway.chain import tables as store
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.pgsql import is_url
from terrapin.gateway.protocol.signature import recover_signer


def make_bundle(db_path: str | Path, device: bytes, seq: int) -> bundle.Bundle:
    """The proof bundle of reading (device, seq); TerrapinError says why there is none."""
    if not is_url(db_path) and not Path(db_path).exists():
        raise TerrapinError(f"no gateway database at {db_path}", hint="pass --db PATH")
    conn = store.connect(db_path)
    try:
        return _make_bundle(conn, device, seq)
    except sqlite3.OperationalError as exc:
        raise TerrapinError(f"{db_path} is not a gateway database ({exc})") from None
    finally:
        conn.close()


def _make_bundle(conn: sqlite3.Connection, device: bytes, seq: int) -> bundle.Bundle:
    label = f"0x{device.hex()} #{seq}"
    row = conn.execute(
        "SELECT id, digest, envelope FROM readings WHERE device = ? AND seq = ?", (device, seq)
    ).fetchone()
    if row is None:
        raise TerrapinError(f"reading {label} is not stored")
    reading_id, digest, envelope = row[0], bytes(row[1]), bytes(row[2])
    found = store.leaf_proof(conn, reading_id)
    if found is None:
        raise TerrapinError(f"reading {label} is not in a batch yet", hint="wait for the batcher")
    batch = found.batch
    if batch.status not in (store.ANCHORED, store.CONFIRMED):
        raise TerrapinError(
            f"batch {batch.id} of reading {label} is not anchored yet ({batch.status})",
            hint="wait for the anchorer",
        )
    tx = conn.execute(
        "SELECT chain_id, contract FROM chain_txs WHERE tx_hash = ?", (batch.tx_hash,)
    ).fetchone()
    if tx is None:
        raise TerrapinError(f"batch {batch.id}'s anchoring transaction is not recorded")
    pubkey = _pubkey(conn, device, digest, envelope)
    return bundle.Bundle(
        envelope=envelope,
        pubkey=pubkey,
        device=device,
        seq=seq,
        digest=digest,
        leaf=found.leaf,
        proof=found.proof,
        root=batch.root,
        batch=batch.id,
        chain_id=tx[0],
        contract=bytes.fromhex(tx[1][2:]),
        tx=bytes(batch.tx_hash),
        block=batch.block_number,
    )


def _pubkey(conn: sqlite3.Connection, device: bytes, digest: bytes, envelope: bytes) -> bytes:
    """From the devices table, else recovered from the envelope's signature."""
    try:
        row = conn.execute("SELECT pubkey FROM devices WHERE address = ?", (device,)).fetchone()
    except sqlite3.OperationalError:
        row = None
    if row and row[0]:
        return bytes(row[0])
    try:
        signature = bundle.parse_envelope(envelope).signature
    except bundle.BundleError as exc:
        raise TerrapinError(f"stored envelope does not parse: {exc}") from None
    recovered = recover_signer(digest, signature, device)
    if recovered is None:
        raise TerrapinError("cannot recover the board's public key from its signature")
    return recovered[0]
