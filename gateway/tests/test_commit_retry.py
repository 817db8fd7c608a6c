"""The store commit under faults (pipeline.Processor, a real Store on SQLite).

A fault injected into the middle of the transaction (after some readings were
inserted) must roll all of it back: retried, every reading is stored once; if
it never goes away, the commit gives up after its attempts, each one logged,
and nothing is stored (so nothing was acked). A busy database is waited out
without that bound."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from terrapin.gateway import pipeline, store
from terrapin.gateway.pipeline import Processor
from terrapin.gateway.retry import GaveUp, RetryPolicy, disk_refuses
from terrapin.tools.devkit.simboard import board_address, new_key, sign_range

FAST = RetryPolicy(attempts=3, first=0.01, cap=0.02)
READINGS = 10


class FaultAt:
    """Wraps store.sequence_outcome (called inside the transaction, once per reading)
    so that it raises at reading `seq`, `times` times, then lets it through."""

    def __init__(self, seq: int, times: float):
        self.real = store.sequence_outcome
        self.seq = seq
        self.left = times
        self.raised = 0

    def __call__(self, seq, *args):
        if seq == self.seq and self.left > 0:
            self.left -= 1
            self.raised += 1
            raise RuntimeError(f"injected fault at seq {seq}")
        return self.real(seq, *args)


@pytest.fixture
def board_and_processor(gw_home):
    key = new_key()
    gw_home.add_sim_board(key)
    processor = Processor(gw_home.config)
    processor.retry = FAST
    try:
        yield key, processor
    finally:
        processor.close()


def batch_of(key: bytes, seqs) -> list[pipeline.Item]:
    topic = f"terrapin/v1/{board_address(key).hex()}/reading"
    now = time.time()
    return [(topic, board_address(key), env, now) for _seq, env in sign_range(key, seqs)]


def stored_seqs(processor: Processor, key: bytes) -> list[int]:
    rows = processor.store._db.execute(
        "SELECT seq FROM readings WHERE device = ? ORDER BY seq", (board_address(key),)
    )
    return [seq for (seq,) in rows]


def attempt_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "store commit failed" in r.getMessage()]


def test_a_fault_that_goes_away_loses_and_doubles_nothing(board_and_processor, monkeypatch, caplog):
    key, processor = board_and_processor
    fault = FaultAt(seq=3, times=2)  # readings 1 and 2 are already in the transaction
    monkeypatch.setattr(store, "sequence_outcome", fault)
    caplog.set_level(logging.WARNING, "terrapin.gateway.pipeline")
    batch = batch_of(key, range(1, READINGS + 1))
    result = processor.handle(batch)
    assert fault.raised == 2
    assert (result.stored, result.duplicate, result.rejected) == (READINGS, 0, {})
    assert stored_seqs(processor, key) == list(range(1, READINGS + 1))
    lines = attempt_lines(caplog)
    assert len(lines) == 2, lines
    assert "attempt 1 of 3" in lines[0] and "injected fault at seq 3" in lines[0]
    assert "attempt 2 of 3" in lines[1]
    # The broker's redelivery of the same batch (the same bytes: re-signing could land
    # in the next second and be another reading): acked as duplicates, not stored again.
    again = processor.handle(batch)
    assert (again.stored, again.duplicate) == (0, READINGS)
    assert stored_seqs(processor, key) == list(range(1, READINGS + 1))


def test_a_fault_that_stays_gives_up_after_the_attempts_and_stores_nothing(
    board_and_processor, monkeypatch, caplog
):
    key, processor = board_and_processor
    fault = FaultAt(seq=3, times=float("inf"))
    monkeypatch.setattr(store, "sequence_outcome", fault)
    caplog.set_level(logging.WARNING, "terrapin.gateway.pipeline")
    with pytest.raises(GaveUp, match="store commit failed 3 times in a row: RuntimeError"):
        processor.handle(batch_of(key, range(1, READINGS + 1)))
    assert fault.raised == FAST.attempts
    lines = attempt_lines(caplog)
    assert [f"attempt {i} of 3" in line for i, line in enumerate(lines, 1)] == [True] * 3
    assert lines[-1].endswith("giving up")
    assert stored_seqs(processor, key) == []  # rolled back every time: nothing to ack
    # Once the fault is gone (a restarted gateway), the redelivered batch is stored once.
    monkeypatch.setattr(store, "sequence_outcome", fault.real)
    assert processor.handle(batch_of(key, range(1, READINGS + 1))).stored == READINGS
    assert stored_seqs(processor, key) == list(range(1, READINGS + 1))


def locked_error(tmp_path) -> sqlite3.OperationalError:
    """A real SQLITE_BUSY: a second writer while another holds the write lock."""
    path = tmp_path / "locked.db"
    first = sqlite3.connect(path, timeout=0, isolation_level=None)
    second = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        first.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as info:
            second.execute("BEGIN IMMEDIATE")
        return info.value
    finally:
        first.close()
        second.close()


def test_a_busy_database_is_waited_out_past_the_attempts(
    board_and_processor, monkeypatch, tmp_path
):
    key, processor = board_and_processor
    busy = locked_error(tmp_path)
    assert disk_refuses(busy)
    real_commit = processor.store.commit
    left = FAST.attempts + 2  # more than the bound for unexpected errors

    def commit(*args):
        nonlocal left
        if left:
            left -= 1
            raise busy
        return real_commit(*args)

    monkeypatch.setattr(processor.store, "commit", commit)
    monkeypatch.setattr(pipeline, "DISK_WAIT", 0.01)
    assert processor.handle(batch_of(key, range(1, 4))).stored == 3
    assert left == 0
    assert stored_seqs(processor, key) == [1, 2, 3]


def test_only_busy_locked_or_full_count_as_the_disk_refusing(tmp_path):
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as dup:
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError) as typo:
        db.execute("SELECT * FROM no_such_table")
    assert not disk_refuses(dup.value)
    assert not disk_refuses(typo.value)  # a bug, not the disk
    assert not disk_refuses(RuntimeError("database is locked"))
    assert disk_refuses(locked_error(tmp_path))
