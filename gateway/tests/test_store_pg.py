"""PostgreSQL as the store: the chain stages on it, several writers, a restart.

The store's own semantics run on both backends in test_store.py; here what only
matters with a server: the batcher and anchorer through the dialect, two
instances writing the same readings at once, and PostgreSQL going away."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from terrapin.gateway.chain import merkle
from terrapin.gateway.chain import tables as chain_tables
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain
from terrapin.gateway.chain.proof import make_bundle
from terrapin.gateway.pgsql import PgConnection, translate
from terrapin.gateway.retry import disk_refuses
from terrapin.gateway.store import DUPLICATE, STORED, Pending
from terrapin.gateway.storebase import open_store
from terrapin.tools.devkit.chainkit import add_readings, make_db, next_batch_id
from terrapin.tools.devkit.simboard import SimBoard


def _db(backend: str, tmp_path: Path, request) -> tuple[str | Path, object]:
    """(location, a raw connection with the store's tables) on one backend."""
    if backend == "sqlite":
        path = tmp_path / "gw.db"
        return path, make_db(path)
    url = request.getfixturevalue("postgres_url")
    open_store(url).close()
    return url, PgConnection(url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_batch_anchor_and_proof_on_both_backends(backend, tmp_path, request):
    where, conn = _db(backend, tmp_path, request)
    rng = random.Random(7)
    boards = [SimBoard.make(rng) for _ in range(2)]
    readings = add_readings(conn, boards, 23)
    assert [r[0] for r in readings] == list(range(1, 24))  # lastrowid through the dialect
    closed = Batcher(where, batch_size=5).close_due(force=True)
    assert [(b.id, b.count) for b in closed] == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 3)]
    chain = Chain.connect()
    anchorer = Anchorer(where, chain)
    done = anchorer.anchor_pending(until=chain_tables.CONFIRMED)
    assert [b.status for b in done] == [chain_tables.CONFIRMED] * 5
    assert next_batch_id(chain.anchor, chain.address) == 5
    anchorer.anchor_pending(until=chain_tables.CONFIRMED)  # nothing more is sent
    assert anchorer.conn.execute("SELECT COUNT(*) FROM chain_txs").fetchone()[0] == 5
    for reading_id, board, seq in readings:
        found = chain_tables.leaf_proof(anchorer.conn, reading_id)
        assert found is not None and found.batch.id == (reading_id - 1) // 5
        digest = anchorer.conn.execute(
            "SELECT digest FROM readings WHERE id = ?", (reading_id,)
        ).fetchone()[0]
        assert found.leaf == merkle.leaf_hash(board.address, seq, bytes(digest))
        assert merkle.process_proof(found.leaf, found.proof) == found.batch.root
    _, board, seq = readings[11]
    bundle = make_bundle(where, board.address, seq)
    assert bundle.batch == 2 and bundle.tx == done[2].tx_hash and bundle.root == done[2].root


def test_two_instances_store_each_reading_once(postgres_url):
    """Two stores (two gateway instances) get the same readings at once, as after a
    redelivery: each reading is stored by exactly one, the other sees a duplicate."""
    stores = [open_store(postgres_url) for _ in range(2)]
    board = b"\xaa" * 20
    batches = [
        [Pending(board, seq, bytes([seq % 256]) * 32, b"env", 0, 1.0) for seq in range(s, s + 50)]
        for s in range(1, 501, 50)
    ]
    outcomes: list[list[str]] = [[], []]

    def run(i: int) -> None:
        for batch in batches:
            out, _ = stores[i].commit(batch)
            outcomes[i] += [o.status for o in out]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(*outcomes, strict=True):
        assert sorted([a, b]) == [DUPLICATE, STORED]
    assert stores[0].count_readings() == 500
    for s in stores:
        s.close()


