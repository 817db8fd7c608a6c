"""Crash safety: kill -9 the gateway (a real `terrapin gateway run` subprocess)
at random points under load, restart Mosquitto (persistence on) under load;
at the end every published reading is stored exactly once and acked."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from terrapin.gateway.loadgen import SimBoard

pytestmark = pytest.mark.mosquitto

BOARDS = 3
RATE = 150  # readings per second per board
ROUNDS = 6 if os.environ.get("CI") else 4


class Gw:
    def __init__(self, home, log):
        self.home, self.log = home, log
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "terrapin.tools.cli",
                "gateway",
                "run",
                "--config",
                str(self.home.config_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    def wait_connected(self, timeout=30):
        url = f"http://127.0.0.1:{self.home.api_port}/api/status"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if json.loads(r.read())["connected"]:
                        time.sleep(0.3)  # the SUBACK
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("gateway did not connect")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill_worker(self):
        """SIGKILL the verify worker: the gateway must exit (code 1), not hang."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = [
            int(c)
            for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()
        ]
        assert workers, f"the gateway has no worker process: {children}"
        os.kill(workers[0], signal.SIGKILL)
        assert self.proc.wait(15) == 1, self.log.read_text()[-2000:]
        assert "verify worker" in self.log.read_text()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("gateway ignored SIGTERM") from None
            assert self.proc.returncode == 0, self.log.read_text()[-3000:]


def test_kill_9_and_broker_restart_under_load_lose_nothing(gw_home, gw_broker, gw_tools, tmp_path):
    rng = random.Random(int(os.environ.get("TERRAPIN_SEED", "0")) or None)
    creds = [gw_home.add_board() for _ in range(BOARDS)]
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
    gw = Gw(gw_home, log)
    threads = [threading.Thread(target=load, args=(b,), daemon=True) for b in boards]
    try:
        gw.start()
        # The very first start creates the gateway's session at the broker;
        # only from then on does the broker keep readings for it.
        gw.wait_connected()
        for t in threads:
            t.start()
        for rnd in range(ROUNDS):
            time.sleep(rng.uniform(0.5, 2.0))  # the gateway starts, then works for a while
            if rnd == 1:
                gw.kill_worker()
            else:
                gw.kill()
            time.sleep(rng.uniform(0.0, 0.5))  # readings pile up at the broker
            if rnd == ROUNDS // 2:
                gw_broker.restart()  # SIGTERM: Mosquitto saves its persistence file
            gw.start()
        time.sleep(1.0)
        stop_load.set()
        for t in threads:
            t.join(10)
        # No board re-sends anything here: PUBACK-after-commit alone must bring
        # every reading to the store and every ACK back (a board's outbox would
        # re-send after a timeout; that would hide a lost reading).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(b.settled(published[b.address]) for b in boards):
                break
            time.sleep(0.5)
        gw.stop()
    finally:
        stop_load.set()
        if gw.proc and gw.proc.poll() is None:
            gw.proc.kill()
        for b in boards:
            b.stop()

    db = sqlite3.connect(gw_home.config.store.path)
    total = sum(len(s) for s in published.values())
    assert total > ROUNDS * 100
    for b in boards:
        want = published[b.address]
        rows = [r[0] for r in db.execute("SELECT seq FROM readings WHERE device=?", (b.address,))]
        missing = sorted(want - set(rows))
        assert not missing, (
            f"board {b.hex}: {len(missing)} readings lost, e.g. {missing[:10]}\n"
            + log.read_text()[-2000:]
        )
        assert len(rows) == len(set(rows)) == len(want), f"board {b.hex}: stored twice or extra"
        unacked = sorted(want - b.acked)
        assert not unacked, f"board {b.hex}: {len(unacked)} never acked, e.g. {unacked[:10]}"
        assert not b.rejected, f"board {b.hex}: rejected {list(b.rejected.items())[:5]}"
    (dups,) = db.execute(
        "SELECT COUNT(*) FROM"
        " (SELECT device, seq FROM readings GROUP BY device, seq HAVING COUNT(*) > 1)"
    ).fetchone()
    assert dups == 0
