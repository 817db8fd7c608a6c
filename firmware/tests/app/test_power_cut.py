"""Power cuts: kill -9 the firmware at random points, restart, and check nothing is lost.

Every sequence number a boot reported as stored must eventually be acked,
no sequence number is ever used for two different readings, sequence
numbers only grow across boots, and the outbox is never corrupt. Between
cuts the host does nothing to the flash: each boot recovers by itself, and
what it reports at boot (its outbox scan, its next seq) is what is checked.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time

import pytest

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

CUTS = int(os.environ.get("TERRAPIN_POWER_CUTS", "14"))
_RECOVERED = re.compile(r"^\[info\] outbox: \d+ pending, \d+ dropped so far; next seq (\d+)", re.M)
_CORRUPT = re.compile(r"^\[error\] outbox: (\d+) corrupt and \d+ torn records at boot", re.M)


def boot_recovery(console: str) -> int | None:
    """The next seq a boot reported after its own outbox scan (None: cut before that)."""
    found = _RECOVERED.findall(console)
    return int(found[-1]) if found else None


def test_kill_at_random_points(fw, micropython_exe, mosquitto, gateway, tmp_path):
    rng = random.Random(int(os.environ.get("TERRAPIN_SEED", "20261130")))
    cfg = fw.board_config(mosquitto.port, sample_period_s=0.02, window=4)
    cfg["outbox"] = {"max_bytes": 65536, "segment_bytes": 2048}  # many segment switches
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    # Slow, jittery acks so kills also land between publish and ack.
    real_ack = gateway.ack

    def late_ack(addr: str, seqs: list[int]) -> None:
        threading.Timer(rng.uniform(0, 0.25), real_ack, (addr, seqs)).start()

    gateway.ack = late_ack
    recovered = 0
    for cut in range(CUTS):
        signed_before = board.stored_seqs()
        board.start()
        # Boot takes ~0.2 s; cut anywhere from during boot to well into sampling.
        time.sleep(rng.uniform(0.05, 0.9))
        board.kill()
        # No host-side look at (or repair of) the flash: what this boot found is
        # what it said after its own recovery scan, if it got that far.
        console = board.console()
        corrupt = [int(n) for n in _CORRUPT.findall(console) if int(n)]
        assert not corrupt, f"boot {cut + 1}: the board found corrupt records: {corrupt}\n{console}"
        next_seq = boot_recovery(console)
        if next_seq is not None:
            recovered += 1
            top = max(signed_before, default=0)
            assert next_seq > top, f"boot {cut + 1}: next seq {next_seq} <= {top}\n{console}"
    assert recovered >= CUTS // 2, f"only {recovered} of {CUTS} boots reported recovering"
    stored = board.stored_seqs()
    assert len(stored) > 3 * CUTS, board.console(all_boots=True)[-2000:]
    assert stored == sorted(set(stored)), "a sequence number was reused or went backwards"
    gateway.ack = real_ack
    board.start("--max-readings", "0", "--exit-when-drained", "--stats")
    assert board.wait(60) == 0, board.console()
    assert boot_recovery(board.console()) is not None, board.console()
    assert not [n for n in _CORRUPT.findall(board.console()) if int(n)], board.console()
    stats = board.stats()
    assert stats["pending"] == 0 and stats["corrupt"] == 0, stats
    addr = board.address()
    missing = sorted(set(stored) - gateway.seqs(addr))
    assert not missing, f"signed and stored but never delivered: {missing}"
    # Between boots the store skips past the reserved block: gaps, never reuse.
    assert max(gateway.seqs(addr)) < max(stored) + 64 * 2
