"""Crash safety: kill -9 the gateway (a real `terrapin gateway run` subprocess)
at random points under load, restart Mosquitto (persistence on) under load;
at the end every published reading is stored exactly once and acked."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time

import pytest

from terrapin.tools.devkit.gatewayproc import GatewayProcess
from terrapin.tools.devkit.simboard import SimBoard

pytestmark = pytest.mark.mosquitto

BOARDS = 3
RATE = 150  # readings per second per board
ROUNDS = 6 if os.environ.get("CI") else 4


def test_kill_9_and_broker_restart_under_load_lose_nothing(gw_home, gw_broker, gw_tools, tmp_path):
    rng = random.Random(int(os.environ.get("TERRAPIN_SEED", "0")) or None)
    creds = [gw_home.add_sim_board() for _ in range(BOARDS)]
    gw_tools.reload_broker(gw_broker)
    boards = [SimBoard("127.0.0.1", gw_home.mqtt_port, k, password=pw).start() for k, pw in creds]
    published: dict[bytes, set[int]] = {b.address: set() for b in boards}
    stop_load = threading.Event()

    def load(board: SimBoard):
        seq = 0
        while not stop_load.is_set():
            seq += 1
            board.publish(board.envelope(seq), seq)
            published[board.address].add(seq)
            time.sleep(1.0 / RATE)

    log = tmp_path / "gateway.log"
    gw = GatewayProcess(gw_home, log=log, settle=0.3)
    threads = [threading.Thread(target=load, args=(b,), daemon=True) for b in boards]
    try:
        # The very first start creates the gateway's session at the broker;
        # only from then on does the broker keep readings for it.
        gw.start(timeout=30)
        for t in threads:
            t.start()
        for rnd in range(ROUNDS):
            time.sleep(rng.uniform(0.5, 2.0))  # the gateway starts, then works for a while
            if rnd == 1:
                # SIGKILL the verify worker: the gateway must exit (code 1), not hang.
                assert gw.kill_worker() == 1, gw.log_tail()
                assert "verify worker" in log.read_text()
            else:
                gw.kill()
            time.sleep(rng.uniform(0.0, 0.5))  # readings pile up at the broker
            if rnd == ROUNDS // 2:
                gw_broker.restart()  # SIGTERM: Mosquitto saves its persistence file
            gw.start(wait=False)
        time.sleep(1.0)
        stop_load.set()
        for t in threads:
            t.join(10)
        # No board re-sends anything here: PUBACK-after-commit alone must bring
        # every reading to the store and every ACK back (a board's outbox would
        # re-send after a timeout; that would hide a lost reading).
        gw_tools.wait_settled(boards, published)
        code = gw.stop()
        assert code == 0, f"gateway exit code {code} on SIGTERM (-9: ignored it)\n{gw.log_tail()}"
    finally:
        stop_load.set()
        gw.kill()
        for b in boards:
            b.stop()

    total = sum(len(s) for s in published.values())
    assert total > ROUNDS * 100
    gw_tools.check_exactly_once(gw_home.config.store.path, boards, published, log.read_text())
    db = sqlite3.connect(gw_home.config.store.path)
    (dups,) = db.execute(
        "SELECT COUNT(*) FROM"
        " (SELECT device, seq FROM readings GROUP BY device, seq HAVING COUNT(*) > 1)"
    ).fetchone()
    assert dups == 0
