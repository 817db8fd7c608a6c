"""The rewards stage's run loop under injected faults (embedded chain, real settling).

A fault nobody planned for, right after an epoch's root went on chain, is
retried a bounded number of times, each attempt logged: the epoch ends up
recorded once and published once. A fault that stays ends run() with GaveUp
(the gateway then exits non-zero). An expected condition (the chain node
unreachable) is waited out past that bound."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from web3 import Web3

from terrapin.gateway.chain import tables as store
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig
from terrapin.gateway.retry import GaveUp, RetryPolicy
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards import stage as stage_module
from terrapin.gateway.rewards import tables as rewards_store
from terrapin.gateway.rewards.binding import bind_digest, pack_signature
from terrapin.gateway.rewards.stage import RewardsStage
from terrapin.tools.devkit.chainkit import make_db
from terrapin.tools.devkit.simboard import SimBoard

FAST = RetryPolicy(attempts=3, first=0.01, cap=0.02)
OWNER = "0x" + "a1" * 20


class Fault:
    """Wraps `real` so that its first `times` calls raise `error`."""

    def __init__(self, real, times: float, error: Exception):
        self.real, self.left, self.error, self.raised = real, times, error, 0

    def __call__(self, *args, **kwargs):
        if self.left > 0:
            self.left -= 1
            self.raised += 1
            raise self.error
        return self.real(*args, **kwargs)


@pytest.fixture
def anchored(tmp_path: Path, stamped_readings) -> tuple[Path, Chain]:
    """Readings of two boards bound to OWNER, batched, anchored and confirmed."""
    db = tmp_path / "gw.db"
    conn = make_db(db)
    boards = [SimBoard.make(random.Random(9 + i)) for i in range(2)]
    chain = Chain.connect(ChainConfig())
    registry = rewards_chain.binding_contract(chain.w3, chain.registry.address)
    for board in boards:
        addr = Web3.to_checksum_address("0x" + board.address.hex())
        nonce = registry.functions.bindNonce(addr).call()
        digest = bind_digest(OWNER, nonce, chain.chain_id, registry.address)
        sig = board.private.sign_recoverable(digest, hasher=None)
        signature = pack_signature(sig[:64], sig[64])
        rewards_chain.bind_board(chain.w3, chain.account, registry, addr, OWNER, signature)
    stamped_readings(conn, boards, 6, int(time.time()))
    Batcher(db, batch_size=3).close_due(force=True)
    Anchorer(db, chain).anchor_pending(until=store.CONFIRMED)
    return db, chain


def make_stage(db: Path, chain: Chain) -> RewardsStage:
    params = rewards_store.Params(epoch_seconds=2, budget=1_000, cap=3)
    stage = RewardsStage(db, chain, params, poll_seconds=0.05)
    stage.retry = FAST
    return stage


def settled(db: Path) -> list[tuple[int, bytes | None]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT epoch, root FROM rewards_settled ORDER BY epoch").fetchall()
    finally:
        conn.close()


def run_until(stage: RewardsStage, db: Path, timeout: float = 30.0) -> list:
    """Run the stage in a thread until an epoch is settled; returns run()'s errors."""
    shutdown, errors = threading.Event(), []

    def target() -> None:
        try:
            stage.run(shutdown)
        except BaseException as exc:  # the test reads it
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not settled(db) and not errors and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        shutdown.set()
        thread.join(30)
    assert settled(db), f"no epoch settled in {timeout} s; errors {errors}"
    return errors


def messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_fault_after_publishing_is_retried_and_publishes_once(anchored, monkeypatch, caplog):
    db, chain = anchored
    stage = make_stage(db, chain)
    # _record runs after the epoch's root was published: the retried step must see
    # that the contract has it and only record it.
    fault = Fault(stage._record, 2, RuntimeError("injected fault after publishing"))
    monkeypatch.setattr(stage, "_record", fault)
    caplog.set_level(logging.INFO, "terrapin.gateway.rewards.rule")
    errors = run_until(stage, db)
    assert not errors, errors
    assert fault.raised == 2
    rows = settled(db)
    published = stage.token.events.RootPublished().get_logs(from_block=0)
    epochs = [e["args"]["epoch"] for e in published]
    # The anchors may span two epochs: each is published once and recorded once.
    assert epochs and len(epochs) == len(set(epochs)), f"published {epochs}, settled {rows}"
    assert [epoch for epoch, root in rows if root is not None] == sorted(epochs)
    lines = messages(caplog, "rewards step failed")
    assert ["attempt 1 of 3" in lines[0], "attempt 2 of 3" in lines[1]] == [True, True], lines
    assert messages(caplog, "was already published on chain; recorded")


def test_a_fault_that_stays_ends_run_and_is_in_the_status(anchored, monkeypatch, caplog):
    db, chain = anchored
    stage = make_stage(db, chain)
    fault = Fault(rewards_store.settle_epoch, float("inf"), RuntimeError("injected settle fault"))
    monkeypatch.setattr(rewards_store, "settle_epoch", fault)
    caplog.set_level(logging.WARNING, "terrapin.gateway.rewards.rule")
    with pytest.raises(GaveUp, match="rewards step failed 3 times in a row: RuntimeError"):
        stage.run(threading.Event())
    assert fault.raised == 3
    assert len(messages(caplog, "rewards step failed")) == 3
    assert "attempt 3 of 3" in stage.status()["error"]
    assert settled(db) == []
    assert stage.token.events.RootPublished().get_logs(from_block=0) == []


def test_the_node_unreachable_is_waited_out_past_the_bound(anchored, monkeypatch):
    db, chain = anchored
    stage = make_stage(db, chain)
    times = FAST.attempts * 2
    fault = Fault(rewards_store.sync, times, ConnectionRefusedError("node away"))
    seen: list[str | None] = []

    def sync(*args, **kwargs):
        seen.append(stage.error)
        return fault(*args, **kwargs)

    monkeypatch.setattr(rewards_store, "sync", sync)
    monkeypatch.setattr(stage_module, "MAX_BACKOFF", 0.1)  # its own backoff, made short
    errors = run_until(stage, db, timeout=90)
    assert not errors, errors
    assert fault.raised == times
    assert any(s and "node away (retrying without limit)" in s for s in seen), seen


def test_no_epoch_is_settled_while_an_anchoring_transaction_is_in_flight(anchored):
    """A batch whose transaction is out may land in the epoch about to be settled, and the
    epoch's manifest must list every batch anchored in it: the stage waits."""
    db, chain = anchored
    stage = make_stage(db, chain)
    deadline = time.monotonic() + 30
    while not stage.due() and time.monotonic() < deadline:  # the 2-second epochs end
        time.sleep(0.2)
    assert stage.due(), "an anchored epoch never became due"
    conn = sqlite3.connect(db)
    try:
        with conn:  # the anchorer's state between sending a transaction and seeing it mined
            conn.execute("UPDATE batches SET status = 'sent' WHERE id = 0")
        assert stage.due() == []
        assert stage.step() == [] and settled(db) == []
        with conn:
            conn.execute("UPDATE batches SET status = 'confirmed' WHERE id = 0")
    finally:
        conn.close()
    assert stage.step() and settled(db)
