"""Sequence numbers: strictly increasing across reboots, one flash write per block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from terrapin.firmware.seqstore import SeqStore, StoreError, write_atomic


class Retained:
    """Stands in for ESP32 RTC memory (survives deep sleep, not power cuts)."""

    def __init__(self) -> None:
        self.data = b""

    def load(self) -> bytes:
        return self.data

    def save(self, data: bytes) -> None:
        self.data = bytes(data)


def test_increasing_across_reboots_with_few_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "seq")
    seen: list[int] = []
    writes = 0
    for boot in range(20):
        store = SeqStore(path, block=16)
        for _ in range(boot * 7 % 40):  # crash after a varying number of readings
            seen.append(store.take())
        writes += store.writes
    assert seen == sorted(set(seen)), "strictly increasing, never reused"
    assert writes <= 20 + len(seen) // 16 + 1, "one write per block, not per reading"


def test_floor_from_outbox(tmp_path: Path) -> None:
    path = str(tmp_path / "seq")
    assert SeqStore(path, block=8).take() == 1
    assert SeqStore(path, block=8, floor=500).take() == 501


def test_power_cut_during_reserve_keeps_old_bound(tmp_path: Path) -> None:
    path = str(tmp_path / "seq")
    store = SeqStore(path, block=8)
    used = [store.take() for _ in range(8)]
    # A torn temporary file from a reserve that was cut mid-write.
    Path(path + ".tmp").write_bytes(b"TPSQ\x01\x00")
    after = SeqStore(path, block=8).take()
    assert after > max(used)
    # FAT-style: old file removed, complete tmp present -> tmp is used.
    good = Path(path).read_bytes()
    os.remove(path)
    Path(path + ".tmp").write_bytes(good)
    assert SeqStore(path, block=8).take() >= after


def test_damaged_state_is_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "seq")
    SeqStore(path, block=8).take()
    data = bytearray(Path(path).read_bytes())
    data[10] ^= 1
    Path(path).write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        SeqStore(path, block=8)


def test_deep_sleep_keeps_exact_position(tmp_path: Path) -> None:
    path = str(tmp_path / "seq")
    rtc = Retained()
    seen = []
    for _wake in range(10):
        store = SeqStore(path, block=64, retained=rtc)
        seen.append(store.take())
        store.keep_for_sleep()
    assert seen == list(range(1, 11)), "no block skipped across deep sleep"
    # A reset without keep_for_sleep (watchdog) must not reuse numbers.
    store = SeqStore(path, block=64, retained=rtc)
    a = store.take()
    store = SeqStore(path, block=64, retained=rtc)
    assert store.take() > a
    # Power cut: RTC memory cleared -> skip past the reserved block.
    store = SeqStore(path, block=64, retained=Retained())
    assert store.take() >= 65


def test_write_atomic_replaces(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert Path(path).read_bytes() == b"two"
    assert not Path(path + ".tmp").exists()
