"""Batcher and anchorer on the embedded chain: closing rules, stored proofs, anchoring."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from terrapin.gateway.chain import merkle
from terrapin.gateway.chain import tables as store
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig
from terrapin.tools.devkit.chainkit import add_readings, make_db, next_batch_id
from terrapin.tools.devkit.simboard import SimBoard


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_batches_close_at_size_or_age_in_reading_id_order(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    conn = make_db(db)
    rng = random.Random(1)
    boards = [SimBoard.make(rng) for _ in range(3)]
    clock = Clock()
    batcher = Batcher(db, batch_size=10, batch_seconds=30, clock=clock)
    readings = add_readings(conn, boards, 25, received_at=clock.now)
    closed = batcher.close_due()
    assert [(b.id, b.count, b.first_reading, b.last_reading) for b in closed] == [
        (0, 10, readings[0][0], readings[9][0]),
        (1, 10, readings[10][0], readings[19][0]),
    ]
    assert batcher.close_due() == []  # 5 waiting, young
    clock.now += 29.9
    assert batcher.close_due() == []
    clock.now += 0.2
    (last,) = batcher.close_due()
    assert (last.id, last.count, last.last_reading) == (2, 5, readings[-1][0])
    assert batcher.close_due() == []
    # The same readings give the same roots (deterministic order).
    rows = conn.execute("SELECT device, seq, digest FROM readings ORDER BY id").fetchall()
    for batch in store.batches(batcher.conn):
        values = [(bytes(d), s, bytes(g)) for d, s, g in rows[batch.id * 10 : batch.id * 10 + 10]]
        assert merkle.build_tree(values).root == batch.root
    # Every reading's stored proof leads to its batch root.
    for reading_id, board, seq in readings:
        found = store.leaf_proof(batcher.conn, reading_id)
        digest = conn.execute("SELECT digest FROM readings WHERE id = ?", (reading_id,)).fetchone()[
            0
        ]
        assert found is not None
        assert found.leaf == merkle.leaf_hash(board.address, seq, digest)
        assert merkle.process_proof(found.leaf, found.proof) == found.batch.root
    # readings was not altered
    cols = [r[1] for r in conn.execute("PRAGMA table_info(readings)")]
    assert cols == ["id", "device", "seq", "digest", "envelope", "time", "received_at", "flags"]


def test_force_closes_what_is_waiting(tmp_path: Path) -> None:
    conn = make_db(tmp_path / "gw.db")
    add_readings(conn, [SimBoard.make(random.Random(2))], 3)
    batcher = Batcher(tmp_path / "gw.db", batch_size=100, batch_seconds=3600)
    assert batcher.close_due() == []
    assert [b.count for b in batcher.close_due(force=True)] == [3]


@pytest.mark.parametrize("confirmations", [1, 3])
def test_anchor_pending_anchors_each_batch_once_in_order(
    tmp_path: Path, confirmations: int
) -> None:
    db = tmp_path / "gw.db"
    conn = make_db(db)
    add_readings(conn, [SimBoard.make(random.Random(3)) for _ in range(2)], 23)
    Batcher(db, batch_size=5).close_due(force=True)
    chain = Chain.connect(ChainConfig(confirmations=confirmations))
    anchorer = Anchorer(db, chain)
    done = anchorer.anchor_pending(until=store.CONFIRMED)
    assert [b.status for b in done] == [store.CONFIRMED] * 5
    fn = chain.anchor.functions
    assert next_batch_id(chain.anchor, chain.address) == 5
    for batch in done:
        assert fn.rootOf(chain.address, batch.id).call() == batch.root
        receipt = chain.w3.eth.get_transaction_receipt(batch.tx_hash)
        assert receipt["blockNumber"] == batch.block_number
        assert chain.w3.eth.block_number - batch.block_number + 1 >= confirmations
    txs = anchorer.conn.execute("SELECT status, COUNT(*) FROM chain_txs GROUP BY status").fetchall()
    assert txs == [(store.MINED, 5)]
    # A second run sends nothing.
    anchorer.anchor_pending(until=store.CONFIRMED)
    assert anchorer.conn.execute("SELECT COUNT(*) FROM chain_txs").fetchone()[0] == 5


def test_a_new_chain_gets_every_batch_again(tmp_path: Path) -> None:
    """The embedded chain lives in the process: after a restart the batches are anchored
    on the new chain rather than trusted from the old one."""
    db = tmp_path / "gw.db"
    add_readings(make_db(db), [SimBoard.make(random.Random(4))], 4)
    Batcher(db, batch_size=2).close_due()
    Anchorer(db, Chain.connect()).anchor_pending()
    chain = Chain.connect()
    anchorer = Anchorer(db, chain)
    anchorer.anchor_pending()
    assert next_batch_id(chain.anchor, chain.address) == 2
    statuses = dict(anchorer.conn.execute("SELECT status, COUNT(*) FROM chain_txs GROUP BY status"))
    assert statuses == {store.ABANDONED: 2, store.MINED: 2}
