"""Fixtures for the gateway ingest tests, on the one test gateway of tools/devkit:
a gateway home made by `gateway init` (GatewayHome), a real Mosquitto with the
generated password file and ACL, and the gateway in a thread (GatewayThread) or
as a subprocess (GatewayProcess, in the crash test)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from terrapin.tools.devkit.broker import Mosquitto
from terrapin.tools.devkit.gatewayhome import GatewayHome, reload_broker, start_broker
from terrapin.tools.devkit.gatewayproc import GatewayThread
from terrapin.tools.devkit.simboard import SimBoard


@pytest.fixture
def gw_home(tmp_path: Path) -> GatewayHome:
    return GatewayHome(tmp_path / "gw")


@pytest.fixture
def gw_broker(mosquitto_exe: str, gw_home: GatewayHome):
    """Mosquitto with the files `gateway init` wrote (passwords + ACL), persistence on."""
    broker = start_broker(gw_home, extra_config="max_inflight_messages 1000")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def gw_running(gw_home: GatewayHome, gw_broker: Mosquitto):
    running = GatewayThread(gw_home.config).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def gw_board(gw_home: GatewayHome, gw_broker: Mosquitto):
    """One allowed board connected with its own credentials."""
    key, password = gw_home.add_sim_board()
    reload_broker(gw_broker)
    board = SimBoard("127.0.0.1", gw_home.mqtt_port, key, password=password).start()
    try:
        yield board
    finally:
        board.stop()


class BoardLoad:
    """Simulated boards with `creds` [(key, password)], each publishing `rate` readings
    a second from its own thread once start()ed; `published` is every seq each sent."""

    def __init__(self, home: GatewayHome, broker: Mosquitto, creds, rate: float):
        reload_broker(broker)
        self.boards = [
            SimBoard("127.0.0.1", home.mqtt_port, k, password=pw).start() for k, pw in creds
        ]
        self.published: dict[bytes, set[int]] = {b.address: set() for b in self.boards}
        self.rate = rate
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._load, args=(b,), daemon=True) for b in self.boards
        ]

    def _load(self, board: SimBoard) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            board.publish(board.envelope(seq), seq)
            self.published[board.address].add(seq)
            time.sleep(1.0 / self.rate)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def publishing(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def stop(self) -> None:
        """Stop publishing (the boards stay connected for their ACKs)."""
        self._stop.set()
        for t in self.threads:
            t.join(10)

    def close(self) -> None:
        self._stop.set()
        for b in self.boards:
            b.stop()


def wait_settled(boards, published: dict, timeout: float = 60.0) -> None:
    """Until every board has every reading it published acked (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(b.settled(published[b.address]) for b in boards):
            return
        time.sleep(0.5)


def check_exactly_once(db_path, boards, published: dict, log_text: str = "") -> None:
    """Every reading each board published is stored once and acked; none rejected."""
    db = sqlite3.connect(db_path)
    try:
        for b in boards:
            want = published[b.address]
            found = db.execute("SELECT seq FROM readings WHERE device=?", (b.address,))
            rows = [r[0] for r in found]
            missing = sorted(want - set(rows))
            assert not missing, (
                f"board {b.hex}: {len(missing)} readings lost, e.g. {missing[:10]}\n"
                + log_text[-2000:]
            )
            assert len(rows) == len(set(rows)) == len(want), f"board {b.hex}: stored twice or extra"
            unacked = sorted(want - b.acked)
            assert not unacked, f"board {b.hex}: {len(unacked)} never acked, e.g. {unacked[:10]}"
            assert not b.rejected, f"board {b.hex}: rejected {list(b.rejected.items())[:5]}"
    finally:
        db.close()


@pytest.fixture
def gw_tools():
    """Helpers for tests (conftest itself is not importable under importlib mode)."""
    return SimpleNamespace(
        GatewayThread=GatewayThread,
        BoardLoad=BoardLoad,
        reload_broker=reload_broker,
        wait_settled=wait_settled,
        check_exactly_once=check_exactly_once,
    )
