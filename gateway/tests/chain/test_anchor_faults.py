"""The anchorer against anvil when things go wrong: kill -9 around the send, the RPC
down, a dropped and a stuck transaction, a reorg. Each batch ends anchored exactly once."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from eth_account import Account

from terrapin.gateway.chain import tables as store
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainError, transact
from terrapin.gateway.retry import RetryPolicy
from terrapin.tools.devkit.chainkit import (
    ANVIL_KEY,
    TcpProxy,
    add_readings,
    deploy_on_rpc,
    make_db,
    next_batch_id,
)
from terrapin.tools.devkit.simboard import SimBoard

pytestmark = pytest.mark.anvil

CRASHING_ANCHORER = """
import os, signal, sys
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.node import Chain, ChainConfig

db, url, registry, anchor, mode, at = sys.argv[1:]
chain = Chain.connect(ChainConfig(network=url, registry=registry, anchor=anchor))
eth = chain.w3.eth
send = eth.send_raw_transaction
sent = 0

def send_then_maybe_die(raw):
    global sent
    sent += 1
    if sent == int(at) and mode == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = send(raw)
    if sent == int(at) and mode == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result

eth.send_raw_transaction = send_then_maybe_die
Anchorer(db, chain).anchor_pending(timeout=30)
"""


@pytest.fixture
def setup(anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", ANVIL_KEY)
    db = tmp_path / "gw.db"
    conn = make_db(db)
    boards = [SimBoard.make(random.Random(21)) for _ in range(2)]
    add_readings(conn, boards, 12)
    Batcher(db, batch_size=4).close_due()  # batches 0, 1, 2
    config = deploy_on_rpc(anvil.url)
    return db, config, anvil, conn, boards


def anchored_once(chain: Chain, db: Path, batches: int) -> None:
    """Each of `batches` batches has exactly one Anchored event, with our root."""
    events = chain.anchor.events.Anchored().get_logs(from_block=0)
    ids = [e["args"]["batchId"] for e in events]
    assert sorted(ids) == list(range(batches)), f"Anchored events for batches {ids}"
    conn = store.connect(db)
    for e in events:
        batch = store.get_batch(conn, e["args"]["batchId"])
        assert batch is not None and bytes(e["args"]["root"]) == batch.root
        assert batch.status in (store.ANCHORED, store.CONFIRMED)
        assert batch.tx_hash == bytes(e["transactionHash"])
    assert next_batch_id(chain.anchor, chain.address) == batches


@pytest.mark.parametrize(("mode", "at"), [("before", 1), ("after", 1), ("before", 2), ("after", 3)])
def test_kill_9_around_the_send_then_restart(setup, tmp_path: Path, mode: str, at: int) -> None:
    db, config, anvil, _, _ = setup
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_ANCHORER)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(db),
            anvil.url,
            config.registry,
            config.anchor,
            mode,
            str(at),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TERRAPIN_CHAIN_KEY": ANVIL_KEY},
    )
    assert result.returncode == -9, result.stderr
    conn = store.connect(db)
    statuses = [s for (s,) in conn.execute("SELECT status FROM chain_txs ORDER BY id")]
    assert statuses[-1] == store.SIGNED  # recorded before the send, never marked sent
    chain = Chain.connect(config)
    Anchorer(db, chain).anchor_pending(timeout=30)
    anchored_once(chain, db, 3)
    # 2 deployments + 1 grant + exactly one mined anchor per batch
    assert chain.w3.eth.get_transaction_count(chain.address) == 3 + 3


def test_rpc_down_for_a_while(setup) -> None:
    db, config, anvil, conn, boards = setup
    proxy = TcpProxy(anvil.port).up()
    config.network = proxy.url
    config.poll_seconds = 0.05
    config.rpc_timeout = 2
    anchorer = Anchorer(db, Chain.connect(config))
    anchorer.backoff = (0.05, 0.4)
    # The node away is waited out without a limit: far more failures than a bug gets.
    anchorer.retry = RetryPolicy(attempts=2, first=0.01, cap=0.01)
    shutdown = threading.Event()
    thread = threading.Thread(target=anchorer.run, args=(shutdown,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: _count(db, store.ANCHORED, store.CONFIRMED) == 3, "first 3 batches")
        proxy.down()
        add_readings(conn, boards, 8)
        Batcher(db, batch_size=4).close_due()  # batches 3, 4 while the node is away
        time.sleep(1.5)
        assert _count(db, store.PENDING, store.SENT) == 2
        assert thread.is_alive()
        assert "without limit" in (anchorer.last_error or ""), anchorer.last_error
        proxy.up()
        wait_for(lambda: _count(db, store.ANCHORED, store.CONFIRMED) == 5, "batches after outage")
    finally:
        shutdown.set()
        thread.join(10)
        proxy.down()
    config.network = anvil.url
    anchored_once(Chain.connect(config), db, 5)


def test_dropped_transaction_is_replaced_with_higher_fees(setup) -> None:
    db, config, anvil, _, _ = setup
    anvil.rpc("evm_setAutomine", False)
    anchorer = Anchorer(db, Chain.connect(config))
    anchorer.step()  # batch 0 sent, sits in the mempool
    (first,) = _txs(db)
    assert first["status"] == store.TX_SENT
    assert anvil.rpc("anvil_dropTransaction", "0x" + first["tx_hash"].hex())["result"]
    anchorer.step()  # gone from the mempool: replace
    old, new = _txs(db)
    assert (old["status"], new["status"]) == (store.REPLACED, store.TX_SENT)
    assert new["nonce"] == old["nonce"]
    assert new["max_fee"] >= old["max_fee"] * 1.1
    assert new["priority_fee"] >= old["priority_fee"] * 1.1
    anvil.rpc("evm_mine")
    anvil.rpc("evm_setAutomine", True)
    anchorer.anchor_pending(timeout=30)
    assert _txs(db)[1]["status"] == store.MINED
    anchored_once(anchorer.chain, db, 3)


def test_stuck_transaction_is_replaced_after_stuck_after(setup) -> None:
    db, config, anvil, _, _ = setup
    anvil.rpc("evm_setAutomine", False)
    now = [1000.0]
    config.stuck_after = 30
    anchorer = Anchorer(db, Chain.connect(config), clock=lambda: now[0])
    anchorer.step()
    now[0] += 10
    anchorer.step()
    assert len(_txs(db)) == 1  # young: left alone
    now[0] += 25
    anchorer.step()
    old, new = _txs(db)
    assert (old["status"], new["status"], new["nonce"]) == (
        store.REPLACED,
        store.TX_SENT,
        old["nonce"],
    )
    assert new["max_fee"] >= old["max_fee"] * 1.1
    anvil.rpc("evm_mine")  # the mempool now holds only the replacement
    anchorer.step()
    assert store.get_batch(anchorer.conn, 0).tx_hash == new["tx_hash"]
    anvil.rpc("evm_setAutomine", True)
    anchorer.anchor_pending(timeout=30)
    anchored_once(anchorer.chain, db, 3)


def test_reorg_removing_an_anchor_is_detected_and_reanchored(setup) -> None:
    db, config, anvil, _, _ = setup
    config.confirmations = 3
    anchorer = Anchorer(db, Chain.connect(config))
    anchorer.anchor_pending(timeout=30)  # 3 batches, 3 blocks, batch 2 unconfirmed
    before = {b.id: b for b in store.batches(anchorer.conn)}
    assert before[2].status == store.ANCHORED
    assert anvil.rpc("anvil_reorg", 1, [])["result"] is None  # replace the last block
    assert next_batch_id(anchorer.chain.anchor, anchorer.chain.address) == 2
    anchorer.step()  # detects it
    assert store.get_batch(anchorer.conn, 2).status == store.SENT
    anchorer.anchor_pending(timeout=30)
    after = store.get_batch(anchorer.conn, 2)
    assert after.tx_hash != before[2].tx_hash and after.block_hash != before[2].block_hash
    anchored_once(anchorer.chain, db, 3)
    for _ in range(3):
        anvil.rpc("evm_mine")
    anchorer.anchor_pending(until=store.CONFIRMED, timeout=30)
    assert _txs(db)[-1]["status"] == store.MINED


def _txs(db: Path) -> list[dict]:
    conn = store.connect(db)
    conn.row_factory = lambda cur, row: {d[0]: v for d, v in zip(cur.description, row, strict=True)}
    return conn.execute("SELECT * FROM chain_txs ORDER BY id").fetchall()


def _count(db: Path, *statuses: str) -> int:
    return len(store.batches(store.connect(db), *statuses))


def wait_for(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_nonce_taken_by_a_foreign_transaction_resends_the_batch(setup) -> None:
    db, config, anvil, _, _ = setup
    anvil.rpc("evm_setAutomine", False)
    anchorer = Anchorer(db, Chain.connect(config))
    anchorer.step()
    (ours,) = _txs(db)
    anvil.rpc("anvil_dropTransaction", "0x" + ours["tx_hash"].hex())
    # Someone else with the same key spends that nonce.
    w3, account = anchorer.chain.w3, anchorer.chain.account
    tx = {
        "type": 2,
        "chainId": w3.eth.chain_id,
        "nonce": ours["nonce"],
        "to": account.address,
        "value": 0,
        "gas": 21_000,
        "maxFeePerGas": ours["max_fee"],
        "maxPriorityFeePerGas": 1,
    }
    w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    anvil.rpc("evm_mine")
    anvil.rpc("evm_setAutomine", True)
    anchorer.anchor_pending(timeout=30)
    txs = _txs(db)
    assert txs[0]["status"] == store.ABANDONED
    assert txs[1]["nonce"] == ours["nonce"] + 1 and txs[1]["status"] == store.MINED
    anchored_once(anchorer.chain, db, 3)


def test_a_reverted_anchor_stops_with_the_reason(setup) -> None:
    db, config, _, _, _ = setup
    config.gas_limit = 25_000  # above the intrinsic gas, below what storing a root takes
    chain = Chain.connect(config)
    anchorer = Anchorer(db, chain)
    anchorer.step()  # sent with a fixed gas limit, mined, reverted (out of gas)
    with pytest.raises(ChainError, match="anchoring batch 0 reverted"):
        anchorer.step()
    assert _txs(db)[0]["status"] == store.FAILED
    assert store.get_batch(anchorer.conn, 0).status == store.PENDING


def test_restored_database_adopts_anchors_instead_of_sending_again(setup) -> None:
    """A database restored from a backup taken before the anchors: nothing is sent again."""
    db, config, _, _, _ = setup
    anchorer = Anchorer(db, Chain.connect(config))
    anchorer.anchor_pending(timeout=30)
    original = {b.id: b.tx_hash for b in store.batches(anchorer.conn)}
    conn = store.connect(db)
    conn.execute("DELETE FROM chain_txs")
    conn.execute("UPDATE batches SET status = 'pending', tx_hash = NULL, block_number = NULL")
    chain = Chain.connect(config)
    nonce = chain.w3.eth.get_transaction_count(chain.address)
    Anchorer(db, chain).anchor_pending(timeout=30)
    assert chain.w3.eth.get_transaction_count(chain.address) == nonce
    assert {b.id: b.tx_hash for b in store.batches(conn)} == original
    anchored_once(chain, db, 3)


def test_unfunded_gateway_is_reported_then_recovers_once_funded(setup, monkeypatch) -> None:
    db, config, _, _, _ = setup
    admin = Chain.connect(config)
    poor = Account.create()
    role = admin.registry.functions.GATEWAY_ROLE().call()
    data = admin.registry.functions.grantRole(role, poor.address)._encode_transaction_data()
    transact(admin.w3, admin.account, {"to": admin.registry.address, "data": data})
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", poor.key.hex())
    anchorer = Anchorer(db, Chain.connect(config))
    with pytest.raises(ChainError, match="cannot pay for gas"):
        anchorer.step()
    assert [t["status"] for t in _txs(db)] == [store.SIGNED]  # kept for the next try
    transact(admin.w3, admin.account, {"to": poor.address, "value": 10**18})
    anchorer.anchor_pending(timeout=30)
    assert _txs(db)[0]["status"] == store.MINED  # the very transaction signed before
    anchored_once(anchorer.chain, db, 3)


def test_reorg_deeper_than_confirmations_while_down_is_repaired_at_start(setup) -> None:
    db, config, anvil, _, _ = setup
    Anchorer(db, Chain.connect(config)).anchor_pending(until=store.CONFIRMED, timeout=30)
    assert anvil.rpc("anvil_reorg", 2, [])["result"] is None  # batches 1 and 2 gone
    chain = Chain.connect(config)
    assert next_batch_id(chain.anchor, chain.address) == 1
    anchorer = Anchorer(db, chain)  # a restart: reconciles before sending anything
    anchorer.step()
    assert [b.status for b in store.batches(anchorer.conn)][:1] == [store.CONFIRMED]
    anchorer.anchor_pending(until=store.CONFIRMED, timeout=30)
    anchored_once(chain, db, 3)
