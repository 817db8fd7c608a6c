"""The store commit failing under load, end to end: `terrapin gateway run` with
its verify workers, a real Mosquitto, boards publishing the whole time.

The fault is real SQLite, put into the gateway's own database from outside: a
trigger that aborts every INSERT into `readings` (the workers' transactions
fail in the middle and roll back). First it is removed after two attempts:
the gateway goes on. Then it stays: the workers give up after their bounded
attempts, the gateway exits with code 1 naming the error, and once the fault
is gone and the gateway restarted (what systemd does), every reading is
stored exactly once and acked, without any board re-sending.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time

import pytest

from terrapin.gateway.pipeline import STORE_RETRY
from terrapin.tools.devkit.gatewayproc import GatewayProcess

BOARDS = 3
RATE = 100  # readings per second per board
FAULT = "injected_store_fault"
GIVE_UP_WITHIN = 30.0  # s: the bounded attempts (~4-8 s) plus the gateway's stop


def set_fault(db_path, on: bool) -> None:
    db = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    try:
        if on:
            db.execute(
                f"CREATE TRIGGER {FAULT} BEFORE INSERT ON readings "
                f"BEGIN SELECT RAISE(ABORT, '{FAULT}'); END"
            )
        else:
            db.execute(f"DROP TRIGGER {FAULT}")
    finally:
        db.close()


def wait_for_log(log, pattern: str, timeout: float, gw: GatewayProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace")):
            return
        time.sleep(0.05)
    pytest.fail(f"no log line like {pattern!r} within {timeout} s\n{gw.log_tail()}")


@pytest.mark.mosquitto
def test_store_faults_under_load_retry_then_exit_and_lose_nothing(
    gw_home, gw_broker, gw_tools, tmp_path
):
    db_path = gw_home.config.store.path
    creds = [gw_home.add_sim_board() for _ in range(BOARDS)]
    load = gw_tools.BoardLoad(gw_home, gw_broker, creds, RATE)
    boards, published = load.boards, load.published
    log = tmp_path / "gateway.log"
    gw = GatewayProcess(gw_home, log=log, settle=0.3)
    limit = STORE_RETRY.attempts
    try:
        gw.start(timeout=30)
        load.start()
        time.sleep(1.0)
        assert gw.status()["counts"]["stored"] > 0, gw.log_tail()

        # A fault that goes away after two attempts: retried, the gateway goes on.
        set_fault(db_path, True)
        wait_for_log(log, rf"store commit failed \(attempt 2 of {limit}\).*{FAULT}", 10, gw)
        set_fault(db_path, False)
        stored = gw.status()["counts"]["stored"]
        deadline = time.monotonic() + 4 * STORE_RETRY.cap  # past any worker's next attempt
        while gw.status()["counts"]["stored"] <= stored and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gw.status()["counts"]["stored"] > stored, gw.log_tail()
        assert "giving up" not in log.read_text(errors="replace"), gw.log_tail()

        # A fault that stays: bounded attempts, then the gateway exits with code 1.
        set_fault(db_path, True)
        assert gw.proc is not None
        try:
            code = gw.proc.wait(GIVE_UP_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the gateway still runs {GIVE_UP_WITHIN} s into a lasting store fault")
        assert code == 1, f"exit code {code}\n{gw.log_tail()}"
        text = log.read_text(errors="replace")
        for attempt in range(1, limit + 1):
            assert f"store commit failed (attempt {attempt} of {limit})" in text, gw.log_tail()
        assert re.search(
            rf"verify worker terrapin-verify-\d \(pid \d+\) failed: store commit failed "
            rf"{limit} times in a row: IntegrityError: {FAULT}",
            text,
        ), gw.log_tail()
        assert load.publishing()  # the boards published all along

        set_fault(db_path, False)
        gw.start(timeout=30)  # what systemd's Restart=on-failure does
        time.sleep(1.0)
        load.stop()
        gw_tools.wait_settled(boards, published)
        code = gw.stop()
        assert code == 0, f"exit code {code} on SIGTERM\n{gw.log_tail()}"
    finally:
        gw.kill()
        load.close()
    gw_tools.check_exactly_once(db_path, boards, published, log.read_text(errors="replace"))
