"""Crash safety: kill -9 the gateway (a real `terrapin gateway run` subprocess)
at random points under load, restart Mosquitto (persistence on) under load;
at the end every published reading is stored exactly once and acked."""

from __future__ import annotations

import os
import random
import sqlite3
import time

import pytest

from terrapin.tools.devkit.gatewayproc import GatewayProcess

pytestmark = pytest.mark.mosquitto

BOARDS = 3
RATE = 150  # readings per second per board
ROUNDS = 6 if os.environ.get("CI") else 4


def test_kill_9_and_broker_restart_under_load_lose_nothing(gw_home, gw_broker, gw_tools, tmp_path):
    rng = random.Random(int(os.environ.get("TERRAPIN_SEED", "0")) or None)
    creds = [gw_home.add_sim_board() for _ in range(BOARDS)]
    load = gw_tools.BoardLoad(gw_home, gw_broker, creds, RATE)
    boards, published = load.boards, load.published
    log = tmp_path / "gateway.log"
    gw = GatewayProcess(gw_home, log=log, settle=0.3)
    try:
        # The very first start creates the gateway's session at the broker;
        # only from then on does the broker keep readings for it.
        gw.start(timeout=30)
        load.start()
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
        load.stop()
        # No board re-sends anything here: PUBACK-after-commit alone must bring
        # every reading to the store and every ACK back (a board's outbox would
        # re-send after a timeout; that would hide a lost reading).
        gw_tools.wait_settled(boards, published)
        code = gw.stop()
        assert code == 0, f"gateway exit code {code} on SIGTERM (-9: ignored it)\n{gw.log_tail()}"
    finally:
        gw.kill()
        load.close()

    total = sum(len(s) for s in published.values())
    assert total > ROUNDS * 100
    gw_tools.check_exactly_once(gw_home.config.store.path, boards, published, log.read_text())
    db = sqlite3.connect(gw_home.config.store.path)
    (dups,) = db.execute(
        "SELECT COUNT(*) FROM"
        " (SELECT device, seq FROM readings GROUP BY device, seq HAVING COUNT(*) > 1)"
    ).fetchone()
    assert dups == 0