def test_a_restarted_postgres_is_waited_out_and_nothing_is_lost(postgres_server):
    url = postgres_server.create_database()
    store = open_store(url)
    board = b"\xbb" * 20
    out, _ = store.commit([Pending(board, 1, b"\x01" * 32, b"e", 0, 1.0)])
    assert out[0].status == STORED
    postgres_server.stop()
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            store.commit([Pending(board, 2, b"\x02" * 32, b"e", 0, 1.0)])
        assert disk_refuses(caught.value)  # the pipeline retries it, nothing acked
    finally:
        postgres_server.start()
    out, _ = store.commit([Pending(board, 2, b"\x02" * 32, b"e", 0, 1.0)])
    assert out[0].status == STORED
    assert store.count_readings() == 2
    store.close()


def test_the_dialect_rewrites_the_sqlite_isms():
    assert translate("SELECT a FROM t WHERE b = ? AND c LIKE '5%'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE '5%%'"
    )
    ddl = translate("CREATE TABLE x (id INTEGER PRIMARY KEY, b BLOB, r REAL, n INTEGER)")
    assert "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in ddl
    assert "b BYTEA" in ddl and "r DOUBLE PRECISION" in ddl and "n BIGINT" in ddl
    upsert = translate(
        "INSERT INTO c(k, n, at) VALUES (?,?,?) ON CONFLICT(k) DO UPDATE SET"
        " n = n + excluded.n, at = max(at, excluded.at)"
    )
    assert upsert.endswith("SET n = c.n + excluded.n, at = GREATEST(c.at, excluded.at)")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rewards_settle_on_both_backends(backend, tmp_path, request):
    """The rewards stage's tables through the dialect: an ended epoch is settled once,
    its distribution recorded, and a second step settles nothing more."""
    from terrapin.gateway.rewards import tables
    from terrapin.gateway.rewards.stage import RewardsStage
    from terrapin.gateway.rewards.tables import Params

    where, conn = _db(backend, tmp_path, request)
    rng = random.Random(9)
    add_readings(conn, [SimBoard.make(rng) for _ in range(2)], 6)
    chain = Chain.connect()
    Batcher(where, batch_size=100).close_due(force=True)
    Anchorer(where, chain).anchor_pending(until=chain_tables.CONFIRMED)
    params = Params(epoch_seconds=2, budget=10**18, cap=100)
    stage = RewardsStage(where, chain, params, out_dir=tmp_path / "rewards", poll_seconds=0.1)
    settled: list[int] = []
    deadline = time.monotonic() + 30
    while not settled and time.monotonic() < deadline:
        settled = stage.step()
        time.sleep(0.2)
    assert len(settled) == 1, stage.status()
    assert stage.step() == []  # settled once
    assert stage.status()["last_settled_epoch"] == settled[0]
    assert stage.conn.execute("SELECT COUNT(*) FROM rewards_settled").fetchone()[0] == 1
    if backend == "postgresql":  # /api/rewards on an instance that does not lead
        from terrapin.gateway.api import db_rewards_view
        from terrapin.gateway.leader import Election, LeaderStages

        standby = LeaderStages(Election(where), lambda: [])
        overview = db_rewards_view(tmp_path / "no.db", standby.view)()
        assert overview == tables.overview(stage.conn) | {"chain": False}
        assert set(overview) >= {"epoch", "root", "published", "boards", "owners"}


def test_the_chain_tables_write_only_under_the_lease(postgres_url):
    """Fencing: once the session holding the anchorer lease is gone, a chain-stage
    connection of that instance refuses to begin a write (a batch, a txlog record)."""
    from terrapin.gateway.leader import Election

    open_store(postgres_url).close()
    election, rival = Election(postgres_url), Election(postgres_url)
    assert election.try_acquire() and not rival.try_acquire()
    conn = chain_tables.connect(postgres_url)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("COMMIT")
    killer = PgConnection(postgres_url)
    pid = election._conn.info.backend_pid
    killer.execute("SELECT pg_terminate_backend(?)", (pid,))  # its host vanished
    deadline = time.monotonic() + 10
    while killer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ?", (pid,)).fetchone():
        assert time.monotonic() < deadline, "the terminated session is still there"
        time.sleep(0.05)
    with pytest.raises(sqlite3.OperationalError, match="lease"):
        conn.execute("BEGIN IMMEDIATE")
    assert not conn.in_transaction
    assert not election.held()
    assert rival.try_acquire()  # the lease moved on
    election.release()
    rival.release()
