"""The batcher's and the anchorer's run loops under injected faults (embedded chain).

A fault nobody planned for is retried a bounded number of times, each attempt
logged; if it goes away, every reading is in exactly one batch and every batch
anchored exactly once; if it stays, run() ends with GaveUp (the gateway then
exits non-zero). An expected condition (a ChainError the operator must fix) is
waited out past that bound."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import pytest

from terrapin.gateway.chain import anchorer as anchorer_module
from terrapin.gateway.chain import merkle, txlog
from terrapin.gateway.chain import tables as store
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig, ChainError
from terrapin.gateway.retry import GaveUp, RetryPolicy
from terrapin.tools.devkit.chainkit import add_readings, make_db, next_batch_id
from terrapin.tools.devkit.simboard import SimBoard

FAST = RetryPolicy(attempts=3, first=0.01, cap=0.02)


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


def in_thread(run) -> tuple[threading.Event, threading.Thread, list[BaseException]]:
    shutdown, errors = threading.Event(), []

    def target() -> None:
        try:
            run(shutdown)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return shutdown, thread, errors


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "gw.db"
    add_readings(make_db(path), [SimBoard.make(random.Random(7)) for _ in range(2)], 10)
    return path


def batched_readings(db: Path) -> list[int]:
    conn = store.connect(db)
    try:
        return [r for (r,) in conn.execute("SELECT reading_id FROM batch_leaves ORDER BY 1")]
    finally:
        conn.close()


# -- batcher ------------------------------------------------------------------------------


def test_batcher_fault_that_goes_away_batches_each_reading_once(db, monkeypatch, caplog):
    # to_blob runs inside the batch's transaction, after its row was inserted.
    fault = Fault(merkle.MerkleTree.to_blob, 2, RuntimeError("injected tree fault"))
    monkeypatch.setattr(merkle.MerkleTree, "to_blob", lambda tree: fault(tree))
    caplog.set_level(logging.WARNING, "terrapin.gateway.chain.batcher")
    batcher = Batcher(db, batch_size=4, batch_seconds=3600)
    batcher.retry = FAST
    shutdown, thread, errors = in_thread(lambda s: batcher.run(s, interval=0.01))
    try:
        wait_for(lambda: len(batched_readings(db)) == 8, "two full batches")
    finally:
        shutdown.set()
        thread.join(10)
    assert not errors, errors
    assert fault.raised == 2
    assert batched_readings(db) == list(range(1, 9))  # readings 9, 10 wait for the next
    ids = [b.id for b in store.batches(batcher.conn)]
    assert ids == [0, 1]
    assert batcher.status()["error"] is None
    lines = messages(caplog, "batcher: closing a batch failed")
    assert ["attempt 1 of 3" in lines[0], "attempt 2 of 3" in lines[1]] == [True, True], lines
    assert "injected tree fault" in lines[0]


def test_batcher_fault_that_stays_ends_run_after_the_attempts(db, monkeypatch, caplog):
    fault = Fault(merkle.MerkleTree.to_blob, float("inf"), RuntimeError("injected tree fault"))
    monkeypatch.setattr(merkle.MerkleTree, "to_blob", lambda tree: fault(tree))
    caplog.set_level(logging.WARNING, "terrapin.gateway.chain.batcher")
    batcher = Batcher(db, batch_size=4, batch_seconds=3600)
    batcher.retry = FAST
    with pytest.raises(GaveUp, match="closing a batch failed 3 times in a row"):
        batcher.run(threading.Event(), interval=0.01)
    assert fault.raised == 3
    assert len(messages(caplog, "batcher: closing a batch failed")) == 3
    assert "attempt 3 of 3" in batcher.status()["error"]
    assert batched_readings(db) == []  # each attempt rolled back


# -- anchorer -----------------------------------------------------------------------------


def anchored_once(chain: Chain, anchorer: Anchorer, batches: int) -> None:
    events = chain.anchor.events.Anchored().get_logs(from_block=0)
    assert sorted(e["args"]["batchId"] for e in events) == list(range(batches))
    assert next_batch_id(chain.anchor, chain.account.address) == batches
    mined = anchorer.conn.execute("SELECT COUNT(*) FROM chain_txs WHERE status = ?", ("mined",))
    assert mined.fetchone()[0] == batches


def confirmed(db: Path) -> int:
    conn = store.connect(db)
    try:
        return len(store.batches(conn, store.CONFIRMED))
    finally:
        conn.close()


@pytest.fixture
def batched(db: Path) -> Path:
    Batcher(db, batch_size=4).close_due(force=True)  # batches 0, 1, 2
    return db


def make_anchorer(db: Path) -> tuple[Chain, Anchorer]:
    chain = Chain.connect(ChainConfig(poll_seconds=0.01))
    anchorer = Anchorer(db, chain)
    anchorer.retry = FAST
    anchorer.backoff = (0.01, 0.02)
    return chain, anchorer


def test_anchor_fault_after_the_broadcast_is_retried_and_anchors_once(batched, monkeypatch, caplog):
    chain, anchorer = make_anchorer(batched)
    # mark_sent runs after the transaction went out (the embedded chain mines it at
    # once): the retried step must find it on chain, not send the batch again.
    fault = Fault(txlog.mark_sent, 2, RuntimeError("injected fault after broadcast"))
    monkeypatch.setattr(txlog, "mark_sent", fault)
    caplog.set_level(logging.WARNING, "terrapin.gateway.chain.anchorer")
    shutdown, thread, errors = in_thread(anchorer.run)
    try:
        wait_for(lambda: confirmed(batched) == 3, "3 batches confirmed")
    finally:
        shutdown.set()
        thread.join(10)
    assert not errors, errors
    assert fault.raised == 2
    anchored_once(chain, anchorer, 3)
    # Each failure was followed by a step that worked (it found the batch on chain),
    # so each is a first attempt: the bound counts failures in a row.
    lines = messages(caplog, "anchor step failed")
    assert len(lines) == 2 and all("attempt 1 of 3" in line for line in lines), lines
    assert anchorer.status()["error"] is None


def test_anchor_fault_that_stays_ends_run_and_is_in_the_status(batched, monkeypatch, caplog):
    chain, anchorer = make_anchorer(batched)
    fault = Fault(txlog.record, float("inf"), RuntimeError("injected record fault"))
    monkeypatch.setattr(txlog, "record", fault)
    caplog.set_level(logging.WARNING, "terrapin.gateway.chain.anchorer")
    with pytest.raises(GaveUp, match="anchor step failed 3 times in a row: RuntimeError"):
        anchorer.run(threading.Event())
    assert fault.raised == 3
    assert len(messages(caplog, "anchor step failed")) == 3
    assert "attempt 3 of 3" in anchorer.status()["error"]
    assert next_batch_id(chain.anchor, chain.account.address) == 0
    assert anchorer.conn.execute("SELECT COUNT(*) FROM chain_txs").fetchone()[0] == 0


def test_an_expected_chain_error_is_waited_out_past_the_bound(batched, monkeypatch):
    chain, anchorer = make_anchorer(batched)
    times = FAST.attempts * 2
    fault = Fault(anchorer_module.fees, times, ChainError("the fee oracle says no"))
    seen: list[str | None] = []  # the status error each time the step tries again

    def fees(*args):
        seen.append(anchorer.status()["error"])
        return fault(*args)

    monkeypatch.setattr(anchorer_module, "fees", fees)
    shutdown, thread, errors = in_thread(anchorer.run)
    try:
        wait_for(lambda: confirmed(batched) == 3, "3 batches confirmed")
    finally:
        shutdown.set()
        thread.join(10)
    assert not errors, errors
    assert fault.raised == times
    assert any(s and "the fee oracle says no (retrying" in s and "without limit" in s for s in seen)
    anchored_once(chain, anchorer, 3)
