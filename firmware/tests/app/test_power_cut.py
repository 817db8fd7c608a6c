"""Power cuts: kill -9 the firmware at random points, restart, and check nothing is lost.

Every sequence number a boot reported as stored must eventually be acked,
no sequence number is ever used for two different readings, sequence
numbers only grow across boots, and the outbox is never corrupt.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from terrapin.firmware.outbox import Outbox

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

CUTS = int(os.environ.get("TERRAPIN_POWER_CUTS", "14"))


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
    for cut in range(CUTS):
        board.start()
        # Boot takes ~0.2 s; cut anywhere from during boot to well into sampling.
        time.sleep(rng.uniform(0.05, 0.9))
        board.kill()
        flash = Outbox(str(board.flash / "outbox"), 65536, 2048)
        assert flash.corrupt == 0, f"outbox corrupt after cut {cut}"
    stored = board.stored_seqs()
    assert len(stored) > 3 * CUTS, board.console(all_boots=True)[-2000:]
    assert stored == sorted(set(stored)), "a sequence number was reused or went backwards"
    gateway.ack = real_ack
    board.start("--max-readings", "0", "--exit-when-drained", "--stats")
    assert board.wait(60) == 0, board.console()
    stats = board.stats()
    assert stats["pending"] == 0 and stats["corrupt"] == 0, stats
    addr = board.address()
    missing = sorted(set(stored) - gateway.seqs(addr))
    assert not missing, f"signed and stored but never delivered: {missing}"
    # Between boots the store skips past the reserved block: gaps, never reuse.
    assert max(gateway.seqs(addr)) < max(stored) + 64 * 2
