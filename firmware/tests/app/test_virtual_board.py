"""The real firmware on the unix port against a real Mosquitto and an independent test gateway."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from terrapin.tools.devkit.broker import Mosquitto, free_port

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]


def test_one_board_publishes_and_drains(fw, micropython_exe, mosquitto, gateway, tmp_path: Path):
    board = fw.AppBoard(micropython_exe, tmp_path, fw.board_config(mosquitto.port))
    board.start("--max-readings", "20", "--exit-when-drained", "--stats")
    assert board.wait(30) == 0, board.console()
    addr = board.address()
    stats = board.stats()
    assert stats["readings"] == 20 and stats["pending"] == 0 and stats["acked"] >= 20, stats
    assert gateway.seqs(addr) == set(range(1, 21))
    assert gateway.first_order[addr] == sorted(gateway.first_order[addr])
    fw.wait_for(lambda: gateway.status.get(addr) == b"offline", 5, "retained offline")


def test_several_boards_publish_and_drain(fw, micropython_exe, mosquitto, gateway, tmp_path):
    boards = [
        fw.AppBoard(micropython_exe, tmp_path, fw.board_config(mosquitto.port), f"b{i}")
        for i in range(3)
    ]
    for i, b in enumerate(boards):
        b.start("--max-readings", "15", "--exit-when-drained", "--stats", "--seed", str(i))
    for b in boards:
        assert b.wait(60) == 0, b.console()
    addrs = {b.address() for b in boards}
    assert len(addrs) == 3, "each board made its own key"
    for b in boards:
        assert gateway.seqs(b.address()) == set(range(1, 16)), b.console()
        assert b.stats()["pending"] == 0


def test_gateway_rejection_removes_entry_and_is_logged(
    fw, micropython_exe, mosquitto, gateway, tmp_path
):
    gateway.reject = {3: 7, 5: 12}
    board = fw.AppBoard(micropython_exe, tmp_path, fw.board_config(mosquitto.port))
    board.start("--max-readings", "8", "--exit-when-drained", "--stats")
    assert board.wait(30) == 0, board.console()
    stats = board.stats()
    assert stats["rejected"] == 2 and stats["acked"] >= 6 and stats["pending"] == 0
    text = board.console()
    assert "gateway rejected seq 3: BAD_SIGNATURE" in text
    assert "gateway rejected seq 5: EQUIVOCATION" in text


def test_broker_restart_backlog_drains_in_order(fw, micropython_exe, mosquitto, gateway, tmp_path):
    board = fw.AppBoard(micropython_exe, tmp_path, fw.board_config(mosquitto.port))
    board.start("--max-readings", "100", "--exit-when-drained", "--stats")
    fw.wait_for(lambda: gateway.received >= 10, 20, "first readings", board.console)
    addr = board.address()
    mosquitto.stop()
    time.sleep(1.5)  # the board keeps sampling into its outbox
    during = len(board.stored_seqs())
    mosquitto.start()
    assert board.wait(60) == 0, board.console()
    assert during > 20, "readings were taken while the broker was down"
    assert gateway.seqs(addr) == set(range(1, 101)), sorted(set(range(1, 101)) - gateway.seqs(addr))
    order = gateway.first_order[addr]
    assert order == sorted(order), f"backlog not drained in order: {order}"
    stats = board.stats()
    assert stats["connects"] >= 2 and stats["pending"] == 0 and stats["dropped"] == 0
    assert "connection lost" in board.console()


def test_readings_missed_after_a_restart_are_resent_before_newer_ones(
    fw, micropython_exe, mosquitto, gateway, tmp_path
):
    # Deterministic form of the race above: the first publishes after the
    # restart are lost (as if the gateway were not subscribed yet). The board
    # must get its oldest entry through before it sends anything newer.
    cfg = fw.board_config(mosquitto.port, ack_timeout_s=0.4, window=8)
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    board.start("--max-readings", "60", "--exit-when-drained", "--stats")
    fw.wait_for(lambda: gateway.received >= 10, 20, "first readings", board.console)
    addr = board.address()
    gateway.deaf = 10**6  # from now on nothing is heard (nor acked): the window fills
    time.sleep(0.3)
    mosquitto.stop()
    time.sleep(1.0)
    gateway.deaf = 3  # and the first three publishes after the restart are lost too
    mosquitto.start()
    assert board.wait(60) == 0, board.console()
    assert gateway.seqs(addr) == set(range(1, 61))
    order = gateway.first_order[addr]
    assert order == sorted(order), f"first deliveries out of order: {order}\n{board.console()}"
    assert gateway.deaf == 0 and board.stats()["republished"] >= 3


def test_broker_unreachable_at_boot(fw, micropython_exe, mosquitto_exe, tmp_path):
    port = free_port()
    board = fw.AppBoard(micropython_exe, tmp_path, fw.board_config(port))
    board.start("--max-readings", "30", "--exit-when-drained", "--stats")
    fw.wait_for(lambda: "unreachable" in board.console(), 30, "a failed connect", board.console)
    time.sleep(1.0)  # readings pile up in the outbox meanwhile
    assert board.proc is not None and board.proc.poll() is None, board.console()
    broker = Mosquitto(tmp_path / "late-broker", port=port).start()
    gw = fw.TestGateway(broker.host, broker.port)
    try:
        assert board.wait(60) == 0, board.console()
        assert gw.seqs(board.address()) == set(range(1, 31))
        assert not gw.problems, gw.problems
    finally:
        gw.close()
        broker.stop()


def test_deep_sleep_keeps_the_sequence_and_a_power_cut_skips_the_block(
    fw, micropython_exe, mosquitto, gateway, tmp_path
):
    cfg = fw.board_config(mosquitto.port, deep_sleep=True, awake_s=10, sample_period_s=30)
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    for _wake in range(5):
        board.start("--deep-sleep-sim")
        assert board.wait(30) == 4, board.console()  # 4 = went to deep sleep
        assert "[info] deep sleep" in board.console()
    addr = board.address()
    assert gateway.seqs(addr) == {1, 2, 3, 4, 5}, "one reading per wake, no block skipped"
    assert not [p for p in (board.flash / "outbox").iterdir() if p.suffix == ".seg"], (
        "a fully acked head segment is deleted before sleeping"
    )
    assert gateway.status[addr] != b"offline", "a clean DISCONNECT: no last will"
    (board.dir / "flash.rtc").unlink()  # power cut: RTC memory lost
    board.start("--deep-sleep-sim")
    assert board.wait(30) == 4, board.console()
    assert max(gateway.seqs(addr)) == 65, "after a power cut the reserved block is skipped"


def test_full_outbox_drops_oldest_counts_and_reports(
    fw, micropython_exe, mosquitto, gateway, tmp_path
):
    gateway.ack_enabled = False  # the gateway stores nothing for a while
    cfg = fw.board_config(mosquitto.port, sample_period_s=0.02, ack_timeout_s=0.5)
    cfg["outbox"] = {"max_bytes": 8192, "segment_bytes": 2048}
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    board.start("--max-readings", "90", "--exit-when-drained", "--stats")
    fw.wait_for(lambda: len(board.stored_seqs()) == 90, 30, "90 readings", board.console)
    addr = board.address()

    def reported_drops() -> bool:
        raw = gateway.status.get(addr)
        return bool(raw) and raw != b"offline" and json.loads(raw)["dropped"] > 0

    fw.wait_for(reported_drops, 10, "dropped count in the status message", board.console)
    gateway.ack_enabled = True
    # What is still on the board gets acked as it is republished.
    assert board.wait(60) == 0, board.console()
    stats = board.stats()
    assert stats["dropped"] > 40 and stats["pending"] == 0, stats
    assert stats["republished"] > 0, "unacknowledged readings are published again"
    assert "outbox full: dropped the" in board.console()
    newest = set(range(91 - 20, 91))
    assert newest <= gateway.seqs(addr), "the newest readings are kept"
