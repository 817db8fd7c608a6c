"""The real firmware on the unix port against a real Mosquitto and an independent test gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]


def test_one_board_publishes_and_drains(fw, micropython_exe, mosquitto, gateway, tmp_path: Path):
    board = fw.VirtualBoard(micropython_exe, tmp_path, fw.board_config(mosquitto.port))
    board.start("--max-readings", "20", "--exit-when-drained", "--stats")
    assert board.wait(30) == 0, board.console()
    addr = board.address()
    stats = board.stats()
    assert stats["readings"] == 20 and stats["pending"] == 0 and stats["acked"] >= 20, stats
    assert gateway.seqs(addr) == set(range(1, 21))
    assert gateway.first_order[addr] == sorted(gateway.first_order[addr])
    fw.wait_for(lambda: gateway.status.get(addr) == b"offline", 5, "retained offline")
