"""Memory: a virtual board runs 10,000 readings in the ESP32 heap (ESP32_HEAP) without growing.

Readings are signed at a 3 ms period and acknowledged by a local test
gateway (no signature checks, for speed) through a Mosquitto (TCP_NODELAY
set by tools/devkit/broker.py), so the run stays around 40 s. TERRAPIN_MEMORY_READINGS
changes the count.
"""

from __future__ import annotations

import os

import pytest

from terrapin.tools.devkit.broker import Mosquitto

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

READINGS = int(os.environ.get("TERRAPIN_MEMORY_READINGS", "10000"))


def test_ten_thousand_readings_without_growth(fw, micropython_exe, mosquitto_exe, tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    gw = fw.TestGateway(broker.host, broker.port, verify=False)
    try:
        cfg = fw.board_config(broker.port, window=16, log="info", ack_timeout_s=5)
        board = fw.AppBoard(micropython_exe, tmp_path, cfg)
        board.start(
            "--max-readings", str(READINGS), "--exit-when-drained", "--stats", "--period-ms", "3"
        )
        assert board.wait(240) == 0, board.console()[-3000:]
        stats = board.stats()
    finally:
        gw.close()
        broker.stop()
    text = board.console()
    assert "MemoryError" not in text and "out of memory" not in text
    assert stats["mem_errors"] == 0
    assert stats["readings"] == READINGS and stats["pending"] == 0 and stats["dropped"] == 0
    assert stats["acked"] == READINGS
    assert len(gw.seqs(board.address())) == READINGS
    # No growth: the live heap after the per-reading collection is flat.
    assert stats["live_last"] <= stats["live_at_100"] + 1024, stats
    assert stats["live_peak"] < 100 * 1024
    print("memory figures:", {k: stats[k] for k in ("live_at_100", "live_last", "live_peak")})
